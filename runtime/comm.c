/* The communicator of filo/dist.h: argument checks, sequence numbers, work handles, deadlines
 * and the broken state, over the transports of comm_internal.h.
 *
 * Threads. A worker thread is the CPU's collective stream: it runs host jobs in the order they
 * were started and is the only thread that calls the host transport after init, so transports
 * need no locks. (Two communicators alive at once have two workers: both may call MPI together,
 * and must both progress, so comm_mpi.c cannot hold a lock for a whole collective.)
 *
 * A device communicator also has a watchdog thread: device collectives never block the host, so
 * nobody else would notice one that hangs; it polls their done events and NCCL's asynchronous
 * error, and past the deadline aborts NCCL, which unblocks the GPU, and marks the communicator
 * broken.
 *
 * Locks. `issue` serializes starts, so sequence numbers follow the order collectives are issued
 * (and the watchdog takes it around ncclCommAbort, which must not race an enqueue); `lock`
 * guards the queue, the in-flight list, work states, the broken state and the stats. Order:
 * issue, then lock.
 *
 * Lifetime. Work handles are reference counted (the caller, the worker or watchdog while they
 * hold the work), and the communicator's memory outlives filo_comm_free until the last handle is
 * freed, so a handle freed after its communicator is still safe. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "comm_internal.h"
#include "error.h"

#define DEFAULT_TIMEOUT_S 600.0
/* How long a host wait outlasts the deadline before it stops trusting the transport to report
 * the timeout itself. */
#define WAIT_GRACE_S 2.0
#define WATCHDOG_PERIOD_S 0.05
#define MESSAGE_MAX 1024
#define LABEL_MAX 96

struct filo_comm_work {
    filo_comm *comm;
    int refs;           /* comm->lock */
    int on_device;      /* NCCL on the collective stream; else a job of the worker */
    int waited;
    int done;           /* comm->lock: host: the worker finished; device: seen complete */
    filo_status status; /* comm->lock: the failure, from whichever thread saw it */
    char message[MESSAGE_MAX];
    comm_host_job job;  /* job.call.label points at label */
    char label[LABEL_MAX];
    filo_event *done_event;
    filo_comm_work *next; /* the worker's queue or the watchdog's in-flight list */
};

struct filo_comm {
    int rank, world;
    filo_device device;
    double timeout_s;
    comm_host *host;
    const char *host_name; /* kept after the transport is freed, for late messages */
    filo_stream *stream; /* device communicator: the collective stream */
    filo_event *ready;   /* reused by every device start: where the caller's stream stood */
    comm_nccl *nccl;
    int nccl_aborted;    /* lock */

    pthread_mutex_t issue;
    int64_t seq; /* issue */

    pthread_mutex_t lock;
    pthread_cond_t work_cv;  /* the worker: a job was queued, or stop */
    pthread_cond_t done_cv;  /* waiters: a job finished */
    pthread_cond_t watch_cv; /* the watchdog: device work started, or stop */
    filo_comm_work *queue_head, *queue_tail;
    filo_comm_work *inflight;
    int stopping;
    int have_worker, have_watchdog;
    pthread_t worker, watchdog;
    int broken;
    filo_status broken_status;
    char broken_why[MESSAGE_MAX];
    filo_comm_stats stats;
    int64_t live_works; /* work handles whose memory is not released yet */
    int freed;
};

/* ---- small helpers ---- */

static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *m, double until)
{
    double whole = floor(until);
    struct timespec ts = {(time_t)whole, (long)((until - whole) * 1e9)};
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_nsec = 999999999L;
    pthread_cond_timedwait(cv, m, &ts);
}

static void mark_broken_locked(filo_comm *comm, filo_status status, const char *why)
{
    if (comm->broken)
        return;
    comm->broken = 1;
    comm->broken_status = status;
    snprintf(comm->broken_why, sizeof comm->broken_why, "%s", why);
}

static filo_status broken_error_locked(filo_comm *comm, const char *where)
{
    return filo_error_set(FILO_ERR_COMM, where, "rank %d: the communicator is broken by an earlier failure (%s): %s",
                          comm->rank, filo_status_name(comm->broken_status), comm->broken_why);
}

static filo_status check_usable(filo_comm *comm, const char *where)
{
    if (!comm)
        return filo_error_set(FILO_ERR_INVALID_ARG, where, "comm is NULL");
    pthread_mutex_lock(&comm->lock);
    filo_status s = FILO_OK;
    if (comm->broken)
        s = broken_error_locked(comm, where);
    else if (comm->freed || comm->stopping)
        s = filo_error_set(FILO_ERR_STATE, where, "rank %d: the communicator was freed", comm->rank);
    pthread_mutex_unlock(&comm->lock);
    return s;
}

static void comm_destroy(filo_comm *comm)
{
    pthread_mutex_destroy(&comm->issue);
    pthread_mutex_destroy(&comm->lock);
    pthread_cond_destroy(&comm->work_cv);
    pthread_cond_destroy(&comm->done_cv);
    pthread_cond_destroy(&comm->watch_cv);
    free(comm);
}

/* ---- work handles ---- */

static filo_status work_new(filo_comm *comm, int on_device, const char *label, const char *where,
                            filo_comm_work **out)
{
    filo_comm_work *w = calloc(1, sizeof *w);
    if (!w)
        return filo_error_set(FILO_ERR_OOM, where, "out of host memory for a work handle");
    w->comm = comm;
    w->refs = 1;
    w->on_device = on_device;
    snprintf(w->label, sizeof w->label, "%s", label ? label : "");
    if (on_device) {
        filo_status s = filo_event_create(comm->device, &w->done_event);
        if (s != FILO_OK) {
            free(w);
            return s;
        }
    }
    pthread_mutex_lock(&comm->lock);
    comm->live_works++;
    pthread_mutex_unlock(&comm->lock);
    *out = w;
    return FILO_OK;
}

/* Drops one reference (comm->lock held). Returns 1 when that released the communicator's last
 * handle after filo_comm_free: the caller destroys it once it has unlocked. */
static int work_release_locked(filo_comm_work *w)
{
    filo_comm *comm = w->comm;
    if (--w->refs > 0)
        return 0;
    filo_event_destroy(w->done_event);
    free(w);
    comm->live_works--;
    return comm->freed && comm->live_works == 0;
}

static void work_drop(filo_comm_work *w)
{
    filo_comm *comm = w->comm;
    pthread_mutex_lock(&comm->lock);
    int last = work_release_locked(w);
    pthread_mutex_unlock(&comm->lock);
    if (last)
        comm_destroy(comm);
}

static void work_fail_locked(filo_comm_work *w, filo_status status, const char *message)
{
    if (w->status != FILO_OK)
        return;
    w->status = status;
    snprintf(w->message, sizeof w->message, "%s", message);
}

/* ---- the worker: the CPU's collective stream ---- */

static filo_status run_job(filo_comm *comm, const comm_host_job *j)
{
    comm_host *h = comm->host;
    if (comm_now() >= j->call.deadline) {
        char d[256];
        return FILO_FAIL(FILO_ERR_TIMEOUT, "%s was still queued at its deadline (the %g s timeout)",
                         comm_call_describe(comm->rank, &j->call, d, sizeof d), comm->timeout_s);
    }
    switch (j->kind) {
    case COMM_JOB_ALL_REDUCE: return h->ops->all_reduce(h, j->buf, j->count, j->dt, j->op, &j->call);
    case COMM_JOB_BROADCAST: return h->ops->broadcast(h, j->buf, j->bytes, j->root, &j->call);
    case COMM_JOB_ALL_GATHER: return h->ops->all_gather(h, j->in, j->bytes, j->out, &j->call);
    case COMM_JOB_BARRIER: return h->ops->barrier(h, &j->call);
    }
    return FILO_FAIL(FILO_ERR_INTERNAL, "unknown host job kind %d", (int)j->kind);
}

static void *worker_main(void *arg)
{
    filo_comm *comm = arg;
    pthread_mutex_lock(&comm->lock);
    for (;;) {
        while (!comm->queue_head && !comm->stopping)
            pthread_cond_wait(&comm->work_cv, &comm->lock);
        filo_comm_work *w = comm->queue_head;
        if (!w)
            break;
        comm->queue_head = w->next;
        if (!comm->queue_head)
            comm->queue_tail = NULL;
        w->next = NULL;
        if (comm->broken) {
            char why[MESSAGE_MAX];
            broken_error_locked(comm, "filo_comm");
            snprintf(why, sizeof why, "%s", filo_last_error());
            work_fail_locked(w, FILO_ERR_COMM, why);
        } else if (comm->stopping) {
            char d[256], why[MESSAGE_MAX];
            snprintf(why, sizeof why, "filo_comm_free: %s was never run: the communicator was freed first",
                     comm_call_describe(comm->rank, &w->job.call, d, sizeof d));
            work_fail_locked(w, FILO_ERR_STATE, why);
        } else {
            pthread_mutex_unlock(&comm->lock);
            filo_error_clear();
            filo_status s = run_job(comm, &w->job);
            pthread_mutex_lock(&comm->lock);
            if (s != FILO_OK) {
                work_fail_locked(w, s, filo_last_error());
                mark_broken_locked(comm, s, filo_last_error());
            }
        }
        w->done = 1;
        pthread_cond_broadcast(&comm->done_cv);
        work_release_locked(w);
    }
    pthread_mutex_unlock(&comm->lock);
    return NULL;
}

static void enqueue_host(filo_comm *comm, filo_comm_work *w)
{
    pthread_mutex_lock(&comm->lock);
    w->refs++;
    if (comm->queue_tail)
        comm->queue_tail->next = w;
    else
        comm->queue_head = w;
    comm->queue_tail = w;
    pthread_cond_signal(&comm->work_cv);
    pthread_mutex_unlock(&comm->lock);
}

/* Blocks until the worker has run w, at most until its deadline plus a grace. */
static filo_status wait_host(filo_comm_work *w, const char *where)
{
    filo_comm *comm = w->comm;
    double t0 = comm_now();
    double until = w->job.call.deadline + WAIT_GRACE_S;
    pthread_mutex_lock(&comm->lock);
    while (!w->done && w->status == FILO_OK && comm_now() < until)
        timed_wait(&comm->done_cv, &comm->lock, until);
    if (!w->done && w->status == FILO_OK) {
        char d[256], why[MESSAGE_MAX];
        snprintf(why, sizeof why, "%s did not finish within the %g s timeout (the %s transport did not return)",
                 comm_call_describe(comm->rank, &w->job.call, d, sizeof d), comm->timeout_s, comm->host_name);
        work_fail_locked(w, FILO_ERR_TIMEOUT, why);
        mark_broken_locked(comm, FILO_ERR_TIMEOUT, why);
    }
    comm->stats.wait_s += comm_now() - t0;
    filo_status s = w->status;
    if (s != FILO_OK)
        filo_error_set(s, where, "%s", w->message);
    pthread_mutex_unlock(&comm->lock);
    return s;
}

/* comm_nccl's host exec: the NCCL id exchange, and every collective of the emulated NCCL. The
 * job's call (sequence number, deadline) is the caller's. */
static filo_status comm_exec(void *ctx, const comm_host_job *job)
{
    filo_comm *comm = ctx;
    filo_comm_work *w;
    FILO_TRY(work_new(comm, 0, job->call.label, "filo_comm", &w));
    w->job = *job;
    w->job.call.label = w->label;
    enqueue_host(comm, w);
    filo_status s = wait_host(w, "filo_comm");
    work_drop(w);
    return s;
}

/* ---- the watchdog of device work ---- */

/* Fails every device work still in flight and aborts NCCL once (which frees the GPU from the
 * hung kernels); `late`, if any, gets `status` and `why`, the others the broken error. */
static void device_fail(filo_comm *comm, filo_status status, const char *why, filo_comm_work *late)
{
    pthread_mutex_lock(&comm->issue);
    pthread_mutex_lock(&comm->lock);
    mark_broken_locked(comm, status, why);
    if (late)
        work_fail_locked(late, status, why);
    char broken[MESSAGE_MAX];
    broken_error_locked(comm, "filo_comm_work_wait");
    snprintf(broken, sizeof broken, "%s", filo_last_error());
    while (comm->inflight) {
        filo_comm_work *w = comm->inflight;
        comm->inflight = w->next;
        w->next = NULL;
        work_fail_locked(w, FILO_ERR_COMM, broken);
        work_release_locked(w);
    }
    int abort_now = !comm->nccl_aborted;
    comm->nccl_aborted = 1;
    pthread_mutex_unlock(&comm->lock);
    if (abort_now)
        comm_nccl_abort(comm->nccl);
    pthread_mutex_unlock(&comm->issue);
}

/* Removes finished works from the in-flight list; returns the first one past its deadline. */
static filo_comm_work *sweep_locked(filo_comm *comm, filo_status *query_status, char *query_error, size_t size)
{
    filo_comm_work *late = NULL;
    double now = comm_now();
    filo_comm_work **link = &comm->inflight;
    while (*link) {
        filo_comm_work *w = *link;
        int done = 0;
        filo_status s = filo_event_query(w->done_event, &done);
        if (s != FILO_OK && *query_status == FILO_OK) {
            *query_status = s;
            snprintf(query_error, size, "%s", filo_last_error());
        }
        if (done) {
            w->done = 1;
            *link = w->next;
            w->next = NULL;
            work_release_locked(w);
            continue;
        }
        if (!late && now > w->job.call.deadline)
            late = w;
        link = &w->next;
    }
    return late;
}

static void *watchdog_main(void *arg)
{
    filo_comm *comm = arg;
    char dev[32];
    filo_device_format(comm->device, dev, sizeof dev);
    pthread_mutex_lock(&comm->lock);
    for (;;) {
        if (!comm->inflight) {
            if (comm->stopping)
                break;
            pthread_cond_wait(&comm->watch_cv, &comm->lock);
            continue;
        }
        if (!comm->broken)
            timed_wait(&comm->watch_cv, &comm->lock, comm_now() + WATCHDOG_PERIOD_S);
        filo_status qs = FILO_OK;
        char qerr[MESSAGE_MAX / 2] = "";
        filo_comm_work *late = sweep_locked(comm, &qs, qerr, sizeof qerr);
        if (comm->broken && comm->inflight) {
            /* Broken elsewhere (a host collective, a failed start): nothing more will be issued,
             * and what is still running may wait forever for peers that gave up. */
            char why[MESSAGE_MAX];
            snprintf(why, sizeof why, "%s", comm->broken_why);
            filo_status st = comm->broken_status;
            pthread_mutex_unlock(&comm->lock);
            device_fail(comm, st, why, NULL);
            pthread_mutex_lock(&comm->lock);
            continue;
        }
        char why[MESSAGE_MAX];
        filo_status st = FILO_OK;
        if (late) {
            char d[256];
            comm_call_describe(comm->rank, &late->job.call, d, sizeof d);
            fprintf(stderr, "filo: %s on %s did not finish within %g s: aborting NCCL\n", d, dev, comm->timeout_s);
            fflush(stderr);
            st = FILO_ERR_TIMEOUT;
            snprintf(why, sizeof why, "%s on %s did not finish within the %g s timeout (NCCL was aborted)", d, dev,
                     comm->timeout_s);
        } else if (qs != FILO_OK) {
            st = qs;
            snprintf(why, sizeof why, "rank %d: a collective's event on %s failed: %s", comm->rank, dev, qerr);
        } else if (comm->inflight && comm_nccl_poll(comm->nccl) != FILO_OK) {
            st = FILO_ERR_COMM;
            snprintf(why, sizeof why, "%s", filo_last_error());
            fprintf(stderr, "filo: %s: aborting NCCL\n", why);
            fflush(stderr);
        }
        if (st != FILO_OK) {
            pthread_mutex_unlock(&comm->lock);
            device_fail(comm, st, why, late);
            pthread_mutex_lock(&comm->lock);
        }
    }
    pthread_mutex_unlock(&comm->lock);
    return NULL;
}

/* ---- the world-1 host transport ---- */

static filo_status single_all_reduce(comm_host *h, void *buf, size_t count, filo_dtype dt, filo_reduce_op op,
                                     const comm_call *call)
{
    /* One rank: every op, AVG included (a division by 1), leaves buf as it is. */
    (void)h; (void)buf; (void)count; (void)dt; (void)op; (void)call;
    return FILO_OK;
}

static filo_status single_broadcast(comm_host *h, void *buf, size_t bytes, int root, const comm_call *call)
{
    (void)h; (void)buf; (void)bytes; (void)root; (void)call;
    return FILO_OK;
}

static filo_status single_all_gather(comm_host *h, const void *in, size_t bytes, void *out, const comm_call *call)
{
    (void)h; (void)call;
    if (bytes && out != in)
        memmove(out, in, bytes);
    return FILO_OK;
}

static filo_status single_barrier(comm_host *h, const comm_call *call)
{
    (void)h; (void)call;
    return FILO_OK;
}

static void single_abort(comm_host *h, const char *message) { (void)h; (void)message; }
static void single_free(comm_host *h) { free(h); }

static const comm_host_ops single_ops = {"single", single_all_reduce, single_broadcast, single_all_gather,
                                         single_barrier, single_abort, single_free};

/* ---- init and free ---- */

int filo_dist_have_mpi(void) { return comm_mpi_available(); }
int filo_dist_have_nccl(void) { return comm_nccl_available(); }

static filo_status resolve_timeout(const filo_comm_options *opts, double *timeout, double *connect)
{
    if (opts && (!(opts->timeout_s >= 0) || !isfinite(opts->timeout_s)))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "opts->timeout_s = %g: expected a finite number of seconds >= 0 (0: default)",
                         opts->timeout_s);
    if (opts && (!(opts->connect_timeout_s >= 0) || !isfinite(opts->connect_timeout_s)))
        return FILO_FAIL(FILO_ERR_INVALID_ARG,
                         "opts->connect_timeout_s = %g: expected a finite number of seconds >= 0 (0: the timeout)",
                         opts->connect_timeout_s);
    *timeout = DEFAULT_TIMEOUT_S;
    const char *v = getenv("FILO_DIST_TIMEOUT");
    if (opts && opts->timeout_s > 0) {
        *timeout = opts->timeout_s;
    } else if (v) {
        char *end;
        double t = strtod(v, &end);
        if (end == v || *end || !(t > 0) || !isfinite(t))
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "FILO_DIST_TIMEOUT='%s' is not a positive number of seconds", v);
        *timeout = t;
    }
    *connect = opts && opts->connect_timeout_s > 0 ? opts->connect_timeout_s : *timeout;
    return FILO_OK;
}

static filo_status check_env(const filo_dist_env *env)
{
    if (env->world_size < 1 || env->rank < 0 || env->rank >= env->world_size)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "env: rank %d of world size %d is not a rank of that world", env->rank,
                         env->world_size);
    switch (env->launcher) {
    case FILO_LAUNCH_SINGLE:
        if (env->world_size != 1)
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "env: a launch without launcher has world size 1, not %d",
                             env->world_size);
        return FILO_OK;
    case FILO_LAUNCH_MPI:
    case FILO_LAUNCH_ENV: return FILO_OK;
    }
    return FILO_FAIL(FILO_ERR_INVALID_ARG, "env: unknown launcher %d", (int)env->launcher);
}

static filo_status open_host(const filo_dist_env *env, double connect_deadline, comm_host **out)
{
    switch (env->launcher) {
    case FILO_LAUNCH_SINGLE: {
        comm_host *h = calloc(1, sizeof *h);
        if (!h)
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
        h->ops = &single_ops;
        h->rank = 0;
        h->world = 1;
        *out = h;
        return FILO_OK;
    }
    case FILO_LAUNCH_MPI: return comm_mpi_open(env, out);
    case FILO_LAUNCH_ENV: return comm_tcp_open(env, connect_deadline, out);
    }
    return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown launcher %d", (int)env->launcher);
}

/* Stops the threads (the worker fails what is still queued; the watchdog first sees the
 * in-flight device work finish or time out) and releases the transports. */
static void comm_shutdown(filo_comm *comm)
{
    pthread_mutex_lock(&comm->lock);
    comm->stopping = 1;
    pthread_cond_broadcast(&comm->work_cv);
    pthread_cond_broadcast(&comm->watch_cv);
    pthread_mutex_unlock(&comm->lock);
    if (comm->have_worker)
        pthread_join(comm->worker, NULL);
    if (comm->have_watchdog)
        pthread_join(comm->watchdog, NULL);
    comm->have_worker = comm->have_watchdog = 0;
    if (comm->nccl)
        comm_nccl_free(comm->nccl);
    comm->nccl = NULL;
    filo_event_destroy(comm->ready);
    comm->ready = NULL;
    filo_stream_destroy(comm->stream);
    comm->stream = NULL;
    if (comm->host)
        comm->host->ops->free(comm->host);
    comm->host = NULL;
}

static filo_status comm_alloc(filo_comm **out)
{
    filo_comm *comm = calloc(1, sizeof *comm);
    if (!comm)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for a communicator");
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&comm->issue, NULL);
    pthread_mutex_init(&comm->lock, NULL);
    pthread_cond_init(&comm->work_cv, &attr);
    pthread_cond_init(&comm->done_cv, &attr);
    pthread_cond_init(&comm->watch_cv, &attr);
    pthread_condattr_destroy(&attr);
    *out = comm;
    return FILO_OK;
}

filo_status filo_comm_init(const filo_dist_env *env, filo_device device, const filo_comm_options *opts,
                           filo_comm **out)
{
    if (!env || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "env and out must not be NULL");
    *out = NULL;
    FILO_TRY(check_env(env));
    FILO_TRY(filo_device_check(device));
    double timeout = 0, connect = 0;
    FILO_TRY(resolve_timeout(opts, &timeout, &connect));
    double connect_deadline = comm_now() + connect;

    filo_comm *comm = NULL;
    FILO_TRY(comm_alloc(&comm));
    comm->rank = env->rank;
    comm->world = env->world_size;
    comm->device = device;
    comm->timeout_s = timeout;
    filo_status s = open_host(env, connect_deadline, &comm->host);
    if (s == FILO_OK && (comm->host->rank != env->rank || comm->host->world != env->world_size)) {
        s = FILO_FAIL(FILO_ERR_INTERNAL, "the %s transport joined as rank %d of %d, but env says rank %d of %d",
                      comm->host->ops->name, comm->host->rank, comm->host->world, env->rank, env->world_size);
    }
    if (s == FILO_OK) {
        comm->host_name = comm->host->ops->name;
        if (pthread_create(&comm->worker, NULL, worker_main, comm) != 0)
            s = FILO_FAIL(FILO_ERR_INTERNAL, "rank %d: could not start the communicator's worker thread", env->rank);
        else
            comm->have_worker = 1;
    }
    if (s == FILO_OK && device.type == FILO_DEVICE_CUDA) {
        s = filo_stream_create(device, &comm->stream);
        if (s == FILO_OK)
            s = filo_event_create(device, &comm->ready);
        if (s == FILO_OK)
            s = comm_nccl_open(env->rank, env->world_size, device.index, comm_exec, comm, connect_deadline,
                               &comm->nccl);
        if (s == FILO_OK) {
            if (pthread_create(&comm->watchdog, NULL, watchdog_main, comm) != 0)
                s = FILO_FAIL(FILO_ERR_INTERNAL, "rank %d: could not start the communicator's watchdog thread",
                              env->rank);
            else
                comm->have_watchdog = 1;
        }
    }
    if (s != FILO_OK) {
        /* The shutdown may overwrite this thread's message; keep the failure's. */
        char why[MESSAGE_MAX];
        snprintf(why, sizeof why, "%s", filo_last_error());
        comm_shutdown(comm);
        comm_destroy(comm);
        filo_error_set(s, __func__, "%s", why);
        return s;
    }
    *out = comm;
    return FILO_OK;
}

void filo_comm_free(filo_comm *comm)
{
    if (!comm)
        return;
    comm_shutdown(comm);
    pthread_mutex_lock(&comm->lock);
    comm->freed = 1;
    int last = comm->live_works == 0;
    pthread_mutex_unlock(&comm->lock);
    if (last)
        comm_destroy(comm);
}

int filo_comm_rank(const filo_comm *comm) { return comm ? comm->rank : 0; }
int filo_comm_size(const filo_comm *comm) { return comm ? comm->world : 0; }
filo_device filo_comm_device(const filo_comm *comm) { return comm ? comm->device : filo_cpu(); }
double filo_comm_timeout(const filo_comm *comm) { return comm ? comm->timeout_s : 0.0; }

const char *filo_comm_host_backend(const filo_comm *comm)
{
    return comm && comm->host_name ? comm->host_name : "none";
}

const char *filo_comm_device_backend(const filo_comm *comm)
{
    return comm && comm->device.type == FILO_DEVICE_CUDA ? "nccl" : "none";
}

/* ---- argument checks ---- */

static filo_status check_tensor(const filo_comm *comm, const filo_tensor *t, const char *what, const char *where)
{
    if (!t)
        return filo_error_set(FILO_ERR_INVALID_ARG, where, "%s is NULL", what);
    char desc[160], dev[32];
    filo_tensor_describe(t, desc, sizeof desc);
    if (!filo_tensor_is_contiguous(t))
        return filo_error_set(FILO_ERR_SHAPE, where, "%s %s must be contiguous (collectives work on its memory in place)",
                              what, desc);
    int on_cpu = t->device.type == FILO_DEVICE_CPU;
    if (!on_cpu && !filo_device_equal(t->device, comm->device))
        return filo_error_set(FILO_ERR_DEVICE, where, "%s %s is neither on the CPU nor on the communicator's device %s",
                              what, desc, filo_device_format(comm->device, dev, sizeof dev));
    switch (t->dtype) {
    case FILO_F32:
    case FILO_F64:
    case FILO_I32:
    case FILO_I64: return FILO_OK;
    case FILO_BF16:
    case FILO_F16:
        if (!on_cpu)
            return FILO_OK;
        return filo_error_set(FILO_ERR_DTYPE, where,
                              "%s %s: %s collectives run only on CUDA tensors (NCCL); the host transports take f32, f64, "
                              "i32 and i64",
                              what, desc, filo_dtype_name(t->dtype));
    default: break;
    }
    return filo_error_set(FILO_ERR_DTYPE, where, "%s %s: collectives take f32, f64, i32, i64 (and bf16, f16 on CUDA), not %s",
                          what, desc, filo_dtype_name(t->dtype));
}

static filo_status check_root(const filo_comm *comm, int root, const char *where)
{
    if (root < 0 || root >= comm->world)
        return filo_error_set(FILO_ERR_INVALID_ARG, where, "root %d is not a rank of this world of %d", root,
                              comm->world);
    return FILO_OK;
}

static filo_status check_work_out(filo_comm_work **work, const char *where)
{
    if (!work)
        return filo_error_set(FILO_ERR_INVALID_ARG, where, "work must not be NULL");
    *work = NULL;
    return FILO_OK;
}

/* ---- starting collectives ---- */

/* Device path, under `issue`: after the caller's stream, NCCL on the collective stream, then the
 * done event; the tensors' memory is recorded on the collective stream so the allocator does not
 * hand it out again while NCCL may still touch it. */
static filo_status launch_device(filo_comm *comm, filo_comm_work *w, const filo_tensor *t1, const filo_tensor *t2)
{
    filo_stream *cur;
    FILO_TRY(filo_stream_current(comm->device, &cur));
    FILO_TRY(filo_event_record(comm->ready, cur));
    FILO_TRY(filo_stream_wait_event(comm->stream, comm->ready));
    const comm_host_job *j = &w->job;
    void *native = filo_stream_native(comm->stream);
    switch (j->kind) {
    case COMM_JOB_ALL_REDUCE: FILO_TRY(comm_nccl_all_reduce(comm->nccl, j->buf, j->count, j->dt, j->op, native, &j->call)); break;
    case COMM_JOB_BROADCAST: FILO_TRY(comm_nccl_broadcast(comm->nccl, j->buf, j->bytes, j->root, native, &j->call)); break;
    case COMM_JOB_ALL_GATHER: FILO_TRY(comm_nccl_all_gather(comm->nccl, j->in, j->bytes, j->out, native, &j->call)); break;
    case COMM_JOB_BARRIER: return FILO_FAIL(FILO_ERR_INTERNAL, "a barrier is a host job");
    }
    FILO_TRY(filo_event_record(w->done_event, comm->stream));
    FILO_TRY(filo_tensor_record_stream(t1, comm->stream));
    if (t2)
        FILO_TRY(filo_tensor_record_stream(t2, comm->stream));
    pthread_mutex_lock(&comm->lock);
    w->refs++;
    w->next = comm->inflight;
    comm->inflight = w;
    pthread_cond_signal(&comm->watch_cv);
    pthread_mutex_unlock(&comm->lock);
    return FILO_OK;
}

/* Numbers the job, stamps its deadline and hands it to the worker or to NCCL. A failure once the
 * number is taken leaves this rank out of step with the others, so it breaks the communicator. */
static filo_status launch(filo_comm *comm, comm_host_job *job, int on_device, const filo_tensor *t1,
                          const filo_tensor *t2, const char *label, const char *where, filo_comm_work **out)
{
    filo_comm_work *w;
    FILO_TRY(work_new(comm, on_device, label, where, &w));
    pthread_mutex_lock(&comm->issue);
    filo_status s = check_usable(comm, where);
    if (s == FILO_OK) {
        job->call.seq = ++comm->seq;
        job->call.deadline = comm_now() + comm->timeout_s;
        w->job = *job;
        w->job.call.label = w->label;
        if (on_device) {
            s = launch_device(comm, w, t1, t2);
        } else {
            enqueue_host(comm, w);
        }
        pthread_mutex_lock(&comm->lock);
        if (s == FILO_OK) {
            comm->stats.collectives++;
            comm->stats.bytes += (int64_t)job->call.bytes;
        } else {
            mark_broken_locked(comm, s, filo_last_error());
        }
        pthread_mutex_unlock(&comm->lock);
    }
    pthread_mutex_unlock(&comm->issue);
    if (s != FILO_OK) {
        work_drop(w);
        return s;
    }
    *out = w;
    return FILO_OK;
}

filo_status filo_all_reduce_start(filo_comm *comm, filo_tensor *t, filo_reduce_op op, const char *label,
                                  filo_comm_work **work)
{
    FILO_TRY(check_work_out(work, __func__));
    FILO_TRY(check_usable(comm, __func__));
    FILO_TRY(check_tensor(comm, t, "t", __func__));
    if ((int)op < (int)FILO_REDUCE_SUM || (int)op > (int)FILO_REDUCE_MIN)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown reduce op %d", (int)op);
    comm_host_job job = {.kind = COMM_JOB_ALL_REDUCE, .buf = filo_tensor_data(t), .count = (size_t)filo_tensor_numel(t),
                         .dt = t->dtype, .op = op};
    job.call.op = "all_reduce";
    job.call.bytes = filo_tensor_nbytes(t);
    return launch(comm, &job, t->device.type == FILO_DEVICE_CUDA, t, NULL, label, __func__, work);
}

filo_status filo_broadcast_start(filo_comm *comm, filo_tensor *t, int root, const char *label, filo_comm_work **work)
{
    FILO_TRY(check_work_out(work, __func__));
    FILO_TRY(check_usable(comm, __func__));
    FILO_TRY(check_tensor(comm, t, "t", __func__));
    FILO_TRY(check_root(comm, root, __func__));
    comm_host_job job = {.kind = COMM_JOB_BROADCAST, .buf = filo_tensor_data(t), .bytes = filo_tensor_nbytes(t),
                         .dt = t->dtype, .root = root};
    job.call.op = "broadcast";
    job.call.bytes = job.bytes;
    return launch(comm, &job, t->device.type == FILO_DEVICE_CUDA, t, NULL, label, __func__, work);
}

filo_status filo_all_gather_start(filo_comm *comm, const filo_tensor *in, filo_tensor *out, const char *label,
                                  filo_comm_work **work)
{
    FILO_TRY(check_work_out(work, __func__));
    FILO_TRY(check_usable(comm, __func__));
    FILO_TRY(check_tensor(comm, in, "in", __func__));
    FILO_TRY(check_tensor(comm, out, "out", __func__));
    char a[160], b[160];
    if (out->dtype != in->dtype || !filo_device_equal(out->device, in->device))
        return FILO_FAIL(FILO_ERR_DTYPE, "out %s must have in's dtype and device (in is %s)",
                         filo_tensor_describe(out, a, sizeof a), filo_tensor_describe(in, b, sizeof b));
    int64_t n = filo_tensor_numel(in);
    if (filo_tensor_numel(out) != n * comm->world)
        return FILO_FAIL(FILO_ERR_SHAPE, "out %s must hold world size %d x %lld elements of in %s, not %lld",
                         filo_tensor_describe(out, a, sizeof a), comm->world, (long long)n,
                         filo_tensor_describe(in, b, sizeof b), (long long)filo_tensor_numel(out));
    comm_host_job job = {.kind = COMM_JOB_ALL_GATHER, .in = filo_tensor_data(in), .out = filo_tensor_data(out),
                         .bytes = filo_tensor_nbytes(in), .dt = in->dtype};
    job.call.op = "all_gather";
    job.call.bytes = job.bytes;
    return launch(comm, &job, in->device.type == FILO_DEVICE_CUDA, in, out, label, __func__, work);
}

/* ---- waiting ---- */

static filo_status wait_device(filo_comm_work *w)
{
    filo_comm *comm = w->comm;
    pthread_mutex_lock(&comm->lock);
    if (w->status == FILO_OK && !w->done && !comm->broken) {
        int done = 0;
        if (filo_event_query(w->done_event, &done) == FILO_OK && done)
            w->done = 1;
    }
    filo_status s = w->status;
    if (s != FILO_OK)
        filo_error_set(s, "filo_comm_work_wait", "%s", w->message);
    else if (!w->done && comm->broken)
        s = broken_error_locked(comm, "filo_comm_work_wait");
    pthread_mutex_unlock(&comm->lock);
    if (s != FILO_OK)
        return s;
    filo_stream *cur;
    FILO_TRY(filo_stream_current(w->done_event->device, &cur));
    return filo_stream_wait_event(cur, w->done_event);
}

filo_status filo_comm_work_wait(filo_comm_work *work)
{
    if (!work)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "work is NULL");
    work->waited = 1;
    if (work->on_device)
        return wait_device(work);
    return wait_host(work, __func__);
}

int filo_comm_work_done(filo_comm_work *work)
{
    if (!work)
        return 1;
    filo_comm *comm = work->comm;
    pthread_mutex_lock(&comm->lock);
    int done = work->done || work->status != FILO_OK;
    if (!done && work->on_device) {
        if (comm->broken) {
            done = 1;
        } else {
            int q = 0;
            if (filo_event_query(work->done_event, &q) != FILO_OK || q)
                done = 1;
        }
    }
    pthread_mutex_unlock(&comm->lock);
    return done;
}

void filo_comm_work_free(filo_comm_work *work)
{
    if (!work)
        return;
    if (!work->waited)
        filo_comm_work_wait(work);
    work_drop(work);
}

filo_status filo_all_reduce(filo_comm *comm, filo_tensor *t, filo_reduce_op op)
{
    filo_comm_work *w;
    FILO_TRY(filo_all_reduce_start(comm, t, op, NULL, &w));
    filo_status s = filo_comm_work_wait(w);
    work_drop(w);
    return s;
}

filo_status filo_broadcast(filo_comm *comm, filo_tensor *t, int root)
{
    filo_comm_work *w;
    FILO_TRY(filo_broadcast_start(comm, t, root, NULL, &w));
    filo_status s = filo_comm_work_wait(w);
    work_drop(w);
    return s;
}

filo_status filo_all_gather(filo_comm *comm, const filo_tensor *in, filo_tensor *out)
{
    filo_comm_work *w;
    FILO_TRY(filo_all_gather_start(comm, in, out, NULL, &w));
    filo_status s = filo_comm_work_wait(w);
    work_drop(w);
    return s;
}

/* ---- blocking host collectives ---- */

static filo_status host_blocking(filo_comm *comm, comm_host_job *job, const char *label, const char *where)
{
    filo_comm_work *w;
    FILO_TRY(launch(comm, job, 0, NULL, NULL, label, where, &w));
    filo_status s = wait_host(w, where);
    work_drop(w);
    return s;
}

filo_status filo_barrier(filo_comm *comm)
{
    FILO_TRY(check_usable(comm, __func__));
    if (comm->device.type == FILO_DEVICE_CUDA) {
        FILO_TRY(filo_device_synchronize(comm->device));
        FILO_TRY(check_usable(comm, __func__));
    }
    comm_host_job job = {.kind = COMM_JOB_BARRIER};
    job.call.op = "barrier";
    return host_blocking(comm, &job, NULL, __func__);
}

filo_status filo_comm_all_gather_bytes(filo_comm *comm, const void *in, size_t bytes, void *out)
{
    FILO_TRY(check_usable(comm, __func__));
    if (bytes && (!in || !out))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "in and out must not be NULL");
    comm_host_job job = {.kind = COMM_JOB_ALL_GATHER, .in = in, .out = out, .bytes = bytes};
    job.call.op = "all_gather";
    job.call.bytes = bytes;
    return host_blocking(comm, &job, "bytes", __func__);
}

filo_status filo_comm_broadcast_bytes(filo_comm *comm, void *buf, size_t bytes, int root)
{
    FILO_TRY(check_usable(comm, __func__));
    if (bytes && !buf)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "buf must not be NULL");
    FILO_TRY(check_root(comm, root, __func__));
    comm_host_job job = {.kind = COMM_JOB_BROADCAST, .buf = buf, .bytes = bytes, .root = root};
    job.call.op = "broadcast";
    job.call.bytes = bytes;
    return host_blocking(comm, &job, "bytes", __func__);
}

filo_status filo_comm_all_gather_varied(filo_comm *comm, const void *in, size_t bytes, void **out, size_t *lens)
{
    if (!out || !lens)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out and lens must not be NULL");
    *out = NULL;
    FILO_TRY(check_usable(comm, __func__));
    if (bytes && !in)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "in must not be NULL");
    int world = comm->world;
    uint64_t *all = calloc((size_t)world, sizeof *all);
    if (!all)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for %d lengths", world);
    uint64_t mine = bytes;
    comm_host_job job = {.kind = COMM_JOB_ALL_GATHER, .in = &mine, .out = all, .bytes = sizeof mine};
    job.call.op = "all_gather";
    job.call.bytes = sizeof mine;
    filo_status s = host_blocking(comm, &job, "varied lengths", __func__);
    uint64_t widest = 0, total = 0;
    for (int r = 0; s == FILO_OK && r < world; r++) {
        widest = all[r] > widest ? all[r] : widest;
        total += all[r];
        if (total < all[r] || all[r] > SIZE_MAX / (size_t)world)
            s = FILO_FAIL(FILO_ERR_INVALID_ARG, "the ranks' lengths overflow this host's address space");
    }
    unsigned char *pad = NULL, *gathered = NULL, *result = NULL;
    if (s == FILO_OK) {
        pad = calloc(1, widest ? (size_t)widest : 1);
        gathered = malloc(widest ? (size_t)widest * (size_t)world : 1);
        result = malloc(total ? (size_t)total : 1);
        if (!pad || !gathered || !result)
            s = FILO_FAIL(FILO_ERR_OOM, "out of host memory gathering %llu bytes", (unsigned long long)total);
    }
    if (s == FILO_OK) {
        if (bytes)
            memcpy(pad, in, bytes);
        comm_host_job data = {.kind = COMM_JOB_ALL_GATHER, .in = pad, .out = gathered, .bytes = (size_t)widest};
        data.call.op = "all_gather";
        data.call.bytes = (size_t)widest;
        s = host_blocking(comm, &data, "varied data", __func__);
    }
    if (s == FILO_OK) {
        size_t at = 0;
        for (int r = 0; r < world; r++) {
            memcpy(result + at, gathered + (size_t)r * (size_t)widest, (size_t)all[r]);
            at += (size_t)all[r];
            lens[r] = (size_t)all[r];
        }
        *out = result;
        result = NULL;
    }
    free(all);
    free(pad);
    free(gathered);
    free(result);
    return s;
}

void filo_comm_stats_get(const filo_comm *comm, filo_comm_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!comm)
        return;
    filo_comm *c = (filo_comm *)comm;
    pthread_mutex_lock(&c->lock);
    *out = c->stats;
    pthread_mutex_unlock(&c->lock);
}

void filo_comm_abort(filo_comm *comm, const char *message)
{
    const char *m = message ? message : "aborting";
    if (comm)
        fprintf(stderr, "filo: rank %d: %s\n", comm->rank, m);
    else
        fprintf(stderr, "filo: %s\n", m);
    fflush(stderr);
    if (comm && comm->host)
        comm->host->ops->abort(comm->host, m);
    _exit(1);
}
