/* CPU softmax cross-entropy, forward, backward and fused: the reference for
 * kernels/cuda/loss.cu. The formulas are in include/filo/loss.h. Everything is computed in
 * double (a two-pass log-sum-exp from a row copy) and rounded once at the store. Rows are spread
 * over the CPU pool; each chunk of rows sums its losses in order and the chunks are added in order
 * (chunks depend only on the shape). Every target is checked before anything is written. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "element.h"
#include "error.h"
#include "filo/loss.h"
#include "loss_backend.h"
#include "parallel.h"
#include "simd.h"

static double load(const void *base, filo_dtype t, int64_t i)
{
    return filo_el_load_f((const char *)base + i * (int64_t)filo_el_size(t), t);
}

static void store(void *base, filo_dtype t, int64_t i, double v)
{
    filo_el_store_f((char *)base + i * (int64_t)filo_el_size(t), t, v);
}

/* Rows [r0, r1) of one pool chunk: its own row buffers and its own partial total. */
typedef struct ce_job {
    const filo_loss_desc *d;
    double W, wsum;
    double total[FILO_PARALLEL_MAX_CHUNKS];
    int failed;
} ce_job;

/* Vector loops for f32 and bf16 logits (t a constant where they are inlined), plain ones for the
 * other dtypes. Sums over a row add in 8 lanes, then the lanes in a fixed tree, then the tail in
 * order; exp of the lanes is filo_simd_exp8d (within an ulp of exp), of the tail libm's. */
static int vec_dtype(filo_dtype t) { return t == FILO_F32 || t == FILO_BF16; }

/* out[c] = x[off + c]; returns the row's maximum (NaN entries skipped, as `x > m ? x : m` does;
 * -inf for an empty row). */
FILO_SIMD_INLINE double load_row_max(const void *base, filo_dtype t, int64_t off, int64_t n, double *out)
{
    double m = -INFINITY;
    int64_t c = 0;
    if (vec_dtype(t) && n >= 8) {
        typedef int64_t v8l __attribute__((vector_size(64)));
        filo_v8d mv = (filo_v8d){0} - INFINITY;
        for (; c + 8 <= n; c += 8) {
            filo_v8d v;
            filo_simd_load8d(&v, base, t, off + c);
            *(filo_v8d *)(out + c) = v;
            v8l gt = v > mv;
            mv = (filo_v8d)(((v8l)v & gt) | ((v8l)mv & ~gt));
        }
        for (int l = 0; l < 8; l++)
            m = mv[l] > m ? mv[l] : m;
    }
    for (; c < n; c++) {
        out[c] = load(base, t, off + c);
        m = out[c] > m ? out[c] : m;
    }
    return m;
}

/* ex[c] = exp(row[c] - m); returns their sum. */
FILO_SIMD_INLINE double row_exp_sum(const double *row, double *ex, int64_t n, double m, filo_dtype t)
{
    double s = 0;
    int64_t c = 0;
    if (vec_dtype(t)) {
        filo_v8d acc = {0};
        for (; c + 8 <= n; c += 8) {
            filo_v8d v = *(const filo_v8d *)(row + c) - m;
            filo_simd_exp8d(&v);
            *(filo_v8d *)(ex + c) = v;
            acc += v;
        }
        s = filo_simd_sum8d(&acc);
    }
    for (; c < n; c++) {
        ex[c] = exp(row[c] - m);
        s += ex[c];
    }
    return s;
}

FILO_SIMD_INLINE double row_sum(const double *row, int64_t n, filo_dtype t)
{
    double s = 0;
    int64_t c = 0;
    if (vec_dtype(t)) {
        filo_v8d acc = {0};
        for (; c + 8 <= n; c += 8)
            acc += *(const filo_v8d *)(row + c);
        s = filo_simd_sum8d(&acc);
    }
    for (; c < n; c++)
        s += row[c];
    return s;
}

/* ex[c] = ex[c] / s * a */
FILO_SIMD_INLINE void row_scale(double *ex, int64_t n, double s, double a, filo_dtype t)
{
    int64_t c = 0;
    if (vec_dtype(t))
        for (; c + 8 <= n; c += 8)
            *(filo_v8d *)(ex + c) = *(filo_v8d *)(ex + c) / s * a;
    for (; c < n; c++)
        ex[c] = ex[c] / s * a;
}

/* dx[off + c] = g * v[c], rounded once to t */
FILO_SIMD_INLINE void store_row_scaled(void *base, filo_dtype t, int64_t off, int64_t n, double g, const double *v)
{
    int64_t c = 0;
    if (vec_dtype(t))
        for (; c + 8 <= n; c += 8) {
            filo_v8d x = g * *(const filo_v8d *)(v + c);
            filo_simd_store8d(base, t, off + c, &x);
        }
    for (; c < n; c++)
        store(base, t, off + c, g * v[c]);
}

/* The forward keeps exp(x - max) of each class and the backward divides it by the row's sum,
 * rather than calling exp again for exp(x - lse): one exp per logit, the same value but for the
 * rounding of a double. */
FILO_SIMD_INLINE void ce_rows_of(ce_job *job, int chunk, int64_t r0, int64_t r1, filo_dtype t)
{
    const filo_loss_desc *d = job->d;
    int64_t C = d->cols;
    filo_dtype ad = d->dtype == FILO_F64 ? FILO_F64 : FILO_F32;
    size_t isz = filo_el_size(d->target_dtype);
    const double e = d->label_smoothing, W = job->W, wsum = job->wsum;
    double *row = malloc(sizeof(double) * 2 * (size_t)(C > 0 ? C : 1));
    if (!row) {
        job->failed = 1;
        return;
    }
    double *ex = row + C; /* exp(x - max), then the gradient's factor of g */
    double total = 0;
    for (int64_t r = r0; r < r1; r++) {
        int64_t y = filo_el_load_i((const char *)d->target + r * (int64_t)isz, d->target_dtype);
        int ignored = y == d->ignore_index;
        if (ignored) {
            if (d->compute && d->lse)
                store(d->lse, ad, r, 0.0);
            if (d->compute && d->reduction == FILO_LOSS_NONE)
                store(d->loss, ad, r, 0.0);
            if (d->grad)
                memset((char *)d->dx + r * C * (int64_t)filo_el_size(t), 0, filo_el_size(t) * (size_t)C);
            continue;
        }
        double m = load_row_max(d->x, t, r * C, C, row);
        double wy = d->weight ? load(d->weight, ad, y) : 1.0;
        double lse, s = 0;
        if (d->compute) {
            double swx = 0;
            s = row_exp_sum(row, ex, C, m, t);
            if (d->weight)
                for (int64_t c = 0; c < C; c++)
                    swx += load(d->weight, ad, c) * row[c];
            else
                swx = row_sum(row, C, t);
            lse = m + log(s);
            double nll = -wy * (row[y] - lse);
            double smooth = wsum * lse - swx;
            double l = (1 - e) * nll + (e > 0 ? e / (double)C * smooth : 0.0);
            if (d->lse)
                store(d->lse, ad, r, lse);
            if (d->reduction == FILO_LOSS_NONE)
                store(d->loss, ad, r, l);
            total += l;
        } else {
            lse = load(d->lse, ad, r);
        }
        if (d->grad) {
            double g;
            if (!d->compute)
                g = load(d->dloss, ad, d->reduction == FILO_LOSS_NONE ? r : 0);
            else
                g = d->grad_scale;
            if (d->reduction == FILO_LOSS_MEAN)
                g /= W;
            double a = (1 - e) * wy + e * wsum / (double)C, b = (1 - e) * wy, cw = e / (double)C;
            /* v = p a - [c == y] b - cw w_c, with p = exp(x - lse) */
            if (d->compute)
                row_scale(ex, C, s, a, t);
            else
                for (int64_t c = 0; c < C; c++)
                    ex[c] = exp(row[c] - lse) * a;
            double pa_y = ex[y];
            if (cw > 0) {
                if (d->weight)
                    for (int64_t c = 0; c < C; c++)
                        ex[c] -= cw * load(d->weight, ad, c);
                else
                    for (int64_t c = 0; c < C; c++)
                        ex[c] -= cw;
            }
            ex[y] = (pa_y - b) - (cw > 0 ? cw * wy : 0.0);
            store_row_scaled(d->dx, t, r * C, C, g, ex);
        }
    }
    free(row);
    job->total[chunk] = total;
}

FILO_SIMD_CLONES static void ce_rows(void *ctx, int chunk, int64_t r0, int64_t r1)
{
    ce_job *job = ctx;
    switch (job->d->dtype) {
    case FILO_F32: ce_rows_of(job, chunk, r0, r1, FILO_F32); break;
    case FILO_BF16: ce_rows_of(job, chunk, r0, r1, FILO_BF16); break;
    default: ce_rows_of(job, chunk, r0, r1, job->d->dtype); break;
    }
}

filo_status filo_cpu_cross_entropy(const filo_loss_desc *d)
{
    int64_t C = d->cols, N = d->rows;
    filo_dtype ad = d->dtype == FILO_F64 ? FILO_F64 : FILO_F32;
    size_t isz = filo_el_size(d->target_dtype);

    /* W (the MEAN divisor) and Wsum, after checking every target. */
    double W = 0, wsum = 0;
    for (int64_t r = 0; r < N; r++) {
        int64_t y = filo_el_load_i((const char *)d->target + r * (int64_t)isz, d->target_dtype);
        if (y == d->ignore_index)
            continue;
        if (y < 0 || y >= C)
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "target %lld at row %lld is outside [0, %lld) and is not ignore_index %lld",
                             (long long)y, (long long)r, (long long)C, (long long)d->ignore_index);
        W += d->weight ? load(d->weight, ad, y) : 1.0;
    }
    for (int64_t c = 0; c < C; c++)
        wsum += d->weight ? load(d->weight, ad, c) : 1.0;

    ce_job job = {.d = d, .W = W, .wsum = wsum};
    int chunks = filo_parallel_for(N, C > 0 && C < 16384 ? 16384 / C : 1, ce_rows, &job);
    if (job.failed)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for a row of %lld", (long long)C);
    double total = 0;
    for (int k = 0; k < chunks; k++)
        total += job.total[k];
    if (d->compute && d->reduction != FILO_LOSS_NONE)
        store(d->loss, ad, 0, d->reduction == FILO_LOSS_MEAN ? total / W : total);
    return FILO_OK;
}
