/* CPU bias + GELU forward/backward and the dropout backward with a bias gradient (the CUDA
 * versions: kernels/cuda/bias_act.cu). f32/bf16/f16 compute in f32 on 16-lane vectors
 * (kernels/cpu/vec_math.h: GELU, its derivative, Philox) and round once at the store; f64 runs
 * the double formulas of kernels/bias_act_math.h element by element, the reference. dbias sums
 * the unrounded dx over rows in row order, 16 columns at a time.
 * The forward, and the GELU backward without dbias, spread rows over the CPU pool; the backwards
 * with dbias spread blocks of columns, each chunk walking every row in order, so that each
 * column's sum keeps the row order (the same bits as one thread) while the dbias pass runs on
 * every core. */
#include <stdlib.h>
#include <string.h>

#include "bias_act_backend.h"
#include "bias_act_math.h"
#include "element.h"
#include "error.h"
#include "parallel.h"
#include "vec_math.h"

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

/* Rows [r0, r1) of a f32/bf16/f16 forward, 16 columns at a time. */
FILO_SIMD_CLONES static void forward_rows_vec(const filo_bias_gelu_desc *d, int64_t r0, int64_t r1)
{
    size_t es = filo_el_size(d->dtype), bs = filo_el_size(d->bias_dtype);
    for (int64_t r = r0; r < r1; r++) {
        const char *x = (const char *)d->x + (size_t)(r * d->cols) * es;
        char *y = (char *)d->y + (size_t)(r * d->cols) * es;
        for (int64_t c = 0; c < d->cols; c += FILO_V16) {
            int n = d->cols - c < FILO_V16 ? (int)(d->cols - c) : FILO_V16;
            filo_v16f h = filo_v16_load_n(x + (size_t)c * es, d->dtype, n);
            if (d->bias)
                h = h + filo_v16_load_n((const char *)d->bias + (size_t)c * bs, d->bias_dtype, n);
            h = d->approximate ? filo_v16_gelu_tanh(h) : filo_v16_gelu(h);
            filo_v16_store_n(y + (size_t)c * es, d->dtype, h, n);
        }
    }
}

static void forward_rows(void *ctx, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    const filo_bias_gelu_desc *d = ctx;
    if (d->dtype != FILO_F64) {
        forward_rows_vec(d, r0, r1);
        return;
    }
    for (int64_t r = r0; r < r1; r++)
        for (int64_t c = 0; c < d->cols; c++) {
            int64_t i = r * d->cols + c;
            double b = d->bias ? load(d->bias, d->bias_dtype, c) : 0.0;
            store(d->y, d->dtype, i, filo_gelu_d(load(d->x, d->dtype, i) + b, d->approximate));
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

/* Columns per chunk of the backward passes: each chunk walks every row, so fewer, wider chunks
 * walk the rows fewer times (64 took 1.5x the time of 128 to 1024 on 2048 x 1024 bf16). */
#define GRAIN_COLS 128

typedef struct cols_job {
    const void *d;
    col_sums *s;
} cols_job;

/* Rows [r0, r1) and columns [c0, c1) of a f32/bf16/f16 backward, rows in order, 16 columns at a
 * time, the column sums (when wanted) in sums. */
FILO_SIMD_CLONES static void gelu_backward_vec(const filo_bias_gelu_desc *d, float *sums, int64_t r0, int64_t r1,
                                              int64_t c0, int64_t c1)
{
    size_t es = filo_el_size(d->dtype), bs = filo_el_size(d->bias_dtype);
    for (int64_t r = r0; r < r1; r++) {
        size_t row = (size_t)(r * d->cols) * es;
        for (int64_t c = c0; c < c1; c += FILO_V16) {
            int n = c1 - c < FILO_V16 ? (int)(c1 - c) : FILO_V16;
            size_t at = row + (size_t)c * es;
            filo_v16f h = filo_v16_load_n((const char *)d->x + at, d->dtype, n);
            if (d->bias)
                h = h + filo_v16_load_n((const char *)d->bias + (size_t)c * bs, d->bias_dtype, n);
            filo_v16f g = d->approximate ? filo_v16_gelu_tanh_grad(h) : filo_v16_gelu_grad(h);
            filo_v16f v = filo_v16_load_n((const char *)d->dy + at, d->dtype, n) * g;
            filo_v16_store_n((char *)d->y + at, d->dtype, v, n);
            if (sums)
                filo_v16_store_n(sums + c, FILO_F32, filo_v16_load_n(sums + c, FILO_F32, n) + v, n);
        }
    }
}

static void gelu_backward_cols(void *ctx, int chunk, int64_t c0, int64_t c1)
{
    (void)chunk;
    const cols_job *job = ctx;
    const filo_bias_gelu_desc *d = job->d;
    col_sums *s = job->s;
    if (d->dtype != FILO_F64) {
        gelu_backward_vec(d, s->f, 0, d->rows, c0, c1);
        return;
    }
    for (int64_t r = 0; r < d->rows; r++)
        for (int64_t c = c0; c < c1; c++) {
            int64_t i = r * d->cols + c;
            double b = d->bias ? load(d->bias, d->bias_dtype, c) : 0.0;
            double v = load(d->dy, d->dtype, i) * filo_gelu_grad_d(load(d->x, d->dtype, i) + b, d->approximate);
            store(d->y, d->dtype, i, v);
            if (s->d)
                s->d[c] += v;
        }
}

/* Without dbias no order binds the rows: contiguous blocks of rows, as the forward. */
static void gelu_backward_rows(void *ctx, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    const filo_bias_gelu_desc *d = ctx;
    gelu_backward_vec(d, NULL, r0, r1, 0, d->cols);
}

filo_status filo_cpu_bias_gelu_backward(const filo_bias_gelu_desc *d)
{
    if (!d->dbias && d->dtype != FILO_F64) {
        filo_parallel_for(d->rows, grain_rows(d->cols), gelu_backward_rows, (void *)d);
        return FILO_OK;
    }
    col_sums s;
    FILO_TRY(sums_alloc(&s, d->cols, d->dbias != NULL));
    cols_job job = {d, &s};
    filo_parallel_for(d->cols, GRAIN_COLS, gelu_backward_cols, &job);
    sums_store(&s, d->cols, d->dtype == FILO_F64, d->dbias, d->bias_dtype);
    return FILO_OK;
}

/* dx = mask * scale * dy as filo_cpu_dropout_apply computes it (no bias, no residual), and the
 * sum of the kept products before their rounding to dtype, as the kernel does. */

/* Elements per stretch of a row whose mask bits are drawn at once: the Philox blocks of
 * [e0, e0 + SEG_ELEMENTS) start at e0 rounded down to 4, so the bits span at most SEG + 3
 * elements, 64 a draw. */
#define SEG_ELEMENTS 256
#define SEG_BITS (SEG_ELEMENTS + 64)

/* Columns [c0, c1) for f32/bf16/f16: each row in stretches of SEG_ELEMENTS, 16 columns at a
 * time. */
FILO_SIMD_CLONES static void dropout_dbias_cols_vec(const filo_dropout_dbias_desc *dd, float *sums, int64_t c0,
                                                   int64_t c1)
{
    const filo_dropout_desc *d = &dd->drop;
    size_t es = filo_el_size(d->dtype);
    float scale = (float)d->scale;
    uint32_t bits[SEG_BITS] = {0}; /* a row's last vector may read past its drawn bits, unused */
    for (int64_t r = 0; r < dd->rows; r++)
        for (int64_t s0 = c0; s0 < c1; s0 += SEG_ELEMENTS) {
            int64_t s1 = c1 - s0 < SEG_ELEMENTS ? c1 : s0 + SEG_ELEMENTS;
            int64_t e0 = (r * d->cols + s0) & ~(int64_t)3; /* element of bits[0] */
            if (d->mode == FILO_DROPOUT_MASK)
                for (int64_t e = e0; e < r * d->cols + s1; e += 64) {
                    filo_v16u v[4];
                    filo_v16_philox_elements(d->offset + (uint64_t)e / 4u, 0, d->seed, v);
                    memcpy(bits + (e - e0), v, sizeof v);
                }
            for (int64_t c = s0; c < s1; c += FILO_V16) {
                int n = s1 - c < FILO_V16 ? (int)(s1 - c) : FILO_V16;
                int64_t i = r * d->cols + c;
                filo_v16i keep = (filo_v16i){0} - (d->mode == FILO_DROPOUT_KEEP_ALL);
                if (d->mode == FILO_DROPOUT_MASK) {
                    filo_v16u b;
                    memcpy(&b, bits + (i - e0), sizeof b);
                    keep = filo_v16_dropout_keep(b, d->threshold);
                }
                filo_v16f m = filo_v16_load_n((const char *)d->x + (size_t)i * es, d->dtype, n) * scale;
                filo_v16_store_n((char *)d->y + (size_t)i * es, d->dtype, (filo_v16f)((filo_v16i)m & keep), n);
                filo_v16f acc = filo_v16_load_n(sums + c, FILO_F32, n);
                filo_v16_store_n(sums + c, FILO_F32, filo_v16_select(keep, acc + m, acc), n);
            }
        }
}

static void dropout_dbias_cols(void *ctx, int chunk, int64_t c0, int64_t c1)
{
    (void)chunk;
    const cols_job *job = ctx;
    const filo_dropout_dbias_desc *dd = job->d;
    const filo_dropout_desc *d = &dd->drop;
    col_sums *s = job->s;
    if (d->dtype != FILO_F64) {
        dropout_dbias_cols_vec(dd, s->f, c0, c1);
        return;
    }
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
            store(d->y, d->dtype, i, keep ? g * d->scale : 0.0);
            if (keep)
                s->d[c] += g * d->scale;
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
