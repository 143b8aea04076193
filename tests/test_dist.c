/* Communicators (filo/dist.h): world-1 communicators on every backend (each collective an
 * identity or a copy, async works waited out of order, stats, every bad argument, the broken
 * state), launcher detection from the environment, and forked worlds of 2-3 ranks over TCP on
 * the CPU and the (emulated) CUDA device: collectives on random odd-sized data, several in
 * flight, varied gathers, a rank that sleeps past the timeout and a rank that dies. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "filo/dist.h"
#include "filo_test.h"
#include "fork_world.h"

/* In the forked ranks, where Criterion's asserts cannot be used. */
#define FILO_TRY_TEST(expr)                \
    do {                                   \
        filo_status try_s_ = (expr);       \
        if (try_s_ != FILO_OK)             \
            return try_s_;                 \
    } while (0)

static const char *const launch_vars[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                                          "OMPI_COMM_WORLD_LOCAL_SIZE", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                                          "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "FILO_DIST_TIMEOUT"};

static void clear_launch_env(void)
{
    for (size_t i = 0; i < sizeof launch_vars / sizeof launch_vars[0]; i++)
        unsetenv(launch_vars[i]);
}

static filo_comm *single_comm(filo_device dev, double timeout_s)
{
    filo_dist_env env;
    clear_launch_env();
    FILO_CHECK(filo_dist_env_detect(&env));
    filo_comm_options opts = {timeout_s, 30.0};
    filo_comm *comm;
    FILO_CHECK(filo_comm_init(&env, dev, &opts, &comm));
    return comm;
}

static int dtypes_for(filo_device dev, filo_dtype *out)
{
    int n = 0;
    out[n++] = FILO_F32;
    out[n++] = FILO_F64;
    out[n++] = FILO_I32;
    out[n++] = FILO_I64;
    if (dev.type == FILO_DEVICE_CUDA) {
        out[n++] = FILO_BF16;
        out[n++] = FILO_F16;
    }
    return n;
}

/* Random values that survive the dtype exactly (integers in range for the 16-bit floats). */
static void fill_values(double *v, int64_t n, uint64_t seed, filo_dtype dt)
{
    filo_test_fill_random(v, n, seed, -40.0, 40.0);
    for (int64_t i = 0; i < n; i++) {
        if (dt != FILO_F32 && dt != FILO_F64)
            v[i] = trunc(v[i]) == 0 ? 3 : trunc(v[i]);
        else if (dt == FILO_F32)
            v[i] = (double)(float)v[i];
    }
}

static void assert_values(const filo_tensor *t, const double *want, int64_t n, double tol, const char *what)
{
    double *got = filo_test_download(t);
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= tol * fmax(1.0, fabs(want[i])), "%s: element %lld is %g, expected %g",
                  what, (long long)i, got[i], want[i]);
    free(got);
}

/* ---- world 1 ---- */

Test(dist, single_world_every_collective_is_identity)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        filo_device dev = devs[b];
        cr_log_info("backend %s", filo_test_backend_name(dev));
        filo_comm *comm = single_comm(dev, 0);
        cr_assert_eq(filo_comm_rank(comm), 0);
        cr_assert_eq(filo_comm_size(comm), 1);
        cr_assert(filo_device_equal(filo_comm_device(comm), dev));
        cr_assert_str_eq(filo_comm_host_backend(comm), "single");
        cr_assert_str_eq(filo_comm_device_backend(comm), dev.type == FILO_DEVICE_CUDA ? "nccl" : "none");
        cr_assert_eq(filo_comm_timeout(comm), 600.0);
        filo_dtype dts[6];
        int nd = dtypes_for(dev, dts);
        /* CPU tensors go through the host transport on a device communicator too. */
        filo_device places[2] = {dev, filo_cpu()};
        for (int p = 0; p < (dev.type == FILO_DEVICE_CUDA ? 2 : 1); p++) {
            for (int d = 0; d < nd; d++) {
                if (places[p].type == FILO_DEVICE_CPU && (dts[d] == FILO_BF16 || dts[d] == FILO_F16))
                    continue;
                int64_t shape[2] = {7, 5};
                double v[35];
                fill_values(v, 35, 11 + (uint64_t)d, dts[d]);
                filo_tensor *t = filo_test_upload(places[p], dts[d], 2, shape, v);
                for (int op = FILO_REDUCE_SUM; op <= FILO_REDUCE_MIN; op++) {
                    FILO_CHECK(filo_all_reduce(comm, t, (filo_reduce_op)op));
                    assert_values(t, v, 35, 0, "all_reduce");
                }
                FILO_CHECK(filo_broadcast(comm, t, 0));
                assert_values(t, v, 35, 0, "broadcast");
                int64_t oshape[1] = {35};
                filo_tensor *out;
                FILO_CHECK(filo_tensor_zeros(places[p], dts[d], 1, oshape, &out));
                FILO_CHECK(filo_all_gather(comm, t, out));
                assert_values(out, v, 35, 0, "all_gather");
                filo_tensor_free(out);
                filo_tensor_free(t);
            }
        }
        FILO_CHECK(filo_barrier(comm));
        filo_comm_free(comm);
    }
}

Test(dist, single_world_async_out_of_order_and_stats)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        filo_device dev = devs[b];
        filo_comm *comm = single_comm(dev, 0);
        int64_t shape[1] = {101};
        double v[3][101];
        filo_tensor *t[3];
        filo_comm_work *w[3];
        for (int i = 0; i < 3; i++) {
            fill_values(v[i], 101, 100 + (uint64_t)i, FILO_F32);
            t[i] = filo_test_upload(dev, FILO_F32, 1, shape, v[i]);
        }
        FILO_CHECK(filo_all_reduce_start(comm, t[0], FILO_REDUCE_AVG, "bucket 0", &w[0]));
        FILO_CHECK(filo_broadcast_start(comm, t[1], 0, "bucket 1", &w[1]));
        FILO_CHECK(filo_all_reduce_start(comm, t[2], FILO_REDUCE_MAX, NULL, &w[2]));
        for (int i = 2; i >= 0; i--) {
            FILO_CHECK(filo_comm_work_wait(w[i]));
            cr_assert(filo_comm_work_done(w[i]));
            assert_values(t[i], v[i], 101, 0, "async");
        }
        /* A handle freed without a wait is waited for first. */
        filo_comm_work *unwaited;
        FILO_CHECK(filo_all_reduce_start(comm, t[0], FILO_REDUCE_SUM, "unwaited", &unwaited));
        filo_comm_work_free(unwaited);
        for (int i = 0; i < 3; i++) {
            filo_comm_work_free(w[i]);
            filo_tensor_free(t[i]);
        }
        char buf[3] = "ab";
        FILO_CHECK(filo_comm_broadcast_bytes(comm, buf, 2, 0));
        filo_comm_stats st;
        filo_comm_stats_get(comm, &st);
        cr_assert_eq(st.collectives, 5, "collectives %lld", (long long)st.collectives);
        cr_assert_eq(st.bytes, 4 * 101 * 4 + 2, "bytes %lld", (long long)st.bytes);
        cr_assert(st.wait_s >= 0 && st.wait_s < 10);
        filo_comm_free(comm);
    }
}

Test(dist, single_world_bytes_collectives)
{
    filo_comm *comm = single_comm(filo_cpu(), 0);
    int32_t in[3] = {5, -7, 9}, out[3] = {0, 0, 0};
    FILO_CHECK(filo_comm_all_gather_bytes(comm, in, sizeof in, out));
    cr_assert(memcmp(in, out, sizeof in) == 0);
    FILO_CHECK(filo_comm_broadcast_bytes(comm, in, sizeof in, 0));
    const char text[] = "varied";
    void *all = NULL;
    size_t lens[1] = {0};
    FILO_CHECK(filo_comm_all_gather_varied(comm, text, 6, &all, lens));
    cr_assert_eq(lens[0], 6);
    cr_assert(memcmp(all, text, 6) == 0);
    free(all);
    FILO_CHECK(filo_comm_all_gather_varied(comm, NULL, 0, &all, lens));
    cr_assert_eq(lens[0], 0);
    free(all);
    FILO_CHECK(filo_barrier(comm));
    FILO_CHECK_FAILS(filo_comm_broadcast_bytes(comm, in, sizeof in, 1), FILO_ERR_INVALID_ARG, "root 1");
    FILO_CHECK_FAILS(filo_comm_all_gather_bytes(comm, NULL, 4, out), FILO_ERR_INVALID_ARG, "must not be NULL");
    filo_comm_free(comm);
}

Test(dist, bad_arguments_fail_clearly)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        filo_device dev = devs[b];
        filo_comm *comm = single_comm(dev, 0);
        filo_comm_work *w = (filo_comm_work *)&w;
        int64_t shape[2] = {3, 5};
        double v[15];
        fill_values(v, 15, 5, FILO_F32);
        filo_tensor *t = filo_test_upload(dev, FILO_F32, 2, shape, v), *tt;
        FILO_CHECK(filo_tensor_transpose(t, 0, 1, &tt));
        FILO_CHECK_FAILS(filo_all_reduce_start(comm, tt, FILO_REDUCE_SUM, NULL, &w), FILO_ERR_SHAPE,
                         "must be contiguous");
        cr_assert_null(w, "a failed start leaves *work NULL");
        FILO_CHECK_FAILS(filo_all_reduce(comm, t, (filo_reduce_op)9), FILO_ERR_INVALID_ARG, "unknown reduce op 9");
        FILO_CHECK_FAILS(filo_broadcast(comm, t, 1), FILO_ERR_INVALID_ARG, "root 1 is not a rank");
        FILO_CHECK_FAILS(filo_broadcast(comm, t, -1), FILO_ERR_INVALID_ARG, "root -1 is not a rank");
        int64_t wrong[1] = {14};
        filo_tensor *out;
        FILO_CHECK(filo_tensor_zeros(dev, FILO_F32, 1, wrong, &out));
        FILO_CHECK_FAILS(filo_all_gather(comm, t, out), FILO_ERR_SHAPE, "must hold world size 1 x 15 elements");
        filo_tensor_free(out);
        int64_t right[1] = {15};
        FILO_CHECK(filo_tensor_zeros(dev, FILO_F64, 1, right, &out));
        FILO_CHECK_FAILS(filo_all_gather(comm, t, out), FILO_ERR_DTYPE, "must have in's dtype and device");
        filo_tensor_free(out);
        filo_tensor *bf, *u8;
        FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_BF16, 1, right, &bf));
        FILO_CHECK_FAILS(filo_all_reduce(comm, bf, FILO_REDUCE_SUM), FILO_ERR_DTYPE, "only on CUDA tensors (NCCL)");
        FILO_CHECK(filo_tensor_zeros(dev, FILO_U8, 1, right, &u8));
        FILO_CHECK_FAILS(filo_all_reduce(comm, u8, FILO_REDUCE_SUM), FILO_ERR_DTYPE, "not u8");
        FILO_CHECK_FAILS(filo_all_reduce(comm, NULL, FILO_REDUCE_SUM), FILO_ERR_INVALID_ARG, "t is NULL");
        FILO_CHECK_FAILS(filo_all_reduce(NULL, t, FILO_REDUCE_SUM), FILO_ERR_INVALID_ARG, "comm is NULL");
        FILO_CHECK_FAILS(filo_all_reduce_start(comm, t, FILO_REDUCE_SUM, NULL, NULL), FILO_ERR_INVALID_ARG,
                         "work must not be NULL");
        FILO_CHECK_FAILS(filo_comm_work_wait(NULL), FILO_ERR_INVALID_ARG, "work is NULL");
        filo_tensor_free(bf);
        filo_tensor_free(u8);
        /* A tensor on a device that is neither the CPU nor the communicator's. */
        if (dev.type == FILO_DEVICE_CPU && nb > 1) {
            filo_tensor *gpu = filo_test_upload(devs[1], FILO_F32, 2, shape, v);
            FILO_CHECK_FAILS(filo_all_reduce(comm, gpu, FILO_REDUCE_SUM), FILO_ERR_DEVICE,
                             "neither on the CPU nor on the communicator's device cpu");
            filo_tensor_free(gpu);
        }
        /* None of these broke the communicator. */
        FILO_CHECK(filo_all_reduce(comm, t, FILO_REDUCE_SUM));
        filo_tensor_free(tt);
        filo_tensor_free(t);
        filo_comm_free(comm);
    }
    filo_dist_env env = {FILO_LAUNCH_SINGLE, 0, 2, 0, 1, "", 0};
    filo_comm *comm = (filo_comm *)&env;
    FILO_CHECK_FAILS(filo_comm_init(&env, filo_cpu(), NULL, &comm), FILO_ERR_INVALID_ARG, "world size 1, not 2");
    cr_assert_null(comm);
    env.world_size = 1;
    filo_comm_options bad = {-1, 0};
    FILO_CHECK_FAILS(filo_comm_init(&env, filo_cpu(), &bad, &comm), FILO_ERR_INVALID_ARG, "timeout_s = -1");
    FILO_CHECK_FAILS(filo_comm_init(&env, filo_cuda(40), NULL, &comm), FILO_ERR_DEVICE, "cuda:40 does not exist");
    setenv("FILO_DIST_TIMEOUT", "soon", 1);
    FILO_CHECK_FAILS(filo_comm_init(&env, filo_cpu(), NULL, &comm), FILO_ERR_INVALID_ARG, "FILO_DIST_TIMEOUT='soon'");
    setenv("FILO_DIST_TIMEOUT", "2.5", 1);
    FILO_CHECK(filo_comm_init(&env, filo_cpu(), NULL, &comm));
    cr_assert_eq(filo_comm_timeout(comm), 2.5);
    filo_comm_free(comm);
    filo_comm_free(NULL);
    filo_comm_work_free(NULL);
}

/* A deadline that has passed before the worker reaches the job: the collective fails with
 * FILO_ERR_TIMEOUT naming the rank and the op, and the communicator is broken for good. */
Test(dist, timeout_breaks_the_communicator)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        filo_device dev = devs[b];
        filo_comm *comm = single_comm(dev, 1e-9);
        int64_t shape[1] = {9};
        double v[9];
        fill_values(v, 9, 3, FILO_F32);
        filo_tensor *t = filo_test_upload(dev, FILO_F32, 1, shape, v);
        filo_comm_work *w = NULL;
        filo_status s = filo_all_reduce_start(comm, t, FILO_REDUCE_SUM, "bucket 7", &w);
        if (s == FILO_OK)
            s = filo_comm_work_wait(w);
        cr_assert_eq(s, FILO_ERR_TIMEOUT, "%s: %s", filo_status_name(s), filo_last_error());
        cr_assert(strstr(filo_last_error(), "rank 0: all_reduce #1 (bucket 7, 36 bytes)"), "%s", filo_last_error());
        filo_comm_work_free(w);
        FILO_CHECK_FAILS(filo_all_reduce(comm, t, FILO_REDUCE_SUM), FILO_ERR_COMM, "communicator is broken");
        FILO_CHECK_FAILS(filo_barrier(comm), FILO_ERR_COMM, "FILO_ERR_TIMEOUT");
        FILO_CHECK_FAILS(filo_comm_broadcast_bytes(comm, v, 8, 0), FILO_ERR_COMM, "still queued at its deadline");
        filo_tensor_free(t);
        filo_comm_free(comm);
    }
}

/* ---- launcher detection ---- */

static filo_status detect_with(const char *const *pairs, filo_dist_env *env)
{
    clear_launch_env();
    for (int i = 0; pairs[i]; i += 2)
        setenv(pairs[i], pairs[i + 1], 1);
    memset(env, 0x5A, sizeof *env);
    return filo_dist_env_detect(env);
}

Test(dist, env_detect_launchers)
{
    filo_dist_env e;
    const char *none[] = {NULL};
    FILO_CHECK(detect_with(none, &e));
    cr_assert_eq(e.launcher, FILO_LAUNCH_SINGLE);
    cr_assert(e.rank == 0 && e.world_size == 1 && e.local_rank == 0 && e.local_world_size == 1);

    const char *mpi[] = {"OMPI_COMM_WORLD_RANK", "3", "OMPI_COMM_WORLD_SIZE", "4", "OMPI_COMM_WORLD_LOCAL_RANK", "1",
                         "OMPI_COMM_WORLD_LOCAL_SIZE", "2", NULL};
    FILO_CHECK(detect_with(mpi, &e));
    cr_assert_eq(e.launcher, FILO_LAUNCH_MPI);
    cr_assert(e.rank == 3 && e.world_size == 4 && e.local_rank == 1 && e.local_world_size == 2);

    const char *torchrun[] = {"RANK", "2", "WORLD_SIZE", "3", "LOCAL_RANK", "0", "LOCAL_WORLD_SIZE", "1",
                              "MASTER_ADDR", "10.0.0.7", "MASTER_PORT", "29500", NULL};
    FILO_CHECK(detect_with(torchrun, &e));
    cr_assert_eq(e.launcher, FILO_LAUNCH_ENV);
    cr_assert(e.rank == 2 && e.world_size == 3 && e.local_rank == 0 && e.local_world_size == 1);
    cr_assert_str_eq(e.master_addr, "10.0.0.7");
    cr_assert_eq(e.master_port, 29500);

    /* Without LOCAL_*, every rank is on this host. */
    const char *plain[] = {"RANK", "1", "WORLD_SIZE", "2", "MASTER_ADDR", "127.0.0.1", "MASTER_PORT", "4000", NULL};
    FILO_CHECK(detect_with(plain, &e));
    cr_assert(e.local_rank == 1 && e.local_world_size == 2);
}

Test(dist, env_detect_malformed)
{
    filo_dist_env e;
    struct {
        const char *pairs[14];
        const char *needle;
    } cases[] = {
        {{"RANK", "0", NULL}, "WORLD_SIZE is not set"},
        {{"WORLD_SIZE", "2", NULL}, "RANK is not set"},
        {{"RANK", "2", "WORLD_SIZE", "2", "MASTER_ADDR", "h", "MASTER_PORT", "1", NULL}, "RANK=2 is not below WORLD_SIZE=2"},
        {{"RANK", "x1", "WORLD_SIZE", "2", NULL}, "RANK='x1' is not a non-negative integer"},
        {{"RANK", "-1", "WORLD_SIZE", "2", NULL}, "RANK='-1'"},
        {{"RANK", "0", "WORLD_SIZE", "", NULL}, "WORLD_SIZE is set but empty"},
        {{"RANK", "0", "WORLD_SIZE", "0", NULL}, "WORLD_SIZE=0"},
        {{"RANK", "0", "WORLD_SIZE", "99999999999", NULL}, "WORLD_SIZE='99999999999' is out of range"},
        {{"RANK", "0", "WORLD_SIZE", "2", "MASTER_PORT", "29500", NULL}, "MASTER_ADDR is not set"},
        {{"RANK", "0", "WORLD_SIZE", "2", "MASTER_ADDR", "", "MASTER_PORT", "29500", NULL}, "MASTER_ADDR is empty"},
        {{"RANK", "0", "WORLD_SIZE", "2", "MASTER_ADDR", "h", NULL}, "MASTER_PORT is not set"},
        {{"RANK", "0", "WORLD_SIZE", "2", "MASTER_ADDR", "h", "MASTER_PORT", "70000", NULL}, "MASTER_PORT=70000"},
        {{"RANK", "0", "WORLD_SIZE", "2", "MASTER_ADDR", "h", "MASTER_PORT", "0", NULL}, "MASTER_PORT=0"},
        {{"RANK", "0", "WORLD_SIZE", "2", "LOCAL_RANK", "0", "MASTER_ADDR", "h", "MASTER_PORT", "1", NULL},
         "LOCAL_RANK is set without LOCAL_WORLD_SIZE"},
        {{"RANK", "0", "WORLD_SIZE", "2", "LOCAL_RANK", "2", "LOCAL_WORLD_SIZE", "2", NULL},
         "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"},
        {{"RANK", "0", "WORLD_SIZE", "2", "LOCAL_RANK", "0", "LOCAL_WORLD_SIZE", "3", NULL},
         "LOCAL_WORLD_SIZE=3 must be between 1 and WORLD_SIZE=2"},
        {{"OMPI_COMM_WORLD_RANK", "0", NULL}, "OMPI_COMM_WORLD_SIZE is not set"},
        {{"OMPI_COMM_WORLD_RANK", "5", "OMPI_COMM_WORLD_SIZE", "4", NULL}, "OMPI_COMM_WORLD_RANK=5 is not below"},
        {{"OMPI_COMM_WORLD_RANK", "0", "OMPI_COMM_WORLD_SIZE", "4", "OMPI_COMM_WORLD_LOCAL_SIZE", "4", NULL},
         "OMPI_COMM_WORLD_LOCAL_SIZE is set without OMPI_COMM_WORLD_LOCAL_RANK"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILO_CHECK_FAILS(detect_with(cases[i].pairs, &e), FILO_ERR_INVALID_ARG, cases[i].needle);
    }
    FILO_CHECK_FAILS(filo_dist_env_detect(NULL), FILO_ERR_INVALID_ARG, "must not be NULL");
    clear_launch_env();
}

/* ---- forked worlds over TCP ---- */

#define MAX_WORLD 3
/* Collectives of the worlds that do not test deadlines get this long. */
#define WORLD_TIMEOUT_S 20.0

typedef struct world_args {
    filo_device dev;
    double timeout_s;
    int victim;     /* the rank that sleeps past the timeout or dies */
    int by_abort;   /* the victim dies through filo_comm_abort rather than exiting */
} world_args;

typedef filo_test_rank_result rank_result;
typedef filo_status (*rank_body)(filo_comm *comm, const world_args *a);

typedef struct body_call {
    rank_body body;
    const world_args *a;
} body_call;

/* The child: joins the world the way a user's program does (environment, detect, init) and runs
 * the body. */
static filo_status dist_rank(int rank, int world, int port, void *p)
{
    const body_call *c = p;
    char num[16];
    clear_launch_env();
    snprintf(num, sizeof num, "%d", rank);
    setenv("RANK", num, 1);
    snprintf(num, sizeof num, "%d", world);
    setenv("WORLD_SIZE", num, 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    snprintf(num, sizeof num, "%d", port);
    setenv("MASTER_PORT", num, 1);
    filo_dist_env env;
    filo_comm *comm = NULL;
    filo_comm_options opts = {c->a->timeout_s, WORLD_TIMEOUT_S};
    filo_status s = filo_dist_env_detect(&env);
    if (s == FILO_OK)
        s = filo_comm_init(&env, c->a->dev, &opts, &comm);
    if (s == FILO_OK)
        s = c->body(comm, c->a);
    /* The message outlives the free (which may clear it). */
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", s != FILO_OK ? filo_last_error() : "");
    filo_comm_free(comm);
    if (s != FILO_OK)
        filo_error_set(s, "rank", "%s", msg);
    return s;
}

/* A hung rank must not hang the test. */
static void world_run(int world, rank_body body, const world_args *a, rank_result *res)
{
    body_call c = {body, a};
    filo_test_world_run(world, NULL, 60.0, dist_rank, &c, res);
}

static void expect_all_ok(int world, const rank_result *res, const char *what)
{
    for (int r = 0; r < world; r++)
        cr_assert_eq(res[r].status, FILO_OK, "%s: rank %d: %s: %s", what, r,
                     res[r].status < 0 ? "died" : filo_status_name((filo_status)res[r].status), res[r].msg);
}

/* ---- bodies (they run in the children: no cr_assert there, a status and a message instead) ---- */

static filo_status mismatch(const char *what, int64_t i, double got, double want)
{
    return filo_error_set(FILO_ERR_INTERNAL, "test", "%s: element %lld is %g, expected %g", what, (long long)i, got, want);
}

static filo_status compare(const filo_tensor *t, const double *want, int64_t n, double tol, const char *what)
{
    double *got = malloc(sizeof(double) * (size_t)(n + 1));
    filo_status s = filo_tensor_to_host_as(t, FILO_F64, got, sizeof(double) * (size_t)n);
    for (int64_t i = 0; s == FILO_OK && i < n; i++)
        if (fabs(got[i] - want[i]) > tol * fmax(1.0, fabs(want[i])))
            s = mismatch(what, i, got[i], want[i]);
    free(got);
    return s;
}

static filo_status upload(filo_device dev, filo_dtype dt, int64_t n, const double *v, filo_tensor **out)
{
    void *host = malloc((size_t)(n + 1) * 8);
    filo_status s = filo_convert(v, FILO_F64, host, dt, (size_t)n);
    if (s == FILO_OK)
        s = filo_tensor_from_host(dev, dt, 1, &n, host, out);
    free(host);
    return s;
}

static double tolerance(filo_dtype dt)
{
    switch (dt) {
    case FILO_F32: return 1e-5;
    case FILO_F64: return 1e-12;
    case FILO_BF16: return 1e-2;
    case FILO_F16: return 1e-3;
    default: return 0;
    }
}

/* What the all-reduce of every rank's fill_values(seed) gives. */
static void expected_reduce(double *want, int64_t n, uint64_t seed, filo_dtype dt, filo_reduce_op op, int world)
{
    double *v = malloc(sizeof(double) * (size_t)n);
    for (int r = 0; r < world; r++) {
        fill_values(v, n, seed * 31 + (uint64_t)r, dt);
        for (int64_t i = 0; i < n; i++) {
            if (r == 0)
                want[i] = v[i];
            else if (op == FILO_REDUCE_MAX)
                want[i] = fmax(want[i], v[i]);
            else if (op == FILO_REDUCE_MIN)
                want[i] = fmin(want[i], v[i]);
            else
                want[i] += v[i];
        }
    }
    if (op == FILO_REDUCE_AVG)
        for (int64_t i = 0; i < n; i++)
            want[i] = filo_dtype_is_float(dt) ? want[i] / world : trunc(want[i] / world);
    free(v);
}

/* Every collective of every dtype on the communicator's device (and CPU tensors on a device
 * communicator), random odd sizes, against the values computed here. */
static filo_status body_collectives(filo_comm *comm, const world_args *a)
{
    int rank = filo_comm_rank(comm), world = filo_comm_size(comm);
    filo_dtype dts[6];
    int nd = dtypes_for(a->dev, dts);
    filo_device places[2] = {a->dev, filo_cpu()};
    int nplaces = a->dev.type == FILO_DEVICE_CUDA ? 2 : 1;
    filo_status s = FILO_OK;
    double v[301], want[301 * MAX_WORLD];
    for (int p = 0; p < nplaces && s == FILO_OK; p++) {
        for (int d = 0; d < nd && s == FILO_OK; d++) {
            filo_dtype dt = dts[d];
            if (places[p].type == FILO_DEVICE_CPU && (dt == FILO_BF16 || dt == FILO_F16))
                continue;
            int64_t n = 97 + 2 * d;
            for (int op = FILO_REDUCE_SUM; op <= FILO_REDUCE_MIN && s == FILO_OK; op++) {
                uint64_t seed = (uint64_t)(100 * p + 10 * d + op);
                fill_values(v, n, seed * 31 + (uint64_t)rank, dt);
                filo_tensor *t = NULL;
                s = upload(places[p], dt, n, v, &t);
                if (s == FILO_OK)
                    s = filo_all_reduce(comm, t, (filo_reduce_op)op);
                expected_reduce(want, n, seed, dt, (filo_reduce_op)op, world);
                if (s == FILO_OK)
                    s = compare(t, want, n, tolerance(dt), "all_reduce");
                filo_tensor_free(t);
            }
            /* broadcast from the last rank */
            filo_tensor *t = NULL, *out = NULL;
            fill_values(v, n, 77 + (uint64_t)rank, dt);
            if (s == FILO_OK)
                s = upload(places[p], dt, n, v, &t);
            if (s == FILO_OK)
                s = filo_broadcast(comm, t, world - 1);
            fill_values(want, n, 77 + (uint64_t)(world - 1), dt);
            if (s == FILO_OK)
                s = compare(t, want, n, 0, "broadcast");
            /* all_gather: every rank's values in rank order */
            int64_t total = n * world;
            if (s == FILO_OK)
                s = filo_tensor_zeros(places[p], dt, 1, &total, &out);
            if (s == FILO_OK)
                s = filo_all_gather(comm, t, out);
            for (int r = 0; r < world; r++)
                fill_values(want + r * n, n, 77 + (uint64_t)(world - 1), dt);
            if (s == FILO_OK)
                s = compare(out, want, total, 0, "all_gather");
            filo_tensor_free(t);
            filo_tensor_free(out);
        }
    }
    return s;
}

/* Four collectives in flight at once (device and CPU tensors mixed), waited in reverse order;
 * then the byte collectives, a varied gather and a barrier. */
static filo_status body_in_flight(filo_comm *comm, const world_args *a)
{
    int rank = filo_comm_rank(comm), world = filo_comm_size(comm);
    filo_device cpu = filo_cpu();
    enum { N = 4 };
    int64_t n[N] = {33, 1001, 7, 65};
    filo_device where[N] = {a->dev, cpu, a->dev, cpu};
    filo_tensor *t[N] = {NULL};
    filo_comm_work *w[N] = {NULL};
    double v[1001], want[1001];
    filo_status s = FILO_OK;
    for (int i = 0; i < N && s == FILO_OK; i++) {
        fill_values(v, n[i], (uint64_t)(500 + i) * 31 + (uint64_t)rank, FILO_F32);
        s = upload(where[i], FILO_F32, n[i], v, &t[i]);
    }
    char label[32];
    for (int i = 0; i < N && s == FILO_OK; i++) {
        snprintf(label, sizeof label, "bucket %d", i);
        s = i == 2 ? filo_broadcast_start(comm, t[i], 0, label, &w[i])
                   : filo_all_reduce_start(comm, t[i], FILO_REDUCE_SUM, label, &w[i]);
    }
    for (int i = N - 1; i >= 0 && s == FILO_OK; i--) {
        s = filo_comm_work_wait(w[i]);
        if (s == FILO_OK && !filo_comm_work_done(w[i]) && where[i].type == FILO_DEVICE_CPU)
            s = filo_error_set(FILO_ERR_INTERNAL, "test", "a waited CPU work is not done");
        if (i == 2) {
            fill_values(want, n[i], (uint64_t)(500 + i) * 31, FILO_F32);
        } else {
            expected_reduce(want, n[i], (uint64_t)(500 + i), FILO_F32, FILO_REDUCE_SUM, world);
        }
        if (s == FILO_OK)
            s = compare(t[i], want, n[i], 1e-5, "in flight");
    }
    for (int i = 0; i < N; i++) {
        filo_comm_work_free(w[i]);
        filo_tensor_free(t[i]);
    }
    if (s != FILO_OK)
        return s;

    int64_t mine = 1000 + rank, all[MAX_WORLD];
    FILO_TRY_TEST(filo_comm_all_gather_bytes(comm, &mine, sizeof mine, all));
    for (int r = 0; r < world; r++)
        if (all[r] != 1000 + r)
            return mismatch("all_gather_bytes", r, (double)all[r], 1000 + r);
    char word[16];
    snprintf(word, sizeof word, "rank%d", rank);
    FILO_TRY_TEST(filo_comm_broadcast_bytes(comm, word, sizeof word, world - 1));
    char expect_word[16];
    snprintf(expect_word, sizeof expect_word, "rank%d", world - 1);
    if (strcmp(word, expect_word) != 0)
        return filo_error_set(FILO_ERR_INTERNAL, "test", "broadcast_bytes gave '%s'", word);
    /* Rank r sends 3r+1 bytes of 'a'+r (rank 0 one byte, the longest the last). */
    char text[16];
    memset(text, 'a' + rank, sizeof text);
    void *gathered = NULL;
    size_t lens[MAX_WORLD];
    FILO_TRY_TEST(filo_comm_all_gather_varied(comm, text, (size_t)(3 * rank + 1), &gathered, lens));
    const char *g = gathered;
    for (int r = 0; r < world; r++) {
        if (lens[r] != (size_t)(3 * r + 1))
            s = mismatch("varied length", r, (double)lens[r], 3 * r + 1);
        for (size_t i = 0; s == FILO_OK && i < lens[r]; i++)
            if (g[i] != 'a' + r)
                s = mismatch("varied byte", (int64_t)i, g[i], 'a' + r);
        g += lens[r];
    }
    free(gathered);
    if (s == FILO_OK)
        s = filo_barrier(comm);
    filo_comm_stats st;
    filo_comm_stats_get(comm, &st);
    /* 4 in flight, all_gather_bytes, broadcast_bytes, varied (2), barrier */
    if (s == FILO_OK && st.collectives != 9)
        s = mismatch("stats.collectives", 0, (double)st.collectives, 9);
    return s;
}

/* The victim rank sleeps past the timeout before its all-reduce: the others' all-reduce fails
 * with FILO_ERR_TIMEOUT naming this rank and the op, and their next call with FILO_ERR_COMM. */
static filo_status body_timeout(filo_comm *comm, const world_args *a)
{
    int rank = filo_comm_rank(comm);
    double v[41];
    fill_values(v, 41, 9, FILO_F32);
    filo_tensor *t = NULL;
    FILO_TRY_TEST(upload(a->dev, FILO_F32, 41, v, &t));
    if (rank == a->victim) {
        struct timespec ts = {(time_t)(a->timeout_s * 2), 0};
        nanosleep(&ts, NULL);
    }
    filo_comm_work *w = NULL;
    filo_status s = filo_all_reduce_start(comm, t, FILO_REDUCE_SUM, "late bucket", &w);
    if (s == FILO_OK)
        s = filo_comm_work_wait(w);
    filo_comm_work_free(w);
    if (s != FILO_OK && rank != a->victim) {
        char first[2048];
        snprintf(first, sizeof first, "%s", filo_last_error());
        filo_status next = filo_all_reduce(comm, t, FILO_REDUCE_SUM);
        if (next != FILO_ERR_COMM || !strstr(filo_last_error(), "communicator is broken"))
            s = filo_error_set(FILO_ERR_INTERNAL, "test", "the call after the failure gave %s: %s",
                               filo_status_name(next), filo_last_error());
        else
            filo_error_set(s, "first failure", "%s", first);
    }
    filo_tensor_free(t);
    return s;
}

/* The victim exits (or aborts) right after joining; the others' next collective fails at once. */
static filo_status body_dead_peer(filo_comm *comm, const world_args *a)
{
    if (filo_comm_rank(comm) == a->victim) {
        if (a->by_abort)
            filo_comm_abort(comm, "the test aborts this rank");
        _exit(0);
    }
    double v[19];
    fill_values(v, 19, 4, FILO_F64);
    filo_tensor *t = NULL;
    FILO_TRY_TEST(upload(a->dev, FILO_F64, 19, v, &t));
    filo_status s = filo_all_reduce(comm, t, FILO_REDUCE_MAX);
    filo_tensor_free(t);
    return s;
}

/* ---- the world tests ---- */

Test(dist, world_of_three_collectives, .timeout = 240)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb && b < 2; b++) {
        world_args a = {devs[b], WORLD_TIMEOUT_S, -1, 0};
        rank_result res[MAX_WORLD];
        world_run(3, body_collectives, &a, res);
        expect_all_ok(3, res, filo_test_backend_name(devs[b]));
        cr_log_info("%s: 3 ranks, every collective and dtype: %.2f s", filo_test_backend_name(devs[b]), res[0].seconds);
    }
}

Test(dist, world_of_two_in_flight_bytes_varied, .timeout = 240)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb && b < 2; b++) {
        world_args a = {devs[b], WORLD_TIMEOUT_S, -1, 0};
        rank_result res[MAX_WORLD];
        world_run(2, body_in_flight, &a, res);
        expect_all_ok(2, res, filo_test_backend_name(devs[b]));
    }
}

Test(dist, world_timeout_names_rank_and_op, .timeout = 240)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb && b < 2; b++) {
        world_args a = {devs[b], 1.0, 1, 0};
        rank_result res[MAX_WORLD];
        world_run(2, body_timeout, &a, res);
        cr_log_info("%s: rank 0: %s", filo_test_backend_name(devs[b]), res[0].msg);
        cr_log_info("%s: rank 1: %s", filo_test_backend_name(devs[b]), res[1].msg);
        cr_assert_eq(res[0].status, FILO_ERR_TIMEOUT, "rank 0: %s: %s", filo_status_name((filo_status)res[0].status),
                     res[0].msg);
        cr_assert(strstr(res[0].msg, "rank 0: all_reduce #1 (late bucket"), "%s", res[0].msg);
        cr_assert(res[1].status != FILO_OK && res[1].status != -1, "rank 1: %d %s", res[1].status, res[1].msg);
        /* Rank 0 fails at its deadline (1 s), not at the grace's end or later. */
        cr_assert(res[0].seconds < 8.0, "rank 0 took %.1f s", res[0].seconds);
    }
}

Test(dist, world_dead_peer_fails_fast, .timeout = 240)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < 2 * nb && b < 4; b++) {
        /* Odd rounds: the victim calls filo_comm_abort (which prints and closes its connections). */
        world_args a = {devs[b / 2], WORLD_TIMEOUT_S, 1, b % 2};
        rank_result res[MAX_WORLD];
        world_run(3, body_dead_peer, &a, res);
        cr_log_info("%s%s: rank 0: %s", filo_test_backend_name(devs[b / 2]), a.by_abort ? " (abort)" : "", res[0].msg);
        for (int r = 0; r < 3; r += 2) {
            cr_assert_eq(res[r].status, FILO_ERR_COMM, "rank %d: %s: %s", r, filo_status_name((filo_status)res[r].status),
                         res[r].msg);
            cr_assert(strstr(res[r].msg, "rank 1"), "rank %d: %s", r, res[r].msg);
            cr_assert(res[r].seconds < WORLD_TIMEOUT_S / 2, "rank %d took %.1f s", r, res[r].seconds);
        }
        cr_assert_eq(res[1].status, -1);
    }
}
