/* CPU softmax cross-entropy, forward, backward and fused: the reference for
 * kernels/cuda/loss.cu. The formulas are in include/filo/loss.h. Everything is computed in
 * double (a two-pass log-sum-exp from a row copy) and rounded once at the store. Rows are spread
 * over the CPU pool; each chunk of rows sums its losses in order and the chunks are added in order
 * (chunks depend only on the shape). Every target is checked before anything is written. */
#include <math.h>
#include <stdlib.h>

#include "element.h"
#include "error.h"
#include "filo/loss.h"
#include "loss_backend.h"
#include "parallel.h"

static double load(const void *base, filo_dtype t, int64_t i)
{
    return filo_el_load_f((const char *)base + i * (int64_t)filo_el_size(t), t);
}

static void store(void *base, filo_dtype t, int64_t i, double v)
{
    filo_el_store_f((char *)base + i * (int64_t)filo_el_size(t), t, v);
}

/* Rows [r0, r1) of one pool chunk: its own row buffer and its own partial total. */
typedef struct ce_job {
    const filo_loss_desc *d;
    double W, wsum;
    double total[FILO_PARALLEL_MAX_CHUNKS];
    int failed;
} ce_job;

static void ce_rows(void *ctx, int chunk, int64_t r0, int64_t r1)
{
    ce_job *job = ctx;
    const filo_loss_desc *d = job->d;
    int64_t C = d->cols;
    filo_dtype ad = d->dtype == FILO_F64 ? FILO_F64 : FILO_F32;
    size_t isz = filo_el_size(d->target_dtype);
    const double e = d->label_smoothing, W = job->W, wsum = job->wsum;
    double *row = malloc(sizeof(double) * (size_t)(C > 0 ? C : 1));
    if (!row) {
        job->failed = 1;
        return;
    }
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
                for (int64_t c = 0; c < C; c++)
                    store(d->dx, d->dtype, r * C + c, 0.0);
            continue;
        }
        for (int64_t c = 0; c < C; c++)
            row[c] = load(d->x, d->dtype, r * C + c);
        double wy = d->weight ? load(d->weight, ad, y) : 1.0;
        double lse;
        if (d->compute) {
            double m = -INFINITY, s = 0, swx = 0;
            for (int64_t c = 0; c < C; c++)
                m = row[c] > m ? row[c] : m;
            for (int64_t c = 0; c < C; c++) {
                s += exp(row[c] - m);
                swx += (d->weight ? load(d->weight, ad, c) : 1.0) * row[c];
            }
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
            for (int64_t c = 0; c < C; c++) {
                double p = exp(row[c] - lse);
                double v = p * a - (c == y ? b : 0.0) - (cw > 0 ? cw * (d->weight ? load(d->weight, ad, c) : 1.0) : 0.0);
                store(d->dx, d->dtype, r * C + c, g * v);
            }
        }
    }
    free(row);
    job->total[chunk] = total;
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
