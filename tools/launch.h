/* --nproc-per-node N: the command runs as N local processes, the ranks of one data-parallel
 * world, the way torchrun starts them. The parent picks a free port on 127.0.0.1, starts each
 * child (this same program, same arguments but --nproc-per-node) with RANK, WORLD_SIZE,
 * LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, forwards SIGINT and SIGTERM to
 * them, and waits. When a child fails (a non-zero exit or a signal) the parent says which rank
 * and how, gives the others a grace period to notice (their collectives fail at once when a peer's
 * connection closes) and then terminates what is left. */
#ifndef FILO_TOOLS_LAUNCH_H
#define FILO_TOOLS_LAUNCH_H

/* Removes "--nproc-per-node N" from argv (in place, argc updated) and returns N, 0 when the
 * option is absent, or -1 after printing a usage error (a bad or missing value). */
int launch_take_nproc(const char *cmd, int *argc, char **argv);

/* Runs `filo CMD ARGS...` as nproc local ranks and returns the exit status for the parent: 0 when
 * every rank succeeded, else 1 (2 for a usage error: a launch inside an already distributed
 * environment). args are the command's arguments without --nproc-per-node. */
int launch_local(int nproc, const char *cmd, int argc, char **argv);

#endif
