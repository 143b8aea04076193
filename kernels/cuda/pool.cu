/* 2-D max and average pooling over contiguous [planes, H, W] data, forward and backward.
 * Reference: kernels/cpu/pool.c (filo_cpu_maxpool2d_forward/_backward,
 * filo_cpu_avgpool2d_forward/_backward), which uses the same loop orders, so both backends give
 * the same values.
 *
 * Forward: one thread per output element (grid-stride, 256 threads a block), scanning its window
 * row-major. Traffic: each output reads its kh * kw window (cached: neighbouring windows overlap)
 * and writes y (and the i64 index).
 * Backward: one thread per dx element, gathering dy from the windows that cover it in a fixed
 * order (kh, then kw): no atomics, bitwise reproducible. Max backward adds dy of a window only
 * when the window's saved index is this element; an index that is not a position of its window
 * (out of range, or outside it) matches no element and is ignored (the CPU path reports it).
 * Traffic: read of the covering dy (and indices), one write of dx.
 *
 * Index arithmetic inside a plane is 32-bit; the flat index is 32-bit when the tensor is small
 * enough (see with_index), else 64-bit with a division-free split (see split).
 * bf16/f16 compute in f32 and round once at the store; f64 computes in double. */
#include "compat.cuh"
#include "typed_elements.cuh"

#include <limits.h>
#include <stdlib.h>

extern "C" {
#include "backend.h"
#include "element.h"
#include "error.h"
#include "pool_backend.h"
}

namespace {

const int block_threads = 256;
const int64_t max_blocks = 65535;

/* The window geometry, resolved on the host (every field >= 1 except pads). A plane (H * W and
 * OH * OW elements) fits in an int: kernels/pool.c checks it. */
struct geom {
    int64_t planes;
    int H, W, OH, OW;
    int kh, kw, sh, sw, ph, pw, dh, dw;
    int count_include_pad;
};

/* o = q * m + r with 0 <= r < m. For 64-bit o the quotient comes from a double division,
 * corrected by one step (o < 2^53): a 64-bit integer division is a subroutine call on the GPU,
 * whose register traffic spilled. */
__device__ __forceinline__ void split(int o, int m, int &q, int &r)
{
    q = o / m;
    r = o - q * m;
}

__device__ __forceinline__ void split(int64_t o, int m, int64_t &q, int &r)
{
    int64_t t = (int64_t)((double)o / (double)m);
    if (t * m > o)
        t--;
    else if ((t + 1) * m <= o)
        t++;
    q = t;
    r = (int)(o - t * m);
}

__device__ __forceinline__ int avg_divisor(const geom &g, int oh, int ow)
{
    int hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
    int he = min(hs + g.kh, g.H + g.ph), we = min(ws + g.kw, g.W + g.pw);
    if (g.count_include_pad)
        return (he - hs) * (we - ws);
    int n = (min(he, g.H) - max(hs, 0)) * (min(we, g.W) - max(ws, 0));
    return n > 0 ? n : 1;
}

template <class T, class I>
__global__ void __launch_bounds__(block_threads) maxpool_forward_kernel(const T *__restrict__ x, T *__restrict__ y,
                                                                        int64_t *__restrict__ indices, geom g)
{
    using A = typename acc_of<T>::type;
    I total = (I)g.planes * (g.OH * g.OW);
    for (I o = (I)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += (I)gridDim.x * blockDim.x) {
        I p;
        int e;
        split(o, g.OH * g.OW, p, e);
        int oh = e / g.OW, ow = e - oh * g.OW;
        const T *plane = x + (int64_t)p * g.H * g.W;
        A best = -INFINITY;
        int arg = -1;
        for (int i = 0; i < g.kh; i++) {
            int h = oh * g.sh - g.ph + i * g.dh;
            if (h < 0 || h >= g.H)
                continue;
            for (int j = 0; j < g.kw; j++) {
                int w = ow * g.sw - g.pw + j * g.dw;
                if (w < 0 || w >= g.W)
                    continue;
                A v = ld(plane[h * g.W + w]);
                if (arg < 0 || v > best || isnan(v)) {
                    best = v;
                    arg = h * g.W + w;
                }
            }
        }
        st(&y[o], best);
        indices[o] = arg;
    }
}

template <class T, class I>
__global__ void __launch_bounds__(block_threads) maxpool_backward_kernel(const T *__restrict__ dy,
                                                                         const int64_t *__restrict__ indices,
                                                                         T *__restrict__ dx, geom g)
{
    using A = typename acc_of<T>::type;
    I total = (I)g.planes * (g.H * g.W);
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (I)gridDim.x * blockDim.x) {
        I p;
        int pos;
        split(e, g.H * g.W, p, pos);
        int h = pos / g.W, w = pos - h * g.W;
        const T *dyp = dy + (int64_t)p * g.OH * g.OW;
        const int64_t *ip = indices + (int64_t)p * g.OH * g.OW;
        A acc = 0;
        for (int i = 0; i < g.kh; i++) {
            int th = h + g.ph - i * g.dh;
            if (th < 0)
                break;
            if (th % g.sh != 0 || th / g.sh >= g.OH)
                continue;
            int row = (th / g.sh) * g.OW;
            for (int j = 0; j < g.kw; j++) {
                int tw = w + g.pw - j * g.dw;
                if (tw < 0)
                    break;
                if (tw % g.sw != 0 || tw / g.sw >= g.OW)
                    continue;
                int o = row + tw / g.sw;
                if (ip[o] == pos)
                    acc += ld(dyp[o]);
            }
        }
        st(&dx[e], acc);
    }
}

template <class T, class I>
__global__ void __launch_bounds__(block_threads) avgpool_forward_kernel(const T *__restrict__ x, T *__restrict__ y, geom g)
{
    using A = typename acc_of<T>::type;
    I total = (I)g.planes * (g.OH * g.OW);
    for (I o = (I)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += (I)gridDim.x * blockDim.x) {
        I p;
        int e;
        split(o, g.OH * g.OW, p, e);
        int oh = e / g.OW, ow = e - oh * g.OW;
        const T *plane = x + (int64_t)p * g.H * g.W;
        A acc = 0;
        for (int i = 0; i < g.kh; i++) {
            int h = oh * g.sh - g.ph + i;
            if (h < 0 || h >= g.H)
                continue;
            for (int j = 0; j < g.kw; j++) {
                int w = ow * g.sw - g.pw + j;
                if (w >= 0 && w < g.W)
                    acc += ld(plane[h * g.W + w]);
            }
        }
        st(&y[o], acc / (A)avg_divisor(g, oh, ow));
    }
}

template <class T, class I>
__global__ void __launch_bounds__(block_threads) avgpool_backward_kernel(const T *__restrict__ dy, T *__restrict__ dx,
                                                                         geom g)
{
    using A = typename acc_of<T>::type;
    I total = (I)g.planes * (g.H * g.W);
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (I)gridDim.x * blockDim.x) {
        I p;
        int pos;
        split(e, g.H * g.W, p, pos);
        int h = pos / g.W, w = pos - h * g.W;
        const T *dyp = dy + (int64_t)p * g.OH * g.OW;
        A acc = 0;
        for (int i = 0; i < g.kh; i++) {
            int th = h + g.ph - i;
            if (th < 0)
                break;
            if (th % g.sh != 0 || th / g.sh >= g.OH)
                continue;
            int oh = th / g.sh;
            for (int j = 0; j < g.kw; j++) {
                int tw = w + g.pw - j;
                if (tw < 0)
                    break;
                if (tw % g.sw != 0 || tw / g.sw >= g.OW)
                    continue;
                int ow = tw / g.sw;
                acc += ld(dyp[oh * g.OW + ow]) / (A)avg_divisor(g, oh, ow);
            }
        }
        st(&dx[e], acc);
    }
}

geom make_geom(const filo_pool2d_desc *d)
{
    geom g;
    g.planes = d->planes;
    g.H = (int)d->H;
    g.W = (int)d->W;
    g.OH = (int)d->OH;
    g.OW = (int)d->OW;
    g.kh = (int)d->kh;
    g.kw = (int)d->kw;
    g.sh = (int)d->sh;
    g.sw = (int)d->sw;
    g.ph = (int)d->ph;
    g.pw = (int)d->pw;
    g.dh = (int)d->dh;
    g.dw = (int)d->dw;
    g.count_include_pad = d->count_include_pad;
    return g;
}

unsigned grid_for(int64_t total)
{
    int64_t b = (total + block_threads - 1) / block_threads;
    return (unsigned)(b < max_blocks ? b : max_blocks);
}

template <class T> struct tag {
    using type = T;
};

/* The flat index in 32 bits when every index the grid-stride loop forms fits; 64 bits otherwise.
 * FILO_POOL_FORCE_INDEX64=1 takes the 64-bit path at any size, so the tests can run it (no test
 * tensor is big enough to need it). */
template <class T, class F> filo_status with_index(int64_t total, F f)
{
    const char *force = getenv("FILO_POOL_FORCE_INDEX64");
    if (total <= (int64_t)INT_MAX - max_blocks * block_threads && !(force && force[0] == '1'))
        return f(tag<T>(), tag<int>());
    return f(tag<T>(), tag<int64_t>());
}

/* Calls f(tag<T>, tag<I>) for x's storage type and the index type. */
template <class F> filo_status dispatch(filo_dtype t, int64_t total, const char *where, F f)
{
    switch (t) {
    case FILO_F32: return with_index<float>(total, f);
    case FILO_F64: return with_index<double>(total, f);
    case FILO_BF16: return with_index<bf16_el>(total, f);
    case FILO_F16: return with_index<f16_el>(total, f);
    default: return filo_error_set(FILO_ERR_DTYPE, where, "unsupported dtype %s", filo_dtype_name(t));
    }
}

} // namespace

extern "C" filo_status filo_cuda_maxpool2d_forward(const filo_pool2d_desc *d, void *stream)
{
    geom g = make_geom(d);
    int64_t total = g.planes * g.OH * g.OW;
    return dispatch(d->dtype, total, __func__, [&](auto tt, auto it) {
        using T = typename decltype(tt)::type;
        using I = typename decltype(it)::type;
        FILO_LAUNCH((maxpool_forward_kernel<T, I>), grid_for(total), block_threads, 0, (cudaStream_t)stream)
        ((const T *)d->x, (T *)d->y, d->indices, g);
        return filo_cuda_check_launch("filo_cuda_maxpool2d_forward");
    });
}

extern "C" filo_status filo_cuda_maxpool2d_backward(const filo_pool2d_desc *d, void *stream)
{
    geom g = make_geom(d);
    int64_t total = g.planes * g.H * g.W;
    return dispatch(d->dtype, total, __func__, [&](auto tt, auto it) {
        using T = typename decltype(tt)::type;
        using I = typename decltype(it)::type;
        FILO_LAUNCH((maxpool_backward_kernel<T, I>), grid_for(total), block_threads, 0, (cudaStream_t)stream)
        ((const T *)d->dy, (const int64_t *)d->indices, (T *)d->dx, g);
        return filo_cuda_check_launch("filo_cuda_maxpool2d_backward");
    });
}

extern "C" filo_status filo_cuda_avgpool2d_forward(const filo_pool2d_desc *d, void *stream)
{
    geom g = make_geom(d);
    int64_t total = g.planes * g.OH * g.OW;
    return dispatch(d->dtype, total, __func__, [&](auto tt, auto it) {
        using T = typename decltype(tt)::type;
        using I = typename decltype(it)::type;
        FILO_LAUNCH((avgpool_forward_kernel<T, I>), grid_for(total), block_threads, 0, (cudaStream_t)stream)
        ((const T *)d->x, (T *)d->y, g);
        return filo_cuda_check_launch("filo_cuda_avgpool2d_forward");
    });
}

extern "C" filo_status filo_cuda_avgpool2d_backward(const filo_pool2d_desc *d, void *stream)
{
    geom g = make_geom(d);
    int64_t total = g.planes * g.H * g.W;
    return dispatch(d->dtype, total, __func__, [&](auto tt, auto it) {
        using T = typename decltype(tt)::type;
        using I = typename decltype(it)::type;
        FILO_LAUNCH((avgpool_backward_kernel<T, I>), grid_for(total), block_threads, 0, (cudaStream_t)stream)
        ((const T *)d->dy, (T *)d->dx, g);
        return filo_cuda_check_launch("filo_cuda_avgpool2d_backward");
    });
}
