/* Fused bias + GELU (forward, backward) and the bias gradient of bias + dropout + residual, on
 * CUDA. Reference: kernels/cpu/bias_act.c; the GELU math: kernels/bias_act_math.h; the formulas:
 * include/filo/bias_act.h. (The bias + dropout + residual forward is kernels/cuda/dropout.cu.)
 *
 * bias_gelu_forward_kernel: 256 threads, a grid-stride loop over groups of 4 consecutive
 * elements, one vector load of x and one vector store of y per group when both are aligned to 4
 * elements (scalar otherwise, and for the tail). Bytes moved for n elements of s bytes: read x,
 * write y = 2 n s (the bias, N values, stays in cache): a copy's traffic; erfcf/expf per element
 * cost less than the memory time on sm_80/sm_90.
 *
 * colwise_kernel (bias_gelu backward, dropout backward with dbias): block (32, 8), grid
 * (ceil(N / (32 V)), chunks) with chunks = filo_bias_act_chunks(rows). Thread (tx, ty) owns V
 * adjacent columns, one vector access each (V = 4 for f32/bf16/f16, 2 for the f64 dropout,
 * when N % V == 0 and the pointers are aligned; else V = 1), and rows ty, ty + 8, ... of its
 * chunk: it writes dx and keeps the column sums in registers. The 8 row lanes are added in order
 * in shared memory and each chunk leaves one row of partial sums; partial_reduce_kernel adds the
 * chunks in order: no atomics, so dbias is bitwise reproducible and the same on every GPU.
 * Bytes moved: GELU reads dy and x and writes dx = 3 n s; dropout reads dy and writes dx = 2 n s;
 * plus the partial sums, chunks * N * (4 or 8) bytes written and read once (at most 128 rows of
 * them, small next to n s for the large row counts where bandwidth matters).
 * For dropout, V columns starting at a multiple of V of a row whose length is a multiple of V
 * lie in one Philox block; with V = 1 each element draws its own block (4x the Philox work, the
 * same mask: runtime/element.h's rule).
 *
 * bf16/f16 compute in f32 and round once at the store; f64 computes in double. */
#include "compat.cuh"
#include "typed_elements.cuh"

extern "C" {
#include "backend.h"
#include "bias_act_backend.h"
#include "bias_act_math.h"
#include "element.h"
#include "error.h"
}

namespace {

__device__ __forceinline__ float gelu(float h, int approx) { return filo_gelu_f(h, approx); }
__device__ __forceinline__ double gelu(double h, int approx) { return filo_gelu_d(h, approx); }
__device__ __forceinline__ float gelu_grad(float h, int approx) { return filo_gelu_grad_f(h, approx); }
__device__ __forceinline__ double gelu_grad(double h, int approx) { return filo_gelu_grad_d(h, approx); }

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

/* V consecutive elements aligned to their size: one vector access (V = 1: a plain element). */
template <class T, int V> struct alignas(V * sizeof(T)) vec {
    T v[V];
};

const int threads = 256;
const int lanes_x = 32, lanes_y = 8; /* colwise_kernel's block */

template <class T, class B, bool VEC, int APPROX>
__global__ void __launch_bounds__(threads)
bias_gelu_forward_kernel(const T *__restrict__ x, const B *__restrict__ bias, T *__restrict__ y, int64_t n,
                         int64_t cols)
{
    using A = typename acc_of<T>::type;
    int64_t groups = (n + 3) / 4;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += stride) {
        int64_t i0 = g * 4;
        int m = n - i0 < 4 ? (int)(n - i0) : 4;
        A h[4];
        if (VEC && m == 4) {
            vec<T, 4> xv = *reinterpret_cast<const vec<T, 4> *>(x + i0);
            for (int k = 0; k < 4; k++)
                h[k] = ld(xv.v[k]);
        } else {
            for (int k = 0; k < 4; k++)
                h[k] = k < m ? ld(x[i0 + k]) : A(0);
        }
        if (bias) {
            int64_t c = i0 % cols;
            for (int k = 0; k < 4; k++) {
                h[k] = h[k] + A(ld(bias[c]));
                if (++c == cols)
                    c = 0;
            }
        }
        if (VEC && m == 4) {
            vec<T, 4> yv;
            for (int k = 0; k < 4; k++)
                st(&yv.v[k], gelu(h[k], APPROX));
            *reinterpret_cast<vec<T, 4> *>(y + i0) = yv;
        } else {
            for (int k = 0; k < m; k++)
                st(&y[i0 + k], gelu(h[k], APPROX));
        }
    }
}

/* The dropout mask's parameters (kernels/dropout_backend.h), for KIND == 2. */
template <class A> struct drop_params {
    int mode;
    uint32_t threshold;
    uint64_t seed, offset;
    A scale;
};

/* KIND 0/1: dx = dy * gelu'(x + bias) (erf/tanh form). KIND 2: dx = dy * mask * scale (x and
 * bias unused). partial: NULL when no column sums are wanted. */
template <class T, class B, int KIND, int V>
__global__ void __launch_bounds__(lanes_x * lanes_y)
colwise_kernel(const T *__restrict__ dy, const T *__restrict__ x, const B *__restrict__ bias, T *__restrict__ dx,
               typename acc_of<T>::type *__restrict__ partial, int64_t rows, int64_t cols, int64_t chunk_rows,
               drop_params<typename acc_of<T>::type> dp)
{
    using A = typename acc_of<T>::type;
    __shared__ A part[lanes_y][lanes_x * V];
    int64_t c0 = ((int64_t)blockIdx.x * lanes_x + threadIdx.x) * V;
    int64_t r_end = ((int64_t)blockIdx.y + 1) * chunk_rows;
    r_end = r_end < rows ? r_end : rows;
    bool active = c0 < cols; /* V > 1 only when cols % V == 0: then c0 + V - 1 < cols too */
    A acc[V], b[V];
    for (int k = 0; k < V; k++) {
        acc[k] = A(0);
        b[k] = KIND < 2 && bias && active ? A(ld(bias[c0 + k])) : A(0);
    }
    if (active)
        for (int64_t r = (int64_t)blockIdx.y * chunk_rows + threadIdx.y; r < r_end; r += lanes_y) {
            int64_t i0 = r * cols + c0;
            vec<T, V> g = *reinterpret_cast<const vec<T, V> *>(dy + i0), out;
            if (KIND < 2) {
                vec<T, V> xv = *reinterpret_cast<const vec<T, V> *>(x + i0);
                for (int k = 0; k < V; k++) {
                    A v = ld(g.v[k]) * gelu_grad(ld(xv.v[k]) + b[k], KIND);
                    acc[k] += v;
                    st(&out.v[k], v);
                }
            } else {
                /* V > 1: cols % V == 0 and c0 % V == 0, so i0 .. i0 + V - 1 share one Philox block. */
                uint32_t bits[4] = {0, 0, 0, 0};
                if (dp.mode == FILO_DROPOUT_MASK && V > 1)
                    filo_philox_block(dp.offset + (uint64_t)i0 / 4u, 0, dp.seed, bits);
                for (int k = 0; k < V; k++) {
                    int keep = dp.mode == FILO_DROPOUT_KEEP_ALL;
                    if (dp.mode == FILO_DROPOUT_MASK)
                        keep = V > 1 ? filo_dropout_keep_bits(bits[(i0 & 3) + k], dp.threshold)
                                     : filo_dropout_keep(dp.seed, dp.offset, (uint64_t)(i0 + k), dp.threshold);
                    A v = keep ? mul_rn(ld(g.v[k]), dp.scale) : A(0);
                    acc[k] += v;
                    st(&out.v[k], v);
                }
            }
            *reinterpret_cast<vec<T, V> *>(dx + i0) = out;
        }
    if (!partial)
        return;
    for (int k = 0; k < V; k++)
        part[threadIdx.y][threadIdx.x * V + k] = acc[k];
    __syncthreads();
    if (threadIdx.y != 0 || !active)
        return;
    for (int k = 0; k < V; k++) {
        A s = 0;
        for (int j = 0; j < lanes_y; j++)
            s += part[j][threadIdx.x * V + k];
        partial[(int64_t)blockIdx.y * cols + c0 + k] = s;
    }
}

/* partial is [chunks, cols]. Block (32, 8): lane y adds chunks y, y + 8, ... of its column, then
 * lane 0 adds the 8 sums in order. */
template <class D, class A>
__global__ void partial_reduce_kernel(const A *__restrict__ partial, int64_t chunks, int64_t cols, D *__restrict__ out)
{
    __shared__ A part[lanes_y][lanes_x + 1];
    int64_t j = (int64_t)blockIdx.x * lanes_x + threadIdx.x;
    A s = 0;
    if (j < cols)
        for (int64_t b = threadIdx.y; b < chunks; b += lanes_y)
            s += partial[b * cols + j];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y != 0 || j >= cols)
        return;
    A t = 0;
    for (int k = 0; k < lanes_y; k++)
        t += part[k][threadIdx.x];
    st(&out[j], t);
}

template <class T> struct tag {
    using type = T;
};

/* Calls f(tag<T>, tag<B>) for the storage types of the data and of the bias (or dbias). */
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

unsigned elementwise_grid(int64_t n)
{
    int64_t groups = (n + 3) / 4, blocks = (groups + threads - 1) / threads;
    int64_t cap = FILO_CUDA_EMULATED ? 64 : 8192; /* the emulator runs fewer, longer threads */
    return (unsigned)(blocks < cap ? blocks : cap);
}

/* colwise_kernel over [rows, cols], then (when partial) the chunk reduction into dbias. */
template <class T, class B, int KIND, class D>
filo_status colwise(const T *dy, const T *x, const B *bias, T *dx, typename acc_of<T>::type *partial, D *dbias,
                    int64_t rows, int64_t cols, drop_params<typename acc_of<T>::type> dp, cudaStream_t s,
                    const char *where)
{
    using A = typename acc_of<T>::type;
    int64_t chunks = filo_bias_act_chunks(rows), chunk_rows = (rows + chunks - 1) / chunks;
    /* 16-byte vectors for f32, 8-byte for bf16/f16 (4 elements keep a Philox block whole) and for
     * the f64 dropout 16-byte ones. The f64 GELU stays scalar (still 256 coalesced bytes a warp):
     * two elements of double erfc, whose division calls a slow-path subroutine, spill on sm_90. */
    const int vw = sizeof(T) == 8 ? (KIND == 2 ? 2 : 1) : 4;
    size_t vb = vw * sizeof(T);
    bool vec = cols % vw == 0 && aligned(dy, vb) && aligned(x, vb) && aligned(dx, vb);
    int64_t per_block = lanes_x * (vec ? vw : 1);
    dim3 grid((unsigned)((cols + per_block - 1) / per_block), (unsigned)chunks), block(lanes_x, lanes_y);
    if (vec)
        FILO_LAUNCH((colwise_kernel<T, B, KIND, vw>), grid, block, 0, s)(dy, x, bias, dx, partial, rows, cols, chunk_rows, dp);
    else
        FILO_LAUNCH((colwise_kernel<T, B, KIND, 1>), grid, block, 0, s)(dy, x, bias, dx, partial, rows, cols, chunk_rows, dp);
    filo_status st = filo_cuda_check_launch(where);
    if (st != FILO_OK || !partial)
        return st;
    FILO_LAUNCH((partial_reduce_kernel<D, A>), (unsigned)((cols + lanes_x - 1) / lanes_x), dim3(lanes_x, lanes_y), 0, s)
    ((const A *)partial, chunks, cols, dbias);
    return filo_cuda_check_launch(where);
}

} // namespace

extern "C" filo_status filo_cuda_bias_gelu_forward(const filo_bias_gelu_desc *d, void *stream)
{
    int64_t n = d->rows * d->cols;
    if (n == 0)
        return FILO_OK;
    return dispatch(d->dtype, d->bias_dtype, __func__, [&](auto tt, auto bt) {
        using T = typename decltype(tt)::type;
        using B = typename decltype(bt)::type;
        const T *x = (const T *)d->x;
        const B *bias = (const B *)d->bias;
        T *y = (T *)d->y;
        unsigned grid = elementwise_grid(n);
        size_t vb = 4 * sizeof(T);
        bool vec4 = aligned(x, vb) && aligned(y, vb);
        cudaStream_t s = (cudaStream_t)stream;
        if (vec4 && d->approximate)
            FILO_LAUNCH((bias_gelu_forward_kernel<T, B, true, 1>), grid, threads, 0, s)(x, bias, y, n, d->cols);
        else if (vec4)
            FILO_LAUNCH((bias_gelu_forward_kernel<T, B, true, 0>), grid, threads, 0, s)(x, bias, y, n, d->cols);
        else if (d->approximate)
            FILO_LAUNCH((bias_gelu_forward_kernel<T, B, false, 1>), grid, threads, 0, s)(x, bias, y, n, d->cols);
        else
            FILO_LAUNCH((bias_gelu_forward_kernel<T, B, false, 0>), grid, threads, 0, s)(x, bias, y, n, d->cols);
        return filo_cuda_check_launch("filo_cuda_bias_gelu_forward");
    });
}

extern "C" filo_status filo_cuda_bias_gelu_backward(const filo_bias_gelu_desc *d, void *stream)
{
    if (d->rows * d->cols == 0)
        return FILO_OK;
    return dispatch(d->dtype, d->bias_dtype, __func__, [&](auto tt, auto bt) {
        using T = typename decltype(tt)::type;
        using B = typename decltype(bt)::type;
        using A = typename acc_of<T>::type;
        drop_params<A> dp = {0, 0, 0, 0, A(0)};
        A *partial = d->dbias ? (A *)d->partial : nullptr;
        cudaStream_t s = (cudaStream_t)stream;
        if (d->approximate)
            return colwise<T, B, 1, B>((const T *)d->dy, (const T *)d->x, (const B *)d->bias, (T *)d->y, partial,
                                       (B *)d->dbias, d->rows, d->cols, dp, s, "filo_cuda_bias_gelu_backward");
        return colwise<T, B, 0, B>((const T *)d->dy, (const T *)d->x, (const B *)d->bias, (T *)d->y, partial,
                                   (B *)d->dbias, d->rows, d->cols, dp, s, "filo_cuda_bias_gelu_backward");
    });
}

extern "C" filo_status filo_cuda_dropout_dbias(const filo_dropout_dbias_desc *d, void *stream)
{
    if (d->drop.n == 0)
        return FILO_OK;
    /* D: the dbias storage type (the data's, or f32 for bf16/f16 data). */
    return dispatch(d->drop.dtype, d->dbias_dtype, __func__, [&](auto tt, auto dt) {
        using T = typename decltype(tt)::type;
        using D = typename decltype(dt)::type;
        using A = typename acc_of<T>::type;
        drop_params<A> dp = {(int)d->drop.mode, d->drop.threshold, d->drop.seed, d->drop.offset, (A)d->drop.scale};
        return colwise<T, T, 2, D>((const T *)d->drop.x, (const T *)nullptr, (const T *)nullptr, (T *)d->drop.y,
                                   (A *)d->partial, (D *)d->dbias, d->rows, d->drop.cols, dp, (cudaStream_t)stream,
                                   "filo_cuda_dropout_dbias");
    });
}
