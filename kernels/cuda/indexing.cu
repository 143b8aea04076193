/* Indexing kernels (kernels/indexing_backend.h); reference: kernels/cpu/indexing.c.
 *
 * Moving ops (index_select / embedding, gather, masked_fill): one thread per output element,
 * grid-stride (index_select with rows of 32 or more elements: blocks over rows, threads over a
 * row, so an embedding lookup divides once per row), elements moved as raw bits (1, 2, 4 or 8 bytes), so every dtype is exact. An
 * index outside its range gives 0 (all bits clear) instead of a read out of bounds.
 *
 * index_add / embedding_backward (deterministic, no float atomics). Output row n sums the dy
 * rows k with index[k] == n in a fixed order that the CPU shares (FILO_INDEX_ADD_CHUNK in
 * kernels/indexing_backend.h). Steps, all on the device's stream, no host synchronization:
 *   1. make_keys_kernel: key[k] = (index[k] << 32) | k, or ~0 for an index out of range, for the
 *      skipped row (padding_idx) and for the padding up to P = next power of two >= K. Keys are
 *      unique, so any correct sort yields the same order: (row, position) ascending.
 *   2. Bitonic sort of the P keys: bitonic_shared_kernel sorts tiles of 1024 keys in shared
 *      memory (all stages with a stride below the tile), bitonic_global_kernel does the stages
 *      with a larger stride in global memory. Launches: 1 + sum over tile < k <= P of
 *      (log2(k / 1024) + 1), e.g. 6 for BERT's 4096 ids. Work O(P log^2 P) key compares;
 *      no data-dependent memory (a skewed id distribution costs the same as a uniform one).
 *   3. cudaMemsetAsync clears dx (rows no index names stay 0).
 *   4. The sorted positions are cut into chunks: a chunk starts at the first position of a row's
 *      run and at every multiple of FILO_INDEX_ADD_CHUNK (32) inside a run, so a chunk holds at
 *      most 32 positions of one row. chunk_sum_kernel: one warp per chunk (the warp of its first
 *      position; warps at other positions exit at once); its lanes hold the chunk's dy row
 *      numbers (one shuffle each), stride over the `inner` columns and add the chunk's rows in
 *      order, all loads of a column independent of each other (no load waits on the previous
 *      add's result). A chunk that is a whole run writes dx; the others write a partial row of
 *      the f32 (f64) scratch.
 *   5. chunk_combine_kernel: one warp per run longer than its first chunk adds the run's chunk
 *      partials in order and writes dx.
 *   So each dx element is ((0 + chunk 1) + chunk 2) + ..., each chunk summed in position order:
 *   the CPU computes exactly this (kernels/cpu/indexing.c), hence bitwise-equal results. Cutting
 *   runs keeps a skewed id (one token thousands of times) from serializing on one warp: a run of
 *   L rows costs L / 32 warps of 32 dependent-free loads per column, then L / 32 adds.
 *   Cost for BERT (V = 30522, D = 768, 4096 ids): the sort (6 launches over 4096 keys), one read
 *   of dy (4096 x 768), partials only for runs that cross a multiple of 32, and the write of dweight
 *   (30522 x 768, mostly the memset): the memory traffic of an atomic scatter, without its
 *   nondeterminism.
 *
 * scatter_add: one thread per output element (all coordinates), which scans the index entries
 * along dim at its other coordinates in increasing order and adds the src values whose index
 * names it; it starts from self. Cost numel(self) * index.shape[dim] index reads (documented in
 * include/filo/indexing.h); no atomics, CPU order. */
#include "compat.cuh"
#include "typed_elements.cuh"

extern "C" {
#include "backend.h"
#include "element.h"
#include "error.h"
#include "indexing_backend.h"
}

namespace {

const int threads = 256;
const int tile = 1024; /* keys per block of the shared-memory bitonic sort (512 threads) */


__device__ __forceinline__ int64_t index_at(const void *index, int is64, int64_t k)
{
    return is64 ? ((const int64_t *)index)[k] : (int64_t)((const int32_t *)index)[k];
}

struct shape_args {
    int ndim, dim;
    int64_t numel;
    int64_t a[FILO_MAX_DIMS]; /* per op: see the launchers */
    int64_t b[FILO_MAX_DIMS];
    int64_t c[FILO_MAX_DIMS];
};

/* ---- moving ops ---- */

template <class E>
__global__ void __launch_bounds__(threads)
index_select_kernel(const E *src, E *out, const void *index, int is64, int64_t N, int64_t K, int64_t inner, int64_t total)
{
    for (int64_t i = (int64_t)blockIdx.x * threads + threadIdx.x; i < total; i += (int64_t)gridDim.x * threads) {
        int64_t c = i % inner, rest = i / inner;
        int64_t k = rest % K, o = rest / K;
        int64_t n = index_at(index, is64, k);
        out[i] = (n >= 0 && n < N) ? src[(o * N + n) * inner + c] : E(0);
    }
}

/* The same for rows of at least 32 elements (embedding rows): blockIdx.y strides over the
 * [outer, K] rows (one division per row, not per element), the block's threads over the row. */
template <class E>
__global__ void __launch_bounds__(threads)
index_select_rows_kernel(const E *src, E *out, const void *index, int is64, int64_t N, int64_t K, int64_t inner,
                         int64_t rows)
{
    for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
        int64_t k = row % K, o = row / K;
        int64_t n = index_at(index, is64, k);
        bool ok = n >= 0 && n < N;
        const E *s = src + (o * N + (ok ? n : 0)) * inner;
        E *d = out + row * inner;
        for (int64_t c = (int64_t)blockIdx.x * threads + threadIdx.x; c < inner; c += (int64_t)gridDim.x * threads)
            d[c] = ok ? s[c] : E(0);
    }
}

/* a = src (x) shape, b = index (out) shape. */
template <class E>
__global__ void __launch_bounds__(threads) gather_kernel(shape_args s, const E *src, E *out, const void *index, int is64)
{
    for (int64_t i = (int64_t)blockIdx.x * threads + threadIdx.x; i < s.numel; i += (int64_t)gridDim.x * threads) {
        int64_t n = index_at(index, is64, i);
        if (n < 0 || n >= s.a[s.dim]) {
            out[i] = E(0);
            continue;
        }
        int64_t rest = i, off = 0, stride = 1;
        for (int k = s.ndim - 1; k >= 0; k--) {
            int64_t c = rest % s.b[k];
            rest /= s.b[k];
            off += (k == s.dim ? n : c) * stride;
            stride *= s.a[k];
        }
        out[i] = src[off];
    }
}

/* a = shape, b = mask strides. */
template <class E>
__global__ void __launch_bounds__(threads)
masked_fill_kernel(shape_args s, const E *x, const uint8_t *mask, E value, E *out)
{
    for (int64_t i = (int64_t)blockIdx.x * threads + threadIdx.x; i < s.numel; i += (int64_t)gridDim.x * threads) {
        int64_t rest = i, moff = 0;
        for (int k = s.ndim - 1; k >= 0; k--) {
            moff += (rest % s.a[k]) * s.b[k];
            rest /= s.a[k];
        }
        out[i] = mask[moff] ? value : x[i];
    }
}

/* ---- scatter_add: a = self shape, b = index shape, c = src shape ---- */

template <class T>
__global__ void __launch_bounds__(threads)
scatter_add_kernel(shape_args s, const T *self, const T *src, const void *index, int is64, T *out)
{
    using A = typename acc_of<T>::type;
    for (int64_t i = (int64_t)blockIdx.x * threads + threadIdx.x; i < s.numel; i += (int64_t)gridDim.x * threads) {
        A acc = ld(self[i]);
        /* The index and src offsets of this element's coordinates with coordinate dim = 0, and
         * the strides along dim. */
        int64_t rest = i, ioff = 0, soff = 0, istride = 1, sstride = 1, idim = 1, sdim = 1, target = 0;
        bool reachable = true;
        for (int k = s.ndim - 1; k >= 0; k--) {
            int64_t c = rest % s.a[k];
            rest /= s.a[k];
            if (k == s.dim) {
                target = c;
                idim = istride;
                sdim = sstride;
            } else {
                reachable = reachable && c < s.b[k];
                ioff += c * istride;
                soff += c * sstride;
            }
            istride *= s.b[k];
            sstride *= s.c[k];
        }
        if (reachable)
            for (int64_t j = 0; j < s.b[s.dim]; j++)
                if (index_at(index, is64, ioff + j * idim) == target)
                    acc += ld(src[soff + j * sdim]);
        st(&out[i], acc);
    }
}

/* ---- index_add / embedding_backward ---- */

__global__ void __launch_bounds__(threads)
make_keys_kernel(unsigned long long *keys, int64_t P, const void *index, int is64, int64_t K, int64_t N, int64_t skip)
{
    for (int64_t p = (int64_t)blockIdx.x * threads + threadIdx.x; p < P; p += (int64_t)gridDim.x * threads) {
        unsigned long long key = ~0ull;
        if (p < K) {
            int64_t n = index_at(index, is64, p);
            if (n >= 0 && n < N && n != skip)
                key = ((unsigned long long)n << 32) | (unsigned long long)p;
        }
        keys[p] = key;
    }
}

/* Compare-exchange of pair t of the stage (k, j): elements i and i + j, ascending when bit k of
 * the element's global position is clear. */
__device__ __forceinline__ void bitonic_pair(unsigned long long *a, int64_t base, int64_t t, int64_t k, int64_t j)
{
    int64_t i = (t / j) * 2 * j + (t % j);
    unsigned long long x = a[i], y = a[i + j];
    bool ascending = ((base + i) & k) == 0;
    if ((x > y) == ascending) {
        a[i] = y;
        a[i + j] = x;
    }
}

/* Stages k = k_first .. k_last (doubling), j from (k == k_first ? j_first : k / 2) down to 1,
 * over one tile of n = min(P, tile) keys in shared memory; n / 2 threads. */
__global__ void __launch_bounds__(tile / 2)
bitonic_shared_kernel(unsigned long long *keys, int n, int64_t k_first, int64_t k_last, int64_t j_first)
{
    __shared__ unsigned long long s[tile];
    int64_t base = (int64_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        s[i] = keys[base + i];
    __syncthreads();
    for (int64_t k = k_first; k <= k_last; k <<= 1) {
        for (int64_t j = k == k_first ? j_first : k >> 1; j > 0; j >>= 1) {
            bitonic_pair(s, base, threadIdx.x, k, j);
            __syncthreads();
        }
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        keys[base + i] = s[i];
}

__global__ void __launch_bounds__(threads) bitonic_global_kernel(unsigned long long *keys, int64_t P, int64_t k, int64_t j)
{
    for (int64_t t = (int64_t)blockIdx.x * threads + threadIdx.x; t < P / 2; t += (int64_t)gridDim.x * threads)
        bitonic_pair(keys, 0, t, k, j);
}

const int chunk = FILO_INDEX_ADD_CHUNK;

__device__ __forceinline__ unsigned long long row_of(unsigned long long key) { return key >> 32; }

/* Warp of sorted position p (keys[p] valid): does a chunk start here? */
__device__ __forceinline__ bool chunk_head(const unsigned long long *keys, int64_t p, unsigned long long row)
{
    return p % chunk == 0 || p == 0 || row_of(keys[p - 1]) != row;
}

template <class T>
__global__ void __launch_bounds__(threads)
chunk_sum_kernel(const unsigned long long *keys, int64_t K, const T *dy, T *dx, typename acc_of<T>::type *partial,
                 int64_t outer, int64_t N, int64_t inner)
{
    using A = typename acc_of<T>::type;
    int lane = threadIdx.x & 31;
    int64_t p = (int64_t)blockIdx.x * (threads / 32) + (threadIdx.x >> 5);
    if (p >= K)
        return; /* whole warps: K positions, warp-uniform */
    unsigned long long key = keys[p];
    unsigned long long row = row_of(key);
    if (key == ~0ull || !chunk_head(keys, p, row))
        return;
    /* Lane i: position p + i of the chunk, or the first position past it. */
    int64_t q = p + lane;
    unsigned long long kq = q < K ? keys[q] : ~0ull;
    bool stop = lane > 0 && (q >= K || kq == ~0ull || row_of(kq) != row || q % chunk == 0);
    unsigned ballot = __ballot_sync(0xffffffffu, stop);
    int len = ballot ? __ffs(ballot) - 1 : 32;
    /* The run ends with this chunk unless the chunk stopped at a multiple of 32 inside it. */
    int64_t end = p + len;
    bool run_ends = end >= K || keys[end] == ~0ull || row_of(keys[end]) != row;
    bool whole_run = run_ends && (p == 0 || row_of(keys[p - 1]) != row);
    int src_row = (int)(kq & 0xffffffffull); /* K <= 2^31 - 1 */
    for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
        const T *dyo = dy + o * K * inner;
        for (int64_t c0 = 0; c0 < inner; c0 += 32) {
            int64_t c = c0 + lane;
            /* Loads in batches of 8 ahead of the adds (which stay in position order), so a lane
             * has 8 loads in flight instead of waiting on each. */
            A acc = 0;
            for (int i0 = 0; i0 < len; i0 += 8) {
                A v[8];
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    int64_t r = __shfl_sync(0xffffffffu, src_row, (i0 + j) & 31);
                    v[j] = i0 + j < len && c < inner ? A(ld(dyo[r * inner + c])) : A(0);
                }
#pragma unroll
                for (int j = 0; j < 8; j++)
                    if (i0 + j < len)
                        acc += v[j];
            }
            if (c < inner) {
                if (whole_run)
                    st(&dx[(o * N + (int64_t)row) * inner + c], acc);
                else
                    partial[(o * K + p) * inner + c] = acc;
            }
        }
    }
}

template <class T>
__global__ void __launch_bounds__(threads)
chunk_combine_kernel(const unsigned long long *keys, int64_t K, T *dx, const typename acc_of<T>::type *partial,
                     int64_t outer, int64_t N, int64_t inner)
{
    using A = typename acc_of<T>::type;
    int lane = threadIdx.x & 31;
    int64_t p = (int64_t)blockIdx.x * (threads / 32) + (threadIdx.x >> 5);
    if (p >= K)
        return;
    unsigned long long key = keys[p];
    unsigned long long row = row_of(key);
    if (key == ~0ull || (p > 0 && row_of(keys[p - 1]) == row))
        return; /* not the start of a run */
    int64_t next = (p / chunk + 1) * chunk;
    if (next >= K || keys[next] == ~0ull || row_of(keys[next]) != row)
        return; /* a run within one chunk: chunk_sum_kernel wrote it */
    for (int64_t o = blockIdx.y; o < outer; o += gridDim.y)
        for (int64_t c = lane; c < inner; c += 32) {
            A total = 0;
            for (int64_t h = p; h < K && keys[h] != ~0ull && row_of(keys[h]) == row; h = (h / chunk + 1) * chunk)
                total += partial[(o * K + h) * inner + c];
            st(&dx[(o * N + (int64_t)row) * inner + c], total);
        }
}

unsigned grid_for(int64_t n, int64_t cap)
{
    int64_t g = (n + threads - 1) / threads;
    return (unsigned)(g < 1 ? 1 : (g > cap ? cap : g));
}

template <class F> filo_status by_size(size_t elsize, const char *where, F f)
{
    switch (elsize) {
    case 1: return f((uint8_t)0);
    case 2: return f((uint16_t)0);
    case 4: return f((uint32_t)0);
    case 8: return f((uint64_t)0);
    default: return filo_error_set(FILO_ERR_INTERNAL, where, "element size %zu", elsize);
    }
}

template <class T> struct tag {
    using type = T;
};

template <class F> filo_status by_float(filo_dtype t, const char *where, F f)
{
    switch (t) {
    case FILO_F32: return f(tag<float>());
    case FILO_F64: return f(tag<double>());
    case FILO_BF16: return f(tag<bf16_el>());
    case FILO_F16: return f(tag<f16_el>());
    default: return filo_error_set(FILO_ERR_DTYPE, where, "unsupported dtype %s", filo_dtype_name(t));
    }
}

shape_args make_args(int ndim, int dim, int64_t numel, const int64_t *a, const int64_t *b, const int64_t *c)
{
    shape_args s;
    s.ndim = ndim;
    s.dim = dim;
    s.numel = numel;
    for (int k = 0; k < FILO_MAX_DIMS; k++) {
        s.a[k] = a ? a[k] : 1;
        s.b[k] = b ? b[k] : 1;
        s.c[k] = c ? c[k] : 1;
    }
    return s;
}

} // namespace

extern "C" filo_status filo_cuda_index_select(const filo_index_select_desc *d, void *stream)
{
    int64_t total = d->outer * d->K * d->inner;
    if (total == 0)
        return FILO_OK;
    return by_size(d->elsize, __func__, [&](auto e) {
        using E = decltype(e);
        int64_t rows = d->outer * d->K;
        if (d->inner >= 32) {
            dim3 grid(grid_for(d->inner, 64), (unsigned)(rows < 65535 ? rows : 65535));
            FILO_LAUNCH((index_select_rows_kernel<E>), grid, threads, 0, (cudaStream_t)stream)
            ((const E *)d->src, (E *)d->out, d->index, d->index_is64, d->N, d->K, d->inner, rows);
        } else {
            FILO_LAUNCH((index_select_kernel<E>), grid_for(total, 65536), threads, 0, (cudaStream_t)stream)
            ((const E *)d->src, (E *)d->out, d->index, d->index_is64, d->N, d->K, d->inner, total);
        }
        return filo_cuda_check_launch("filo_cuda_index_select");
    });
}

extern "C" filo_status filo_cuda_gather(const filo_gather_desc *d, void *stream)
{
    if (d->numel == 0)
        return FILO_OK;
    shape_args s = make_args(d->ndim, d->dim, d->numel, d->src_shape, d->index_shape, nullptr);
    return by_size(d->elsize, __func__, [&](auto e) {
        using E = decltype(e);
        FILO_LAUNCH((gather_kernel<E>), grid_for(d->numel, 65536), threads, 0, (cudaStream_t)stream)
        (s, (const E *)d->src, (E *)d->out, d->index, d->index_is64);
        return filo_cuda_check_launch("filo_cuda_gather");
    });
}

extern "C" filo_status filo_cuda_masked_fill(const filo_masked_fill_desc *d, void *stream)
{
    if (d->numel == 0)
        return FILO_OK;
    shape_args s = make_args(d->ndim, 0, d->numel, d->shape, d->mask_strides, nullptr);
    return by_size(d->elsize, __func__, [&](auto e) {
        using E = decltype(e);
        FILO_LAUNCH((masked_fill_kernel<E>), grid_for(d->numel, 65536), threads, 0, (cudaStream_t)stream)
        (s, (const E *)d->x, d->mask, (E)d->value, (E *)d->out);
        return filo_cuda_check_launch("filo_cuda_masked_fill");
    });
}

extern "C" filo_status filo_cuda_scatter_add(const filo_scatter_add_desc *d, void *stream)
{
    if (d->numel == 0)
        return FILO_OK;
    shape_args s = make_args(d->ndim, d->dim, d->numel, d->self_shape, d->index_shape, d->src_shape);
    return by_float(d->dtype, __func__, [&](auto tt) {
        using T = typename decltype(tt)::type;
        FILO_LAUNCH((scatter_add_kernel<T>), grid_for(d->numel, 65536), threads, 0, (cudaStream_t)stream)
        (s, (const T *)d->self, (const T *)d->src, d->index, d->index_is64, (T *)d->out);
        return filo_cuda_check_launch("filo_cuda_scatter_add");
    });
}

extern "C" filo_status filo_cuda_index_add(const filo_index_add_desc *d, void *stream)
{
    int64_t n_out = d->outer * d->N * d->inner;
    if (n_out == 0)
        return FILO_OK;
    cudaStream_t s = (cudaStream_t)stream;
    return by_float(d->dtype, __func__, [&](auto tt) -> filo_status {
        using T = typename decltype(tt)::type;
        if (cudaMemsetAsync(d->dx, 0, (size_t)n_out * sizeof(T), s) != cudaSuccess)
            return filo_cuda_check_launch("filo_cuda_index_add (cudaMemsetAsync)");
        if (d->K == 0 || d->inner == 0)
            return FILO_OK;
        unsigned long long *keys = (unsigned long long *)d->keys;
        int64_t P = d->key_count;
        FILO_LAUNCH(make_keys_kernel, grid_for(P, 65536), threads, 0, s)
        (keys, P, d->index, d->index_is64, d->K, d->N, d->skip);
        filo_status st = filo_cuda_check_launch("filo_cuda_index_add");
        if (st != FILO_OK)
            return st;
        if (P > 1) {
            int n = (int)(P < tile ? P : tile);
            FILO_LAUNCH(bitonic_shared_kernel, (unsigned)(P / n), n / 2, 0, s)(keys, n, 2, n, 1);
            st = filo_cuda_check_launch("filo_cuda_index_add");
            for (int64_t k = 2 * (int64_t)tile; st == FILO_OK && k <= P; k <<= 1) {
                for (int64_t j = k >> 1; st == FILO_OK && j >= tile; j >>= 1) {
                    FILO_LAUNCH(bitonic_global_kernel, grid_for(P / 2, 65536), threads, 0, s)(keys, P, k, j);
                    st = filo_cuda_check_launch("filo_cuda_index_add");
                }
                if (st != FILO_OK)
                    break;
                FILO_LAUNCH(bitonic_shared_kernel, (unsigned)(P / tile), tile / 2, 0, s)(keys, tile, k, k, tile / 2);
                st = filo_cuda_check_launch("filo_cuda_index_add");
            }
            if (st != FILO_OK)
                return st;
        }
        const int warps = threads / 32;
        dim3 grid((unsigned)((d->K + warps - 1) / warps), (unsigned)(d->outer < 65535 ? d->outer : 65535));
        using A = typename acc_of<T>::type;
        FILO_LAUNCH((chunk_sum_kernel<T>), grid, threads, 0, s)
        (keys, d->K, (const T *)d->dy, (T *)d->dx, (A *)d->partial, d->outer, d->N, d->inner);
        st = filo_cuda_check_launch("filo_cuda_index_add");
        if (st != FILO_OK || d->K <= chunk)
            return st;
        FILO_LAUNCH((chunk_combine_kernel<T>), grid, threads, 0, s)
        (keys, d->K, (T *)d->dx, (const A *)d->partial, d->outer, d->N, d->inner);
        return filo_cuda_check_launch("filo_cuda_index_add");
    });
}
