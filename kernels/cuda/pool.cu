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
 * bf16/f16 compute in f32 and round once at the store; f64 computes in double. */
#include "compat.cuh"

extern "C" {
#include "backend.h"
#include "element.h"
#include "error.h"
#include "pool_backend.h"
}

namespace {

struct bf16_el {
    uint16_t bits;
};
struct f16_el {
    uint16_t bits;
};

template <class T> struct acc_of { using type = float; };
template <> struct acc_of<double> { using type = double; };

__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ double ld(double v) { return v; }
__device__ __forceinline__ float ld(bf16_el v) { return filo_el_bf16_to_f32(v.bits); }
__device__ __forceinline__ float ld(f16_el v) { return filo_el_f16_to_f32(v.bits); }

__device__ __forceinline__ void st(float *p, float v) { *p = v; }
__device__ __forceinline__ void st(double *p, double v) { *p = v; }
__device__ __forceinline__ void st(bf16_el *p, float v) { p->bits = filo_el_f32_to_bf16(v); }
__device__ __forceinline__ void st(f16_el *p, float v) { p->bits = filo_el_f32_to_f16(v); }

const int block_threads = 256;
const int64_t max_blocks = 65535;

/* The window geometry, resolved on the host (every field >= 1 except pads). */
struct geom {
    int64_t planes, H, W, OH, OW;
    int kh, kw, sh, sw, ph, pw, dh, dw;
    int count_include_pad;
};

__device__ __forceinline__ int64_t avg_divisor(const geom &g, int64_t oh, int64_t ow)
{
    int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
    int64_t he = min(hs + g.kh, g.H + g.ph), we = min(ws + g.kw, g.W + g.pw);
    if (g.count_include_pad)
        return (he - hs) * (we - ws);
    int64_t n = (min(he, g.H) - max(hs, (int64_t)0)) * (min(we, g.W) - max(ws, (int64_t)0));
    return n > 0 ? n : 1;
}

template <class T>
__global__ void __launch_bounds__(block_threads) maxpool_forward_kernel(const T *__restrict__ x, T *__restrict__ y,
                                                                        int64_t *__restrict__ indices, geom g)
{
    using A = typename acc_of<T>::type;
    int64_t total = g.planes * g.OH * g.OW;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += (int64_t)gridDim.x * blockDim.x) {
        int64_t ow = o % g.OW, t = o / g.OW, oh = t % g.OH, p = t / g.OH;
        const T *plane = x + p * g.H * g.W;
        A best = -INFINITY;
        int64_t arg = -1;
        for (int i = 0; i < g.kh; i++) {
            int64_t h = oh * g.sh - g.ph + (int64_t)i * g.dh;
            if (h < 0 || h >= g.H)
                continue;
            for (int j = 0; j < g.kw; j++) {
                int64_t w = ow * g.sw - g.pw + (int64_t)j * g.dw;
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

template <class T>
__global__ void __launch_bounds__(block_threads) maxpool_backward_kernel(const T *__restrict__ dy,
                                                                         const int64_t *__restrict__ indices,
                                                                         T *__restrict__ dx, geom g)
{
    using A = typename acc_of<T>::type;
    int64_t total = g.planes * g.H * g.W;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t w = e % g.W, t = e / g.W, h = t % g.H, p = t / g.H;
        int64_t pos = h * g.W + w, base = p * g.OH * g.OW;
        A acc = 0;
        for (int i = 0; i < g.kh; i++) {
            int64_t th = h + g.ph - (int64_t)i * g.dh;
            if (th < 0)
                break;
            if (th % g.sh != 0 || th / g.sh >= g.OH)
                continue;
            int64_t row = base + (th / g.sh) * g.OW;
            for (int j = 0; j < g.kw; j++) {
                int64_t tw = w + g.pw - (int64_t)j * g.dw;
                if (tw < 0)
                    break;
                if (tw % g.sw != 0 || tw / g.sw >= g.OW)
                    continue;
                int64_t o = row + tw / g.sw;
                if (indices[o] == pos)
                    acc += ld(dy[o]);
            }
        }
        st(&dx[e], acc);
    }
}

template <class T>
__global__ void __launch_bounds__(block_threads) avgpool_forward_kernel(const T *__restrict__ x, T *__restrict__ y, geom g)
{
    using A = typename acc_of<T>::type;
    int64_t total = g.planes * g.OH * g.OW;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += (int64_t)gridDim.x * blockDim.x) {
        int64_t ow = o % g.OW, t = o / g.OW, oh = t % g.OH, p = t / g.OH;
        const T *plane = x + p * g.H * g.W;
        A acc = 0;
        for (int i = 0; i < g.kh; i++) {
            int64_t h = oh * g.sh - g.ph + i;
            if (h < 0 || h >= g.H)
                continue;
            for (int j = 0; j < g.kw; j++) {
                int64_t w = ow * g.sw - g.pw + j;
                if (w >= 0 && w < g.W)
                    acc += ld(plane[h * g.W + w]);
            }
        }
        st(&y[o], acc / (A)avg_divisor(g, oh, ow));
    }
}

template <class T>
__global__ void __launch_bounds__(block_threads) avgpool_backward_kernel(const T *__restrict__ dy, T *__restrict__ dx,
                                                                         geom g)
{
    using A = typename acc_of<T>::type;
    int64_t total = g.planes * g.H * g.W;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t w = e % g.W, t = e / g.W, h = t % g.H, p = t / g.H;
        int64_t base = p * g.OH * g.OW;
        A acc = 0;
        for (int i = 0; i < g.kh; i++) {
            int64_t th = h + g.ph - i;
            if (th < 0)
                break;
            if (th % g.sh != 0 || th / g.sh >= g.OH)
                continue;
            int64_t oh = th / g.sh;
            for (int j = 0; j < g.kw; j++) {
                int64_t tw = w + g.pw - j;
                if (tw < 0)
                    break;
                if (tw % g.sw != 0 || tw / g.sw >= g.OW)
                    continue;
                int64_t ow = tw / g.sw;
                acc += ld(dy[base + oh * g.OW + ow]) / (A)avg_divisor(g, oh, ow);
            }
        }
        st(&dx[e], acc);
    }
}

geom make_geom(const filo_pool2d_desc *d)
{
    geom g;
    g.planes = d->planes;
    g.H = d->H;
    g.W = d->W;
    g.OH = d->OH;
    g.OW = d->OW;
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

template <class F> filo_status dispatch(filo_dtype t, const char *where, F f)
{
    switch (t) {
    case FILO_F32: return f(tag<float>());
    case FILO_F64: return f(tag<double>());
    case FILO_BF16: return f(tag<bf16_el>());
    case FILO_F16: return f(tag<f16_el>());
    default: return filo_error_set(FILO_ERR_DTYPE, where, "unsupported dtype %s", filo_dtype_name(t));
    }
}

} // namespace

extern "C" filo_status filo_cuda_maxpool2d_forward(const filo_pool2d_desc *d, void *stream)
{
    return dispatch(d->dtype, __func__, [&](auto tt) {
        using T = typename decltype(tt)::type;
        geom g = make_geom(d);
        FILO_LAUNCH((maxpool_forward_kernel<T>), grid_for(g.planes * g.OH * g.OW), block_threads, 0, (cudaStream_t)stream)
        ((const T *)d->x, (T *)d->y, d->indices, g);
        return filo_cuda_check_launch("filo_cuda_maxpool2d_forward");
    });
}

extern "C" filo_status filo_cuda_maxpool2d_backward(const filo_pool2d_desc *d, void *stream)
{
    return dispatch(d->dtype, __func__, [&](auto tt) {
        using T = typename decltype(tt)::type;
        geom g = make_geom(d);
        FILO_LAUNCH((maxpool_backward_kernel<T>), grid_for(g.planes * g.H * g.W), block_threads, 0, (cudaStream_t)stream)
        ((const T *)d->dy, (const int64_t *)d->indices, (T *)d->dx, g);
        return filo_cuda_check_launch("filo_cuda_maxpool2d_backward");
    });
}

extern "C" filo_status filo_cuda_avgpool2d_forward(const filo_pool2d_desc *d, void *stream)
{
    return dispatch(d->dtype, __func__, [&](auto tt) {
        using T = typename decltype(tt)::type;
        geom g = make_geom(d);
        FILO_LAUNCH((avgpool_forward_kernel<T>), grid_for(g.planes * g.OH * g.OW), block_threads, 0, (cudaStream_t)stream)
        ((const T *)d->x, (T *)d->y, g);
        return filo_cuda_check_launch("filo_cuda_avgpool2d_forward");
    });
}

extern "C" filo_status filo_cuda_avgpool2d_backward(const filo_pool2d_desc *d, void *stream)
{
    return dispatch(d->dtype, __func__, [&](auto tt) {
        using T = typename decltype(tt)::type;
        geom g = make_geom(d);
        FILO_LAUNCH((avgpool_backward_kernel<T>), grid_for(g.planes * g.H * g.W), block_threads, 0, (cudaStream_t)stream)
        ((const T *)d->dy, (T *)d->dx, g);
        return filo_cuda_check_launch("filo_cuda_avgpool2d_backward");
    });
}
