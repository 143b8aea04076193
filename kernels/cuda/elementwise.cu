/* CUDA elementwise ops (reference: kernels/cpu/elementwise.c, same per-element math from
 * elementwise_backend.h): unary math and activations, x op scalar, binary arithmetic,
 * comparisons to u8 and where, each with broadcasting; plus arange and one_hot.
 *
 * Launch shape: 256 threads a block, a grid-stride loop, at most 4096 blocks.
 * flat_kernel: the output and every input are contiguous or a single broadcast element (the
 *   common case after collapsing dims). Each thread moves V elements per step with 16-byte
 *   vector loads and stores (V = 16 / the widest element size, at most 8); a broadcast input is loaded
 *   once per thread. No index arithmetic beyond i.
 * strided_kernel: broadcasts over several dims, strided views or misaligned pointers. Offsets
 *   of each input come from the collapsed dims by div/mod (32-bit when the tensor allows).
 * Memory traffic: each input element read once (broadcast ones from cache), each output element
 *   written once: the kernels are bandwidth-bound. The op is a runtime switch, uniform across
 *   the grid, so one kernel per (kind, dtype) covers every op at a cost of a few ALU instructions
 *   per element, well under the memory time.
 * one_hot_kernel scatters the ones into an output zeroed by cudaMemsetAsync: one thread a row. */
#include "compat.cuh"

extern "C" {
#include "backend.h"
#include "elementwise_backend.h"
#include "error.h"
}

#include <type_traits>

namespace {

struct bf16_s {
    uint16_t bits;
};
struct f16_s {
    uint16_t bits;
};

/* Storage type -> compute type and back; bf16/f16 compute in f32, round once at the store. */
template <class T> struct num {
    using C = T;
    static __device__ __forceinline__ C load(T v) { return v; }
    static __device__ __forceinline__ T store(C v) { return v; }
};
template <> struct num<bf16_s> {
    using C = float;
    static __device__ __forceinline__ C load(bf16_s v) { return filo_el_bf16_to_f32(v.bits); }
    static __device__ __forceinline__ bf16_s store(C v) { return bf16_s{filo_el_f32_to_bf16(v)}; }
};
template <> struct num<f16_s> {
    using C = float;
    static __device__ __forceinline__ C load(f16_s v) { return filo_el_f16_to_f32(v.bits); }
    static __device__ __forceinline__ f16_s store(C v) { return f16_s{filo_el_f32_to_f16(v)}; }
};

__device__ __forceinline__ float unary_math(int op, float x, float p) { return filo_ew_unary_f(op, x, p); }
__device__ __forceinline__ double unary_math(int op, double x, double p) { return filo_ew_unary_d(op, x, p); }
__device__ __forceinline__ float binary_math(int op, float a, float b) { return filo_ew_binary_f(op, a, b); }
__device__ __forceinline__ double binary_math(int op, double a, double b) { return filo_ew_binary_d(op, a, b); }

/* The per-element functors: arity, operand types and the value. Unused operand slots repeat
 * the first type and are never loaded. */
template <class T> struct unary_fn {
    static constexpr int arity = 1;
    using in0 = T;
    using in1 = T;
    using in2 = T;
    using out = T;
    using C = typename num<T>::C;
    int op;
    int mode; /* 0 unary(op, x, p); 1 binary(op, x, p); 2 binary(op, p, x) */
    C p;
    __device__ __forceinline__ T operator()(T a, T, T) const
    {
        C x = num<T>::load(a);
        C r = mode == 0 ? unary_math(op, x, p) : mode == 1 ? binary_math(op, x, p) : binary_math(op, p, x);
        return num<T>::store(r);
    }
};

template <class T> struct binary_fn {
    static constexpr int arity = 2;
    using in0 = T;
    using in1 = T;
    using in2 = T;
    using out = T;
    int op;
    __device__ __forceinline__ T operator()(T a, T b, T) const
    {
        return num<T>::store(binary_math(op, num<T>::load(a), num<T>::load(b)));
    }
};

template <class T> struct compare_fn {
    static constexpr int arity = 2;
    using in0 = T;
    using in1 = T;
    using in2 = T;
    using out = uint8_t;
    int op;
    __device__ __forceinline__ uint8_t operator()(T a, T b, T) const
    {
        auto x = num<T>::load(a);
        auto y = num<T>::load(b);
        return (uint8_t)(FILO_EW_COMPARE(op, x, y));
    }
};

template <class T> struct where_fn {
    static constexpr int arity = 3;
    using in0 = uint8_t;
    using in1 = T;
    using in2 = T;
    using out = T;
    __device__ __forceinline__ T operator()(uint8_t c, T a, T b) const { return c ? a : b; }
};

template <class T, int V> struct alignas(sizeof(T) * V) vec {
    T v[V];
};

/* Elements per thread step: no vector wider than 16 bytes, and at most 8 elements (4 for where
 * on one-byte values), since more one-byte lanes make ptxas spill on sm_80. */
template <class F> constexpr int vec_width()
{
    size_t w = sizeof(typename F::out);
    w = sizeof(typename F::in0) > w ? sizeof(typename F::in0) : w;
    if (F::arity >= 2)
        w = sizeof(typename F::in1) > w ? sizeof(typename F::in1) : w;
    if (w == 1 && F::arity == 3)
        return 4;
    return 16 / w < 8 ? (int)(16 / w) : 8;
}

struct flat_args {
    const void *in[FILO_EW_MAX_INPUTS];
    int bcast[FILO_EW_MAX_INPUTS]; /* 1: the input is one element, read for every i */
    void *out;
    int64_t n;
};

/* Input k's vector j: a 16-byte-aligned load, or the broadcast element repeated. */
template <class T, int V>
__device__ __forceinline__ vec<T, V> load_vec(const void *p, int bcast, int64_t j)
{
    if (bcast) {
        vec<T, V> r;
        T x = *(const T *)p;
        for (int v = 0; v < V; v++)
            r.v[v] = x;
        return r;
    }
    return ((const vec<T, V> *)p)[j];
}

template <class F, int V> __global__ void __launch_bounds__(256) flat_kernel(F f, flat_args a)
{
    using I0 = typename F::in0;
    using I1 = typename F::in1;
    using I2 = typename F::in2;
    using O = typename F::out;
    int64_t nvec = a.n / V;
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (int64_t j = tid; j < nvec; j += step) {
        vec<I0, V> x0 = load_vec<I0, V>(a.in[0], a.bcast[0], j);
        vec<I1, V> x1;
        vec<I2, V> x2;
        if constexpr (F::arity >= 2)
            x1 = load_vec<I1, V>(a.in[1], a.bcast[1], j);
        if constexpr (F::arity >= 3)
            x2 = load_vec<I2, V>(a.in[2], a.bcast[2], j);
        vec<O, V> y;
        for (int v = 0; v < V; v++) {
            if constexpr (F::arity == 1)
                y.v[v] = f(x0.v[v], I1(), I2());
            else if constexpr (F::arity == 2)
                y.v[v] = f(x0.v[v], x1.v[v], I2());
            else
                y.v[v] = f(x0.v[v], x1.v[v], x2.v[v]);
        }
        ((vec<O, V> *)a.out)[j] = y;
    }
    /* The tail past the last whole vector, one element per thread. */
    for (int64_t i = nvec * V + tid; i < a.n; i += step) {
        I0 x0 = ((const I0 *)a.in[0])[a.bcast[0] ? 0 : i];
        I1 x1 = I1();
        I2 x2 = I2();
        if constexpr (F::arity >= 2)
            x1 = ((const I1 *)a.in[1])[a.bcast[1] ? 0 : i];
        if constexpr (F::arity >= 3)
            x2 = ((const I2 *)a.in[2])[a.bcast[2] ? 0 : i];
        ((O *)a.out)[i] = f(x0, x1, x2);
    }
}

struct strided_args {
    int ndim;
    int small; /* numel and every dim fit in 32 bits: cheaper division */
    int64_t shape[FILO_MAX_DIMS];
    int64_t strides[FILO_EW_MAX_INPUTS][FILO_MAX_DIMS];
    const void *in[FILO_EW_MAX_INPUTS];
    void *out;
    int64_t n;
};

/* Offsets (in elements) of element i in the first N inputs. */
template <int N> __device__ __forceinline__ void offsets(const strided_args &a, int64_t i, int64_t *off)
{
    for (int k = 0; k < N; k++)
        off[k] = 0;
    if (a.small) {
        uint32_t r32 = (uint32_t)i;
        for (int d = a.ndim - 1; d >= 0; d--) {
            uint32_t s = (uint32_t)a.shape[d];
            uint32_t q = r32 / s;
            int64_t r = (int64_t)(r32 - q * s);
            for (int k = 0; k < N; k++)
                off[k] += r * a.strides[k][d];
            r32 = q;
        }
        return;
    }
    for (int d = a.ndim - 1; d >= 0; d--) {
        int64_t q = i / a.shape[d];
        int64_t r = i - q * a.shape[d];
        for (int k = 0; k < N; k++)
            off[k] += r * a.strides[k][d];
        i = q;
    }
}

template <class F> __global__ void __launch_bounds__(256) strided_kernel(F f, strided_args a)
{
    using I0 = typename F::in0;
    using I1 = typename F::in1;
    using I2 = typename F::in2;
    using O = typename F::out;
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.n; i += step) {
        int64_t off[F::arity];
        offsets<F::arity>(a, i, off);
        I0 x0 = ((const I0 *)a.in[0])[off[0]];
        I1 x1 = I1();
        I2 x2 = I2();
        if constexpr (F::arity >= 2)
            x1 = ((const I1 *)a.in[1])[off[1]];
        if constexpr (F::arity >= 3)
            x2 = ((const I2 *)a.in[2])[off[2]];
        ((O *)a.out)[i] = f(x0, x1, x2);
    }
}

__global__ void __launch_bounds__(256) arange_kernel(char *out, filo_dtype dtype, int64_t n, double start, double step)
{
    int64_t es = (int64_t)filo_el_size(dtype);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        filo_el_store_f(out + i * es, dtype, start + (double)i * step);
}

__global__ void __launch_bounds__(256) one_hot_kernel(filo_one_hot_desc d)
{
    int64_t is = (int64_t)filo_el_size(d.index_dtype), os = (int64_t)filo_el_size(d.out_dtype);
    for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < d.rows; r += (int64_t)gridDim.x * blockDim.x) {
        int64_t off = 0, rest = r;
        for (int k = d.ndim - 1; k >= 0; k--) {
            off += (rest % d.shape[k]) * d.strides[k];
            rest /= d.shape[k];
        }
        int64_t c = filo_el_load_i((const char *)d.indices + off * is, d.index_dtype);
        if (c >= 0 && c < d.num_classes)
            filo_el_store_f((char *)d.out + (r * d.num_classes + c) * os, d.out_dtype, 1.0);
    }
}

const int threads = 256;

unsigned grid_for(int64_t work)
{
    int64_t blocks = (work + threads - 1) / threads;
    return (unsigned)(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

template <class F> filo_status launch(F f, const filo_ew_desc *d, cudaStream_t stream)
{
    constexpr int V = vec_width<F>();
    const size_t in_sizes[FILO_EW_MAX_INPUTS] = {sizeof(typename F::in0), sizeof(typename F::in1),
                                                  sizeof(typename F::in2)};
    if (filo_ew_is_flat(d)) {
        flat_args a;
        memset(&a, 0, sizeof a);
        a.out = d->out;
        a.n = d->numel;
        int aligned = (uintptr_t)d->out % (sizeof(typename F::out) * V) == 0;
        for (int k = 0; k < F::arity; k++) {
            a.in[k] = d->in[k];
            a.bcast[k] = d->ndim == 0 || d->strides[k][0] == 0;
            if (!a.bcast[k] && (uintptr_t)d->in[k] % (in_sizes[k] * V) != 0)
                aligned = 0;
        }
        if (aligned) {
            FILO_LAUNCH((flat_kernel<F, V>), grid_for((a.n + V - 1) / V), threads, 0, stream)(f, a);
            return filo_cuda_check_launch("filo_cuda_elementwise");
        }
    }
    strided_args a;
    memset(&a, 0, sizeof a);
    a.ndim = d->ndim;
    a.n = d->numel;
    a.small = d->numel <= INT32_MAX;
    for (int i = 0; i < d->ndim; i++)
        a.shape[i] = d->shape[i];
    for (int k = 0; k < F::arity; k++) {
        a.in[k] = d->in[k];
        for (int i = 0; i < d->ndim; i++)
            a.strides[k][i] = d->strides[k][i];
    }
    a.out = d->out;
    FILO_LAUNCH((strided_kernel<F>), grid_for(a.n), threads, 0, stream)(f, a);
    return filo_cuda_check_launch("filo_cuda_elementwise");
}

template <class T> filo_status launch_float_kind(const filo_ew_desc *d, cudaStream_t stream)
{
    using C = typename num<T>::C;
    if (d->kind == FILO_EW_BINARY)
        return launch(binary_fn<T>{d->op}, d, stream);
    int mode = d->kind == FILO_EW_UNARY ? 0 : d->reversed ? 2 : 1;
    return launch(unary_fn<T>{d->op, mode, (C)d->scalar}, d, stream);
}

template <class T> filo_status launch_any_kind(const filo_ew_desc *d, cudaStream_t stream)
{
    if (d->kind == FILO_EW_COMPARE)
        return launch(compare_fn<T>{d->op}, d, stream);
    return launch(where_fn<T>{}, d, stream);
}

} // namespace

extern "C" filo_status filo_cuda_elementwise(const filo_ew_desc *d, void *stream)
{
    if (d->numel == 0)
        return FILO_OK;
    cudaStream_t s = (cudaStream_t)stream;
    if (d->kind == FILO_EW_COMPARE || d->kind == FILO_EW_WHERE) {
        switch (d->dtype) {
        case FILO_F64: return launch_any_kind<double>(d, s);
        case FILO_F32: return launch_any_kind<float>(d, s);
        case FILO_BF16: return launch_any_kind<bf16_s>(d, s);
        case FILO_F16: return launch_any_kind<f16_s>(d, s);
        case FILO_I64: return launch_any_kind<int64_t>(d, s);
        case FILO_I32: return launch_any_kind<int32_t>(d, s);
        case FILO_U8: return launch_any_kind<uint8_t>(d, s);
        default: break;
        }
    } else {
        switch (d->dtype) {
        case FILO_F64: return launch_float_kind<double>(d, s);
        case FILO_F32: return launch_float_kind<float>(d, s);
        case FILO_BF16: return launch_float_kind<bf16_s>(d, s);
        case FILO_F16: return launch_float_kind<f16_s>(d, s);
        default: break;
        }
    }
    return FILO_FAIL(FILO_ERR_INTERNAL, "no kernel for dtype %s", filo_dtype_name(d->dtype));
}

extern "C" filo_status filo_cuda_arange(void *out, filo_dtype dtype, int64_t n, double start, double step,
                                        void *stream)
{
    if (n == 0)
        return FILO_OK;
    FILO_LAUNCH(arange_kernel, grid_for(n), threads, 0, (cudaStream_t)stream)((char *)out, dtype, n, start, step);
    return filo_cuda_check_launch(__func__);
}

extern "C" filo_status filo_cuda_one_hot(const filo_one_hot_desc *d, void *stream)
{
    if (d->rows == 0)
        return FILO_OK;
    FILO_LAUNCH(one_hot_kernel, grid_for(d->rows), threads, 0, (cudaStream_t)stream)(*d);
    return filo_cuda_check_launch(__func__);
}
