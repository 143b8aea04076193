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

#include "filo/dist.h"
#include "filo_test.h"

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
        FILO_CHECK_FAILS(filo_comm_broadcast_bytes(comm, v, 8, 0), FILO_ERR_COMM, "did not start within");
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
