#define _GNU_SOURCE
#include <malloc.h>
#include <fcntl.h>
#include <spawn.h>
#include <unistd.h>

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
