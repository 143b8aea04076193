/* The TCP host transport (runtime/comm_tcp.c) on its own, through comm_internal.h: worlds of 2
 * and 3 ranks, each rank a forked process on 127.0.0.1. Every collective against results
 * computed here in rank order (the transport's sums must be exactly these bits); a 64 MiB
 * all-reduce; and the failures a user meets: ranks that call different collectives, a rank that
 * exits, a rank that stalls, a missing rank 0 and a wrong WORLD_SIZE. Those must fail on every
 * rank with the right status, a message naming who and what, and well before any long timeout. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "comm_internal.h"
#include "error.h"
#include "fork_world.h"

#define MAX_WORLD 3
/* A body's collectives use this deadline unless they test deadlines. */
#define CALL_SECONDS 20.0

typedef filo_test_rank_result rank_result;
typedef filo_status (*rank_body)(const filo_dist_env *env, void *arg);

typedef struct body_call {
    rank_body body;
    void *arg;
} body_call;

/* The child: the environment a torchrun-style launch gives rank `rank`, then the body. */
static filo_status transport_rank(int rank, int world, int port, void *p)
{
    const body_call *c = p;
    filo_dist_env env = {.launcher = FILO_LAUNCH_ENV, .rank = rank, .world_size = world, .local_rank = rank,
                         .local_world_size = world, .master_addr = "127.0.0.1", .master_port = port};
    return c->body(&env, c->arg);
}

/* Runs body in one process per rank (only the ranks with start[r], when start is given); a hung
 * rank must not hang the test: every body finishes well within 45 s. */
static void world_run(int world, const int *start, rank_body body, void *arg, rank_result *res)
{
    body_call c = {body, arg};
    filo_test_world_run(world, start, 45.0, transport_rank, &c, res);
}

static void expect_ok(int world, const rank_result *res)
{
    for (int r = 0; r < world; r++)
        cr_assert_eq(res[r].status, FILO_OK, "rank %d: %s (%s)", r, filo_status_name((filo_status)res[r].status),
                     res[r].msg);
}

static void expect_fail(int r, const rank_result *res, filo_status st, const char *const *words)
{
    cr_assert_eq(res[r].status, st, "rank %d: expected %s, got %s: %s", r, filo_status_name(st),
                 filo_status_name((filo_status)res[r].status), res[r].msg);
    for (int i = 0; words && words[i]; i++)
        cr_assert(strstr(res[r].msg, words[i]), "rank %d's message lacks \"%s\": %s", r, words[i], res[r].msg);
}

static comm_call call_of(const char *op, int64_t seq, size_t bytes, double seconds)
{
    return (comm_call){.op = op, .label = "test", .seq = seq, .bytes = bytes, .deadline = comm_now() + seconds};
}

static filo_status open_tcp(const filo_dist_env *env, comm_host **h)
{
    return comm_tcp_open(env, comm_now() + CALL_SECONDS, h);
}

/* ---- data: random, non-zero, the same on every rank for a given (seed, rank, i) ---- */

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void fill(void *buf, filo_dtype dt, size_t n, uint64_t seed, int rank)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t u = mix(seed * 1000003u + (uint64_t)rank * 7919u + mix(i));
        int neg = (int)(u & 1);
        double mag = 0.5 + (double)(u >> 11) / 9007199254740992.0 * 1.5; /* [0.5, 2) */
        int64_t k = 1 + (int64_t)((u >> 8) % 100000);
        switch (dt) {
        case FILO_F32: ((float *)buf)[i] = (float)(neg ? -mag : mag); break;
        case FILO_F64: ((double *)buf)[i] = neg ? -mag : mag; break;
        case FILO_I32: ((int32_t *)buf)[i] = (int32_t)(neg ? -k : k); break;
        case FILO_I64: ((int64_t *)buf)[i] = (neg ? -k : k) * 1000003; break;
        default: break;
        }
    }
}

/* Non-zero bytes, for the collectives that move bytes. */
static void fill_bytes(unsigned char *p, size_t n, uint64_t seed, int rank)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(mix(seed * 1000003u + (uint64_t)rank * 7919u + mix(i)) | 1);
}

#define EXPECT_LOOP(T)                                                                            \
    do {                                                                                          \
        T *a = acc;                                                                               \
        const T *b = in;                                                                          \
        for (size_t i = 0; i < n; i++) {                                                          \
            if (op == FILO_REDUCE_MAX)                                                            \
                a[i] = b[i] > a[i] ? b[i] : a[i];                                                 \
            else if (op == FILO_REDUCE_MIN)                                                       \
                a[i] = b[i] < a[i] ? b[i] : a[i];                                                 \
            else                                                                                  \
                a[i] = (T)(a[i] + b[i]);                                                          \
            if (last && op == FILO_REDUCE_AVG)                                                    \
                a[i] = (T)(a[i] / (T)world);                                                      \
        }                                                                                         \
    } while (0)

/* The all-reduce of every rank's fill(seed), in rank order starting from rank 0's data. */
static void expected_reduce(void *acc, filo_dtype dt, size_t n, filo_reduce_op op, int world, uint64_t seed)
{
    void *in = malloc(n * filo_dtype_size(dt));
    fill(acc, dt, n, seed, 0);
    for (int r = 1; r < world; r++) {
        fill(in, dt, n, seed, r);
        int last = r == world - 1;
        switch (dt) {
        case FILO_F32: EXPECT_LOOP(float); break;
        case FILO_F64: EXPECT_LOOP(double); break;
        case FILO_I32: EXPECT_LOOP(int32_t); break;
        case FILO_I64: EXPECT_LOOP(int64_t); break;
        default: break;
        }
    }
    free(in);
}

static filo_status check_failed(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static filo_status check_failed(const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return FILO_FAIL(FILO_ERR_INTERNAL, "%s", text);
}

/* ---- collectives give the right results ---- */

static const filo_dtype dtypes[] = {FILO_F32, FILO_F64, FILO_I32, FILO_I64};
static const filo_reduce_op ops[] = {FILO_REDUCE_SUM, FILO_REDUCE_AVG, FILO_REDUCE_MAX, FILO_REDUCE_MIN};
static const size_t sizes[] = {1, 7, 1013, 262147};

static filo_status all_reduce_matrix(const filo_dist_env *env, void *arg)
{
    (void)arg;
    comm_host *h;
    FILO_TRY(open_tcp(env, &h));
    int64_t seq = 0;
    filo_status st = FILO_OK;
    size_t max = sizes[sizeof sizes / sizeof sizes[0] - 1] * 8;
    void *buf = malloc(max), *want = malloc(max);
    for (size_t d = 0; d < 4 && st == FILO_OK; d++)
        for (size_t o = 0; o < 4 && st == FILO_OK; o++)
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0] && st == FILO_OK; s++) {
                filo_dtype dt = dtypes[d];
                size_t n = sizes[s], bytes = n * filo_dtype_size(dt);
                uint64_t seed = 100 + seq;
                fill(buf, dt, n, seed, env->rank);
                expected_reduce(want, dt, n, ops[o], env->world_size, seed);
                comm_call c = call_of("all_reduce", ++seq, bytes, CALL_SECONDS);
                st = h->ops->all_reduce(h, buf, n, dt, ops[o], &c);
                if (st == FILO_OK && memcmp(buf, want, bytes) != 0)
                    st = check_failed("all_reduce %s op %d of %zu elements: wrong result", filo_dtype_name(dt),
                                      (int)ops[o], n);
            }
    /* Many small calls back to back: no rank may run ahead into another's call. */
    for (int i = 0; i < 200 && st == FILO_OK; i++) {
        int64_t v = env->rank + i, want_sum = 0;
        for (int r = 0; r < env->world_size; r++)
            want_sum += r + i;
        comm_call c = call_of("all_reduce", ++seq, 8, CALL_SECONDS);
        st = h->ops->all_reduce(h, &v, 1, FILO_I64, FILO_REDUCE_SUM, &c);
        if (st == FILO_OK && v != want_sum)
            st = check_failed("small all_reduce %d: %lld, want %lld", i, (long long)v, (long long)want_sum);
        comm_call b = call_of("barrier", ++seq, 0, CALL_SECONDS);
        if (st == FILO_OK)
            st = h->ops->barrier(h, &b);
    }
    /* Host collectives take four dtypes; a bf16 one is refused before anything is sent. */
    uint16_t half[3] = {1, 2, 3};
    comm_call c = call_of("all_reduce", ++seq, sizeof half, CALL_SECONDS);
    if (st == FILO_OK && h->ops->all_reduce(h, half, 3, FILO_BF16, FILO_REDUCE_SUM, &c) != FILO_ERR_DTYPE)
        st = check_failed("a bf16 all_reduce was not refused with FILO_ERR_DTYPE");
    comm_call b = call_of("barrier", ++seq, 0, CALL_SECONDS);
    if (st == FILO_OK)
        st = h->ops->barrier(h, &b);
    free(buf);
    free(want);
    h->ops->free(h);
    return st;
}

Test(comm_transport, tcp_all_reduce_every_dtype_and_op_world2, .timeout = 60)
{
    rank_result res[2];
    world_run(2, NULL, all_reduce_matrix, NULL, res);
    expect_ok(2, res);
}

Test(comm_transport, tcp_all_reduce_every_dtype_and_op_world3, .timeout = 60)
{
    rank_result res[3];
    world_run(3, NULL, all_reduce_matrix, NULL, res);
    expect_ok(3, res);
}

static filo_status broadcast_gather_barrier(const filo_dist_env *env, void *arg)
{
    (void)arg;
    comm_host *h;
    FILO_TRY(open_tcp(env, &h));
    int w = env->world_size, me = env->rank;
    int64_t seq = 0;
    filo_status st = FILO_OK;
    const size_t bytes = 1001;
    unsigned char buf[1001], want[1001];
    for (int root = 0; root < w && st == FILO_OK; root++) {
        fill_bytes(want, bytes, 7, root);
        if (me == root)
            memcpy(buf, want, bytes);
        else
            memset(buf, 0xAB, bytes);
        comm_call c = call_of("broadcast", ++seq, bytes, CALL_SECONDS);
        st = h->ops->broadcast(h, buf, bytes, root, &c);
        if (st == FILO_OK && memcmp(buf, want, bytes) != 0)
            st = check_failed("broadcast from root %d: wrong bytes", root);
        /* An empty broadcast is a synchronization and nothing more. */
        comm_call e = call_of("broadcast", ++seq, 0, CALL_SECONDS);
        if (st == FILO_OK)
            st = h->ops->broadcast(h, buf, 0, root, &e);
    }
    const size_t per = 777;
    unsigned char in[777], out[777 * MAX_WORLD], all[777 * MAX_WORLD];
    for (int r = 0; r < w; r++)
        fill_bytes(all + r * per, per, 99, r);
    memcpy(in, all + (size_t)me * per, per);
    memset(out, 0xCD, sizeof out);
    comm_call g = call_of("all_gather", ++seq, per, CALL_SECONDS);
    if (st == FILO_OK)
        st = h->ops->all_gather(h, in, per, out, &g);
    if (st == FILO_OK && memcmp(out, all, per * (size_t)w) != 0)
        st = check_failed("all_gather: wrong bytes");
    /* In place: this rank's part already sits in out. */
    memset(out, 0xCD, sizeof out);
    memcpy(out + (size_t)me * per, in, per);
    comm_call g2 = call_of("all_gather", ++seq, per, CALL_SECONDS);
    if (st == FILO_OK)
        st = h->ops->all_gather(h, out + (size_t)me * per, per, out, &g2);
    if (st == FILO_OK && memcmp(out, all, per * (size_t)w) != 0)
        st = check_failed("all_gather in place: wrong bytes");
    /* The last rank arrives late: nobody may leave the barrier before it. */
    if (me == w - 1) {
        struct timespec ts = {0, 300000000};
        nanosleep(&ts, NULL);
    }
    double t0 = comm_now();
    comm_call b = call_of("barrier", ++seq, 0, CALL_SECONDS);
    if (st == FILO_OK)
        st = h->ops->barrier(h, &b);
    if (st == FILO_OK && me != w - 1 && comm_now() - t0 < 0.25)
        st = check_failed("left the barrier after %.3f s, before the late rank arrived", comm_now() - t0);
    h->ops->free(h);
    return st;
}

Test(comm_transport, tcp_broadcast_all_gather_barrier, .timeout = 60)
{
    for (int w = 2; w <= 3; w++) {
        rank_result res[3];
        world_run(w, NULL, broadcast_gather_barrier, NULL, res);
        expect_ok(w, res);
    }
}

static filo_status all_reduce_64mib(const filo_dist_env *env, void *arg)
{
    (void)arg;
    comm_host *h;
    FILO_TRY(open_tcp(env, &h));
    const size_t n = ((size_t)16 << 20) + 5; /* 64 MiB of f32 and a ragged last chunk */
    float *buf = malloc(n * sizeof *buf);
    /* Small integers: the sum is exact, so a value computed per element here is the answer. */
    for (size_t i = 0; i < n; i++)
        buf[i] = (float)((int)((i * 2654435761u + (size_t)env->rank * 97) % 2001) - 1000 + (i % 2 ? 0.5 : -0.25));
    comm_call c = call_of("all_reduce", 1, n * sizeof *buf, CALL_SECONDS);
    filo_status st = h->ops->all_reduce(h, buf, n, FILO_F32, FILO_REDUCE_SUM, &c);
    for (size_t i = 0; i < n && st == FILO_OK; i++) {
        float want = 0;
        for (int r = 0; r < env->world_size; r++)
            want += (float)((int)((i * 2654435761u + (size_t)r * 97) % 2001) - 1000 + (i % 2 ? 0.5 : -0.25));
        if (buf[i] != want)
            st = check_failed("element %zu: %g, want %g", i, (double)buf[i], (double)want);
    }
    free(buf);
    h->ops->free(h);
    return st;
}

Test(comm_transport, tcp_all_reduce_64mib, .timeout = 60)
{
    rank_result res[3];
    world_run(3, NULL, all_reduce_64mib, NULL, res);
    expect_ok(3, res);
}

/* ---- failures ---- */

typedef enum mismatch_kind { MIS_OP, MIS_SIZE, MIS_DTYPE, MIS_ROOT, MIS_ORDER } mismatch_kind;

/* Rank 1 makes a call that differs from the others' in one way; afterwards every rank's
 * transport refuses further calls at once. */
static filo_status mismatched(const filo_dist_env *env, void *arg)
{
    mismatch_kind kind = *(mismatch_kind *)arg;
    comm_host *h;
    FILO_TRY(open_tcp(env, &h));
    int odd = env->rank == 1;
    double buf[33];
    fill(buf, FILO_F64, 33, 5, env->rank);
    comm_call c = call_of("all_reduce", odd && kind == MIS_ORDER ? 2 : 1, sizeof buf, CALL_SECONDS);
    filo_status st;
    if (kind == MIS_OP && odd) {
        c.op = "broadcast";
        st = h->ops->broadcast(h, buf, sizeof buf, 1, &c);
    } else if (kind == MIS_ROOT) {
        c.op = "broadcast";
        st = h->ops->broadcast(h, buf, sizeof buf, odd ? 1 : 0, &c);
    } else if (kind == MIS_SIZE && odd) {
        c.bytes -= 8;
        st = h->ops->all_reduce(h, buf, 32, FILO_F64, FILO_REDUCE_SUM, &c);
    } else if (kind == MIS_DTYPE && odd) {
        st = h->ops->all_reduce(h, buf, 66, FILO_F32, FILO_REDUCE_SUM, &c);
    } else {
        st = h->ops->all_reduce(h, buf, 33, FILO_F64, FILO_REDUCE_SUM, &c);
    }
    if (st == FILO_OK) {
        h->ops->free(h);
        return check_failed("the mismatched call succeeded");
    }
    char first[2048];
    snprintf(first, sizeof first, "%s", filo_last_error());
    double t0 = comm_now();
    comm_call b = call_of("barrier", 9, 0, CALL_SECONDS);
    filo_status again = h->ops->barrier(h, &b);
    h->ops->free(h);
    if (again != FILO_ERR_COMM || comm_now() - t0 > 0.1)
        return check_failed("a call after the failure gave %s after %.3f s", filo_status_name(again), comm_now() - t0);
    return filo_error_set(st, NULL, "%s", first);
}

Test(comm_transport, tcp_mismatched_calls_fail_on_every_rank, .timeout = 60)
{
    rank_result res[3];
    mismatch_kind k = MIS_OP;
    world_run(3, NULL, mismatched, &k, res);
    /* Rank 0 and rank 1 name both calls; rank 2 learns of it from rank 0. */
    const char *both[] = {"rank 0: all_reduce #1", "rank 1: broadcast #1", "mismatched", NULL};
    expect_fail(0, res, FILO_ERR_COMM, both);
    expect_fail(1, res, FILO_ERR_COMM, both);
    const char *third[] = {"rank 2: all_reduce #1", "mismatched", NULL};
    expect_fail(2, res, FILO_ERR_COMM, third);
    for (int r = 0; r < 3; r++)
        cr_assert_lt(res[r].seconds, 3.0, "rank %d took %.2f s", r, res[r].seconds);

    const struct {
        mismatch_kind kind;
        const char *word;
    } cases[] = {{MIS_SIZE, "256 bytes"}, {MIS_DTYPE, "f32"}, {MIS_ROOT, "root 1"}, {MIS_ORDER, "all_reduce #2"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        world_run(2, NULL, mismatched, (void *)&cases[i].kind, res);
        const char *words[] = {"mismatched", "rank 0:", "rank 1:", cases[i].word, NULL};
        expect_fail(0, res, FILO_ERR_COMM, words);
        expect_fail(1, res, FILO_ERR_COMM, words);
    }
}

/* Rank 1 exits right after the rendezvous; the others' all-reduce has a long deadline, yet must
 * fail at once, naming rank 1. */
static filo_status peer_exits(const filo_dist_env *env, void *arg)
{
    (void)arg;
    comm_host *h;
    FILO_TRY(open_tcp(env, &h));
    if (env->rank == 1)
        _exit(0);
    float buf[17];
    fill(buf, FILO_F32, 17, 3, env->rank);
    comm_call c = call_of("all_reduce", 1, sizeof buf, CALL_SECONDS);
    filo_status st = h->ops->all_reduce(h, buf, 17, FILO_F32, FILO_REDUCE_SUM, &c);
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", filo_last_error());
    h->ops->free(h);
    return st == FILO_OK ? check_failed("the all_reduce succeeded without rank 1") : filo_error_set(st, NULL, "%s", msg);
}

Test(comm_transport, tcp_peer_exit_fails_the_others_at_once, .timeout = 60)
{
    rank_result res[3];
    world_run(3, NULL, peer_exits, NULL, res);
    const char *words0[] = {"rank 0: all_reduce #1", "rank 1 closed its connection", "exited or crashed", NULL};
    expect_fail(0, res, FILO_ERR_COMM, words0);
    const char *words2[] = {"rank 2: all_reduce #1", "rank 1 closed its connection", NULL};
    expect_fail(2, res, FILO_ERR_COMM, words2);
    cr_assert_lt(res[0].seconds, 3.0, "rank 0 took %.2f s", res[0].seconds);
    cr_assert_lt(res[2].seconds, 3.0, "rank 2 took %.2f s", res[2].seconds);
}

#define STALL_DEADLINE 1.0

/* Rank 1 sleeps past the others' deadline before it calls. */
static filo_status peer_sleeps(const filo_dist_env *env, void *arg)
{
    (void)arg;
    comm_host *h;
    FILO_TRY(open_tcp(env, &h));
    if (env->rank == 1) {
        struct timespec ts = {2, 0};
        nanosleep(&ts, NULL);
    }
    double d[9];
    fill(d, FILO_F64, 9, 11, env->rank);
    comm_call c = call_of("all_reduce", 1, sizeof d, STALL_DEADLINE);
    filo_status st = h->ops->all_reduce(h, d, 9, FILO_F64, FILO_REDUCE_AVG, &c);
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", filo_last_error());
    h->ops->free(h);
    return st == FILO_OK ? check_failed("the all_reduce succeeded") : filo_error_set(st, NULL, "%s", msg);
}

Test(comm_transport, tcp_stalled_peer_times_out_within_the_deadline, .timeout = 60)
{
    rank_result res[3];
    world_run(3, NULL, peer_sleeps, NULL, res);
    const char *words0[] = {"rank 0: all_reduce #1", "timed out waiting for rank 1", NULL};
    expect_fail(0, res, FILO_ERR_TIMEOUT, words0);
    const char *words2[] = {"rank 2: all_reduce #1", "timed out", NULL};
    expect_fail(2, res, FILO_ERR_TIMEOUT, words2);
    for (int r = 0; r < 3; r += 2) {
        cr_assert_geq(res[r].seconds, STALL_DEADLINE - 0.05, "rank %d gave up after %.2f s", r, res[r].seconds);
        cr_assert_lt(res[r].seconds, STALL_DEADLINE + 0.75, "rank %d took %.2f s", r, res[r].seconds);
    }
    /* The late rank hears what happened as soon as it calls. */
    cr_assert_neq(res[1].status, FILO_OK);
    cr_assert_lt(res[1].seconds, 2.0 + 0.75, "rank 1 took %.2f s", res[1].seconds);
}

/* arg: each rank's connect timeout. */
static filo_status open_only(const filo_dist_env *env, void *arg)
{
    double seconds = ((const double *)arg)[env->rank];
    comm_host *h;
    FILO_TRY(comm_tcp_open(env, comm_now() + seconds, &h));
    h->ops->free(h);
    return FILO_OK;
}

Test(comm_transport, tcp_rendezvous_timeouts_name_the_address, .timeout = 60)
{
    const double seconds = 1.0, timeouts[3] = {1.0, 1.0, 5.0};
    rank_result res[2];
    int only_rank1[2] = {0, 1};
    world_run(2, only_rank1, open_only, (void *)timeouts, res);
    const char *words1[] = {"rank 1", "rendezvous at 127.0.0.1:", "could not connect to rank 0", NULL};
    expect_fail(1, res, FILO_ERR_TIMEOUT, words1);
    cr_assert_lt(res[1].seconds, seconds + 0.75);

    int only_rank0[2] = {1, 0};
    world_run(2, only_rank0, open_only, (void *)timeouts, res);
    const char *words0[] = {"rank 0", "rendezvous at 127.0.0.1:", "rank 1 never connected", NULL};
    expect_fail(0, res, FILO_ERR_TIMEOUT, words0);
    cr_assert_lt(res[0].seconds, seconds + 0.75);

    /* A world of 3 where rank 2 never comes: rank 1, already connected (and with a longer
     * timeout of its own), hears why from rank 0. */
    const double rank1_waits_longer[3] = {1.0, 5.0, 1.0};
    rank_result res3[3];
    int no_rank2[3] = {1, 1, 0};
    world_run(3, no_rank2, open_only, (void *)rank1_waits_longer, res3);
    const char *missing[] = {"rank 2 never connected", NULL};
    expect_fail(0, res3, FILO_ERR_TIMEOUT, missing);
    expect_fail(1, res3, FILO_ERR_TIMEOUT, missing);
    cr_assert_lt(res3[1].seconds, seconds + 0.75);
}

/* Rank 1 believes the world has 3 ranks, rank 0 that it has 2; or two processes are rank 1. */
static filo_status open_misconfigured(const filo_dist_env *env, void *arg)
{
    int mode = *(int *)arg;
    filo_dist_env e = *env;
    if (mode == 0 && e.rank == 1)
        e.world_size = 3;
    if (mode == 1) {
        e.world_size = 3;
        if (e.rank == 2)
            e.rank = 1;
    }
    comm_host *h;
    FILO_TRY(comm_tcp_open(&e, comm_now() + 10.0, &h));
    h->ops->free(h);
    return FILO_OK;
}

Test(comm_transport, tcp_handshake_rejects_wrong_world_size_and_duplicate_rank, .timeout = 60)
{
    int mode = 0;
    rank_result res[3];
    world_run(2, NULL, open_misconfigured, &mode, res);
    const char *words[] = {"world size 3", "world size 2", "WORLD_SIZE", NULL};
    expect_fail(0, res, FILO_ERR_COMM, words);
    expect_fail(1, res, FILO_ERR_COMM, words);
    cr_assert_lt(res[0].seconds, 3.0);
    cr_assert_lt(res[1].seconds, 3.0);

    mode = 1;
    world_run(3, NULL, open_misconfigured, &mode, res);
    const char *dup[] = {"two processes connected as rank 1", NULL};
    expect_fail(0, res, FILO_ERR_COMM, dup);
    cr_assert_lt(res[0].seconds, 3.0);
    /* Both "rank 1" processes fail; one was refused, the other heard the rendezvous failed. */
    expect_fail(1, res, FILO_ERR_COMM, dup);
    expect_fail(2, res, FILO_ERR_COMM, dup);
}

static filo_status bind_busy(const filo_dist_env *env, void *arg)
{
    (void)arg;
    filo_dist_env e = *env;
    /* Hold the port, then ask the transport to listen on it too. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)e.master_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 1) != 0)
        return check_failed("the test could not take its port: %s", strerror(errno));
    comm_host *h;
    filo_status st = comm_tcp_open(&e, comm_now() + 1.0, &h);
    close(fd);
    if (st == FILO_OK) {
        h->ops->free(h);
        return check_failed("listening on a port in use succeeded");
    }
    return st;
}

Test(comm_transport, tcp_port_in_use_is_a_clear_error, .timeout = 30)
{
    int only_rank0[2] = {1, 0};
    rank_result res[2];
    /* Every port it is given is busy: the retries on another port end the same way. */
    world_run(2, only_rank0, bind_busy, NULL, res);
    const char *words[] = {"cannot listen on 127.0.0.1:", "in use", "MASTER_PORT", NULL};
    expect_fail(0, res, FILO_ERR_COMM, words);
}

/* A build without MPI refuses an mpirun launch and says what to install. (With MPI, the
 * transport runs under mpirun in tests/dist/mpi_transport_check.c instead: MPI does not survive
 * Criterion's fork.) */
Test(comm_transport, mpi_without_mpi_says_what_to_install)
{
    if (comm_mpi_available())
        cr_skip_test("this build has MPI: ctest mpi/transport covers the MPI transport");
    filo_dist_env env = {.launcher = FILO_LAUNCH_MPI, .rank = 0, .world_size = 2};
    comm_host *h = (comm_host *)&env;
    cr_assert_eq(comm_mpi_open(&env, &h), FILO_ERR_UNSUPPORTED);
    cr_assert_null(h);
    cr_assert(strstr(filo_last_error(), "built without MPI") && strstr(filo_last_error(), "libopenmpi-dev"), "%s",
              filo_last_error());
}
