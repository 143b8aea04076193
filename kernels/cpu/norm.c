/* CPU LayerNorm/RMSNorm, forward and backward: the reference for kernels/cuda/norm.cu.
 * Everything is computed in double (two-pass statistics) and rounded once at the store. The
 * fused residual sum is rounded to x's dtype before it is normalized, as the CUDA kernel does and
 * as PyTorch does when it adds in that dtype; for bf16/f16 the add is done in f32 like the
 * kernel, so h is bit-identical on both backends. */
#include <math.h>
#include <stdlib.h>

#include "element.h"
#include "error.h"
#include "norm_backend.h"

static double load(const void *base, filo_dtype t, int64_t i)
{
    return filo_el_load_f((const char *)base + i * (int64_t)filo_el_size(t), t);
}

static void store(void *base, filo_dtype t, int64_t i, double v)
{
    filo_el_store_f((char *)base + i * (int64_t)filo_el_size(t), t, v);
}

static filo_dtype stat_dtype(filo_dtype t) { return t == FILO_F64 ? FILO_F64 : FILO_F32; }

filo_status filo_cpu_norm_forward(const filo_norm_forward_desc *d)
{
    int64_t C = d->cols;
    filo_dtype sd = stat_dtype(d->dtype);
    double *row = malloc(sizeof(double) * (size_t)C);
    if (!row)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for a row of %lld", (long long)C);
    for (int64_t r = 0; r < d->rows; r++) {
        int64_t base = r * C;
        for (int64_t c = 0; c < C; c++) {
            double v = load(d->x, d->dtype, base + c);
            if (d->residual) {
                double s = load(d->residual, d->dtype, base + c);
                v = d->dtype == FILO_F64 ? v + s : (double)((float)v + (float)s);
                store(d->h, d->dtype, base + c, v);
                v = load(d->h, d->dtype, base + c);
            }
            row[c] = v;
        }
        double mean = 0, var = 0;
        if (!d->rms) {
            for (int64_t c = 0; c < C; c++)
                mean += row[c];
            mean /= (double)C;
        }
        for (int64_t c = 0; c < C; c++)
            var += (row[c] - mean) * (row[c] - mean);
        var /= (double)C;
        double rstd = 1.0 / sqrt(var + d->eps);
        if (!d->rms)
            store(d->mean, sd, r, mean);
        store(d->rstd, sd, r, rstd);
        for (int64_t c = 0; c < C; c++) {
            double v = (row[c] - mean) * rstd * load(d->gamma, d->param_dtype, c);
            if (d->beta)
                v += load(d->beta, d->param_dtype, c);
            store(d->y, d->dtype, base + c, v);
        }
    }
    free(row);
    return FILO_OK;
}

filo_status filo_cpu_norm_backward(const filo_norm_backward_desc *d)
{
    int64_t C = d->cols;
    filo_dtype sd = stat_dtype(d->dtype);
    /* Four row-sized buffers: dgamma and dbeta sums, then this row's dxhat and xhat. */
    double *buf = calloc((size_t)C * 4, sizeof(double));
    if (!buf)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for 4 rows of %lld", (long long)C);
    double *dg = buf, *db = buf + C, *dxhat = buf + 2 * C, *xhat = buf + 3 * C;
    for (int64_t r = 0; r < d->rows; r++) {
        int64_t base = r * C;
        double mean = d->rms ? 0.0 : load(d->mean, sd, r);
        double rstd = load(d->rstd, sd, r);
        double s1 = 0, s2 = 0;
        for (int64_t c = 0; c < C; c++) {
            double dy = load(d->dy, d->dtype, base + c);
            xhat[c] = (load(d->h, d->dtype, base + c) - mean) * rstd;
            dxhat[c] = dy * load(d->gamma, d->param_dtype, c);
            s1 += dxhat[c];
            s2 += dxhat[c] * xhat[c];
            dg[c] += dy * xhat[c];
            db[c] += dy;
        }
        s1 = d->rms ? 0.0 : s1 / (double)C;
        s2 /= (double)C;
        for (int64_t c = 0; c < C; c++)
            store(d->dx, d->dtype, base + c, rstd * (dxhat[c] - s1 - xhat[c] * s2));
    }
    for (int64_t c = 0; c < C; c++) {
        store(d->dgamma, d->param_dtype, c, dg[c]);
        if (d->dbeta)
            store(d->dbeta, d->param_dtype, c, db[c]);
    }
    free(buf);
    return FILO_OK;
}
