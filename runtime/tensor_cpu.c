/* CPU versions of the runtime's element loops: strided copy with conversion, fill, draws.
 * References for runtime/tensor_cuda.cu, which computes the same values per element. */
#include <string.h>

#include "element.h"
#include "tensor_kernels.h"

void filo_copy_desc_collapse(filo_copy_desc *d)
{
    int n = 0;
    for (int i = 0; i < d->ndim; i++) {
        if (d->shape[i] == 1)
            continue;
        d->shape[n] = d->shape[i];
        d->dst_strides[n] = d->dst_strides[i];
        d->src_strides[n] = d->src_strides[i];
        n++;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (m > 0 && d->dst_strides[m - 1] == d->dst_strides[i] * d->shape[i] &&
            d->src_strides[m - 1] == d->src_strides[i] * d->shape[i]) {
            d->shape[m - 1] *= d->shape[i];
            d->dst_strides[m - 1] = d->dst_strides[i];
            d->src_strides[m - 1] = d->src_strides[i];
            continue;
        }
        d->shape[m] = d->shape[i];
        d->dst_strides[m] = d->dst_strides[i];
        d->src_strides[m] = d->src_strides[i];
        m++;
    }
    d->ndim = m;
}

/* Walks the elements in row-major order, calling body(i, dst_offset, src_offset) in elements. */
#define FOR_EACH_ELEMENT(d, body)                                              \
    do {                                                                       \
        int64_t idx_[FILO_LAYOUT_MAX_DIMS] = {0};                              \
        int64_t doff_ = 0, soff_ = 0;                                          \
        for (int64_t i_ = 0; i_ < (d)->numel; i_++) {                          \
            body(i_, doff_, soff_);                                            \
            for (int k_ = (d)->ndim - 1; k_ >= 0; k_--) {                      \
                idx_[k_]++;                                                    \
                doff_ += (d)->dst_strides[k_];                                 \
                soff_ += (d)->src_strides[k_];                                 \
                if (idx_[k_] < (d)->shape[k_])                                 \
                    break;                                                     \
                doff_ -= (d)->dst_strides[k_] * (d)->shape[k_];                \
                soff_ -= (d)->src_strides[k_] * (d)->shape[k_];                \
                idx_[k_] = 0;                                                  \
            }                                                                  \
        }                                                                      \
    } while (0)

void filo_cpu_strided_copy(const filo_copy_desc *d)
{
    size_t ds = filo_dtype_size(d->dst_dtype), ss = filo_dtype_size(d->src_dtype);
    char *dst = d->dst;
    const char *src = d->src;
    if (d->dst_dtype == d->src_dtype) {
#define COPY_SAME(i, doff, soff) memcpy(dst + (doff) * (int64_t)ds, src + (soff) * (int64_t)ss, ds)
        FOR_EACH_ELEMENT(d, COPY_SAME);
#undef COPY_SAME
        return;
    }
#define COPY_CONVERT(i, doff, soff) \
    filo_el_convert(dst + (doff) * (int64_t)ds, d->dst_dtype, src + (soff) * (int64_t)ss, d->src_dtype)
    FOR_EACH_ELEMENT(d, COPY_CONVERT);
#undef COPY_CONVERT
}

void filo_cpu_fill(const filo_copy_desc *d, const void *pattern)
{
    size_t ds = filo_dtype_size(d->dst_dtype);
    char *dst = d->dst;
#define FILL_ONE(i, doff, soff) memcpy(dst + (doff) * (int64_t)ds, pattern, ds)
    FOR_EACH_ELEMENT(d, FILL_ONE);
#undef FILL_ONE
}

void filo_cpu_draw(const filo_copy_desc *d, const filo_draw_desc *draw)
{
    size_t ds = filo_dtype_size(d->dst_dtype);
    char *dst = d->dst;
#define DRAW_ONE(i, doff, soff)                                                                        \
    filo_el_store_f(dst + (doff) * (int64_t)ds, d->dst_dtype,                                          \
                    filo_draw_value((int)draw->kind, draw->a, draw->b, draw->seed, draw->offset, (i)))
    FOR_EACH_ELEMENT(d, DRAW_ONE);
#undef DRAW_ONE
}
