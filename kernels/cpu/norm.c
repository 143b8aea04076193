/* CPU LayerNorm/RMSNorm, forward and backward: the reference for kernels/cuda/norm.cu.
 * Everything is computed in double (two-pass statistics) and rounded once at the store. The
 * fused residual sum is rounded to x's dtype before it is normalized, as the CUDA kernel does and
 * as PyTorch does when it adds in that dtype; for bf16/f16 the add is done in f32 like the
 * kernel, so h is bit-identical on both backends.
 *
 * Rows are spread over the CPU pool (runtime/parallel.h); each row is converted to a double
 * buffer with a typed loop, worked on with loops the compiler vectorizes, and converted back.
 * The backward's dgamma/dbeta are summed per chunk of rows and the chunks added in order, so the
 * result does not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "element.h"
#include "error.h"
#include "norm_backend.h"
#include "parallel.h"

/* Rows per chunk at least this many elements' worth: small problems stay on one thread. */
#define GRAIN_ELEMENTS 16384

static filo_dtype stat_dtype(filo_dtype t) { return t == FILO_F64 ? FILO_F64 : FILO_F32; }

static void load_row(const void *base, filo_dtype t, int64_t off, int64_t n, double *out)
{
    switch (t) {
    case FILO_F64: memcpy(out, (const double *)base + off, sizeof(double) * (size_t)n); break;
    case FILO_F32: {
        const float *p = (const float *)base + off;
        for (int64_t i = 0; i < n; i++)
            out[i] = p[i];
        break;
    }
    case FILO_BF16: {
        const uint16_t *p = (const uint16_t *)base + off;
        for (int64_t i = 0; i < n; i++)
            out[i] = filo_el_bf16_to_f32(p[i]);
        break;
    }
    default: {
        const uint16_t *p = (const uint16_t *)base + off;
        for (int64_t i = 0; i < n; i++)
            out[i] = filo_el_f16_to_f32(p[i]);
        break;
    }
    }
}

static void store_row(void *base, filo_dtype t, int64_t off, int64_t n, const double *in)
{
    switch (t) {
    case FILO_F64: memcpy((double *)base + off, in, sizeof(double) * (size_t)n); break;
    case FILO_F32: {
        float *p = (float *)base + off;
        for (int64_t i = 0; i < n; i++)
            p[i] = (float)in[i];
        break;
    }
    case FILO_BF16: {
        uint16_t *p = (uint16_t *)base + off;
        for (int64_t i = 0; i < n; i++)
            p[i] = filo_el_f32_to_bf16((float)in[i]);
        break;
    }
    default: {
        uint16_t *p = (uint16_t *)base + off;
        for (int64_t i = 0; i < n; i++)
            p[i] = filo_el_f32_to_f16((float)in[i]);
        break;
    }
    }
}

static void store_stat(void *base, filo_dtype t, int64_t i, double v)
{
    if (t == FILO_F64)
        ((double *)base)[i] = v;
    else
        ((float *)base)[i] = (float)v;
}

static double load_stat(const void *base, filo_dtype t, int64_t i)
{
    return t == FILO_F64 ? ((const double *)base)[i] : (double)((const float *)base)[i];
}

static int64_t grain_rows(int64_t cols)
{
    int64_t g = GRAIN_ELEMENTS / (cols > 0 ? cols : 1);
    return g < 1 ? 1 : g;
}

/* ---- forward ---- */

typedef struct forward_job {
    const filo_norm_forward_desc *d;
    double *gamma, *beta; /* [C] in double */
    int failed;
} forward_job;

static void forward_rows(void *ctx, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    forward_job *job = ctx;
    const filo_norm_forward_desc *d = job->d;
    int64_t C = d->cols;
    filo_dtype t = d->dtype, sd = stat_dtype(t);
    double *row = malloc(sizeof(double) * 2 * (size_t)C);
    if (!row) {
        job->failed = 1;
        return;
    }
    double *tmp = row + C;
    for (int64_t r = r0; r < r1; r++) {
        int64_t base = r * C;
        load_row(d->x, t, base, C, row);
        if (d->residual) {
            load_row(d->residual, t, base, C, tmp);
            if (t == FILO_F64)
                for (int64_t c = 0; c < C; c++)
                    row[c] += tmp[c];
            else
                for (int64_t c = 0; c < C; c++)
                    row[c] = (double)((float)row[c] + (float)tmp[c]);
            store_row(d->h, t, base, C, row);
            load_row(d->h, t, base, C, row); /* normalize h as stored */
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
            store_stat(d->mean, sd, r, mean);
        store_stat(d->rstd, sd, r, rstd);
        if (job->beta)
            for (int64_t c = 0; c < C; c++)
                tmp[c] = (row[c] - mean) * rstd * job->gamma[c] + job->beta[c];
        else
            for (int64_t c = 0; c < C; c++)
                tmp[c] = (row[c] - mean) * rstd * job->gamma[c];
        store_row(d->y, t, base, C, tmp);
    }
    free(row);
}

filo_status filo_cpu_norm_forward(const filo_norm_forward_desc *d)
{
    int64_t C = d->cols;
    double *params = malloc(sizeof(double) * 2 * (size_t)C);
    if (!params)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for 2 rows of %lld", (long long)C);
    forward_job job = {d, params, d->beta ? params + C : NULL, 0};
    load_row(d->gamma, d->param_dtype, 0, C, job.gamma);
    if (d->beta)
        load_row(d->beta, d->param_dtype, 0, C, job.beta);
    filo_parallel_for(d->rows, grain_rows(C), forward_rows, &job);
    free(params);
    if (job.failed)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for row buffers of %lld", (long long)C);
    return FILO_OK;
}

/* ---- backward ---- */

typedef struct backward_job {
    const filo_norm_backward_desc *d;
    const double *gamma;
    double *partial; /* [chunks][2C]: each chunk's dgamma and dbeta sums */
    int failed;
} backward_job;

static void backward_rows(void *ctx, int chunk, int64_t r0, int64_t r1)
{
    backward_job *job = ctx;
    const filo_norm_backward_desc *d = job->d;
    int64_t C = d->cols;
    filo_dtype t = d->dtype, sd = stat_dtype(t);
    double *dg = job->partial + (size_t)chunk * 2 * (size_t)C, *db = dg + C;
    double *buf = malloc(sizeof(double) * 2 * (size_t)C);
    if (!buf) {
        job->failed = 1;
        return;
    }
    double *dy = buf, *xhat = buf + C;
    for (int64_t r = r0; r < r1; r++) {
        int64_t base = r * C;
        double mean = d->rms ? 0.0 : load_stat(d->mean, sd, r);
        double rstd = load_stat(d->rstd, sd, r);
        load_row(d->dy, t, base, C, dy);
        load_row(d->h, t, base, C, xhat);
        double s1 = 0, s2 = 0;
        for (int64_t c = 0; c < C; c++) {
            xhat[c] = (xhat[c] - mean) * rstd;
            double dxhat = dy[c] * job->gamma[c];
            s1 += dxhat;
            s2 += dxhat * xhat[c];
            dg[c] += dy[c] * xhat[c];
            db[c] += dy[c];
        }
        s1 = d->rms ? 0.0 : s1 / (double)C;
        s2 /= (double)C;
        for (int64_t c = 0; c < C; c++)
            dy[c] = rstd * (dy[c] * job->gamma[c] - s1 - xhat[c] * s2);
        store_row(d->dx, t, base, C, dy);
    }
    free(buf);
}

filo_status filo_cpu_norm_backward(const filo_norm_backward_desc *d)
{
    int64_t C = d->cols;
    int64_t grain = grain_rows(C);
    int chunks = filo_parallel_chunks(d->rows, grain);
    size_t n_partial = (size_t)(chunks > 0 ? chunks : 1) * 2 * (size_t)C;
    double *mem = calloc(n_partial + (size_t)C, sizeof(double));
    if (!mem)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for %d partial rows of %lld", chunks, (long long)C);
    backward_job job = {d, mem + n_partial, mem, 0};
    load_row(d->gamma, d->param_dtype, 0, C, mem + n_partial);
    filo_parallel_for(d->rows, grain, backward_rows, &job);
    /* Chunk 0's row receives the sums of the others, added in chunk order. */
    for (int k = 1; k < chunks; k++)
        for (int64_t c = 0; c < 2 * C; c++)
            mem[c] += mem[(size_t)k * 2 * (size_t)C + (size_t)c];
    store_row(d->dgamma, d->param_dtype, 0, C, mem);
    if (d->dbeta)
        store_row(d->dbeta, d->param_dtype, 0, C, mem + C);
    int failed = job.failed;
    free(mem);
    if (failed)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for row buffers of %lld", (long long)C);
    return FILO_OK;
}
