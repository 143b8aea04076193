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

/* Same-dtype copies move elements as 1-, 2-, 4- or 8-byte words. Two layouts get a fast path:
 * an innermost dim contiguous on both sides (one memcpy a run), and a transposing copy (the
 * source's contiguous dim is not the destination's), done in TILE x TILE blocks so that both the
 * reads and the writes stay within a few cache lines. Any other layout, and a destination with a
 * zero stride (where the element written last wins), takes the per-element walk in row-major
 * order. The fast paths visit elements in another order; with distinct destination addresses
 * the result is the same. */
#define COPY_TILE 16

/* The dims of d other than a and b (b < 0: only a) as a desc of their own, for the outer walk. */
static filo_copy_desc outer_desc(const filo_copy_desc *d, int a, int b)
{
    filo_copy_desc o = *d;
    o.ndim = 0;
    o.numel = 1;
    for (int k = 0; k < d->ndim; k++) {
        if (k == a || k == b)
            continue;
        o.shape[o.ndim] = d->shape[k];
        o.dst_strides[o.ndim] = d->dst_strides[k];
        o.src_strides[o.ndim] = d->src_strides[k];
        o.numel *= d->shape[k];
        o.ndim++;
    }
    return o;
}

#define TILED_COPY(T)                                                                              \
    do {                                                                                           \
        T *dst_ = (T *)dst;                                                                        \
        const T *src_ = (const T *)src;                                                            \
        for (int64_t r0 = 0; r0 < rows; r0 += COPY_TILE)                                           \
            for (int64_t c0 = 0; c0 < cols; c0 += COPY_TILE) {                                     \
                int64_t r1 = r0 + COPY_TILE < rows ? r0 + COPY_TILE : rows;                        \
                int64_t c1 = c0 + COPY_TILE < cols ? c0 + COPY_TILE : cols;                        \
                for (int64_t r = r0; r < r1; r++)                                                  \
                    for (int64_t c = c0; c < c1; c++)                                              \
                        dst_[r * drs + c * dcs] = src_[r * srs + c * scs];                         \
            }                                                                                      \
    } while (0)

/* dst[r * drs + c * dcs] = src[r * srs + c * scs] over rows x cols, in tiles. */
static void tiled_copy(char *dst, const char *src, size_t ds, int64_t rows, int64_t cols, int64_t drs, int64_t dcs,
                       int64_t srs, int64_t scs)
{
    switch (ds) {
    case 1: TILED_COPY(uint8_t); break;
    case 2: TILED_COPY(uint16_t); break;
    case 4: TILED_COPY(uint32_t); break;
    case 8: TILED_COPY(uint64_t); break;
    default: break;
    }
}

static int copy_same_fast(const filo_copy_desc *d, size_t ds)
{
    int L = d->ndim - 1;
    if (L < 0 || (ds != 1 && ds != 2 && ds != 4 && ds != 8))
        return 0;
    for (int k = 0; k <= L; k++)
        if (d->dst_strides[k] == 0 && d->shape[k] > 1)
            return 0;
    char *dst = d->dst;
    const char *src = d->src;
    if (d->dst_strides[L] == 1 && d->src_strides[L] == 1) {
        size_t run = (size_t)d->shape[L] * ds;
        filo_copy_desc o = outer_desc(d, L, -1);
#define COPY_RUN(i, doff, soff) memcpy(dst + (doff) * (int64_t)ds, src + (soff) * (int64_t)ds, run)
        FOR_EACH_ELEMENT(&o, COPY_RUN);
#undef COPY_RUN
        return 1;
    }
    /* Rows: the dim where the source is densest (other than the last); columns: the last dim. */
    int b = -1;
    for (int k = 0; k < L; k++) {
        int64_t s = d->src_strides[k] < 0 ? -d->src_strides[k] : d->src_strides[k];
        int64_t best = b < 0 ? 0 : (d->src_strides[b] < 0 ? -d->src_strides[b] : d->src_strides[b]);
        if (b < 0 || s < best)
            b = k;
    }
    if (b < 0) {
        /* One strided dim: a plain typed loop. */
        tiled_copy(dst, src, ds, 1, d->shape[0], 0, d->dst_strides[0], 0, d->src_strides[0]);
        return 1;
    }
    filo_copy_desc o = outer_desc(d, b, L);
#define COPY_TILE_AT(i, doff, soff)                                                                  \
    tiled_copy(dst + (doff) * (int64_t)ds, src + (soff) * (int64_t)ds, ds, d->shape[b], d->shape[L],  \
               d->dst_strides[b], d->dst_strides[L], d->src_strides[b], d->src_strides[L])
    FOR_EACH_ELEMENT(&o, COPY_TILE_AT);
#undef COPY_TILE_AT
    return 1;
}

void filo_cpu_strided_copy(const filo_copy_desc *d)
{
    size_t ds = filo_dtype_size(d->dst_dtype), ss = filo_dtype_size(d->src_dtype);
    char *dst = d->dst;
    const char *src = d->src;
    if (d->dst_dtype == d->src_dtype) {
        if (copy_same_fast(d, ds))
            return;
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

/* n elements of ds bytes from p on: memset for an all-zero pattern (zeros are most fills), else
 * word stores. */
static void fill_run(char *p, const void *pattern, size_t ds, int64_t n, int zero)
{
    if (zero) {
        memset(p, 0, (size_t)n * ds);
        return;
    }
    switch (ds) {
    case 1: memset(p, *(const unsigned char *)pattern, (size_t)n); break;
#define FILL_WORDS(T)                      \
    {                                      \
        T v_, *q_ = (T *)(void *)p;        \
        memcpy(&v_, pattern, sizeof v_);   \
        for (int64_t i_ = 0; i_ < n; i_++) \
            q_[i_] = v_;                   \
    }                                      \
    break
    case 2: FILL_WORDS(uint16_t);
    case 4: FILL_WORDS(uint32_t);
    default: FILL_WORDS(uint64_t);
#undef FILL_WORDS
    }
}

/* A contiguous innermost dim is filled a run at a time; other layouts element by element. */
void filo_cpu_fill(const filo_copy_desc *d, const void *pattern)
{
    size_t ds = filo_dtype_size(d->dst_dtype);
    char *dst = d->dst;
    int L = d->ndim - 1;
    if (L >= 0 && d->dst_strides[L] == 1 && (ds == 1 || ds == 2 || ds == 4 || ds == 8)) {
        static const unsigned char zeros[8];
        int zero = memcmp(pattern, zeros, ds) == 0;
        int64_t run = d->shape[L];
        filo_copy_desc o = outer_desc(d, L, -1);
#define FILL_RUN(i, doff, soff) fill_run(dst + (doff) * (int64_t)ds, pattern, ds, run, zero)
        FOR_EACH_ELEMENT(&o, FILL_RUN);
#undef FILL_RUN
        return;
    }
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
