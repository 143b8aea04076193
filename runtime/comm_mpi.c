/* The MPI host transport of filo_comm, for launches by mpirun: the collectives of MPI_COMM_WORLD
 * (on a duplicate, so that filo's traffic never meets the application's and MPI errors come back
 * as return codes instead of ending the job).
 *
 * Deadlines. MPI's blocking collectives cannot be bounded, so each call starts the non-blocking
 * form and polls MPI_Test, sleeping between polls (from 20 us, doubling to 1 ms: two ranks
 * may share one core, and a spinning rank would starve the one it waits for) until the request
 * finishes or the deadline passes.
 *
 * Staging. A collective that timed out cannot be withdrawn (MPI_Cancel does not apply to
 * collectives): MPI may still write its buffer later, after the caller has freed its tensor. So
 * MPI only ever sees this transport's own staging buffer, and the caller's data is copied in and
 * out in chunks of at most MPI_CHUNK bytes (which also keeps every count below INT_MAX). After a
 * timeout the staging buffer goes with the request and is never reused, and MPI_Finalize is
 * skipped at exit while such a request is pending (finalizing would wait for it forever; mpirun
 * then ends the job, as it must, since the world is broken). */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_internal.h"
#include "error.h"

#define MPI_CHUNK ((size_t)16 << 20)
/* free gives a collective that timed out this long to finish after all (a late rank that did
 * come), so that MPI can still be finalized cleanly. */
#define ORPHAN_GRACE_S 2.0

typedef struct mpi_host {
    comm_host base;
    MPI_Comm comm;
    unsigned char *stage;
    size_t stage_size;
    MPI_Request orphan;          /* a collective that timed out, or MPI_REQUEST_NULL */
    unsigned char *orphan_stage; /* its staging buffer, MPI's until the request finishes */
    int broken;
} mpi_host;

/* Collectives that timed out and never finished, over all communicators: MPI_Finalize would
 * wait for them. */
static int orphans_pending;
static int finalize_registered;
/* The thread level MPI gave us, and the MPI transports open now: each communicator has its own
 * worker thread, so two open at once call MPI from two threads, which needs MPI_THREAD_MULTIPLE
 * (one alone needs only MPI_THREAD_SERIALIZED). */
static int thread_level = MPI_THREAD_SINGLE;
static int open_transports;

static void finalize_at_exit(void)
{
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && orphans_pending == 0)
        MPI_Finalize();
}

static filo_status mpi_error(const mpi_host *h, int rc, const char *what, const comm_call *call)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", rc);
    char d[512];
    return FILO_FAIL(FILO_ERR_COMM, "%s: %s failed: %s", comm_call_describe(h->base.rank, call, d, sizeof d), what,
                     text);
}

static void nap(long ns)
{
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* Polls req until it finishes or the call's deadline passes. */
static filo_status mpi_wait(mpi_host *h, MPI_Request *req, const char *what, const comm_call *call)
{
    long ns = 20000;
    for (;;) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            h->broken = 1;
            return mpi_error(h, rc, what, call);
        }
        if (done)
            return FILO_OK;
        if (comm_now() >= call->deadline)
            break;
        nap(ns);
        ns = ns * 2 > 1000000 ? 1000000 : ns * 2;
    }
    h->broken = 1;
    h->orphan = *req;
    h->orphan_stage = h->stage;
    h->stage = NULL;
    h->stage_size = 0;
    orphans_pending++;
    char d[512];
    return FILO_FAIL(FILO_ERR_TIMEOUT, "%s: timed out in %s: some rank has not made this call (MPI cannot tell which)",
                     comm_call_describe(h->base.rank, call, d, sizeof d), what);
}

static filo_status usable(const mpi_host *h, const comm_call *call)
{
    if (!h->broken)
        return FILO_OK;
    char d[512];
    return FILO_FAIL(FILO_ERR_COMM, "%s: MPI failed in an earlier collective and cannot be used again",
                     comm_call_describe(h->base.rank, call, d, sizeof d));
}

static filo_status reserve_stage(mpi_host *h, size_t size)
{
    if (h->stage && h->stage_size >= size)
        return FILO_OK;
    unsigned char *p = realloc(h->stage, size ? size : 1);
    if (!p)
        return FILO_FAIL(FILO_ERR_OOM, "cannot allocate %zu bytes of MPI staging memory", size);
    h->stage = p;
    h->stage_size = size;
    return FILO_OK;
}

static int mpi_type(filo_dtype dt, MPI_Datatype *out)
{
    switch (dt) {
    case FILO_F32: *out = MPI_FLOAT; return 1;
    case FILO_F64: *out = MPI_DOUBLE; return 1;
    case FILO_I32: *out = MPI_INT32_T; return 1;
    case FILO_I64: *out = MPI_INT64_T; return 1;
    default: return 0;
    }
}

static filo_status mpi_all_reduce(comm_host *base, void *buf, size_t count, filo_dtype dt, filo_reduce_op op,
                                  const comm_call *call)
{
    mpi_host *h = (mpi_host *)base;
    FILO_TRY(usable(h, call));
    MPI_Datatype type;
    if (!mpi_type(dt, &type))
        return FILO_FAIL(FILO_ERR_DTYPE, "MPI all_reduce of %s: host collectives take f32, f64, i32 and i64",
                         filo_dtype_name(dt));
    MPI_Op mop = op == FILO_REDUCE_MAX ? MPI_MAX : op == FILO_REDUCE_MIN ? MPI_MIN : MPI_SUM;
    size_t esize = filo_dtype_size(dt), per = MPI_CHUNK / esize;
    size_t off = 0;
    do {
        size_t n = count - off < per ? count - off : per;
        FILO_TRY(reserve_stage(h, n * esize));
        memcpy(h->stage, (unsigned char *)buf + off * esize, n * esize);
        MPI_Request req;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, h->stage, (int)n, type, mop, h->comm, &req);
        if (rc != MPI_SUCCESS)
            return mpi_error(h, rc, "MPI_Iallreduce", call);
        FILO_TRY(mpi_wait(h, &req, "MPI_Iallreduce", call));
        memcpy((unsigned char *)buf + off * esize, h->stage, n * esize);
        off += n;
    } while (off < count);
    if (op == FILO_REDUCE_AVG)
        comm_scale_avg(buf, count, dt, base->world);
    return FILO_OK;
}

static filo_status mpi_broadcast(comm_host *base, void *buf, size_t bytes, int root, const comm_call *call)
{
    mpi_host *h = (mpi_host *)base;
    FILO_TRY(usable(h, call));
    if (root < 0 || root >= base->world)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "broadcast from root %d in a world of %d ranks", root, base->world);
    size_t off = 0;
    do {
        size_t n = bytes - off < MPI_CHUNK ? bytes - off : MPI_CHUNK;
        FILO_TRY(reserve_stage(h, n));
        if (base->rank == root)
            memcpy(h->stage, (unsigned char *)buf + off, n);
        MPI_Request req;
        int rc = MPI_Ibcast(h->stage, (int)n, MPI_BYTE, root, h->comm, &req);
        if (rc != MPI_SUCCESS)
            return mpi_error(h, rc, "MPI_Ibcast", call);
        FILO_TRY(mpi_wait(h, &req, "MPI_Ibcast", call));
        if (base->rank != root)
            memcpy((unsigned char *)buf + off, h->stage, n);
        off += n;
    } while (off < bytes);
    return FILO_OK;
}

static filo_status mpi_all_gather(comm_host *base, const void *in, size_t bytes, void *out, const comm_call *call)
{
    mpi_host *h = (mpi_host *)base;
    FILO_TRY(usable(h, call));
    size_t w = (size_t)base->world;
    if (bytes > SIZE_MAX / w)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "all_gather of %zu bytes from %zu ranks", bytes, w);
    /* Each step gathers `per` bytes of every rank: its own slice, then everyone's after it. */
    size_t per = MPI_CHUNK / w ? MPI_CHUNK / w : 1;
    size_t off = 0;
    do {
        size_t n = bytes - off < per ? bytes - off : per;
        FILO_TRY(reserve_stage(h, n * (w + 1)));
        memcpy(h->stage, (const unsigned char *)in + off, n);
        MPI_Request req;
        int rc = MPI_Iallgather(h->stage, (int)n, MPI_BYTE, h->stage + n, (int)n, MPI_BYTE, h->comm, &req);
        if (rc != MPI_SUCCESS)
            return mpi_error(h, rc, "MPI_Iallgather", call);
        FILO_TRY(mpi_wait(h, &req, "MPI_Iallgather", call));
        for (size_t r = 0; r < w; r++)
            memcpy((unsigned char *)out + r * bytes + off, h->stage + n + r * n, n);
        off += n;
    } while (off < bytes);
    return FILO_OK;
}

static filo_status mpi_barrier(comm_host *base, const comm_call *call)
{
    mpi_host *h = (mpi_host *)base;
    FILO_TRY(usable(h, call));
    MPI_Request req;
    int rc = MPI_Ibarrier(h->comm, &req);
    if (rc != MPI_SUCCESS)
        return mpi_error(h, rc, "MPI_Ibarrier", call);
    return mpi_wait(h, &req, "MPI_Ibarrier", call);
}

static void mpi_abort(comm_host *base, const char *message)
{
    (void)base;
    (void)message;
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static void mpi_free(comm_host *base)
{
    if (!base)
        return;
    mpi_host *h = (mpi_host *)base;
    if (h->orphan != MPI_REQUEST_NULL) {
        double until = comm_now() + ORPHAN_GRACE_S;
        long ns = 20000;
        int done = 0;
        while (!done && MPI_Test(&h->orphan, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && comm_now() < until) {
            if (!done)
                nap(ns);
            ns = ns * 2 > 1000000 ? 1000000 : ns * 2;
        }
        if (done) {
            orphans_pending--;
            free(h->orphan_stage);
        }
        /* Otherwise the request and its buffer stay MPI's: neither is freed. */
    }
    MPI_Comm_free(&h->comm);
    free(h->stage);
    free(h);
    __atomic_sub_fetch(&open_transports, 1, __ATOMIC_SEQ_CST);
}

static const comm_host_ops mpi_ops = {
    .name = "mpi",
    .all_reduce = mpi_all_reduce,
    .broadcast = mpi_broadcast,
    .all_gather = mpi_all_gather,
    .barrier = mpi_barrier,
    .abort = mpi_abort,
    .free = mpi_free,
};

static const char *thread_level_name(int level)
{
    switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
    }
    return "an unknown level";
}

/* Initializes MPI unless the application did; either way it must allow calls from the
 * communicator's worker thread. */
static filo_status ensure_init(void)
{
    int initialized = 0, finalized = 0, provided = MPI_THREAD_SINGLE;
    MPI_Finalized(&finalized);
    if (finalized)
        return FILO_FAIL(FILO_ERR_STATE, "MPI was already finalized in this process");
    MPI_Initialized(&initialized);
    if (!initialized) {
        /* MULTIPLE when the library has it: a CPU and a device communicator may both be open. */
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
        if (rc != MPI_SUCCESS)
            return FILO_FAIL(FILO_ERR_COMM, "MPI_Init_thread failed (MPI error %d)", rc);
        if (!finalize_registered) {
            finalize_registered = 1;
            atexit(finalize_at_exit);
        }
    } else {
        MPI_Query_thread(&provided);
    }
    if (provided < MPI_THREAD_SERIALIZED)
        return FILO_FAIL(FILO_ERR_COMM,
                         "MPI provides %s, but filo's collectives run on a worker thread and need "
                         "MPI_THREAD_SERIALIZED%s",
                         thread_level_name(provided),
                         initialized ? ": initialize MPI with MPI_Init_thread(..., MPI_THREAD_SERIALIZED, ...)" : "");
    thread_level = provided;
    return FILO_OK;
}

filo_status comm_mpi_open(const filo_dist_env *env, comm_host **out)
{
    *out = NULL;
    FILO_TRY(ensure_init());
    int rank = -1, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (env && (env->rank != rank || env->world_size != size))
        return FILO_FAIL(FILO_ERR_COMM,
                         "the environment says rank %d of %d, but MPI says rank %d of %d: launch every rank with "
                         "the same mpirun",
                         env->rank, env->world_size, rank, size);
    if (__atomic_add_fetch(&open_transports, 1, __ATOMIC_SEQ_CST) > 1 && thread_level < MPI_THREAD_MULTIPLE) {
        __atomic_sub_fetch(&open_transports, 1, __ATOMIC_SEQ_CST);
        return FILO_FAIL(FILO_ERR_UNSUPPORTED,
                         "rank %d: a second communicator over MPI needs MPI_THREAD_MULTIPLE, and this MPI provides "
                         "%s: free the first one, or use one communicator",
                         rank, thread_level_name(thread_level));
    }
    mpi_host *h = calloc(1, sizeof *h);
    if (!h) {
        __atomic_sub_fetch(&open_transports, 1, __ATOMIC_SEQ_CST);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    }
    h->base = (comm_host){.ops = &mpi_ops, .rank = rank, .world = size};
    h->orphan = MPI_REQUEST_NULL;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &h->comm);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_set_errhandler(h->comm, MPI_ERRORS_RETURN);
    if (rc != MPI_SUCCESS) {
        char text[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(rc, text, &len);
        free(h);
        __atomic_sub_fetch(&open_transports, 1, __ATOMIC_SEQ_CST);
        return FILO_FAIL(FILO_ERR_COMM, "rank %d: MPI_Comm_dup of MPI_COMM_WORLD failed: %s", rank, text);
    }
    *out = &h->base;
    return FILO_OK;
}

int comm_mpi_available(void) { return 1; }
