/* comm_nccl (runtime/comm_internal.h): collectives on one CUDA device, enqueued on a stream.
 *
 * Real build: NCCL. Rank 0 makes the unique id and the host transport broadcasts it; the
 * communicator is created non-blocking (config.blocking = 0) so that neither its initialization
 * nor a collective can hang the calling thread: a call may answer ncclInProgress, and the
 * communicator's state is then polled until it settles or the deadline passes. Every return code
 * is checked and reported with NCCL's own message (ncclGetLastError) and this rank's call.
 *
 * Under the CUDA emulator there is no NCCL: device memory is host memory and streams are
 * synchronous, so each collective runs at once through `exec`, comm.c's host transport, on the
 * same pointers. bf16 and f16 sums go through f32 there (the host reduction has no 16-bit floats).
 * The unique id is still exchanged, so initialization meets the other ranks as the real one does. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_internal.h"
#include "error.h"

/* The id is 128 bytes in NCCL; the emulated one has the same size so both exchange alike. */
#define NCCL_ID_BYTES 128

static filo_status exchange_id(comm_host_exec_fn exec, void *ctx, double deadline, void *id)
{
    comm_host_job job;
    memset(&job, 0, sizeof job);
    job.kind = COMM_JOB_BROADCAST;
    job.buf = id;
    job.bytes = NCCL_ID_BYTES;
    job.root = 0;
    /* Sequence number 0: before any of the communicator's own collectives (numbered from 1). */
    job.call = (comm_call){"broadcast", "NCCL unique id", 0, NCCL_ID_BYTES, deadline};
    return exec(ctx, &job);
}

static filo_status check_open_args(int rank, int world, int device_index, comm_host_exec_fn exec, comm_nccl **out)
{
    if (!exec || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "exec and out must not be NULL");
    if (world < 1 || rank < 0 || rank >= world)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "rank %d is not a rank of a world of %d", rank, world);
    if (device_index < 0)
        return FILO_FAIL(FILO_ERR_DEVICE, "cuda:%d is not a device", device_index);
    *out = NULL;
    return FILO_OK;
}

int comm_nccl_available(void) { return 1; }

#ifdef FILO_CUDA_EMULATION

#include <cuda_runtime.h>

#include "filo/dtype.h"

struct comm_nccl {
    int rank, world, device;
    comm_host_exec_fn exec;
    void *ctx;
    int aborted;
};

filo_status comm_nccl_open(int rank, int world, int device_index, comm_host_exec_fn exec, void *ctx,
                           double deadline, comm_nccl **out)
{
    FILO_TRY(check_open_args(rank, world, device_index, exec, out));
    unsigned char id[NCCL_ID_BYTES];
    memset(id, 0, sizeof id);
    if (rank == 0)
        snprintf((char *)id, sizeof id, "filo emulated NCCL id %lld", (long long)time(NULL));
    FILO_TRY(exchange_id(exec, ctx, deadline, id));
    comm_nccl *n = calloc(1, sizeof *n);
    if (!n)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    n->rank = rank;
    n->world = world;
    n->device = device_index;
    n->exec = exec;
    n->ctx = ctx;
    *out = n;
    return FILO_OK;
}

/* The emulator runs host work at enqueue time; a graph being captured would have to replay it,
 * which a collective (other ranks, a deadline) cannot do. */
static filo_status check_usable(comm_nccl *n, void *stream, const comm_call *call, const char *where)
{
    char d[256];
    if (n->aborted)
        return filo_error_set(FILO_ERR_COMM, where, "%s: the emulated NCCL communicator was aborted",
                              comm_call_describe(n->rank, call, d, sizeof d));
    enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing((cudaStream_t)stream, &capture) == cudaSuccess &&
        capture != cudaStreamCaptureStatusNone)
        return filo_error_set(FILO_ERR_UNSUPPORTED, where,
                              "%s: the emulated NCCL cannot record a collective into a captured graph",
                              comm_call_describe(n->rank, call, d, sizeof d));
    return FILO_OK;
}

static filo_status reduce_16bit(comm_nccl *n, comm_host_job *job, filo_dtype dt)
{
    size_t count = job->count;
    float *tmp = malloc(count ? count * sizeof *tmp : 1);
    if (!tmp)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory converting %zu %s elements to f32", count,
                         filo_dtype_name(dt));
    void *buf = job->buf;
    filo_status s = filo_convert(buf, dt, tmp, FILO_F32, count);
    if (s == FILO_OK) {
        job->buf = tmp;
        job->dt = FILO_F32;
        s = n->exec(n->ctx, job);
    }
    if (s == FILO_OK)
        s = filo_convert(tmp, FILO_F32, buf, dt, count);
    free(tmp);
    return s;
}

filo_status comm_nccl_all_reduce(comm_nccl *n, void *buf, size_t count, filo_dtype dt, filo_reduce_op op,
                                 void *stream, const comm_call *call)
{
    FILO_TRY(check_usable(n, stream, call, __func__));
    comm_host_job job;
    memset(&job, 0, sizeof job);
    job.kind = COMM_JOB_ALL_REDUCE;
    job.buf = buf;
    job.count = count;
    job.dt = dt;
    job.op = op;
    job.call = *call;
    switch (dt) {
    case FILO_F32:
    case FILO_F64:
    case FILO_I32:
    case FILO_I64: return n->exec(n->ctx, &job);
    case FILO_BF16:
    case FILO_F16: return reduce_16bit(n, &job, dt);
    default: break;
    }
    char d[256];
    return FILO_FAIL(FILO_ERR_DTYPE, "%s: no NCCL all-reduce for %s", comm_call_describe(n->rank, call, d, sizeof d),
                     filo_dtype_name(dt));
}

filo_status comm_nccl_broadcast(comm_nccl *n, void *buf, size_t bytes, int root, void *stream, const comm_call *call)
{
    FILO_TRY(check_usable(n, stream, call, __func__));
    comm_host_job job;
    memset(&job, 0, sizeof job);
    job.kind = COMM_JOB_BROADCAST;
    job.buf = buf;
    job.bytes = bytes;
    job.root = root;
    job.call = *call;
    return n->exec(n->ctx, &job);
}

filo_status comm_nccl_all_gather(comm_nccl *n, const void *in, size_t bytes, void *out, void *stream,
                                 const comm_call *call)
{
    FILO_TRY(check_usable(n, stream, call, __func__));
    comm_host_job job;
    memset(&job, 0, sizeof job);
    job.kind = COMM_JOB_ALL_GATHER;
    job.in = in;
    job.out = out;
    job.bytes = bytes;
    job.call = *call;
    return n->exec(n->ctx, &job);
}

filo_status comm_nccl_poll(comm_nccl *n)
{
    if (n->aborted)
        return FILO_FAIL(FILO_ERR_COMM, "rank %d: the emulated NCCL communicator on cuda:%d was aborted", n->rank,
                         n->device);
    return FILO_OK;
}

void comm_nccl_abort(comm_nccl *n)
{
    if (n)
        n->aborted = 1;
}

void comm_nccl_free(comm_nccl *n) { free(n); }

#else

#include <cuda_runtime_api.h>
#include <nccl.h>

/* How long comm_nccl_free lets ncclCommFinalize flush before it aborts instead. */
#define FINALIZE_LIMIT_S 30.0

struct comm_nccl {
    ncclComm_t comm;
    int rank, world, device;
    int aborted;
};

_Static_assert(sizeof(ncclUniqueId) == NCCL_ID_BYTES, "the exchanged id must be NCCL's whole unique id");

/* FILO_ERR_CUDA for CUDA failures inside NCCL, FILO_ERR_COMM for the rest (peers, network,
 * usage), with NCCL's own explanation of the last error. */
static filo_status nccl_fail(comm_nccl *n, ncclComm_t comm, ncclResult_t r, const char *what, const char *where)
{
    const char *last = ncclGetLastError(comm);
    return filo_error_set(r == ncclUnhandledCudaError ? FILO_ERR_CUDA : FILO_ERR_COMM, where,
                          "rank %d: %s on cuda:%d failed: %s (%s)", n->rank, what, n->device, ncclGetErrorString(r),
                          last && *last ? last : "no further detail from NCCL");
}

static void pause_briefly(void)
{
    struct timespec ts = {0, 1000000L};
    nanosleep(&ts, NULL);
}

/* A non-blocking communicator may answer ncclInProgress; its state must then be polled until it
 * settles before the next NCCL call. Returns the settled state, or ncclInProgress at the deadline. */
static ncclResult_t settle(ncclComm_t comm, ncclResult_t r, double deadline)
{
    while (r == ncclInProgress) {
        if (comm_now() > deadline)
            return ncclInProgress;
        pause_briefly();
        ncclResult_t state = ncclSuccess;
        ncclResult_t q = ncclCommGetAsyncError(comm, &state);
        if (q != ncclSuccess)
            return q;
        r = state;
    }
    return r;
}

static filo_status set_device(comm_nccl *n, const char *where)
{
    cudaError_t e = cudaSetDevice(n->device);
    if (e != cudaSuccess)
        return filo_error_set(FILO_ERR_CUDA, where, "rank %d: cudaSetDevice(%d) failed: %s", n->rank, n->device,
                              cudaGetErrorString(e));
    return FILO_OK;
}

filo_status comm_nccl_open(int rank, int world, int device_index, comm_host_exec_fn exec, void *ctx,
                           double deadline, comm_nccl **out)
{
    FILO_TRY(check_open_args(rank, world, device_index, exec, out));
    comm_nccl probe = {NULL, rank, world, device_index, 0};
    FILO_TRY(set_device(&probe, __func__));
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess)
            return nccl_fail(&probe, NULL, r, "ncclGetUniqueId", __func__);
    }
    FILO_TRY(exchange_id(exec, ctx, deadline, &id));

    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t comm = NULL;
    ncclResult_t r = ncclCommInitRankConfig(&comm, world, id, rank, &config);
    if (comm && (r == ncclSuccess || r == ncclInProgress))
        r = settle(comm, r, deadline);
    if (r == ncclInProgress) {
        ncclCommAbort(comm);
        return FILO_FAIL(FILO_ERR_TIMEOUT,
                         "rank %d: NCCL initialization on cuda:%d (world of %d) did not finish by the deadline: "
                         "another rank did not join",
                         rank, device_index, world);
    }
    if (r != ncclSuccess) {
        filo_status s = nccl_fail(&probe, comm, r, "ncclCommInitRankConfig", __func__);
        if (comm)
            ncclCommAbort(comm);
        return s;
    }
    comm_nccl *n = calloc(1, sizeof *n);
    if (!n) {
        ncclCommAbort(comm);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    }
    *n = probe;
    n->comm = comm;
    *out = n;
    return FILO_OK;
}

static int nccl_type(filo_dtype dt, ncclDataType_t *out)
{
    switch (dt) {
    case FILO_F32: *out = ncclFloat32; return 1;
    case FILO_F64: *out = ncclFloat64; return 1;
    case FILO_BF16: *out = ncclBfloat16; return 1;
    case FILO_F16: *out = ncclFloat16; return 1;
    case FILO_I32: *out = ncclInt32; return 1;
    case FILO_I64: *out = ncclInt64; return 1;
    default: return 0;
    }
}

static int nccl_op(filo_reduce_op op, ncclRedOp_t *out)
{
    switch (op) {
    case FILO_REDUCE_SUM: *out = ncclSum; return 1;
    case FILO_REDUCE_AVG: *out = ncclAvg; return 1;
    case FILO_REDUCE_MAX: *out = ncclMax; return 1;
    case FILO_REDUCE_MIN: *out = ncclMin; return 1;
    }
    return 0;
}

/* The common tail of every enqueue: settle a non-blocking answer, then report. */
static filo_status enqueued(comm_nccl *n, ncclResult_t r, const char *fn, const comm_call *call, const char *where)
{
    r = settle(n->comm, r, call->deadline);
    char d[256], what[320];
    comm_call_describe(n->rank, call, d, sizeof d);
    if (r == ncclInProgress)
        return filo_error_set(FILO_ERR_TIMEOUT, where, "%s: %s on cuda:%d was still being enqueued at the deadline", d,
                              fn, n->device);
    if (r != ncclSuccess) {
        /* nccl_fail names the rank itself: describe the call without it. */
        snprintf(what, sizeof what, "%s for %s #%lld (%s)", fn, call->op, (long long)call->seq,
                 call->label ? call->label : "");
        return nccl_fail(n, n->comm, r, what, where);
    }
    return FILO_OK;
}

static filo_status check_usable(comm_nccl *n, const comm_call *call, const char *where)
{
    if (n->aborted) {
        char d[256];
        return filo_error_set(FILO_ERR_COMM, where, "%s: the NCCL communicator on cuda:%d was aborted",
                              comm_call_describe(n->rank, call, d, sizeof d), n->device);
    }
    return set_device(n, where);
}

filo_status comm_nccl_all_reduce(comm_nccl *n, void *buf, size_t count, filo_dtype dt, filo_reduce_op op,
                                 void *stream, const comm_call *call)
{
    FILO_TRY(check_usable(n, call, __func__));
    ncclDataType_t type;
    ncclRedOp_t red;
    char d[256];
    if (!nccl_type(dt, &type))
        return FILO_FAIL(FILO_ERR_DTYPE, "%s: NCCL has no %s", comm_call_describe(n->rank, call, d, sizeof d),
                         filo_dtype_name(dt));
    if (!nccl_op(op, &red))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "%s: unknown reduce op %d", comm_call_describe(n->rank, call, d, sizeof d),
                         (int)op);
    ncclResult_t r = ncclAllReduce(buf, buf, count, type, red, n->comm, (cudaStream_t)stream);
    return enqueued(n, r, "ncclAllReduce", call, __func__);
}

filo_status comm_nccl_broadcast(comm_nccl *n, void *buf, size_t bytes, int root, void *stream, const comm_call *call)
{
    FILO_TRY(check_usable(n, call, __func__));
    ncclResult_t r = ncclBroadcast(buf, buf, bytes, ncclUint8, root, n->comm, (cudaStream_t)stream);
    return enqueued(n, r, "ncclBroadcast", call, __func__);
}

filo_status comm_nccl_all_gather(comm_nccl *n, const void *in, size_t bytes, void *out, void *stream,
                                 const comm_call *call)
{
    FILO_TRY(check_usable(n, call, __func__));
    ncclResult_t r = ncclAllGather(in, out, bytes, ncclUint8, n->comm, (cudaStream_t)stream);
    return enqueued(n, r, "ncclAllGather", call, __func__);
}

filo_status comm_nccl_poll(comm_nccl *n)
{
    if (n->aborted)
        return FILO_FAIL(FILO_ERR_COMM, "rank %d: the NCCL communicator on cuda:%d was aborted", n->rank, n->device);
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(n->comm, &state);
    if (r != ncclSuccess)
        return nccl_fail(n, n->comm, r, "ncclCommGetAsyncError", __func__);
    if (state != ncclSuccess && state != ncclInProgress)
        return nccl_fail(n, n->comm, state, "an asynchronous NCCL operation", __func__);
    return FILO_OK;
}

void comm_nccl_abort(comm_nccl *n)
{
    if (!n || n->aborted)
        return;
    n->aborted = 1;
    /* The watchdog calls this from its own thread, whose current device may be another. */
    cudaSetDevice(n->device);
    ncclCommAbort(n->comm);
}

void comm_nccl_free(comm_nccl *n)
{
    if (!n)
        return;
    if (!n->aborted) {
        /* Finalize flushes what is still enqueued; a peer that left can stall it, so it is
         * bounded, and past the bound the communicator is aborted rather than destroyed. */
        cudaSetDevice(n->device);
        ncclResult_t r = settle(n->comm, ncclCommFinalize(n->comm), comm_now() + FINALIZE_LIMIT_S);
        if (r == ncclSuccess)
            ncclCommDestroy(n->comm);
        else
            ncclCommAbort(n->comm);
    }
    free(n);
}

#endif
