#define _GNU_SOURCE
#include <malloc.h>
#include <fcntl.h>
#include <spawn.h>
#include <unistd.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "CSystemShims.h"

int csystem_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int csystem_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}

int csystem_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

int csystem_limit_malloc_arenas(int arenas) {
    return mallopt(M_ARENA_MAX, arenas);
}

int csystem_anonymous_file(const char *directory) {
    int fd = directory != NULL ? open(directory, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600) : -1;
    if (fd >= 0) return fd;
    fd = memfd_create("chasquid-message", MFD_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

struct spawn_state {
    const struct csystem_spawn_request *request;
    pid_t parent;
    /* For closing descriptors one by one where close_range is refused. */
    int max_fd;
    /* Written by the child, which shares our memory until it execs. */
    volatile int error;
};

/* Runs in the child, on its own stack, sharing our memory (CLONE_VM) while
   we wait (CLONE_VFORK): system calls only, as in glibc's posix_spawn. */
static int spawn_child(void *arg) {
    struct spawn_state *state = arg;
    const struct csystem_spawn_request *r = state->request;
    for (int s = 1; s < NSIG; s++) {
        struct sigaction action;
        if (s == SIGKILL || s == SIGSTOP || sigaction(s, NULL, &action) != 0) continue;
        if (s == SIGPIPE || (action.sa_handler != SIG_IGN && action.sa_handler != SIG_DFL)) {
            action.sa_handler = SIG_DFL;
            action.sa_flags = 0;
            sigemptyset(&action.sa_mask);
            sigaction(s, &action, NULL);
        }
    }
    if (setpgid(0, 0) != 0) goto fail;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) goto fail;
    /* We died between the clone and the prctl: nobody would kill it. */
    if (getppid() != state->parent) _exit(127);
    /* Copies above 2 first: a source that is itself 0, 1 or 2 (a daemon
       started with a standard descriptor closed) is then neither left
       close-on-exec by a no-op dup2 nor overwritten by another. */
    int in = fcntl(r->stdin_fd, F_DUPFD_CLOEXEC, 3);
    int out = fcntl(r->stdout_fd, F_DUPFD_CLOEXEC, 3);
    int err = r->stderr_fd == r->stdout_fd ? out : fcntl(r->stderr_fd, F_DUPFD_CLOEXEC, 3);
    if (in < 0 || out < 0 || err < 0) goto fail;
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) goto fail;
    /* Kernels before 5.9, and some seccomp profiles, refuse close_range. */
    if (close_range(3, ~0U, 0) != 0) {
        for (int fd = 3; fd < state->max_fd; fd++) close(fd);
    }
    if (r->directory != NULL && chdir(r->directory) != 0) goto fail;
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) goto fail;
    execve(r->path, r->argv, r->envp);
fail:
    state->error = errno;
    _exit(127);
}

int csystem_spawn(const struct csystem_spawn_request *request) {
    const size_t stack_size = 256 * 1024;
    char *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -errno;
    struct rlimit files;
    int max_fd = getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY && files.rlim_cur < (1 << 20)
        ? (int)files.rlim_cur : (1 << 20);
    struct spawn_state state = {.request = request, .parent = getpid(), .max_fd = max_fd, .error = 0};
    /* No handler of ours may run in the child before it resets them. */
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t pid = clone(spawn_child, stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &state);
    int clone_error = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    munmap(stack, stack_size);
    if (pid < 0) return -clone_error;
    if (state.error != 0) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        return -state.error;
    }
    return pid;
}
