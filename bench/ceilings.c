/* The ceilings the kernel benchmarks are measured against, taken on the machine that runs them:
 * a large copy (the most bytes per second any memory-bound kernel can hope for) and a large square
 * GEMM per dtype (the arithmetic rate the vendor library reaches). */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

typedef struct host_copy {
    void *src, *dst;
    size_t bytes;
} host_copy;

static filo_status run_host_copy(void *ctx)
{
    host_copy *c = ctx;
    memcpy(c->dst, c->src, c->bytes);
    return FILO_OK;
}

typedef struct tensor_copy {
    filo_tensor *src, *dst;
} tensor_copy;

static filo_status run_tensor_copy(void *ctx)
{
    tensor_copy *c = ctx;
    return filo_tensor_copy(c->dst, c->src);
}

/* On the CPU, memcpy between two buffers larger than the last-level cache; on a GPU, a
 * device-to-device copy of two large tensors (cudaMemcpyAsync underneath). */
static filo_status copy_rate(const bench_options *opt, double *bytes_per_s)
{
    size_t bytes = opt->quick ? ((size_t)4 << 20) : opt->device.type == FILO_DEVICE_CPU ? ((size_t)256 << 20)
                                                                                         : ((size_t)1 << 30);
    double ms = 0;
    filo_status st;
    if (opt->device.type == FILO_DEVICE_CPU) {
        host_copy c = {malloc(bytes), malloc(bytes), bytes};
        if (!c.src || !c.dst) {
            free(c.src);
            free(c.dst);
            return FILO_ERR_OOM;
        }
        memset(c.src, 1, bytes);
        memset(c.dst, 2, bytes);
        st = bench_time_ms(opt->device, opt->warmup, opt->reps, run_host_copy, &c, &ms);
        free(c.src);
        free(c.dst);
    } else {
        int64_t n = (int64_t)(bytes / 4);
        tensor_copy c = {NULL, NULL};
        st = filo_tensor_zeros(opt->device, FILO_F32, 1, &n, &c.src);
        if (st == FILO_OK)
            st = filo_tensor_zeros(opt->device, FILO_F32, 1, &n, &c.dst);
        if (st == FILO_OK)
            st = bench_time_ms(opt->device, opt->warmup, opt->reps, run_tensor_copy, &c, &ms);
        filo_tensor_free(c.src);
        filo_tensor_free(c.dst);
    }
    if (st == FILO_OK)
        *bytes_per_s = 2.0 * (double)bytes / (ms * 1e-3);
    return st;
}

typedef struct gemm {
    filo_tensor *a, *b;
} gemm;

static filo_status run_gemm(void *ctx)
{
    gemm *g = ctx;
    filo_tensor *c = NULL;
    filo_status st = filo_matmul(g->a, g->b, 0, 0, NULL, FILO_MATMUL_EPILOGUE_NONE, &c, NULL);
    filo_tensor_free(c);
    return st;
}

static filo_status gemm_rate(const bench_options *opt, filo_dtype dtype, int64_t n, double *flops_per_s)
{
    int64_t shape[2] = {n, n};
    gemm g = {NULL, NULL};
    filo_generator gen;
    filo_generator_init(&gen, 1);
    double ms = 0;
    filo_status st = filo_tensor_empty(opt->device, dtype, 2, shape, &g.a);
    if (st == FILO_OK)
        st = filo_tensor_empty(opt->device, dtype, 2, shape, &g.b);
    if (st == FILO_OK)
        st = filo_tensor_uniform(g.a, &gen, -1.0, 1.0);
    if (st == FILO_OK)
        st = filo_tensor_uniform(g.b, &gen, -1.0, 1.0);
    if (st == FILO_OK)
        st = bench_time_ms(opt->device, opt->warmup, opt->reps, run_gemm, &g, &ms);
    filo_tensor_free(g.a);
    filo_tensor_free(g.b);
    if (st == FILO_OK)
        *flops_per_s = 2.0 * (double)n * (double)n * (double)n / (ms * 1e-3);
    return st;
}

/* Square GEMMs large enough to reach the library's steady rate: 1536 on a CPU (a few tens of
 * milliseconds), 4096 (f32) and 8192 (bf16, f16) on a GPU. */
filo_status bench_gemm_peak(const bench_options *opt, filo_dtype dtype, double *flops_per_s)
{
    int64_t n = opt->quick ? 64 : opt->device.type == FILO_DEVICE_CPU ? 1536 : dtype == FILO_F32 ? 4096 : 8192;
    return gemm_rate(opt, dtype, n, flops_per_s);
}

filo_status bench_measure_ceilings(const bench_options *opt, bench_ceilings *out)
{
    memset(out, 0, sizeof *out);
    BENCH_TRY(copy_rate(opt, &out->copy_bytes_per_s));
    /* On the CPU bf16 and f16 GEMMs convert to f32 around oneDNN's f32 GEMM (kernels/cpu/matmul.c):
     * their ceiling is that whole path, measured like the others. */
    static const filo_dtype types[] = {FILO_F32, FILO_BF16, FILO_F16};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        BENCH_TRY(bench_gemm_peak(opt, types[i], &out->gemm_flops_per_s[types[i]]));
    return FILO_OK;
}
