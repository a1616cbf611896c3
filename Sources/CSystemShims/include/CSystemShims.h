// Glibc functions Swift's Glibc module does not show without _GNU_SOURCE.
#ifndef CSYSTEMSHIMS_H
#define CSYSTEMSHIMS_H

#include <spawn.h>

/// pipe2(fds, O_CLOEXEC): a pipe no other child can inherit by accident.
int csystem_pipe_cloexec(int fds[2]);

/// posix_spawn_file_actions_addchdir_np: the child's working directory.
int csystem_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path);
/* Closes every descriptor >= from in the child (glibc >= 2.34). */
int csystem_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from);

/* mallopt(M_ARENA_MAX, arenas): at most this many malloc arenas. */
int csystem_limit_malloc_arenas(int arenas);

/* An unnamed temporary file in `directory` (O_TMPFILE), open for reading
   and writing; if the file system cannot make one (or is full), a memfd.
   Returns the descriptor, or -errno. */
int csystem_anonymous_file(const char *directory);

/* What csystem_spawn starts. */
struct csystem_spawn_request {
    const char *path;
    char *const *argv;
    char *const *envp;
    /* Become the child's 0, 1 and 2 (stderr_fd may equal stdout_fd). */
    int stdin_fd, stdout_fd, stderr_fd;
    /* The child's working directory, or NULL. */
    const char *directory;
};

/* Starts `path` as posix_spawn would (its own process group, SIGPIPE and
   caught signals back to their defaults, no signal blocked, descriptors
   from 3 up closed), and also asks the kernel to SIGKILL it if this thread
   (or the whole process) dies: a delivery agent must never see its input
   end cleanly because we were killed, or it would deliver half a message.
   The kernel sends that signal when the *calling thread* exits: call it
   only from threads that live as long as the process (BlockingWork's).
   Returns the child's pid, or -errno of the step that failed. */
int csystem_spawn(const struct csystem_spawn_request *request);

#endif
