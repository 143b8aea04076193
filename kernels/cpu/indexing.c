/* CPU versions of the indexing kernels (kernels/indexing_backend.h): the reference for
 * kernels/cuda/indexing.cu. The accumulating ops add in f32 (f64 for f64) in increasing source
 * position per output element, exactly the order the CUDA kernels use, so both backends give
 * bitwise the same sums. Index values were checked by kernels/indexing.c; the loops still skip
 * any outside the range so that they can never write out of bounds. */
#include <stdlib.h>
#include <string.h>

#include "element.h"
#include "error.h"
#include "indexing_backend.h"

static int64_t index_at(const void *index, int is64, int64_t k)
{
    return is64 ? ((const int64_t *)index)[k] : (int64_t)((const int32_t *)index)[k];
}

static double load(const void *base, filo_dtype t, int64_t i)
{
    return filo_el_load_f((const char *)base + i * (int64_t)filo_el_size(t), t);
}

static void store(void *base, filo_dtype t, int64_t i, double v)
{
    filo_el_store_f((char *)base + i * (int64_t)filo_el_size(t), t, v);
}

filo_status filo_cpu_index_select(const filo_index_select_desc *d)
{
    size_t es = d->elsize, row = (size_t)d->inner * es;
    for (int64_t o = 0; o < d->outer; o++)
        for (int64_t k = 0; k < d->K; k++) {
            int64_t n = index_at(d->index, d->index_is64, k);
            char *dst = (char *)d->out + (size_t)((o * d->K + k) * d->inner) * es;
            if (n < 0 || n >= d->N)
                memset(dst, 0, row);
            else
                memcpy(dst, (const char *)d->src + (size_t)((o * d->N + n) * d->inner) * es, row);
        }
    return FILO_OK;
}

/* The CUDA kernel's order (FILO_INDEX_ADD_CHUNK in kernels/indexing_backend.h): pos[k] is the
 * position of contribution k in the list sorted by (row, k), start[n] that of row n's first one.
 * Per output element, `part` sums the current chunk and `total` the finished chunks, in f32 (f64). */
filo_status filo_cpu_index_add(const filo_index_add_desc *d)
{
    int64_t n_out = d->outer * d->N * d->inner;
    int f64 = d->dtype == FILO_F64;
    size_t es = f64 ? sizeof(double) : sizeof(float);
    size_t n_acc = (size_t)(n_out > 0 ? n_out : 1);
    void *total = calloc(n_acc, es), *part = calloc(n_acc, es);
    int64_t *pos = malloc(sizeof(int64_t) * (size_t)(d->K > 0 ? d->K : 1));
    int64_t *start = calloc((size_t)(d->N > 0 ? d->N : 1), sizeof(int64_t));
    int64_t *seen = calloc((size_t)(d->N > 0 ? d->N : 1), sizeof(int64_t));
    filo_status st = FILO_OK;
    if (!total || !part || !pos || !start || !seen) {
        st = FILO_FAIL(FILO_ERR_OOM, "out of host memory for %lld sums", (long long)n_out);
        goto done;
    }
    /* Counting sort of the valid contributions by row, stable in k. */
    for (int64_t k = 0; k < d->K; k++) {
        int64_t n = index_at(d->index, d->index_is64, k);
        if (n >= 0 && n < d->N && n != d->skip)
            seen[n]++;
    }
    for (int64_t n = 0, run = 0; n < d->N; n++) {
        start[n] = run;
        run += seen[n];
        seen[n] = 0;
    }
    for (int64_t k = 0; k < d->K; k++) {
        int64_t n = index_at(d->index, d->index_is64, k);
        pos[k] = n >= 0 && n < d->N && n != d->skip ? start[n] + seen[n]++ : -1;
    }
    double *td = total, *pd = part;
    float *tf = total, *pf = part;
    for (int64_t o = 0; o < d->outer; o++)
        for (int64_t k = 0; k < d->K; k++) {
            if (pos[k] < 0)
                continue;
            int64_t n = index_at(d->index, d->index_is64, k);
            int new_chunk = pos[k] % FILO_INDEX_ADD_CHUNK == 0 && pos[k] != start[n];
            int64_t src = (o * d->K + k) * d->inner, dst = (o * d->N + n) * d->inner;
            for (int64_t i = 0; i < d->inner; i++) {
                double v = load(d->dy, d->dtype, src + i);
                if (f64) {
                    if (new_chunk) {
                        td[dst + i] += pd[dst + i];
                        pd[dst + i] = 0;
                    }
                    pd[dst + i] += v;
                } else {
                    if (new_chunk) {
                        tf[dst + i] += pf[dst + i];
                        pf[dst + i] = 0;
                    }
                    pf[dst + i] += (float)v;
                }
            }
        }
    for (int64_t i = 0; i < n_out; i++)
        store(d->dx, d->dtype, i, f64 ? td[i] + pd[i] : (double)(tf[i] + pf[i]));
done:
    free(total);
    free(part);
    free(pos);
    free(start);
    free(seen);
    return st;
}

filo_status filo_cpu_gather(const filo_gather_desc *d)
{
    int nd = d->ndim;
    size_t es = d->elsize;
    int64_t src_strides[FILO_MAX_DIMS], idx[FILO_MAX_DIMS] = {0};
    int64_t s = 1;
    for (int k = nd - 1; k >= 0; k--) {
        src_strides[k] = s;
        s *= d->src_shape[k];
    }
    for (int64_t p = 0; p < d->numel; p++) {
        int64_t n = index_at(d->index, d->index_is64, p);
        char *dst = (char *)d->out + (size_t)p * es;
        if (n < 0 || n >= d->src_shape[d->dim]) {
            memset(dst, 0, es);
        } else {
            int64_t off = 0;
            for (int k = 0; k < nd; k++)
                off += (k == d->dim ? n : idx[k]) * src_strides[k];
            memcpy(dst, (const char *)d->src + (size_t)off * es, es);
        }
        for (int k = nd - 1; k >= 0; k--) {
            if (++idx[k] < d->index_shape[k])
                break;
            idx[k] = 0;
        }
    }
    return FILO_OK;
}

filo_status filo_cpu_scatter_add(const filo_scatter_add_desc *d)
{
    int nd = d->ndim;
    int f64 = d->dtype == FILO_F64;
    void *acc = malloc((size_t)(d->numel > 0 ? d->numel : 1) * (f64 ? sizeof(double) : sizeof(float)));
    if (!acc)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for %lld sums", (long long)d->numel);
    double *ad = acc;
    float *af = acc;
    for (int64_t i = 0; i < d->numel; i++) {
        if (f64)
            ad[i] = load(d->self, d->dtype, i);
        else
            af[i] = (float)load(d->self, d->dtype, i);
    }
    int64_t self_strides[FILO_MAX_DIMS], src_strides[FILO_MAX_DIMS], idx[FILO_MAX_DIMS] = {0};
    int64_t a = 1, b = 1, n_index = 1;
    for (int k = nd - 1; k >= 0; k--) {
        self_strides[k] = a;
        src_strides[k] = b;
        a *= d->self_shape[k];
        b *= d->src_shape[k];
        n_index *= d->index_shape[k];
    }
    for (int64_t p = 0; p < n_index; p++) {
        int64_t n = index_at(d->index, d->index_is64, p);
        if (n >= 0 && n < d->self_shape[d->dim]) {
            int64_t so = 0, to = 0;
            for (int k = 0; k < nd; k++) {
                so += idx[k] * src_strides[k];
                to += (k == d->dim ? n : idx[k]) * self_strides[k];
            }
            if (f64)
                ad[to] += load(d->src, d->dtype, so);
            else
                af[to] += (float)load(d->src, d->dtype, so);
        }
        for (int k = nd - 1; k >= 0; k--) {
            if (++idx[k] < d->index_shape[k])
                break;
            idx[k] = 0;
        }
    }
    for (int64_t i = 0; i < d->numel; i++)
        store(d->out, d->dtype, i, f64 ? ad[i] : (double)af[i]);
    free(acc);
    return FILO_OK;
}

filo_status filo_cpu_masked_fill(const filo_masked_fill_desc *d)
{
    int nd = d->ndim;
    size_t es = d->elsize;
    int64_t idx[FILO_MAX_DIMS] = {0}, moff = 0;
    for (int64_t p = 0; p < d->numel; p++) {
        char *dst = (char *)d->out + (size_t)p * es;
        if (d->mask[moff])
            memcpy(dst, &d->value, es);
        else
            memcpy(dst, (const char *)d->x + (size_t)p * es, es);
        for (int k = nd - 1; k >= 0; k--) {
            moff += d->mask_strides[k];
            if (++idx[k] < d->shape[k])
                break;
            moff -= d->mask_strides[k] * d->shape[k];
            idx[k] = 0;
        }
    }
    return FILO_OK;
}
