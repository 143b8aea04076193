/* filo_comm under `mpirun -np 2`, end to end as a user's program meets it: the launcher detected
 * from mpirun's environment, a communicator on the CPU and one on each CUDA device (the emulator
 * in the filo_emu build, where the NCCL id exchange and every "NCCL" collective go over MPI),
 * every collective on random odd-sized data against values computed here, works in flight, the
 * byte and varied gathers, a barrier, and a CPU and a CUDA communicator in use at once. A plain program, not a Criterion test: Criterion forks
 * every test, and an MPI process does not survive a fork. Exits 0 when every check passed. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/dist.h"

static int rank, world, failures;

#define CHECK(cond, ...)                                                \
    do {                                                                \
        if (!(cond)) {                                                  \
            failures++;                                                 \
            fprintf(stderr, "rank %d: FAIL line %d: ", rank, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                               \
            fprintf(stderr, "\n");                                      \
        }                                                               \
    } while (0)

#define CHECK_OK(expr) CHECK((expr) == FILO_OK, "%s: %s", #expr, filo_last_error())

/* Integers in [-40, 40] without 0: exact in every dtype, so sums compare exactly. */
static double value(int r, int64_t i, int seed)
{
    int64_t v = (i * 37 + r * 11 + seed * 5) % 81 - 40;
    return v == 0 ? 7.0 : (double)v;
}

static filo_tensor *upload(filo_device dev, filo_dtype dt, int64_t n, int r, int seed)
{
    double *v = malloc(sizeof(double) * (size_t)n);
    void *host = malloc((size_t)n * 8);
    for (int64_t i = 0; i < n; i++)
        v[i] = value(r, i, seed);
    filo_tensor *t = NULL;
    CHECK_OK(filo_convert(v, FILO_F64, host, dt, (size_t)n));
    CHECK_OK(filo_tensor_from_host(dev, dt, 1, &n, host, &t));
    free(v);
    free(host);
    return t;
}

static void expect(const filo_tensor *t, int64_t n, double (*want)(int64_t i, int seed), int seed, const char *what)
{
    double *got = malloc(sizeof(double) * (size_t)n);
    CHECK_OK(filo_tensor_to_host_as(t, FILO_F64, got, sizeof(double) * (size_t)n));
    for (int64_t i = 0; i < n; i++) {
        double w = want(i, seed);
        if (fabs(got[i] - w) > 1e-2 * fmax(1.0, fabs(w))) {
            CHECK(0, "%s: element %lld is %g, expected %g", what, (long long)i, got[i], w);
            break;
        }
    }
    free(got);
}

static double want_sum(int64_t i, int seed)
{
    double s = 0;
    for (int r = 0; r < world; r++)
        s += value(r, i, seed);
    return s;
}

static double want_max(int64_t i, int seed)
{
    double m = value(0, i, seed);
    for (int r = 1; r < world; r++)
        m = fmax(m, value(r, i, seed));
    return m;
}

static double want_root(int64_t i, int seed) { return value(world - 1, i, seed); }
static double want_gather(int64_t i, int seed) { return value((int)(i / 53), i % 53, seed); }

static void check_device(const filo_dist_env *env, filo_device dev)
{
    filo_comm *comm = NULL;
    filo_comm_options opts = {30.0, 30.0};
    CHECK_OK(filo_comm_init(env, dev, &opts, &comm));
    if (!comm)
        return;
    CHECK(strcmp(filo_comm_host_backend(comm), "mpi") == 0, "host backend %s", filo_comm_host_backend(comm));
    const filo_dtype dts[] = {FILO_F32, FILO_F64, FILO_I32, FILO_I64, FILO_BF16, FILO_F16};
    int nd = dev.type == FILO_DEVICE_CUDA ? 6 : 4;
    for (int d = 0; d < nd; d++) {
        int64_t n = 101 + 2 * d;
        filo_tensor *a = upload(dev, dts[d], n, rank, d), *m = upload(dev, dts[d], n, rank, d);
        filo_tensor *b = upload(dev, dts[d], n, rank, d + 10);
        filo_comm_work *w[3] = {NULL, NULL, NULL};
        CHECK_OK(filo_all_reduce_start(comm, a, FILO_REDUCE_SUM, "sum", &w[0]));
        CHECK_OK(filo_all_reduce_start(comm, m, FILO_REDUCE_MAX, "max", &w[1]));
        CHECK_OK(filo_broadcast_start(comm, b, world - 1, "broadcast", &w[2]));
        for (int i = 2; i >= 0; i--) {
            CHECK_OK(filo_comm_work_wait(w[i]));
            filo_comm_work_free(w[i]);
        }
        expect(a, n, want_sum, d, "all_reduce sum");
        expect(m, n, want_max, d, "all_reduce max");
        expect(b, n, want_root, d + 10, "broadcast");
        filo_tensor *in = upload(dev, dts[d], 53, rank, 20 + d), *out = NULL;
        int64_t total = 53 * world;
        CHECK_OK(filo_tensor_zeros(dev, dts[d], 1, &total, &out));
        CHECK_OK(filo_all_gather(comm, in, out));
        expect(out, total, want_gather, 20 + d, "all_gather");
        filo_tensor_free(a);
        filo_tensor_free(m);
        filo_tensor_free(b);
        filo_tensor_free(in);
        filo_tensor_free(out);
    }
    char text[8];
    memset(text, 'a' + rank, sizeof text);
    void *all = NULL;
    size_t lens[16];
    CHECK_OK(filo_comm_all_gather_varied(comm, text, (size_t)rank + 1, &all, lens));
    for (int r = 0, at = 0; all && r < world; at += r + 1, r++)
        CHECK(lens[r] == (size_t)r + 1 && ((char *)all)[at] == 'a' + r, "varied: rank %d's part", r);
    free(all);
    CHECK_OK(filo_barrier(comm));
    filo_comm_free(comm);
}

/* A CPU and a CUDA communicator alive together, collectives in flight on both: each has its
 * own worker thread, so two threads call MPI at once, and both must progress (a lock held for a
 * whole collective would deadlock here: each rank's turn could go to a different communicator). */
static void check_two_at_once(const filo_dist_env *env)
{
    filo_comm *c[2] = {NULL, NULL};
    filo_device dev[2] = {filo_cpu(), filo_cuda(0)};
    filo_comm_options opts = {30.0, 30.0};
    for (int k = 0; k < 2; k++)
        CHECK_OK(filo_comm_init(env, dev[k], &opts, &c[k]));
    if (!c[0] || !c[1]) {
        filo_comm_free(c[0]);
        filo_comm_free(c[1]);
        return;
    }
    for (int round = 0; round < 20; round++) {
        filo_tensor *t[2];
        filo_comm_work *w[2] = {NULL, NULL};
        for (int k = 0; k < 2; k++) {
            t[k] = upload(filo_cpu(), FILO_F64, 3001, rank, round + k);
            CHECK_OK(filo_all_reduce_start(c[k], t[k], FILO_REDUCE_SUM, "two at once", &w[k]));
        }
        for (int k = 1; k >= 0; k--) {
            CHECK_OK(filo_comm_work_wait(w[k]));
            filo_comm_work_free(w[k]);
            expect(t[k], 3001, want_sum, round + k, "two communicators at once");
            filo_tensor_free(t[k]);
        }
    }
    filo_comm_free(c[1]);
    filo_comm_free(c[0]);
}

int main(void)
{
    filo_dist_env env;
    if (filo_dist_env_detect(&env) != FILO_OK || env.launcher != FILO_LAUNCH_MPI) {
        fprintf(stderr, "run under mpirun: %s\n", filo_last_error());
        return 1;
    }
    rank = env.rank;
    world = env.world_size;
    if (world > 16) {
        fprintf(stderr, "at most 16 ranks\n");
        return 1;
    }
    check_device(&env, filo_cpu());
    for (int i = 0; i < filo_cuda_device_count(); i++)
        check_device(&env, filo_cuda(i));
    if (filo_cuda_device_count() > 0)
        check_two_at_once(&env);
    if (failures) {
        fprintf(stderr, "rank %d: %d checks failed\n", rank, failures);
        return 1;
    }
    printf("rank %d of %d: filo_comm over MPI on the CPU and %d CUDA device(s): every check passed\n", rank, world,
           filo_cuda_device_count());
    return 0;
}
