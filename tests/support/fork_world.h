/* Worlds of forked ranks for the collective tests: each rank a child process on 127.0.0.1, its
 * result sent back through a pipe, a hung rank killed. */
#ifndef FILO_TEST_FORK_WORLD_H
#define FILO_TEST_FORK_WORLD_H

#include "filo/status.h"

#define FILO_TEST_MAX_WORLD 8

typedef struct filo_test_rank_result {
    int status;     /* the rank's filo_status; -1: the process died or hung before reporting */
    double seconds; /* how long the rank ran */
    char msg[2048]; /* filo_last_error() when status is not FILO_OK */
} filo_test_rank_result;

/* Runs in the child as rank `rank` of `world`, whose rank 0 listens on 127.0.0.1:port. */
typedef filo_status (*filo_test_rank_fn)(int rank, int world, int port, void *arg);

/* Runs fn in one process per rank (only the ranks with start[r] when start is given; the others
 * report "not started"), on a free port, and fills res[0..world). A rank still running after
 * limit_s is killed. Another process may take the probed port before rank 0 binds it: when rank 0
 * says the port is in use, the world runs again on another. */
void filo_test_world_run(int world, const int *start, double limit_s, filo_test_rank_fn fn, void *arg,
                         filo_test_rank_result *res);

#endif
