/* The MPI host transport (runtime/comm_mpi.c) under `mpirun -np 3`: every collective, dtype and
 * reduction against values computed here, buffers larger than the transport's 16 MiB chunk, a
 * rank whose environment disagrees with MPI, and a collective that times out because one rank
 * comes late (it must fail on time on the others, later calls must fail at once, and the job must
 * still end cleanly). A plain program, not a Criterion test: Criterion forks every test, and an
 * MPI process does not survive a fork. Exits 0 when every check passed, else prints what failed. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_internal.h"

static int rank, world, failures, checks;
static int64_t seq;

#define CHECK(cond, ...)                                         \
    do {                                                         \
        checks++;                                                \
        if (!(cond)) {                                           \
            failures++;                                          \
            fprintf(stderr, "rank %d: FAIL line %d: ", rank, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fprintf(stderr, "\n");                               \
        }                                                        \
    } while (0)

static comm_call call_of(const char *op, size_t bytes, double seconds)
{
    return (comm_call){.op = op, .label = "check", .seq = ++seq, .bytes = bytes, .deadline = comm_now() + seconds};
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Random non-zero values, the same for a given (seed, r, i) on every rank. */
static double value(uint64_t seed, int r, size_t i, filo_dtype dt)
{
    uint64_t u = mix(seed * 1000003u + (uint64_t)r * 7919u + mix(i));
    double sign = (u & 1) ? -1.0 : 1.0;
    if (dt == FILO_I32 || dt == FILO_I64)
        return sign * (double)(1 + (int64_t)((u >> 8) % 100000)) * (dt == FILO_I64 ? 1000003.0 : 1.0);
    return sign * (0.5 + (double)(u >> 11) / 9007199254740992.0 * 1.5);
}

static void fill(void *buf, filo_dtype dt, size_t n, uint64_t seed, int r)
{
    for (size_t i = 0; i < n; i++) {
        double v = value(seed, r, i, dt);
        switch (dt) {
        case FILO_F32: ((float *)buf)[i] = (float)v; break;
        case FILO_F64: ((double *)buf)[i] = v; break;
        case FILO_I32: ((int32_t *)buf)[i] = (int32_t)v; break;
        case FILO_I64: ((int64_t *)buf)[i] = (int64_t)v; break;
        default: break;
        }
    }
}

static double element(const void *buf, filo_dtype dt, size_t i)
{
    switch (dt) {
    case FILO_F32: return ((const float *)buf)[i];
    case FILO_F64: return ((const double *)buf)[i];
    case FILO_I32: return ((const int32_t *)buf)[i];
    case FILO_I64: return (double)((const int64_t *)buf)[i];
    default: return 0;
    }
}

/* MPI picks its own reduction order, so float sums are compared within a few ulps; integer
 * results, maxima and minima must be exact. */
static void check_all_reduce(comm_host *h, filo_dtype dt, filo_reduce_op op, size_t n)
{
    size_t es = filo_dtype_size(dt);
    void *buf = malloc(n * es);
    uint64_t seed = 17 + (uint64_t)seq;
    fill(buf, dt, n, seed, rank);
    comm_call c = call_of("all_reduce", n * es, 30.0);
    filo_status st = h->ops->all_reduce(h, buf, n, dt, op, &c);
    CHECK(st == FILO_OK, "all_reduce %s op %d n %zu: %s", filo_dtype_name(dt), (int)op, n, filo_last_error());
    size_t bad = 0, first = 0;
    double got_bad = 0, want_bad = 0;
    for (size_t i = 0; st == FILO_OK && i < n; i++) {
        double want = 0, mag = 0;
        int64_t isum = 0;
        for (int r = 0; r < world; r++) {
            double v = value(seed, r, i, dt);
            if (dt == FILO_F32)
                v = (float)v;
            mag += fabs(v);
            isum += (int64_t)v;
            if (r == 0 || op == FILO_REDUCE_SUM || op == FILO_REDUCE_AVG)
                want = r == 0 ? v : want + v;
            else if (op == FILO_REDUCE_MAX)
                want = v > want ? v : want;
            else
                want = v < want ? v : want;
        }
        int integer = dt == FILO_I32 || dt == FILO_I64;
        if (op == FILO_REDUCE_AVG)
            want = integer ? (double)(isum / world) : want / world;
        double got = element(buf, dt, i);
        double tol = integer || op == FILO_REDUCE_MAX || op == FILO_REDUCE_MIN ? 0.0
                     : (dt == FILO_F32 ? 4e-7 : 1e-15) * mag * 4;
        if (fabs(got - want) > tol) {
            if (!bad++)
                first = i, got_bad = got, want_bad = want;
        }
    }
    CHECK(bad == 0, "all_reduce %s op %d n %zu: %zu wrong elements, first %zu: %.17g, want %.17g", filo_dtype_name(dt),
          (int)op, n, bad, first, got_bad, want_bad);
    free(buf);
}

static void check_broadcast(comm_host *h, int root, size_t bytes)
{
    unsigned char *buf = malloc(bytes + 1), *want = malloc(bytes + 1);
    for (size_t i = 0; i < bytes; i++)
        want[i] = (unsigned char)(mix(i + 31u * (uint64_t)root) | 1);
    if (rank == root)
        memcpy(buf, want, bytes);
    else
        memset(buf, 0xAB, bytes);
    comm_call c = call_of("broadcast", bytes, 30.0);
    filo_status st = h->ops->broadcast(h, buf, bytes, root, &c);
    CHECK(st == FILO_OK, "broadcast from %d of %zu bytes: %s", root, bytes, filo_last_error());
    CHECK(st != FILO_OK || memcmp(buf, want, bytes) == 0, "broadcast from %d of %zu bytes: wrong bytes", root, bytes);
    free(buf);
    free(want);
}

static void check_all_gather(comm_host *h, size_t per)
{
    unsigned char *in = malloc(per + 1), *out = malloc(per * (size_t)world + 1);
    for (size_t i = 0; i < per; i++)
        in[i] = (unsigned char)(mix(i * 3 + (uint64_t)rank) | 1);
    memset(out, 0xCD, per * (size_t)world);
    comm_call c = call_of("all_gather", per, 30.0);
    filo_status st = h->ops->all_gather(h, in, per, out, &c);
    CHECK(st == FILO_OK, "all_gather of %zu bytes: %s", per, filo_last_error());
    size_t bad = 0;
    for (int r = 0; st == FILO_OK && r < world; r++)
        for (size_t i = 0; i < per; i++)
            bad += out[(size_t)r * per + i] != (unsigned char)(mix(i * 3 + (uint64_t)r) | 1);
    CHECK(bad == 0, "all_gather of %zu bytes: %zu wrong bytes", per, bad);
    free(in);
    free(out);
}

/* Rank 1 comes 1 s late to an all-reduce whose deadline is 0.4 s away on the others. */
static void check_timeout(comm_host *h)
{
    double d[5] = {1, 2, 3, 4, 5};
    if (rank == 1) {
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
    comm_call c = call_of("all_reduce", sizeof d, rank == 1 ? 30.0 : 0.4);
    double t0 = comm_now();
    filo_status st = h->ops->all_reduce(h, d, 5, FILO_F64, FILO_REDUCE_SUM, &c);
    double took = comm_now() - t0;
    if (rank == 1) {
        /* The others' requests were left running, so the late rank still finds its partners. */
        CHECK(st == FILO_OK, "the late rank's all_reduce: %s", filo_last_error());
        return;
    }
    char want[64];
    snprintf(want, sizeof want, "rank %d: all_reduce #%lld", rank, (long long)c.seq);
    CHECK(st == FILO_ERR_TIMEOUT, "expected FILO_ERR_TIMEOUT, got %s: %s", filo_status_name(st), filo_last_error());
    CHECK(strstr(filo_last_error(), want) && strstr(filo_last_error(), "timed out"), "timeout message: %s",
          filo_last_error());
    CHECK(took >= 0.35 && took < 0.4 + 0.5, "timed out after %.3f s, deadline 0.4 s", took);
    comm_call b = call_of("barrier", 0, 30.0);
    t0 = comm_now();
    st = h->ops->barrier(h, &b);
    CHECK(st == FILO_ERR_COMM && comm_now() - t0 < 0.1, "a call after the timeout gave %s after %.3f s: %s",
          filo_status_name(st), comm_now() - t0, filo_last_error());
}

int main(void)
{
    const char *r = getenv("OMPI_COMM_WORLD_RANK"), *w = getenv("OMPI_COMM_WORLD_SIZE");
    filo_dist_env env = {.launcher = FILO_LAUNCH_MPI, .rank = r ? atoi(r) : 0, .world_size = w ? atoi(w) : 1};
    rank = env.rank;
    world = env.world_size;
    comm_host *h = NULL;

    filo_dist_env wrong = env;
    wrong.world_size = world + 1;
    filo_status st = comm_mpi_open(&wrong, &h);
    CHECK(st == FILO_ERR_COMM && h == NULL && strstr(filo_last_error(), "MPI says"),
          "an environment that disagrees with MPI: %s: %s", filo_status_name(st), filo_last_error());

    st = comm_mpi_open(&env, &h);
    if (st != FILO_OK) {
        fprintf(stderr, "rank %d: comm_mpi_open: %s\n", rank, filo_last_error());
        return 1;
    }
    CHECK(h->rank == rank && h->world == world && strcmp(h->ops->name, "mpi") == 0, "host rank %d world %d name %s",
          h->rank, h->world, h->ops->name);

    const filo_dtype dtypes[] = {FILO_F32, FILO_F64, FILO_I32, FILO_I64};
    const filo_reduce_op ops[] = {FILO_REDUCE_SUM, FILO_REDUCE_AVG, FILO_REDUCE_MAX, FILO_REDUCE_MIN};
    const size_t sizes[] = {1, 7, 1013, 65537};
    for (int d = 0; d < 4; d++)
        for (int o = 0; o < 4; o++)
            for (int s = 0; s < 4; s++)
                check_all_reduce(h, dtypes[d], ops[o], sizes[s]);
    /* Past the 16 MiB chunk: a second, ragged chunk. */
    check_all_reduce(h, FILO_F32, FILO_REDUCE_SUM, ((size_t)4 << 20) + 7);
    check_all_reduce(h, FILO_I64, FILO_REDUCE_MAX, ((size_t)2 << 20) + 3);

    for (int root = 0; root < world; root++) {
        check_broadcast(h, root, 1001);
        check_broadcast(h, root, 0);
    }
    check_broadcast(h, world - 1, ((size_t)16 << 20) + 3);
    check_all_gather(h, 777);
    check_all_gather(h, 0);
    check_all_gather(h, ((size_t)6 << 20) + 5);
    comm_call b = call_of("barrier", 0, 30.0);
    st = h->ops->barrier(h, &b);
    CHECK(st == FILO_OK, "barrier: %s", filo_last_error());

    uint16_t half[3] = {1, 2, 3};
    comm_call c = call_of("all_reduce", sizeof half, 30.0);
    st = h->ops->all_reduce(h, half, 3, FILO_BF16, FILO_REDUCE_SUM, &c);
    CHECK(st == FILO_ERR_DTYPE, "bf16 all_reduce on the host: %s", filo_status_name(st));

    if (world >= 3)
        check_timeout(h);
    h->ops->free(h);

    /* The world still works on a fresh communicator: the orphaned request finished in free. */
    st = comm_mpi_open(&env, &h);
    CHECK(st == FILO_OK, "reopen: %s", filo_last_error());
    if (st == FILO_OK) {
        int64_t one = 1;
        comm_call last = call_of("all_reduce", 8, 30.0);
        st = h->ops->all_reduce(h, &one, 1, FILO_I64, FILO_REDUCE_SUM, &last);
        CHECK(st == FILO_OK && one == world, "final all_reduce: %s, %lld", filo_status_name(st), (long long)one);
        h->ops->free(h);
    }
    if (rank == 0 || failures)
        printf("rank %d: %d of %d checks passed\n", rank, checks - failures, checks);
    return failures ? 1 : 0;
}
