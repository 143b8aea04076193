/* CPU bias + GELU forward/backward and the dropout backward with a bias gradient: the reference
 * for kernels/cuda/bias_act.cu. f32 arithmetic for f32/bf16/f16 (the GELU of
 * kernels/bias_act_math.h), double for f64; dbias sums the unrounded dx over rows in row order.
 * The forward spreads rows over the CPU pool. */
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

filo_status filo_cpu_bias_gelu_backward(const filo_bias_gelu_desc *d)
{
    int f64 = d->dtype == FILO_F64;
    col_sums s;
    FILO_TRY(sums_alloc(&s, d->cols, d->dbias != NULL));
    for (int64_t r = 0; r < d->rows; r++)
        for (int64_t c = 0; c < d->cols; c++) {
            int64_t i = r * d->cols + c;
            double x = load(d->x, d->dtype, i), g = load(d->dy, d->dtype, i);
            double b = d->bias ? load(d->bias, d->bias_dtype, c) : 0.0;
            if (f64) {
                double v = g * filo_gelu_grad_d(x + b, d->approximate);
                store(d->y, d->dtype, i, v);
                if (s.d)
                    s.d[c] += v;
            } else {
                float v = (float)g * filo_gelu_grad_f((float)x + (float)b, d->approximate);
                store(d->y, d->dtype, i, v);
                if (s.f)
                    s.f[c] += v;
            }
        }
    sums_store(&s, d->cols, f64, d->dbias, d->bias_dtype);
    return FILO_OK;
}

filo_status filo_cpu_dropout_dbias(const filo_dropout_dbias_desc *d)
{
    FILO_TRY(filo_cpu_dropout_apply(&d->drop));
    int f64 = d->drop.dtype == FILO_F64;
    col_sums s;
    FILO_TRY(sums_alloc(&s, d->drop.cols, 1));
    for (int64_t r = 0; r < d->rows; r++)
        for (int64_t c = 0; c < d->drop.cols; c++) {
            /* Sum the product before its rounding to dtype, as the kernel does. */
            int64_t i = r * d->drop.cols + c;
            int keep = d->drop.mode == FILO_DROPOUT_KEEP_ALL ||
                       (d->drop.mode == FILO_DROPOUT_MASK &&
                        filo_dropout_keep(d->drop.seed, d->drop.offset, (uint64_t)i, d->drop.threshold));
            if (!keep)
                continue;
            double g = load(d->drop.x, d->drop.dtype, i);
            if (f64)
                s.d[c] += g * d->drop.scale;
            else
                s.f[c] += (float)g * (float)d->drop.scale;
        }
    sums_store(&s, d->drop.cols, f64, d->dbias, d->dbias_dtype);
    return FILO_OK;
}
