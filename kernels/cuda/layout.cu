/* Layout kernels (kernels/layout_backend.h); reference: kernels/cpu/layout.c.
 *
 * Both move raw element bits (1, 2, 4 or 8 bytes, templated on the matching unsigned type), so
 * every dtype takes the same path and results are bitwise those of the CPU.
 *
 * copy2d_kernel: one concat input into its slot of the output, viewed as [rows, cols] with
 * different leading dims. A 2-D grid: blockIdx.y strides over rows, blockIdx.x * 256 + tid
 * over the columns of a row, so consecutive threads touch consecutive addresses (coalesced
 * reads and writes; no division per element). Traffic: read and write the slot once.
 *
 * pad_kernel: one thread per output element (grid-stride), its coordinates decomposed from the
 * flat index; inside elements read x, the rest store the fill value. Cropping is a negative left
 * pad, so filo_pad_backward runs the same kernel. Traffic: read the kept part of x, write out. */
#include "compat.cuh"

extern "C" {
#include "backend.h"
#include "error.h"
#include "layout_backend.h"
}

namespace {

const int threads = 256;

template <class E>
__global__ void __launch_bounds__(threads)
copy2d_kernel(E *dst, int64_t dst_ld, const E *src, int64_t src_ld, int64_t rows, int64_t cols)
{
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        E *d = dst + r * dst_ld;
        const E *s = src + r * src_ld;
        for (int64_t c = (int64_t)blockIdx.x * threads + threadIdx.x; c < cols; c += (int64_t)gridDim.x * threads)
            d[c] = s[c];
    }
}

struct pad_args {
    int ndim;
    int64_t numel;
    int64_t out_shape[FILO_MAX_DIMS];
    int64_t in_shape[FILO_MAX_DIMS];
    int64_t left[FILO_MAX_DIMS];
};

template <class E>
__global__ void __launch_bounds__(threads) pad_kernel(pad_args a, E value, const E *src, E *dst)
{
    for (int64_t i = (int64_t)blockIdx.x * threads + threadIdx.x; i < a.numel; i += (int64_t)gridDim.x * threads) {
        int64_t rest = i, src_off = 0, src_stride = 1;
        bool inside = true;
        for (int k = a.ndim - 1; k >= 0; k--) {
            int64_t c = rest % a.out_shape[k] - a.left[k];
            rest /= a.out_shape[k];
            inside = inside && c >= 0 && c < a.in_shape[k];
            src_off += c * src_stride;
            src_stride *= a.in_shape[k];
        }
        dst[i] = inside ? src[src_off] : value;
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

} // namespace

extern "C" filo_status filo_cuda_copy2d(const filo_copy2d_desc *d, void *stream)
{
    if (d->rows == 0 || d->cols == 0)
        return FILO_OK;
    return by_size(d->elsize, __func__, [&](auto e) {
        using E = decltype(e);
        dim3 grid(grid_for(d->cols, 1024), (unsigned)(d->rows < 65535 ? d->rows : 65535));
        FILO_LAUNCH((copy2d_kernel<E>), grid, threads, 0, (cudaStream_t)stream)
        ((E *)d->dst, d->dst_ld, (const E *)d->src, d->src_ld, d->rows, d->cols);
        return filo_cuda_check_launch("filo_cuda_copy2d");
    });
}

extern "C" filo_status filo_cuda_pad(const filo_pad_desc *d, void *stream)
{
    if (d->numel == 0)
        return FILO_OK;
    pad_args a;
    a.ndim = d->ndim;
    a.numel = d->numel;
    for (int k = 0; k < FILO_MAX_DIMS; k++) {
        a.out_shape[k] = d->out_shape[k];
        a.in_shape[k] = d->in_shape[k];
        a.left[k] = d->left[k];
    }
    return by_size(d->elsize, __func__, [&](auto e) {
        using E = decltype(e);
        FILO_LAUNCH((pad_kernel<E>), grid_for(d->numel, 65536), threads, 0, (cudaStream_t)stream)
        (a, (E)d->value, (const E *)d->src, (E *)d->dst);
        return filo_cuda_check_launch("filo_cuda_pad");
    });
}
