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
#include "parallel.h"
#include "simd.h"

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

/* index_add and embedding_backward in the CUDA kernel's order (FILO_INDEX_ADD_CHUNK in
 * kernels/indexing_backend.h): a stable counting sort lists each row's contributions by k once;
 * then every output row is written exactly once, zeros where no contribution lands (most of an
 * embedding table) and otherwise its sums, `part` over the current chunk and `total` over the
 * finished chunks, in f32 (f64 for f64). Output rows are spread over the CPU pool; each is summed
 * alone in the fixed order, so the bits depend neither on the thread count nor on the CPU. */

typedef struct index_add_job {
    const filo_index_add_desc *d;
    const int64_t *start; /* [N + 1]: row n's contributions are order[start[n] .. start[n + 1]) */
    const int64_t *order; /* source positions k, sorted by (row, k) */
    int stream;           /* zero rows with non-temporal stores (outputs far beyond the caches) */
} index_add_job;

/* Outputs of at least this many bytes are zeroed with non-temporal stores. */
#define STREAM_BYTES (8 << 20)

static void zero_row(const index_add_job *job, void *dst, size_t bytes)
{
    if (job->stream)
        filo_simd_zero_stream(dst, bytes);
    else
        memset(dst, 0, bytes);
}

/* The f32 sums of output columns [c, c + nv * 16) of one row: `part` and `total` stay in
 * registers while the row's contributions stream by. p0: the sorted position of the first. */
FILO_SIMD_INLINE void add_block_f32(float *dst, const float *dy, int64_t inner, const int64_t *ks, int64_t cnt,
                                    int64_t p0, int64_t c, int nv)
{
    filo_v16f part[4] = {{0}}, total[4] = {{0}};
    for (int64_t j = 0; j < cnt; j++) {
        if (j > 0 && (p0 + j) % FILO_INDEX_ADD_CHUNK == 0)
            for (int v = 0; v < nv; v++) {
                total[v] += part[v];
                part[v] = (filo_v16f){0};
            }
        const float *src = dy + ks[j] * inner + c;
        for (int v = 0; v < nv; v++)
            part[v] += *(const filo_v16f *)(src + v * FILO_V16);
    }
    for (int v = 0; v < nv; v++)
        *(filo_v16f *)(dst + c + v * FILO_V16) = total[v] + part[v];
}

FILO_SIMD_CLONES static void index_add_rows_f32(void *ctx, int chunk, int64_t q0, int64_t q1)
{
    (void)chunk;
    const index_add_job *job = ctx;
    const filo_index_add_desc *d = job->d;
    int64_t inner = d->inner;
    for (int64_t q = q0; q < q1; q++) {
        int64_t o = q / d->N, n = q % d->N, p0 = job->start[n], cnt = job->start[n + 1] - p0;
        float *dst = (float *)d->dx + q * inner;
        if (cnt == 0) {
            zero_row(job, dst, sizeof(float) * (size_t)inner);
            continue;
        }
        const float *dy = (const float *)d->dy + o * d->K * inner;
        const int64_t *ks = job->order + p0;
        int64_t c = 0;
        for (; c + 4 * FILO_V16 <= inner; c += 4 * FILO_V16)
            add_block_f32(dst, dy, inner, ks, cnt, p0, c, 4);
        for (; c + FILO_V16 <= inner; c += FILO_V16)
            add_block_f32(dst, dy, inner, ks, cnt, p0, c, 1);
        for (; c < inner; c++) {
            float part = 0.0f, total = 0.0f;
            for (int64_t j = 0; j < cnt; j++) {
                if (j > 0 && (p0 + j) % FILO_INDEX_ADD_CHUNK == 0) {
                    total += part;
                    part = 0.0f;
                }
                part += dy[ks[j] * inner + c];
            }
            dst[c] = total + part;
        }
    }
    if (job->stream)
        filo_simd_stream_fence();
}

/* Any dtype, in blocks of ANY_BLOCK columns: f64 sums in double, bf16 and f16 in f32. */
#define ANY_BLOCK 64

static void index_add_rows_any(void *ctx, int chunk, int64_t q0, int64_t q1)
{
    (void)chunk;
    const index_add_job *job = ctx;
    const filo_index_add_desc *d = job->d;
    int f64 = d->dtype == FILO_F64;
    int64_t inner = d->inner;
    double pd[ANY_BLOCK], td[ANY_BLOCK];
    float pf[ANY_BLOCK], tf[ANY_BLOCK];
    for (int64_t q = q0; q < q1; q++) {
        int64_t o = q / d->N, n = q % d->N, p0 = job->start[n], cnt = job->start[n + 1] - p0;
        const int64_t *ks = job->order + p0;
        if (cnt == 0) {
            zero_row(job, (char *)d->dx + q * inner * (int64_t)filo_el_size(d->dtype),
                     filo_el_size(d->dtype) * (size_t)inner);
            continue;
        }
        for (int64_t c0 = 0; c0 < inner; c0 += ANY_BLOCK) {
            int w = inner - c0 < ANY_BLOCK ? (int)(inner - c0) : ANY_BLOCK;
            for (int c = 0; c < w; c++) {
                pd[c] = td[c] = 0.0;
                pf[c] = tf[c] = 0.0f;
            }
            for (int64_t j = 0; j < cnt; j++) {
                int64_t src = (o * d->K + ks[j]) * inner + c0;
                if (j > 0 && (p0 + j) % FILO_INDEX_ADD_CHUNK == 0)
                    for (int c = 0; c < w; c++) {
                        td[c] += pd[c];
                        tf[c] += pf[c];
                        pd[c] = 0.0;
                        pf[c] = 0.0f;
                    }
                if (f64)
                    for (int c = 0; c < w; c++)
                        pd[c] += load(d->dy, d->dtype, src + c);
                else
                    for (int c = 0; c < w; c++)
                        pf[c] += (float)load(d->dy, d->dtype, src + c);
            }
            for (int c = 0; c < w; c++)
                store(d->dx, d->dtype, q * inner + c0 + c, f64 ? td[c] + pd[c] : (double)(tf[c] + pf[c]));
        }
    }
    if (job->stream)
        filo_simd_stream_fence();
}

filo_status filo_cpu_index_add(const filo_index_add_desc *d)
{
    int64_t N = d->N > 0 ? d->N : 0;
    int64_t *start = calloc((size_t)N + 1, sizeof(int64_t));
    int64_t *order = malloc(sizeof(int64_t) * (size_t)(d->K > 0 ? d->K : 1));
    if (!start || !order) {
        free(start);
        free(order);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory to sort %lld indices", (long long)d->K);
    }
    /* Counting sort of the valid contributions by row, stable in k: start[n + 1] counts row n,
     * the prefix sums make it row n + 1's first position, and filling advances start[n] to it. */
    for (int64_t k = 0; k < d->K; k++) {
        int64_t n = index_at(d->index, d->index_is64, k);
        if (n >= 0 && n < N && n != d->skip)
            start[n + 1]++;
    }
    for (int64_t n = 0; n < N; n++)
        start[n + 1] += start[n];
    for (int64_t k = 0; k < d->K; k++) {
        int64_t n = index_at(d->index, d->index_is64, k);
        if (n >= 0 && n < N && n != d->skip)
            order[start[n]++] = k;
    }
    for (int64_t n = N; n > 0; n--)
        start[n] = start[n - 1];
    start[0] = 0;
    int64_t rows = d->outer * N, inner = d->inner > 0 ? d->inner : 1;
    double bytes = (double)rows * (double)inner * (double)filo_el_size(d->dtype);
    index_add_job job = {d, start, order, bytes >= STREAM_BYTES};
    int64_t grain = inner < 16384 ? 16384 / inner : 1;
    filo_parallel_for(rows, grain, d->dtype == FILO_F32 ? index_add_rows_f32 : index_add_rows_any, &job);
    free(start);
    free(order);
    return FILO_OK;
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
