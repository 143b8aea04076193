/* Internal: the transports behind filo_comm (filo/dist.h).
 *
 * runtime/comm.c owns the communicator: argument checks, sequence numbers, the CPU worker thread
 * (the CPU's collective stream), work handles, deadlines, the watchdog of device work and the
 * broken state. It reaches the wire through two small interfaces:
 *
 *   comm_host   blocking collectives on host memory, each bounded by a deadline; made by
 *               runtime/comm_tcp.c (torchrun-style environment), runtime/comm_mpi.c (mpirun;
 *               runtime/comm_mpi_none.c when the build has no MPI), or comm.c itself (world 1).
 *               Only comm.c's worker thread calls a comm_host after it is opened, so a transport
 *               needs no locking of its own (MPI is initialized with MPI_THREAD_SERIALIZED).
 *   comm_nccl   NCCL on one CUDA device: runtime/cuda_nccl.c (real NCCL, or under the CUDA
 *               emulator the host transport on the emulator's host memory), cuda_nccl_none.c in
 *               a build without CUDA. Calls enqueue on a stream and return.
 *
 * Messages: a transport's failure names this rank, the call (op, label, sequence number, bytes)
 * and, when known, the peer; comm_call carries what is needed for that. */
#ifndef FILO_RUNTIME_COMM_INTERNAL_H
#define FILO_RUNTIME_COMM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "filo/dist.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a transport needs to know about the call it is serving. */
typedef struct comm_call {
    const char *op;    /* "all_reduce", "broadcast", "all_gather", "barrier", "rendezvous" */
    const char *label; /* the caller's label, or "" */
    int64_t seq;       /* the communicator's sequence number of this collective */
    size_t bytes;      /* this rank's payload */
    double deadline;   /* comm_now() value after which the call must fail with FILO_ERR_TIMEOUT */
} comm_call;

/* Monotonic seconds (CLOCK_MONOTONIC). */
double comm_now(void);
/* "rank 1: all_reduce #12 (bucket 3, 4.0 MiB)" into buf, for messages. */
const char *comm_call_describe(int rank, const comm_call *call, char *buf, size_t size);
/* Elementwise reduction of `count` elements of dtype dt (f32, f64, i32, i64): acc = acc op in.
 * AVG sums here; the division by the world size is done once by the caller (comm_scale_avg). */
void comm_reduce_into(void *acc, const void *in, size_t count, filo_dtype dt, filo_reduce_op op);
/* buf /= world for AVG (f32, f64; integer dtypes divide with truncation). */
void comm_scale_avg(void *buf, size_t count, filo_dtype dt, int world);

typedef struct comm_host comm_host;

typedef struct comm_host_ops {
    const char *name; /* "tcp", "mpi", "single" */
    /* In place on buf; every rank gets the same result, reduced in rank order 0, 1, ... where the
     * transport controls the order (TCP), so that results are reproducible run to run. AVG may be
     * passed: the transport sums, then calls comm_scale_avg. */
    filo_status (*all_reduce)(comm_host *h, void *buf, size_t count, filo_dtype dt, filo_reduce_op op,
                              const comm_call *call);
    filo_status (*broadcast)(comm_host *h, void *buf, size_t bytes, int root, const comm_call *call);
    /* out: world * bytes, rank order. */
    filo_status (*all_gather)(comm_host *h, const void *in, size_t bytes, void *out, const comm_call *call);
    filo_status (*barrier)(comm_host *h, const comm_call *call);
    /* Makes peers fail at once (MPI_Abort; closing sockets). May not return (MPI). */
    void (*abort)(comm_host *h, const char *message);
    void (*free)(comm_host *h);
} comm_host_ops;

struct comm_host {
    const comm_host_ops *ops;
    int rank, world;
};

/* The TCP transport: rank 0 listens on env->master_addr:master_port and every other rank
 * connects (retrying until connect_deadline); a handshake checks world size and rank uniqueness.
 * Star topology through rank 0, which reduces in rank order. */
filo_status comm_tcp_open(const filo_dist_env *env, double connect_deadline, comm_host **out);
/* The MPI transport over MPI_COMM_WORLD (MPI_Init_thread on first use, MPI_Finalize at exit).
 * FILO_ERR_UNSUPPORTED in a build without MPI (comm_mpi_none.c). */
filo_status comm_mpi_open(const filo_dist_env *env, comm_host **out);
int comm_mpi_available(void);

typedef struct comm_nccl comm_nccl;

/* One host collective as comm.c's worker queue carries it. */
typedef enum comm_job_kind { COMM_JOB_ALL_REDUCE, COMM_JOB_BROADCAST, COMM_JOB_ALL_GATHER, COMM_JOB_BARRIER } comm_job_kind;
typedef struct comm_host_job {
    comm_job_kind kind;
    void *buf;          /* all_reduce, broadcast: in place */
    const void *in;     /* all_gather */
    void *out;          /* all_gather: world * bytes */
    size_t count;       /* all_reduce: elements of dt */
    size_t bytes;       /* broadcast, all_gather: bytes per rank */
    filo_dtype dt;
    filo_reduce_op op;
    int root;
    comm_call call;
} comm_host_job;
/* Runs a job on the communicator's host transport (through its worker thread) and waits. */
typedef filo_status (*comm_host_exec_fn)(void *ctx, const comm_host_job *job);

/* Opens NCCL on cuda:device_index for this rank: rank 0 makes the unique id and `exec` broadcasts
 * it over the host transport; then ncclCommInitRankConfig in non-blocking mode, polled until
 * ready or until the deadline (FILO_ERR_TIMEOUT naming the rank). Under the CUDA emulator there
 * is no NCCL: the emulated communicator runs every collective through `exec` on the emulator's
 * host memory (its streams are synchronous), so the device path of comm.c is still exercised. */
filo_status comm_nccl_open(int rank, int world, int device_index, comm_host_exec_fn exec, void *ctx,
                           double deadline, comm_nccl **out);
/* Enqueue on `stream` (cudaStream_t); count elements of dt (f32, f64, bf16, f16, i32, i64).
 * AVG maps to ncclAvg. */
filo_status comm_nccl_all_reduce(comm_nccl *n, void *buf, size_t count, filo_dtype dt, filo_reduce_op op,
                                 void *stream, const comm_call *call);
filo_status comm_nccl_broadcast(comm_nccl *n, void *buf, size_t bytes, int root, void *stream,
                                const comm_call *call);
filo_status comm_nccl_all_gather(comm_nccl *n, const void *in, size_t bytes, void *out, void *stream,
                                 const comm_call *call);
/* FILO_OK, or the communicator's asynchronous error (ncclCommGetAsyncError) as FILO_ERR_COMM. */
filo_status comm_nccl_poll(comm_nccl *n);
/* ncclCommAbort: unblocks everything enqueued; for the watchdog. */
void comm_nccl_abort(comm_nccl *n);
void comm_nccl_free(comm_nccl *n);
/* 1 when the build has NCCL (real or emulated). */
int comm_nccl_available(void);

#ifdef __cplusplus
}
#endif
#endif
