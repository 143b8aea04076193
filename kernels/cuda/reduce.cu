/* CUDA reductions and softmax (references: filo_cpu_reduce and filo_cpu_softmax in
 * kernels/cpu/reduce.c). The input is contiguous [outer, extent, inner], reduced over extent.
 *
 * row_reduce_kernel (inner == 1): one block per output row, 32..256 threads striding over the
 *   row (coalesced), then a tree: warp xor-shuffles and one shared slot per warp.
 * col_reduce_kernel (inner > 1): one thread per output column looping over the reduced axis;
 *   neighbouring threads read neighbouring columns, so every step is one coalesced load.
 * partial_reduce_kernel + final_reduce_kernel (all axes, long rows): the input in fixed
 *   contiguous chunks, one block each, writing one partial state; then one block reduces the
 *   partials. No float atomics anywhere, so each result is the same bits on every run.
 * Each input element is read once (variance: twice, mean first, then squared deviations, as a
 *   second launch), each output written once: all of them are bound by memory bandwidth.
 * softmax_kernel: one warp per row (rows <= 512, 8 rows a block) or one block of 256/512 threads
 *   per longer row; a max pass, a sum-of-exp pass and the write each read the row (from L2 the
 *   second and third time); accumulation in float (double for f64). */
#include "compat.cuh"

extern "C" {
#include "backend.h"
#include "element.h"
#include "error.h"
#include "reduce_backend.h"
}

namespace {

/* 16-bit storage types, distinct so that templates can tell bf16 from f16. */
struct bf16_t {
    uint16_t bits;
};
struct f16_t {
    uint16_t bits;
};

__device__ __forceinline__ float load_acc(const float *p) { return *p; }
__device__ __forceinline__ double load_acc(const double *p) { return *p; }
__device__ __forceinline__ float load_acc(const bf16_t *p) { return filo_el_bf16_to_f32(p->bits); }
__device__ __forceinline__ float load_acc(const f16_t *p) { return filo_el_f16_to_f32(p->bits); }

__device__ __forceinline__ void store_out(float *p, float v) { *p = v; }
__device__ __forceinline__ void store_out(double *p, double v) { *p = v; }
__device__ __forceinline__ void store_out(bf16_t *p, float v) { p->bits = filo_el_f32_to_bf16(v); }
__device__ __forceinline__ void store_out(f16_t *p, float v) { p->bits = filo_el_f32_to_f16(v); }
__device__ __forceinline__ void store_out(int64_t *p, long long v) { *p = (int64_t)v; }

__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }
__device__ __forceinline__ float log_acc(float x) { return logf(x); }
__device__ __forceinline__ double log_acc(double x) { return log(x); }

template <class A>
__device__ __forceinline__ bool is_nan(A v)
{
    return v != v;
}

/* Reduction operators. S is the per-thread state; load turns element r of the reduced axis
 * into a state (center: the mean, for variance); combine is associative and commutative, so
 * the tree's shape does not change a max/min/argmax and changes a sum only by rounding;
 * finish makes the output value from the state and the extent. */
template <class A>
struct op_sum {
    using S = A;
    static __device__ S identity() { return (A)0; }
    static __device__ S load(A x, int64_t, A) { return x; }
    static __device__ S combine(S a, S b) { return a + b; }
    static __device__ A finish(S s, int64_t, int) { return s; }
};

template <class A>
struct op_mean : op_sum<A> {
    static __device__ A finish(A s, int64_t n, int) { return s / (A)n; }
};

/* Squared deviation from the row's mean; the sum is divided by max(0, n - correction). */
template <class A>
struct op_sqdev : op_sum<A> {
    static __device__ A load(A x, int64_t, A center) { return (x - center) * (x - center); }
    static __device__ A finish(A s, int64_t n, int correction)
    {
        return s / (A)(n - correction > 0 ? n - correction : 0);
    }
};

/* NaN propagates, as in PyTorch. */
template <class A, bool MAX>
struct op_extreme {
    using S = A;
    static __device__ S identity() { return MAX ? (A)-INFINITY : (A)INFINITY; }
    static __device__ S load(A x, int64_t, A) { return x; }
    static __device__ S combine(S a, S b)
    {
        if (is_nan(a))
            return a;
        if (is_nan(b))
            return b;
        return (MAX ? b > a : b < a) ? b : a;
    }
    static __device__ A finish(S s, int64_t, int) { return s; }
};

template <class A>
struct arg_state {
    A v;
    long long i;
};

/* The first maximum: on equal values (or two NaNs) the smaller index wins, which makes the
 * combine order-free. */
template <class A>
struct op_argmax {
    using S = arg_state<A>;
    static __device__ S identity() { return S{(A)-INFINITY, 0x7fffffffffffffffLL}; }
    static __device__ S load(A x, int64_t r, A) { return S{x, (long long)r}; }
    static __device__ S combine(S a, S b)
    {
        bool an = is_nan(a.v), bn = is_nan(b.v);
        bool b_better = (bn && !an) || (!an && b.v > a.v);
        bool tie = (an && bn) || a.v == b.v;
        return b_better || (tie && b.i < a.i) ? b : a;
    }
    static __device__ long long finish(S s, int64_t, int) { return s.i; }
};

template <class T>
__device__ __forceinline__ T shfl_xor(T v, int mask)
{
    return __shfl_xor_sync(0xffffffffu, v, mask);
}

template <class A>
__device__ __forceinline__ arg_state<A> shfl_xor(arg_state<A> v, int mask)
{
    return arg_state<A>{__shfl_xor_sync(0xffffffffu, v.v, mask), __shfl_xor_sync(0xffffffffu, v.i, mask)};
}

/* Butterfly over the warp: every lane ends with the same value (a + b == b + a bit for bit). */
template <class Op>
__device__ __forceinline__ typename Op::S warp_allreduce(typename Op::S v)
{
    for (int m = 16; m > 0; m >>= 1)
        v = Op::combine(v, shfl_xor(v, m));
    return v;
}

/* Reduces over the threads of one row, blockDim.x of them (a multiple of 32); every thread
 * gets the result. Rows of one warp (blockDim.x == 32) need no shared memory or barrier, so
 * several rows may share a block then (blockDim.y > 1). */
template <class Op>
__device__ typename Op::S row_allreduce(typename Op::S v)
{
    using S = typename Op::S;
    __shared__ S partial[32];
    v = warp_allreduce<Op>(v);
    int warps = (int)(blockDim.x >> 5);
    if (warps == 1)
        return v;
    int lane = (int)(threadIdx.x & 31), warp = (int)(threadIdx.x >> 5);
    __syncthreads(); /* the previous call's readers are done with partial */
    if (lane == 0)
        partial[warp] = v;
    __syncthreads();
    return warp_allreduce<Op>(lane < warps ? partial[lane] : Op::identity());
}

/* Elements are folded into a chunk state, 32 at a time, before joining the running state:
 * a long sequential f32 sum would otherwise lose precision. */
const int chunk_len = 32;

template <class T, class A, class O, class Op>
__global__ void row_reduce_kernel(const T *x, O *out, const A *center, int64_t rows, int64_t n, int correction)
{
    using S = typename Op::S;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T *xr = x + row * n;
        A c = center ? center[row] : (A)0;
        S acc = Op::identity(), chunk = Op::identity();
        int k = 0;
        for (int64_t r = threadIdx.x; r < n; r += blockDim.x) {
            chunk = Op::combine(chunk, Op::load(load_acc(xr + r), r, c));
            if (++k == chunk_len) {
                acc = Op::combine(acc, chunk);
                chunk = Op::identity();
                k = 0;
            }
        }
        acc = row_allreduce<Op>(Op::combine(acc, chunk));
        if (threadIdx.x == 0)
            store_out(out + row, Op::finish(acc, n, correction));
    }
}

template <class T, class A, class O, class Op>
__global__ void col_reduce_kernel(const T *x, O *out, const A *center, int64_t outer, int64_t n, int64_t inner,
                                  int correction)
{
    using S = typename Op::S;
    int64_t total = outer * inner;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += (int64_t)gridDim.x * blockDim.x) {
        int64_t oo = o / inner, oi = o - oo * inner;
        const T *xc = x + oo * n * inner + oi;
        A c = center ? center[o] : (A)0;
        S acc = Op::identity(), chunk = Op::identity();
        int k = 0;
        for (int64_t r = 0; r < n; r++) {
            chunk = Op::combine(chunk, Op::load(load_acc(xc + r * inner), r, c));
            if (++k == chunk_len) {
                acc = Op::combine(acc, chunk);
                chunk = Op::identity();
                k = 0;
            }
        }
        store_out(out + o, Op::finish(Op::combine(acc, chunk), n, correction));
    }
}

/* Block b reduces elements [b * chunk, min(n, (b + 1) * chunk)): the split depends on n only. */
template <class T, class A, class Op>
__global__ void partial_reduce_kernel(const T *x, typename Op::S *partials, const A *center, int64_t n, int64_t chunk)
{
    using S = typename Op::S;
    int64_t begin = (int64_t)blockIdx.x * chunk;
    int64_t end = begin + chunk < n ? begin + chunk : n;
    A c = center ? center[0] : (A)0;
    S acc = Op::identity(), part = Op::identity();
    int k = 0;
    for (int64_t r = begin + threadIdx.x; r < end; r += blockDim.x) {
        part = Op::combine(part, Op::load(load_acc(x + r), r, c));
        if (++k == chunk_len) {
            acc = Op::combine(acc, part);
            part = Op::identity();
            k = 0;
        }
    }
    acc = row_allreduce<Op>(Op::combine(acc, part));
    if (threadIdx.x == 0)
        partials[blockIdx.x] = acc;
}

template <class A, class O, class Op>
__global__ void final_reduce_kernel(const typename Op::S *partials, int count, O *out, int64_t n, int correction)
{
    using S = typename Op::S;
    S acc = Op::identity();
    for (int i = (int)threadIdx.x; i < count; i += (int)blockDim.x)
        acc = Op::combine(acc, partials[i]);
    acc = row_allreduce<Op>(acc);
    if (threadIdx.x == 0)
        store_out(out, Op::finish(acc, n, correction));
}

template <class T, class A, bool LOG>
__global__ void softmax_kernel(const T *x, T *out, int64_t rows, int64_t n)
{
    for (int64_t row = (int64_t)blockIdx.x * blockDim.y + threadIdx.y; row < rows; row += (int64_t)gridDim.x * blockDim.y) {
        const T *xr = x + row * n;
        T *yr = out + row * n;
        A m = (A)-INFINITY;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            A v = load_acc(xr + i);
            m = v > m ? v : m;
        }
        m = row_allreduce<op_extreme<A, true>>(m);
        A s = (A)0, chunk = (A)0;
        int k = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            chunk += exp_acc(load_acc(xr + i) - m);
            if (++k == chunk_len) {
                s += chunk;
                chunk = (A)0;
                k = 0;
            }
        }
        s = row_allreduce<op_sum<A>>(s + chunk);
        A scale = LOG ? log_acc(s) : (A)1 / s;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            A v = load_acc(xr + i);
            store_out(yr + i, LOG ? (v - m) - scale : exp_acc(v - m) * scale);
        }
    }
}

const int max_grid = 65535;
const int reduce_threads = 256;
/* All-axes reductions longer than this use the two-stage kernels; shorter ones one block. */
const int64_t two_stage_min = 4 * reduce_threads;
const int64_t partial_elems = 8 * reduce_threads;
const int max_partials = 1024;

unsigned grid_of(int64_t blocks)
{
    return (unsigned)(blocks < 1 ? 1 : (blocks < max_grid ? blocks : max_grid));
}

/* Scratch device memory from the caching allocator, owned by the current stream: freeing it
 * right after the launches is safe, the stream's later work is ordered after them. */
struct scratch {
    int device;
    void *ptr = nullptr;
    ~scratch()
    {
        if (ptr)
            filo_device_free(filo_cuda(device), ptr);
    }
};

/* Launches one reduction of op Op over the described input into out (type O). */
template <class T, class A, class O, class Op>
filo_status launch_reduce(const filo_reduce_desc *d, O *out, const A *center, int device, cudaStream_t stream)
{
    using S = typename Op::S;
    const T *x = static_cast<const T *>(d->x);
    int64_t n = d->extent;
    if (d->inner > 1) {
        int64_t total = d->outer * d->inner;
        FILO_LAUNCH((col_reduce_kernel<T, A, O, Op>), grid_of((total + reduce_threads - 1) / reduce_threads),
                    reduce_threads, 0, stream)
        (x, out, center, d->outer, n, d->inner, d->correction);
        return filo_cuda_check_launch(__func__);
    }
    if (d->outer > 1 || n <= two_stage_min) {
        int threads = n >= reduce_threads ? reduce_threads : (int)((n + 31) / 32 * 32);
        FILO_LAUNCH((row_reduce_kernel<T, A, O, Op>), grid_of(d->outer), threads < 32 ? 32 : threads, 0, stream)
        (x, out, center, d->outer, n, d->correction);
        return filo_cuda_check_launch(__func__);
    }
    int64_t blocks = (n + partial_elems - 1) / partial_elems;
    if (blocks > max_partials)
        blocks = max_partials;
    int64_t chunk = (n + blocks - 1) / blocks;
    scratch partials{device};
    FILO_TRY(filo_device_malloc(filo_cuda(device), (size_t)blocks * sizeof(S), NULL, &partials.ptr));
    FILO_LAUNCH((partial_reduce_kernel<T, A, Op>), (unsigned)blocks, reduce_threads, 0, stream)
    (x, static_cast<S *>(partials.ptr), center, n, chunk);
    FILO_TRY(filo_cuda_check_launch(__func__));
    FILO_LAUNCH((final_reduce_kernel<A, O, Op>), 1, reduce_threads, 0, stream)
    (static_cast<const S *>(partials.ptr), (int)blocks, out, n, d->correction);
    return filo_cuda_check_launch(__func__);
}

template <class T, class A>
filo_status reduce_typed(const filo_reduce_desc *d, int device, cudaStream_t stream)
{
    T *out = static_cast<T *>(d->out);
    switch (d->kind) {
    case FILO_RK_SUM: return launch_reduce<T, A, T, op_sum<A>>(d, out, nullptr, device, stream);
    case FILO_RK_MEAN: return launch_reduce<T, A, T, op_mean<A>>(d, out, nullptr, device, stream);
    case FILO_RK_MAX: return launch_reduce<T, A, T, op_extreme<A, true>>(d, out, nullptr, device, stream);
    case FILO_RK_MIN: return launch_reduce<T, A, T, op_extreme<A, false>>(d, out, nullptr, device, stream);
    case FILO_RK_ARGMAX:
        return launch_reduce<T, A, int64_t, op_argmax<A>>(d, static_cast<int64_t *>(d->out), nullptr, device, stream);
    case FILO_RK_VAR: {
        /* Pass one keeps the means in the accumulation type, unrounded, for pass two. */
        scratch mean{device};
        FILO_TRY(filo_device_malloc(filo_cuda(device), (size_t)(d->outer * d->inner) * sizeof(A), NULL, &mean.ptr));
        A *m = static_cast<A *>(mean.ptr);
        FILO_TRY((launch_reduce<T, A, A, op_mean<A>>(d, m, nullptr, device, stream)));
        return launch_reduce<T, A, T, op_sqdev<A>>(d, out, m, device, stream);
    }
    }
    return FILO_FAIL(FILO_ERR_INTERNAL, "unknown reduction %d", (int)d->kind);
}

template <class T, class A>
filo_status softmax_typed(const filo_softmax_desc *d, cudaStream_t stream)
{
    const T *x = static_cast<const T *>(d->x);
    T *out = static_cast<T *>(d->out);
    /* Short rows: a warp each, 8 to a block; long rows: a block each. */
    dim3 block = d->cols <= 512 ? dim3(32, 8) : dim3(d->cols >= 8192 ? 512 : 256, 1);
    unsigned grid = grid_of((d->rows + block.y - 1) / block.y);
    if (d->log)
        FILO_LAUNCH((softmax_kernel<T, A, true>), grid, block, 0, stream)(x, out, d->rows, d->cols);
    else
        FILO_LAUNCH((softmax_kernel<T, A, false>), grid, block, 0, stream)(x, out, d->rows, d->cols);
    return filo_cuda_check_launch(__func__);
}

} // namespace

extern "C" filo_status filo_cuda_reduce(const filo_reduce_desc *d, int device_index, void *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    switch (d->dtype) {
    case FILO_F32: return reduce_typed<float, float>(d, device_index, s);
    case FILO_F64: return reduce_typed<double, double>(d, device_index, s);
    case FILO_BF16: return reduce_typed<bf16_t, float>(d, device_index, s);
    case FILO_F16: return reduce_typed<f16_t, float>(d, device_index, s);
    default: return FILO_FAIL(FILO_ERR_DTYPE, "no CUDA reduction for %s", filo_dtype_name(d->dtype));
    }
}

extern "C" filo_status filo_cuda_softmax(const filo_softmax_desc *d, void *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    switch (d->dtype) {
    case FILO_F32: return softmax_typed<float, float>(d, s);
    case FILO_F64: return softmax_typed<double, double>(d, s);
    case FILO_BF16: return softmax_typed<bf16_t, float>(d, s);
    case FILO_F16: return softmax_typed<f16_t, float>(d, s);
    default: return FILO_FAIL(FILO_ERR_DTYPE, "no CUDA softmax for %s", filo_dtype_name(d->dtype));
    }
}
