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

#endif
