/* Collectives across processes ("ranks") for data-parallel training: all-reduce, broadcast,
 * all-gather and barrier over a communicator.
 *
 * Launch. filo_dist_env_detect reads how this process was started:
 *   - by mpirun (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK): ranks come from MPI, CPU collectives use
 *     MPI, and the NCCL unique id is broadcast through MPI;
 *   - torchrun-style (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT):
 *     rank 0 listens on MASTER_ADDR:MASTER_PORT, the others connect; CPU collectives and the
 *     NCCL id exchange go over those TCP connections;
 *   - neither: one process, world size 1; every collective is a local no-op.
 *
 * Streams. A collective on CUDA tensors runs through NCCL on the communicator's own stream,
 * after the work already enqueued on the caller's current stream (an event, no host wait); its
 * filo_comm_work_wait makes the caller's current stream wait for it (again no host wait). A
 * collective on CPU tensors runs on the communicator's worker thread, the CPU's collective
 * stream, in the order the collectives were started; filo_comm_work_wait blocks until it is done.
 * Under the CUDA emulator, "NCCL" is the host transport working on the emulator's host memory.
 *
 * Deadlines. Every collective must finish within the communicator's timeout (FILO_DIST_TIMEOUT
 * seconds in the environment, else 600; filo_comm_options.timeout_s overrides both). One that
 * does not fails with FILO_ERR_TIMEOUT and a message naming this rank, the op, its sequence
 * number and its size; the communicator is then broken and every later call on it fails at once
 * with FILO_ERR_COMM. A peer that exits or disconnects fails the others' collectives with
 * FILO_ERR_COMM naming that peer (TCP sees the closed connection at once; under mpirun, mpirun
 * ends the job when a rank exits with an error).
 *
 * All ranks must call the same collectives in the same order with the same sizes and dtypes:
 * the TCP transport checks this and fails with FILO_ERR_COMM naming both ranks' calls. */
#ifndef FILO_DIST_H
#define FILO_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "filo/device.h"
#include "filo/reduce.h"
#include "filo/status.h"
#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_launcher {
    FILO_LAUNCH_SINGLE = 0, /* no launcher: world size 1 */
    FILO_LAUNCH_MPI,        /* mpirun */
    FILO_LAUNCH_ENV,        /* RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (torchrun, --nproc-per-node) */
} filo_launcher;

typedef struct filo_dist_env {
    filo_launcher launcher;
    int rank, world_size;
    int local_rank, local_world_size; /* this host's ranks: local_rank picks the GPU */
    char master_addr[256];            /* FILO_LAUNCH_ENV only */
    int master_port;
} filo_dist_env;

/* Fills *out from the environment (see above). A partial or inconsistent environment (RANK
 * without WORLD_SIZE, rank >= world size, a bad port) is FILO_ERR_INVALID_ARG naming the variable. */
filo_status filo_dist_env_detect(filo_dist_env *out);
/* 1 when this build can use MPI (it was found at build time). */
int filo_dist_have_mpi(void);
/* 1 when this build can use NCCL (a CUDA build; the emulator's stands in for it in tests). */
int filo_dist_have_nccl(void);

typedef struct filo_comm filo_comm;
typedef struct filo_comm_work filo_comm_work;

typedef struct filo_comm_options {
    double timeout_s;      /* 0: FILO_DIST_TIMEOUT from the environment, else 600 */
    double connect_timeout_s; /* 0: the same as timeout_s (rendezvous and NCCL initialization) */
} filo_comm_options;

/* Joins the world described by env. device: the device whose tensors the communicator reduces
 * besides the CPU's (a CUDA device: NCCL is initialized for it; the CPU: host collectives only).
 * Collective: every rank calls it. opts may be NULL. */
filo_status filo_comm_init(const filo_dist_env *env, filo_device device, const filo_comm_options *opts,
                           filo_comm **out);
/* Leaves the world (not collective: ranks may free in any order). NULL is a no-op. */
void filo_comm_free(filo_comm *comm);

int filo_comm_rank(const filo_comm *comm);
int filo_comm_size(const filo_comm *comm);
filo_device filo_comm_device(const filo_comm *comm);
/* "single", "mpi", "tcp" for CPU tensors; "nccl" is reported by filo_comm_device_backend. */
const char *filo_comm_host_backend(const filo_comm *comm);
const char *filo_comm_device_backend(const filo_comm *comm);
double filo_comm_timeout(const filo_comm *comm);

/* The ops are filo/reduce.h's filo_reduce_op (one type for both, so filo.h can include both
 * headers): SUM, MAX, MIN, and AVG, the sum divided by the world size (reduce.h's MEAN over the
 * ranks). */
#define FILO_REDUCE_AVG FILO_REDUCE_MEAN

/* Asynchronous collectives: each returns a work handle at once (the collective is enqueued, see
 * Streams above). Tensors must be contiguous, on the CPU or on the communicator's device, and
 * must stay alive and untouched until the work is waited for. Dtypes: f32, f64, i32, i64 on both;
 * bf16 and f16 only on CUDA tensors (NCCL). A label (may be NULL, copied) names the collective
 * in timeout messages and traces ("bucket 3"). */
filo_status filo_all_reduce_start(filo_comm *comm, filo_tensor *t, filo_reduce_op op, const char *label,
                                  filo_comm_work **work);
/* t on root is sent to every other rank's t (same shape and dtype on every rank). */
filo_status filo_broadcast_start(filo_comm *comm, filo_tensor *t, int root, const char *label,
                                 filo_comm_work **work);
/* out (world_size * numel(in) elements, in's dtype and device) receives every rank's `in`, in
 * rank order. */
filo_status filo_all_gather_start(filo_comm *comm, const filo_tensor *in, filo_tensor *out, const char *label,
                                  filo_comm_work **work);

/* Waits for the work as described under Streams, within the deadline. */
filo_status filo_comm_work_wait(filo_comm_work *work);
/* 1 when the work has finished (successfully or not), without waiting. */
int filo_comm_work_done(filo_comm_work *work);
/* Frees a work handle; a work not yet waited for is waited for first (its status is lost). */
void filo_comm_work_free(filo_comm_work *work);

/* Blocking forms: start + wait + free. */
filo_status filo_all_reduce(filo_comm *comm, filo_tensor *t, filo_reduce_op op);
filo_status filo_broadcast(filo_comm *comm, filo_tensor *t, int root);
filo_status filo_all_gather(filo_comm *comm, const filo_tensor *in, filo_tensor *out);
/* Every rank waits for every other (host collective; also waits for the device queue). */
filo_status filo_barrier(filo_comm *comm);

/* Host-memory collectives on the host transport (not on the device), blocking: for small
 * control data such as counts, shapes, flags and gathered evaluation results. all_gather_bytes:
 * every rank sends `bytes` bytes; out holds world_size * bytes. */
filo_status filo_comm_all_gather_bytes(filo_comm *comm, const void *in, size_t bytes, void *out);
filo_status filo_comm_broadcast_bytes(filo_comm *comm, void *buf, size_t bytes, int root);
/* Gathers variable-sized byte strings: *out (malloc'ed, caller frees) holds every rank's data in
 * rank order; lens[r] (world_size entries, caller's array) receives each rank's length. */
filo_status filo_comm_all_gather_varied(filo_comm *comm, const void *in, size_t bytes, void **out,
                                        size_t *lens);

/* Counters since filo_comm_init: collectives started, bytes reduced/sent, seconds spent waiting
 * in filo_comm_work_wait. */
typedef struct filo_comm_stats {
    int64_t collectives;
    int64_t bytes;
    double wait_s;
} filo_comm_stats;
void filo_comm_stats_get(const filo_comm *comm, filo_comm_stats *out);

/* Ends this process's part in the world after a fatal error on this rank: under mpirun calls
 * MPI_Abort (so mpirun ends every rank), otherwise closes the connections (peers see it at once).
 * Prints "filo: rank R: <message>" to stderr first. Does not return. For command-line tools. */
void filo_comm_abort(filo_comm *comm, const char *message);

#ifdef __cplusplus
}
#endif
#endif
