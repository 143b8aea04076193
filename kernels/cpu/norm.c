/* CPU LayerNorm/RMSNorm, forward and backward: the reference for kernels/cuda/norm.cu.
 * Everything is computed in double (two-pass statistics) and rounded once at the store. The
 * fused residual sum is rounded to x's dtype before it is normalized, as the CUDA kernel does and
 * as PyTorch does when it adds in that dtype; for bf16/f16 the add is done in f32 like the
 * kernel, so h is bit-identical on both backends.
 *
 * Rows are spread over the CPU pool (runtime/parallel.h). f32 and bf16 rows are worked on in
 * vectors of 8 doubles straight from their storage (the "vector" section below); f64 and f16 rows
 * are converted to a double buffer, worked on with plain loops, and converted back.
 * The backward's dgamma/dbeta are summed per chunk of rows and the chunks added in order, so the
 * result does not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "element.h"
#include "error.h"
#include "norm_backend.h"
#include "parallel.h"
#include "simd.h"

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

/* ---- f32 and bf16 rows in vectors of 8 doubles ----
 * The same double arithmetic as the loops below, 8 columns a lane apart: the column-wise terms
 * (y, dx, and each column's dgamma/dbeta, still added in row order) keep their bits; the row sums
 * (mean, variance, the backward's two dot products) add in 4 x 8 lanes, then the lanes in a fixed
 * tree, then the tail in order, so they may differ from a left-to-right sum in the last bits of a
 * double. No row buffer: a row is read from L1 again for each pass. */

#define VL 8

/* sum over c of (row[c] - shift)^2 (sq) or of row[c] - shift (!sq). */
FILO_SIMD_INLINE double row_moment(const void *row, filo_dtype t, int64_t C, double shift, int sq)
{
    filo_v8d acc[4] = {{0}}, sh = (filo_v8d){0} + shift;
    int64_t c = 0;
    for (; c + 4 * VL <= C; c += 4 * VL)
        for (int k = 0; k < 4; k++) {
            filo_v8d v;
            filo_simd_load8d(&v, row, t, c + k * VL);
            v = v - sh;
            acc[k] += sq ? v * v : v;
        }
    for (; c + VL <= C; c += VL) {
        filo_v8d v;
        filo_simd_load8d(&v, row, t, c);
        v = v - sh;
        acc[0] += sq ? v * v : v;
    }
    filo_v8d a = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    double s = filo_simd_sum8d(&a);
    for (; c < C; c++) {
        double v = filo_simd_load1d(row, t, c) - shift;
        s += sq ? v * v : v;
    }
    return s;
}

FILO_SIMD_INLINE void forward_row_vec(forward_job *job, filo_dtype t, int64_t r)
{
    const filo_norm_forward_desc *d = job->d;
    int64_t C = d->cols, base = r * C;
    size_t es = t == FILO_F32 ? 4 : 2;
    const void *x = (const char *)d->x + (size_t)base * es;
    if (d->residual) {
        /* h = x + residual in f32, rounded to t, as stored */
        const void *res = (const char *)d->residual + (size_t)base * es;
        void *h = (char *)d->h + (size_t)base * es;
        int64_t c = 0;
        for (; c + VL <= C; c += VL) {
            filo_v8d a, b;
            filo_simd_load8d(&a, x, t, c);
            filo_simd_load8d(&b, res, t, c);
            filo_v8f f = __builtin_convertvector(a, filo_v8f) + __builtin_convertvector(b, filo_v8f);
            if (t == FILO_F32)
                *(filo_v8f *)((float *)h + c) = f;
            else
                filo_simd_store8_bf16((uint16_t *)h + c, &f);
        }
        for (; c < C; c++) {
            float sum = (float)filo_simd_load1d(x, t, c) + (float)filo_simd_load1d(res, t, c);
            filo_simd_store1d(h, t, c, (double)sum);
        }
        x = h;
    }
    double mean = d->rms ? 0.0 : row_moment(x, t, C, 0.0, 0) / (double)C;
    double var = row_moment(x, t, C, mean, 1) / (double)C;
    double rstd = 1.0 / sqrt(var + d->eps);
    if (!d->rms)
        ((float *)d->mean)[r] = (float)mean;
    ((float *)d->rstd)[r] = (float)rstd;
    void *y = (char *)d->y + (size_t)base * es;
    filo_v8d mv = (filo_v8d){0} + mean, rv = (filo_v8d){0} + rstd;
    int64_t c = 0;
    for (; c + VL <= C; c += VL) {
        filo_v8d v;
        filo_simd_load8d(&v, x, t, c);
        v = (v - mv) * rv * *(const filo_v8d *)(job->gamma + c);
        if (job->beta)
            v = v + *(const filo_v8d *)(job->beta + c);
        filo_simd_store8d(y, t, c, &v);
    }
    for (; c < C; c++) {
        double v = (filo_simd_load1d(x, t, c) - mean) * rstd * job->gamma[c];
        filo_simd_store1d(y, t, c, job->beta ? v + job->beta[c] : v);
    }
}

FILO_SIMD_CLONES static void forward_rows_vec(void *ctx, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    forward_job *job = ctx;
    if (job->d->dtype == FILO_F32)
        for (int64_t r = r0; r < r1; r++)
            forward_row_vec(job, FILO_F32, r);
    else
        for (int64_t r = r0; r < r1; r++)
            forward_row_vec(job, FILO_BF16, r);
}

/* The vector paths take f32 and bf16 rows; f64 and f16 take the loops below. */
static int vector_dtype(filo_dtype t) { return t == FILO_F32 || t == FILO_BF16; }

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
    filo_parallel_for(d->rows, grain_rows(C), vector_dtype(d->dtype) ? forward_rows_vec : forward_rows, &job);
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

/* Columns [c, c + 8): the two row sums' terms into s1, s2 and dgamma/dbeta's into dg, db. */
FILO_SIMD_INLINE void backward_terms(filo_v8d *s1, filo_v8d *s2, const void *dyr, const void *hr, filo_dtype t,
                                     int64_t c, const double *gamma, const filo_v8d *mv, const filo_v8d *rv,
                                     double *dg, double *db)
{
    filo_v8d dy, xh;
    filo_simd_load8d(&dy, dyr, t, c);
    filo_simd_load8d(&xh, hr, t, c);
    xh = (xh - *mv) * *rv;
    filo_v8d dxh = dy * *(const filo_v8d *)(gamma + c);
    *s1 += dxh;
    *s2 += dxh * xh;
    *(filo_v8d *)(dg + c) += dy * xh;
    if (db)
        *(filo_v8d *)(db + c) += dy;
}

FILO_SIMD_INLINE void backward_row_vec(backward_job *job, filo_dtype t, int64_t r, double *dg, double *db)
{
    const filo_norm_backward_desc *d = job->d;
    int64_t C = d->cols, base = r * C;
    size_t es = t == FILO_F32 ? 4 : 2;
    const void *dyr = (const char *)d->dy + (size_t)base * es, *hr = (const char *)d->h + (size_t)base * es;
    const double *gamma = job->gamma;
    double mean = d->rms ? 0.0 : (double)((const float *)d->mean)[r];
    double rstd = (double)((const float *)d->rstd)[r];
    filo_v8d mv = (filo_v8d){0} + mean, rv = (filo_v8d){0} + rstd;
    filo_v8d a1[2] = {{0}}, a2[2] = {{0}};
    int64_t c = 0;
    for (; c + 2 * VL <= C; c += 2 * VL)
        for (int k = 0; k < 2; k++)
            backward_terms(&a1[k], &a2[k], dyr, hr, t, c + k * VL, gamma, &mv, &rv, dg, db);
    for (; c + VL <= C; c += VL)
        backward_terms(&a1[0], &a2[0], dyr, hr, t, c, gamma, &mv, &rv, dg, db);
    filo_v8d s1v = a1[0] + a1[1], s2v = a2[0] + a2[1];
    double s1 = filo_simd_sum8d(&s1v), s2 = filo_simd_sum8d(&s2v);
    for (int64_t k = c; k < C; k++) {
        double dy = filo_simd_load1d(dyr, t, k), xh = (filo_simd_load1d(hr, t, k) - mean) * rstd;
        double dxh = dy * gamma[k];
        s1 += dxh;
        s2 += dxh * xh;
        dg[k] += dy * xh;
        if (db)
            db[k] += dy;
    }
    s1 = d->rms ? 0.0 : s1 / (double)C;
    s2 /= (double)C;
    void *dx = (char *)d->dx + (size_t)base * es;
    filo_v8d s1b = (filo_v8d){0} + s1, s2b = (filo_v8d){0} + s2;
    for (c = 0; c + VL <= C; c += VL) {
        filo_v8d dy, xh;
        filo_simd_load8d(&dy, dyr, t, c);
        filo_simd_load8d(&xh, hr, t, c);
        xh = (xh - mv) * rv;
        filo_v8d v = rv * (dy * *(const filo_v8d *)(gamma + c) - s1b - xh * s2b);
        filo_simd_store8d(dx, t, c, &v);
    }
    for (; c < C; c++) {
        double dy = filo_simd_load1d(dyr, t, c), xh = (filo_simd_load1d(hr, t, c) - mean) * rstd;
        filo_simd_store1d(dx, t, c, rstd * (dy * gamma[c] - s1 - xh * s2));
    }
}

FILO_SIMD_CLONES static void backward_rows_vec(void *ctx, int chunk, int64_t r0, int64_t r1)
{
    backward_job *job = ctx;
    const filo_norm_backward_desc *d = job->d;
    double *dg = job->partial + (size_t)chunk * 2 * (size_t)d->cols;
    double *db = d->dbeta ? dg + d->cols : NULL;
    if (d->dtype == FILO_F32)
        for (int64_t r = r0; r < r1; r++)
            backward_row_vec(job, FILO_F32, r, dg, db);
    else
        for (int64_t r = r0; r < r1; r++)
            backward_row_vec(job, FILO_BF16, r, dg, db);
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
    filo_parallel_for(d->rows, grain, vector_dtype(d->dtype) ? backward_rows_vec : backward_rows, &job);
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
