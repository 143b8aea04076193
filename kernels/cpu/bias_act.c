/* CPU bias + GELU forward/backward and the dropout backward with a bias gradient: the reference
 * for kernels/cuda/bias_act.cu. f32 arithmetic for f32/bf16/f16 (the GELU of
 * kernels/bias_act_math.h), double for f64; dbias sums the unrounded dx over rows in row order.
 * The forward spreads rows over the CPU pool; the backwards spread blocks of columns, each chunk
 * walking every row in order, so that each column's sum keeps the row order (the same bits as one
 * thread) while the dbias pass runs on every core. */
#include <stdlib.h>
#include <string.h>

#include "bias_act_backend.h"
#include "bias_act_math.h"
#include "element.h"
#include "error.h"
#include "parallel.h"

static double load(const void *base, filo_dtype t, int64_t i)
{
    return filo_el_load_f((const char *)base + i * (int64_t)filo_el_size(t), t);
}

static void store(void *base, filo_dtype t, int64_t i, double v)
{
    filo_el_store_f((char *)base + i * (int64_t)filo_el_size(t), t, v);
}

#define GRAIN_ELEMENTS 32768

static int64_t grain_rows(int64_t cols) { return cols > 0 && cols < GRAIN_ELEMENTS ? GRAIN_ELEMENTS / cols : 1; }

static void forward_rows(void *ctx, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    const filo_bias_gelu_desc *d = ctx;
    int f64 = d->dtype == FILO_F64;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t c = 0; c < d->cols; c++) {
            int64_t i = r * d->cols + c;
            double x = load(d->x, d->dtype, i), b = d->bias ? load(d->bias, d->bias_dtype, c) : 0.0;
            double v = f64 ? filo_gelu_d(x + b, d->approximate) : filo_gelu_f((float)x + (float)b, d->approximate);
            store(d->y, d->dtype, i, v);
        }
}

filo_status filo_cpu_bias_gelu_forward(const filo_bias_gelu_desc *d)
{
    filo_parallel_for(d->rows, grain_rows(d->cols), forward_rows, (void *)d);
    return FILO_OK;
}

/* Column sums (dbias) in double for f64, else f32 like the kernel's accumulators. */
typedef struct col_sums {
    double *d;
    float *f;
} col_sums;

static filo_status sums_alloc(col_sums *s, int64_t cols, int want)
{
    s->d = NULL;
    s->f = NULL;
    if (!want)
        return FILO_OK;
    s->d = calloc((size_t)cols, sizeof(double));
    s->f = calloc((size_t)cols, sizeof(float));
    if (!s->d || !s->f) {
        free(s->d);
        free(s->f);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for %lld column sums", (long long)cols);
    }
    return FILO_OK;
}

static void sums_store(col_sums *s, int64_t cols, int f64, void *dbias, filo_dtype t)
{
    if (s->d)
        for (int64_t c = 0; c < cols; c++)
            store(dbias, t, c, f64 ? s->d[c] : (double)s->f[c]);
    free(s->d);
    free(s->f);
}

/* Columns per chunk of the backward passes: a chunk reads 256 bytes of f32 per row. */
#define GRAIN_COLS 64

typedef struct cols_job {
    const void *d;
    col_sums *s;
} cols_job;

static void gelu_backward_cols(void *ctx, int chunk, int64_t c0, int64_t c1)
{
    (void)chunk;
    const cols_job *job = ctx;
    const filo_bias_gelu_desc *d = job->d;
    col_sums *s = job->s;
    int f64 = d->dtype == FILO_F64;
    if (d->dtype == FILO_F32 && (!d->bias || d->bias_dtype == FILO_F32)) {
        /* The float path below on typed pointers. */
        const float *x = d->x, *dy = d->dy, *bias = d->bias;
        float *y = d->y;
        for (int64_t r = 0; r < d->rows; r++)
            for (int64_t c = c0; c < c1; c++) {
                int64_t i = r * d->cols + c;
                float v = dy[i] * filo_gelu_grad_f(x[i] + (bias ? bias[c] : 0.0f), d->approximate);
                y[i] = v;
                if (s->f)
                    s->f[c] += v;
            }
        return;
    }
    for (int64_t r = 0; r < d->rows; r++)
        for (int64_t c = c0; c < c1; c++) {
            int64_t i = r * d->cols + c;
            double x = load(d->x, d->dtype, i), g = load(d->dy, d->dtype, i);
            double b = d->bias ? load(d->bias, d->bias_dtype, c) : 0.0;
            if (f64) {
                double v = g * filo_gelu_grad_d(x + b, d->approximate);
                store(d->y, d->dtype, i, v);
                if (s->d)
                    s->d[c] += v;
            } else {
                float v = (float)g * filo_gelu_grad_f((float)x + (float)b, d->approximate);
                store(d->y, d->dtype, i, v);
                if (s->f)
                    s->f[c] += v;
            }
        }
}

filo_status filo_cpu_bias_gelu_backward(const filo_bias_gelu_desc *d)
{
    col_sums s;
    FILO_TRY(sums_alloc(&s, d->cols, d->dbias != NULL));
    cols_job job = {d, &s};
    filo_parallel_for(d->cols, GRAIN_COLS, gelu_backward_cols, &job);
    sums_store(&s, d->cols, d->dtype == FILO_F64, d->dbias, d->bias_dtype);
    return FILO_OK;
}

/* dx = mask * scale * dy as filo_cpu_dropout_apply computes it (no bias, no residual), and the
 * sum of the kept products before their rounding to dtype, as the kernel does; one Philox block
 * serves the 4 elements it covers. */
static void dropout_dbias_cols(void *ctx, int chunk, int64_t c0, int64_t c1)
{
    (void)chunk;
    const cols_job *job = ctx;
    const filo_dropout_dbias_desc *dd = job->d;
    const filo_dropout_desc *d = &dd->drop;
    col_sums *s = job->s;
    int f64 = d->dtype == FILO_F64;
    float scale_f = (float)d->scale;
    uint32_t bits[4] = {0, 0, 0, 0};
    uint64_t block = UINT64_MAX;
    for (int64_t r = 0; r < dd->rows; r++)
        for (int64_t c = c0; c < c1; c++) {
            int64_t i = r * d->cols + c;
            int keep = d->mode == FILO_DROPOUT_KEEP_ALL;
            if (d->mode == FILO_DROPOUT_MASK) {
                uint64_t blk = d->offset + (uint64_t)i / 4u;
                if (blk != block) {
                    filo_philox_block(blk, 0, d->seed, bits);
                    block = blk;
                }
                keep = filo_dropout_keep_bits(bits[i & 3], d->threshold);
            }
            double g = load(d->x, d->dtype, i);
            if (f64) {
                store(d->y, d->dtype, i, keep ? g * d->scale : 0.0);
                if (keep)
                    s->d[c] += g * d->scale;
            } else {
                float m = keep ? (float)g * scale_f : 0.0f;
                store(d->y, d->dtype, i, m);
                if (keep)
                    s->f[c] += (float)g * scale_f;
            }
        }
}

filo_status filo_cpu_dropout_dbias(const filo_dropout_dbias_desc *d)
{
    col_sums s;
    FILO_TRY(sums_alloc(&s, d->drop.cols, 1));
    cols_job job = {d, &s};
    filo_parallel_for(d->drop.cols, GRAIN_COLS, dropout_dbias_cols, &job);
    sums_store(&s, d->drop.cols, d->drop.dtype == FILO_F64, d->dbias, d->dbias_dtype);
    return FILO_OK;
}
