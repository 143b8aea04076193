/* CPU reductions and softmax: the references for kernels/cuda/reduce.cu.
 *
 * Each output gathers its reduced values (converted to the accumulation type: double for f64,
 * float otherwise) into a scratch row, then reduces the row. Sums are pairwise, like the GPU's
 * tree, so f32 sums of long rows keep their precision; variance is two-pass. */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "element.h"
#include "error.h"
#include "parallel.h"
#include "reduce_backend.h"
#include "simd.h"

/* Rows up to this length are summed left to right; longer ones split in halves. */
#define PAIRWISE_BLOCK 8

/* Defines the row routines for one accumulation type ACC with suffix SFX. */
#define DEFINE_ROW_OPS(ACC, SFX, EXP, LOG)                                                          \
    static ACC row_sum_##SFX(const ACC *v, int64_t n)                                               \
    {                                                                                               \
        if (n <= PAIRWISE_BLOCK) {                                                                  \
            ACC s = 0;                                                                              \
            for (int64_t i = 0; i < n; i++)                                                         \
                s += v[i];                                                                          \
            return s;                                                                               \
        }                                                                                           \
        int64_t h = n / 2;                                                                          \
        return row_sum_##SFX(v, h) + row_sum_##SFX(v + h, n - h);                                   \
    }                                                                                               \
                                                                                                    \
    /* NaN wins, as in PyTorch; otherwise the first maximum (sign < 0: minimum). */                 \
    static int64_t row_arg_extreme_##SFX(const ACC *v, int64_t n, int sign)                         \
    {                                                                                               \
        int64_t best = 0;                                                                           \
        for (int64_t i = 1; i < n && !isnan(v[best]); i++)                                          \
            if (isnan(v[i]) || (sign > 0 ? v[i] > v[best] : v[i] < v[best]))                        \
                best = i;                                                                           \
        return best;                                                                                \
    }                                                                                               \
                                                                                                    \
    static ACC row_reduce_##SFX(filo_reduce_kind kind, ACC *v, int64_t n, int correction)           \
    {                                                                                               \
        switch (kind) {                                                                             \
        case FILO_RK_SUM: return row_sum_##SFX(v, n);                                               \
        case FILO_RK_MEAN: return row_sum_##SFX(v, n) / (ACC)n;                                     \
        case FILO_RK_MAX: return v[row_arg_extreme_##SFX(v, n, 1)];                                 \
        case FILO_RK_MIN: return v[row_arg_extreme_##SFX(v, n, -1)];                                \
        case FILO_RK_ARGMAX: return (ACC)0;                                                         \
        case FILO_RK_VAR: {                                                                         \
            ACC mean = row_sum_##SFX(v, n) / (ACC)n;                                                \
            for (int64_t i = 0; i < n; i++)                                                         \
                v[i] = (v[i] - mean) * (v[i] - mean);                                               \
            int64_t dof = n - correction > 0 ? n - correction : 0;                                  \
            return row_sum_##SFX(v, n) / (ACC)dof;                                                  \
        }                                                                                           \
        }                                                                                           \
        return (ACC)0;                                                                              \
    }                                                                                               \
                                                                                                    \
    /* v holds the row on entry and exp(v - max) on return (for the write). */                      \
    static void row_softmax_##SFX(ACC *v, int64_t n, int log_out, ACC *shift, ACC *scale)          \
    {                                                                                               \
        ACC m = v[0];                                                                               \
        for (int64_t i = 1; i < n; i++)                                                             \
            m = v[i] > m ? v[i] : m;                                                                \
        for (int64_t i = 0; i < n; i++)                                                             \
            v[i] = EXP(v[i] - m);                                                                   \
        ACC s = row_sum_##SFX(v, n);                                                                \
        *shift = m;                                                                                 \
        *scale = log_out ? LOG(s) : (ACC)1 / s;                                                     \
    }

DEFINE_ROW_OPS(float, f, expf, logf)
DEFINE_ROW_OPS(double, d, exp, log)

static void gather_f(const char *x, filo_dtype dt, int64_t start, int64_t n, int64_t stride, float *v)
{
    size_t es = filo_dtype_size(dt);
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)filo_el_load_f(x + (start + i * stride) * (int64_t)es, dt);
}

static void gather_d(const char *x, filo_dtype dt, int64_t start, int64_t n, int64_t stride, double *v)
{
    size_t es = filo_dtype_size(dt);
    for (int64_t i = 0; i < n; i++)
        v[i] = filo_el_load_f(x + (start + i * stride) * (int64_t)es, dt);
}

/* Outputs go in tiles of up to REDUCE_TILE neighbours along `inner` (a bias gradient's columns):
 * a tile's values are gathered row by row, REDUCE_TILE contiguous elements at a time, where one
 * output at a time read a whole cache line for each element of a column. Each output is still
 * reduced alone by the routines above, so the bits do not depend on the tiling; tiles spread over
 * the CPU pool, each chunk with its own scratch. Full f32 tiles of sums and means skip the
 * scratch: col_sums16 adds the 16 columns in vector lanes, each in row_sum_f's order. */
#define REDUCE_TILE 16

/* The sums of 16 neighbouring f32 columns (rows `stride` apart) at once: lane c runs exactly
 * row_sum_f's additions for column c, in its order. row_sum_f's recursion (halves down to
 * PAIRWISE_BLOCK, then left to right) is walked with explicit stacks, since the clone that runs it
 * cannot call itself. */
FILO_SIMD_INLINE void col_sums16(filo_v16f *out, const float *x, int64_t n, int64_t stride)
{
    struct frame {
        int64_t off, n;
        int done; /* halves already pushed */
    } st[64];
    filo_v16f val[64];
    int sp = 0, vp = 0;
    st[sp++] = (struct frame){0, n, 0};
    while (sp > 0) {
        struct frame *f = &st[sp - 1];
        if (f->n <= PAIRWISE_BLOCK) {
            filo_v16f a = {0};
            for (int64_t i = 0; i < f->n; i++)
                a += *(const filo_v16f *)(x + (f->off + i) * stride);
            val[vp++] = a;
            sp--;
        } else if (f->done == 0) {
            f->done = 1;
            st[sp++] = (struct frame){f->off, f->n / 2, 0};
        } else if (f->done == 1) {
            f->done = 2;
            st[sp++] = (struct frame){f->off + f->n / 2, f->n - f->n / 2, 0};
        } else {
            val[vp - 2] = val[vp - 2] + val[vp - 1];
            vp--;
            sp--;
        }
    }
    *out = val[0];
}

typedef struct reduce_job {
    const filo_reduce_desc *d;
    int64_t tiles_per_outer, width;
    atomic_int failed;
} reduce_job;

FILO_SIMD_CLONES static void reduce_tiles(void *ctx, int chunk, int64_t t0, int64_t t1)
{
    (void)chunk;
    reduce_job *job = ctx;
    const filo_reduce_desc *d = job->d;
    int dbl = d->dtype == FILO_F64;
    int64_t n = d->extent;
    void *scratch = malloc((size_t)(n > 0 ? n * job->width : 1) * (dbl ? sizeof(double) : sizeof(float)));
    if (!scratch) {
        atomic_store(&job->failed, 1);
        return;
    }
    const char *x = d->x;
    char *out = d->out;
    size_t es = filo_dtype_size(d->dtype);
    for (int64_t t = t0; t < t1; t++) {
        int64_t o = t / job->tiles_per_outer, i0 = t % job->tiles_per_outer * job->width;
        int64_t w = d->inner - i0 < job->width ? d->inner - i0 : job->width, start = o * n * d->inner + i0;
        if (d->dtype == FILO_F32 && w == FILO_V16 && n > 0 &&
            (d->kind == FILO_RK_SUM || d->kind == FILO_RK_MEAN)) {
            filo_v16f sum;
            col_sums16(&sum, (const float *)x + start, n, d->inner);
            if (d->kind == FILO_RK_MEAN)
                sum = sum / (float)n;
            *(filo_v16f *)((float *)out + o * d->inner + i0) = sum;
            continue;
        }
        if (d->dtype == FILO_F32) {
            const float *xf = (const float *)x + start;
            for (int64_t r = 0; r < n; r++)
                for (int64_t c = 0; c < w; c++)
                    ((float *)scratch)[c * n + r] = xf[r * d->inner + c];
        } else {
            for (int64_t r = 0; r < n; r++)
                for (int64_t c = 0; c < w; c++) {
                    const char *p = x + (start + r * d->inner + c) * (int64_t)es;
                    if (dbl)
                        ((double *)scratch)[c * n + r] = filo_el_load_f(p, d->dtype);
                    else
                        ((float *)scratch)[c * n + r] = (float)filo_el_load_f(p, d->dtype);
                }
        }
        for (int64_t c = 0; c < w; c++) {
            int64_t k = o * d->inner + i0 + c;
            if (d->kind == FILO_RK_ARGMAX) {
                ((int64_t *)out)[k] = dbl ? row_arg_extreme_d((double *)scratch + c * n, n, 1)
                                          : row_arg_extreme_f((float *)scratch + c * n, n, 1);
                continue;
            }
            double r = dbl ? row_reduce_d(d->kind, (double *)scratch + c * n, n, d->correction)
                           : row_reduce_f(d->kind, (float *)scratch + c * n, n, d->correction);
            filo_el_store_f(out + k * (int64_t)es, d->dtype, r);
        }
    }
    free(scratch);
}

filo_status filo_cpu_reduce(const filo_reduce_desc *d)
{
    reduce_job job = {.d = d, .width = d->inner < REDUCE_TILE ? d->inner : REDUCE_TILE};
    if (job.width < 1)
        job.width = 1;
    job.tiles_per_outer = (d->inner + job.width - 1) / job.width;
    atomic_init(&job.failed, 0);
    int64_t per_tile = job.width * (d->extent > 0 ? d->extent : 1);
    filo_parallel_for(d->outer * job.tiles_per_outer, per_tile < 32768 ? 32768 / per_tile : 1, reduce_tiles, &job);
    if (atomic_load(&job.failed))
        return FILO_FAIL(FILO_ERR_OOM, "no host memory for %lld rows of %lld values", (long long)job.width,
                         (long long)d->extent);
    return FILO_OK;
}

/* Rows of a softmax over the CPU pool, each chunk with its own scratch row. f32 rows are read and
 * written as floats; other dtypes go through the element conversions. Each row is worked on
 * alone, so the bits do not depend on the split. */
typedef struct softmax_job {
    const filo_softmax_desc *d;
    atomic_int failed;
} softmax_job;

static void softmax_rows(void *ctx, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    softmax_job *job = ctx;
    const filo_softmax_desc *d = job->d;
    int dbl = d->dtype == FILO_F64;
    int64_t n = d->cols;
    void *scratch = malloc((size_t)n * (dbl ? sizeof(double) : sizeof(float)));
    if (!scratch) {
        atomic_store(&job->failed, 1);
        return;
    }
    size_t es = filo_dtype_size(d->dtype);
    const char *x = d->x;
    char *out = d->out;
    for (int64_t r = r0; r < r1; r++) {
        char *y = out + r * n * (int64_t)es;
        if (dbl) {
            double *v = scratch, shift, scale;
            gather_d(x, d->dtype, r * n, n, 1, v);
            row_softmax_d(v, n, d->log, &shift, &scale);
            for (int64_t i = 0; i < n; i++) {
                double xi = filo_el_load_f(x + (r * n + i) * (int64_t)es, d->dtype);
                filo_el_store_f(y + i * (int64_t)es, d->dtype, d->log ? (xi - shift) - scale : v[i] * scale);
            }
        } else if (d->dtype == FILO_F32) {
            float *v = scratch, shift, scale;
            const float *xr = (const float *)x + r * n;
            float *yr = (float *)y;
            memcpy(v, xr, sizeof(float) * (size_t)n);
            row_softmax_f(v, n, d->log, &shift, &scale);
            if (d->log)
                for (int64_t i = 0; i < n; i++)
                    yr[i] = (xr[i] - shift) - scale;
            else
                for (int64_t i = 0; i < n; i++)
                    yr[i] = v[i] * scale;
        } else {
            float *v = scratch, shift, scale;
            gather_f(x, d->dtype, r * n, n, 1, v);
            row_softmax_f(v, n, d->log, &shift, &scale);
            for (int64_t i = 0; i < n; i++) {
                float xi = (float)filo_el_load_f(x + (r * n + i) * (int64_t)es, d->dtype);
                filo_el_store_f(y + i * (int64_t)es, d->dtype, d->log ? (xi - shift) - scale : v[i] * scale);
            }
        }
    }
    free(scratch);
}

filo_status filo_cpu_softmax(const filo_softmax_desc *d)
{
    softmax_job job = {.d = d};
    atomic_init(&job.failed, 0);
    int64_t n = d->cols > 0 ? d->cols : 1;
    filo_parallel_for(d->rows, n < 16384 ? 16384 / n : 1, softmax_rows, &job);
    if (atomic_load(&job.failed))
        return FILO_FAIL(FILO_ERR_OOM, "no host memory for a row of %lld values", (long long)d->cols);
    return FILO_OK;
}
