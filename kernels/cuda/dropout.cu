/* The dropout transform on CUDA (kernels/dropout_backend.h), reference
 * kernels/cpu/dropout.c (filo_cpu_dropout_apply):
 *   y[i] = residual[i] + mask(i) * scale * (x[i] + bias[i % cols])
 * It is the dropout forward and backward (no bias, no residual) and the fused
 * bias + dropout + residual forward.
 *
 * dropout_kernel: 256 threads a block, a grid-stride loop over groups of 4 consecutive elements.
 * A group is one Philox block (runtime/element.h: block offset + i / 4, lane i % 4), so every
 * output of the block is used once and the mask equals the CPU's whatever the launch shape.
 * When x, residual and y are aligned to 4 elements the group moves with one vector load/store per
 * tensor (16 bytes for f32, 8 for bf16/f16, 2 x 16 for f64); a tail group (n % 4) and unaligned
 * views take the scalar path. Bytes moved for n elements of s bytes: read x, write y = 2 n s
 * (3 n s with a residual), plus the bias (cols values, cache-resident): a copy's traffic. Philox
 * costs 10 rounds of 2 32x32 multiplies per 4 elements, below the memory time on sm_80/sm_90.
 *
 * Arithmetic in f32 (double for f64), in the CPU's order, with the multiply written as
 * __fmul_rn/__dmul_rn so nvcc cannot contract it with the residual add: bitwise equal to the CPU. */
#include "compat.cuh"
#include "typed_elements.cuh"

extern "C" {
#include "backend.h"
#include "dropout_backend.h"
#include "element.h"
#include "error.h"
}

namespace {

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

/* Four consecutive elements, aligned to their size: one vector access. */
template <class T> struct alignas(4 * sizeof(T)) vec4 {
    T v[4];
};

const int threads = 256;

template <class T, class B, bool VEC>
__global__ void __launch_bounds__(threads)
dropout_kernel(const T *__restrict__ x, const B *__restrict__ bias, const T *__restrict__ res, T *__restrict__ y,
               int64_t n, int64_t cols, int mode, uint64_t seed, uint64_t offset, uint32_t threshold,
               typename acc_of<T>::type scale)
{
    using A = typename acc_of<T>::type;
    int64_t groups = (n + 3) / 4;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += stride) {
        int64_t i0 = g * 4;
        int m = n - i0 < 4 ? (int)(n - i0) : 4;
        uint32_t r[4] = {0, 0, 0, 0};
        if (mode == FILO_DROPOUT_MASK)
            filo_philox_block(offset + (uint64_t)g, 0, seed, r);
        A h[4], rv[4] = {A(0), A(0), A(0), A(0)};
        if (VEC && m == 4) {
            vec4<T> xv = *reinterpret_cast<const vec4<T> *>(x + i0);
            for (int k = 0; k < 4; k++)
                h[k] = ld(xv.v[k]);
            if (res) {
                vec4<T> resv = *reinterpret_cast<const vec4<T> *>(res + i0);
                for (int k = 0; k < 4; k++)
                    rv[k] = ld(resv.v[k]);
            }
        } else {
            for (int k = 0; k < 4; k++) {
                h[k] = k < m ? ld(x[i0 + k]) : A(0);
                if (res && k < m)
                    rv[k] = ld(res[i0 + k]);
            }
        }
        if (bias) {
            int64_t c = i0 % cols;
            for (int k = 0; k < 4; k++) {
                h[k] = h[k] + A(ld(bias[c]));
                if (++c == cols)
                    c = 0;
            }
        }
        A out[4];
        for (int k = 0; k < 4; k++) {
            int keep = mode == FILO_DROPOUT_KEEP_ALL ||
                       (mode == FILO_DROPOUT_MASK && filo_dropout_keep_bits(r[k], threshold));
            A v = keep ? mul_rn(h[k], scale) : A(0);
            out[k] = res ? v + rv[k] : v;
        }
        if (VEC && m == 4) {
            vec4<T> yv;
            for (int k = 0; k < 4; k++)
                st(&yv.v[k], out[k]);
            *reinterpret_cast<vec4<T> *>(y + i0) = yv;
        } else {
            for (int k = 0; k < m; k++)
                st(&y[i0 + k], out[k]);
        }
    }
}

template <class T> struct tag {
    using type = T;
};

template <class F> filo_status dispatch(filo_dtype t, filo_dtype b, const char *where, F f)
{
    switch (t) {
    case FILO_F32: return f(tag<float>(), tag<float>());
    case FILO_F64: return f(tag<double>(), tag<double>());
    case FILO_BF16: return b == FILO_F32 ? f(tag<bf16_el>(), tag<float>()) : f(tag<bf16_el>(), tag<bf16_el>());
    case FILO_F16: return b == FILO_F32 ? f(tag<f16_el>(), tag<float>()) : f(tag<f16_el>(), tag<f16_el>());
    default: return filo_error_set(FILO_ERR_DTYPE, where, "unsupported dtype %s", filo_dtype_name(t));
    }
}

bool aligned(const void *p, size_t bytes) { return p == nullptr || (uintptr_t)p % bytes == 0; }

} // namespace

extern "C" filo_status filo_cuda_dropout_apply(const filo_dropout_desc *d, void *stream)
{
    if (d->n == 0)
        return FILO_OK;
    return dispatch(d->dtype, d->bias_dtype, __func__, [&](auto tt, auto bt) {
        using T = typename decltype(tt)::type;
        using B = typename decltype(bt)::type;
        using A = typename acc_of<T>::type;
        int64_t groups = (d->n + 3) / 4;
        /* Enough blocks to fill any sm_80/sm_90 part; the emulator runs fewer, longer threads. */
        int64_t cap = FILO_CUDA_EMULATED ? 64 : 8192;
        int64_t blocks = (groups + threads - 1) / threads;
        unsigned grid = (unsigned)(blocks < cap ? blocks : cap);
        size_t vb = 4 * sizeof(T);
        bool vec = aligned(d->x, vb) && aligned(d->residual, vb) && aligned(d->y, vb);
        cudaStream_t s = (cudaStream_t)stream;
        if (vec)
            FILO_LAUNCH((dropout_kernel<T, B, true>), grid, threads, 0, s)
            ((const T *)d->x, (const B *)d->bias, (const T *)d->residual, (T *)d->y, d->n, d->cols, (int)d->mode,
             d->seed, d->offset, d->threshold, (A)d->scale);
        else
            FILO_LAUNCH((dropout_kernel<T, B, false>), grid, threads, 0, s)
            ((const T *)d->x, (const B *)d->bias, (const T *)d->residual, (T *)d->y, d->n, d->cols, (int)d->mode,
             d->seed, d->offset, d->threshold, (A)d->scale);
        return filo_cuda_check_launch("filo_cuda_dropout_apply");
    });
}
