/* Fused softmax cross-entropy over the last dimension: forward, backward and forward + backward.
 * Reference: kernels/cpu/loss.c (filo_cpu_cross_entropy); the formulas are in
 * include/filo/loss.h. S = sizeof(logits element), A = sizeof(f32, or f64 for f64 logits).
 *
 * ce_rows_kernel<T, I, WARP, COMPUTE, GRAD> (forward: COMPUTE; backward: GRAD; fused: both): one
 * row per block (C > 256: 64..512 threads, about four 16-byte vectors a thread) or one row per
 * warp (C <= 256: 4 rows in a 128-thread block, warp shuffles only, so a C = 2 classifier does
 * not idle a whole block per row); grid-stride over rows. Each thread walks
 * its columns with 16-byte vector loads (the row's unaligned head and tail element by element).
 *   forward  one read of the row keeps an online (max, sum of exp) per thread and, with label
 *            smoothing, sum_c w_c (x_c - x_0); these merge across the row in a fixed order, then
 *            lse = max + log(sum) and the row's loss are written. Bytes a row: read C*S (+ C*A
 *            of weights when smoothing with weights, L2-resident), + target and x[target], write
 *            2*A (lse, and the loss or its SUM/MEAN partial). Ignored rows are not read: they
 *            write lse 0, loss 0.
 *   backward one read of the row and one write of dlogits: p = exp(x - lse) recomputed from the
 *            saved lse. Bytes a row: read C*S + A (lse) + target (+ C*A of weights when
 *            smoothing with weights), write C*S. Ignored rows only write zeros (C*S).
 *   fused    the forward, then the backward pass with lse still in registers: reads the row twice
 *            (the second read normally hits L2: a row is at most a few hundred KB), writes C*S.
 * ce_scalars_kernel (1 block, 256 threads): W = sum of the target weights of the non-ignored
 *   rows (the MEAN divisor) and Wsum = sum_c w_c, computed on the device, so the host never
 *   waits. Launched before the rows kernel when MEAN or weighted smoothing needs them. Bytes:
 *   read N targets (+ N gathered weights) + C*A weights, write 3*A (W, Wsum, 1 / W).
 * ce_reduce_kernel (1 block, 512 threads): SUM/MEAN add the per-row losses in a fixed order (no
 *   atomics: bitwise reproducible) and divide by W for MEAN. Bytes: read N*A, write A.
 *
 * Targets outside [0, C) that are not ignore_index are never used as an index: the row gets
 * loss NaN and dlogits NaN, and counts 0 in W. bf16/f16 compute in f32 and round once at the
 * store; f64 computes in double. */
#include "compat.cuh"
#include "block_reduce.cuh"
#include "typed_elements.cuh"

extern "C" {
#include "backend.h"
#include "element.h"
#include "error.h"
#include "filo/loss.h"
#include "loss_backend.h"
}

namespace {

__device__ __forceinline__ float exp_a(float v) { return expf(v); }
__device__ __forceinline__ double exp_a(double v) { return exp(v); }
__device__ __forceinline__ float log_a(float v) { return logf(v); }
__device__ __forceinline__ double log_a(double v) { return log(v); }

/* N elements of T; a full 16-byte vector is 16-byte aligned so that it loads in one instruction. */
template <class T, int N> struct alignas(N == 1 ? alignof(T) : 16) vecn {
    T v[N];
};
template <class T> struct vec_width {
    static const int value = (int)(16 / sizeof(T));
};

const int max_threads = 512;
const int warp_row_max_cols = 256; /* up to this many classes, one warp a row */
const int warp_rows_per_block = 4;

/* Which threads share a row: a warp (WARP) or the whole block. */
template <bool WARP> struct group;
template <> struct group<true> {
    __device__ static int tid() { return threadIdx.x & 31; }
    __device__ static int size() { return 32; }
    __device__ static int64_t first() { return (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); }
    __device__ static int64_t step() { return (int64_t)gridDim.x * (blockDim.x >> 5); }
};
template <> struct group<false> {
    __device__ static int tid() { return threadIdx.x; }
    __device__ static int size() { return blockDim.x; }
    __device__ static int64_t first() { return blockIdx.x; }
    __device__ static int64_t step() { return gridDim.x; }
};

/* A partial log-sum-exp (max m, sum of exp(x - m)) and the smoothing sum. */
template <class A> struct part {
    A m, s, sw;
};

template <class A> __device__ __forceinline__ void merge(part<A> &a, A m, A s, A sw)
{
    A mx = a.m > m ? a.m : m;
    /* The factor is 1 for the side holding the max, which also keeps two empty parts (m = -inf)
     * from computing exp(-inf - -inf). */
    A sa = a.m == mx ? a.s : a.s * exp_a(a.m - mx);
    A sb = m == mx ? s : s * exp_a(m - mx);
    a.m = mx;
    a.s = sa + sb;
    a.sw += sw;
}

template <class A> __device__ __forceinline__ void warp_merge(part<A> &p)
{
    for (int off = 16; off > 0; off >>= 1) {
        A m = __shfl_down_sync(0xffffffffu, p.m, off);
        A s = __shfl_down_sync(0xffffffffu, p.s, off);
        A sw = __shfl_down_sync(0xffffffffu, p.sw, off);
        merge(p, m, s, sw);
    }
}

/* The row's merged part, returned to every thread of the group, merged in a fixed order. */
template <class A> __device__ part<A> group_merge(part<A> p, group<true>)
{
    warp_merge(p);
    return part<A>{__shfl_sync(0xffffffffu, p.m, 0), __shfl_sync(0xffffffffu, p.s, 0),
                   __shfl_sync(0xffffffffu, p.sw, 0)};
}

template <class A> __device__ part<A> group_merge(part<A> p, group<false>)
{
    /* Slot 32 holds the result: lanes write their warp's slot (< 32) only after everyone has read
     * slot 32 of the previous row, which the barrier below orders. */
    __shared__ A sm[33], ss[33], ssw[33];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    warp_merge(p);
    if (lane == 0) {
        sm[warp] = p.m;
        ss[warp] = p.s;
        ssw[warp] = p.sw;
    }
    __syncthreads();
    if (warp == 0) {
        part<A> b = {-A(INFINITY), A(0), A(0)};
        if (lane < nwarps)
            b = part<A>{sm[lane], ss[lane], ssw[lane]};
        warp_merge(b);
        if (lane == 0) {
            sm[32] = b.m;
            ss[32] = b.s;
            ssw[32] = b.sw;
        }
    }
    __syncthreads();
    return part<A>{sm[32], ss[32], ssw[32]};
}

/* Elements before the first 16-byte boundary of p (at most C). */
template <class T> __device__ __forceinline__ int aligned_head(const T *p, int C)
{
    int h = (int)(((16 - ((uintptr_t)p & 15)) & 15) / sizeof(T));
    return h < C ? h : C;
}

/* Calls f(c0, v) for the group's share of the row, v an array of 1 or vec_width<T> values in
 * the compute type starting at column c0: the head element by element, the body as 16-byte
 * vectors, the tail element by element. */
template <class G, class T, class F> __device__ __forceinline__ void row_for(const T *xr, int C, int head, F &&f)
{
    using A = typename acc_of<T>::type;
    const int V = vec_width<T>::value;
    int t = G::tid(), n = G::size();
    for (int c = t; c < head; c += n) {
        A v[1] = {ld(xr[c])};
        f(c, v);
    }
    int nvec = (C - head) / V;
    const vecn<T, V> *vp = reinterpret_cast<const vecn<T, V> *>(xr + head);
    for (int i = t; i < nvec; i += n) {
        vecn<T, V> raw = vp[i];
        A v[V];
#pragma unroll
        for (int k = 0; k < V; k++)
            v[k] = ld(raw.v[k]);
        f(head + i * V, v);
    }
    for (int c = head + nvec * V + t; c < C; c += n) {
        A v[1] = {ld(xr[c])};
        f(c, v);
    }
}

/* Writes `val` to the group's share of a row. */
template <class G, class T, class A> __device__ __forceinline__ void row_fill(T *dr, int C, A val)
{
    const int V = vec_width<T>::value;
    int head = aligned_head(dr, C), t = G::tid(), n = G::size();
    T one;
    st(&one, val);
    vecn<T, V> vv;
#pragma unroll
    for (int k = 0; k < V; k++)
        vv.v[k] = one;
    for (int c = t; c < head; c += n)
        dr[c] = one;
    int nvec = (C - head) / V;
    vecn<T, V> *vp = reinterpret_cast<vecn<T, V> *>(dr + head);
    for (int i = t; i < nvec; i += n)
        vp[i] = vv;
    for (int c = head + nvec * V + t; c < C; c += n)
        dr[c] = one;
}

template <class T, class I> struct ce_params {
    using A = typename acc_of<T>::type;
    const T *x;
    const I *target;
    const A *weight;   /* NULL: all 1 */
    A *lse;            /* forward: written when non-NULL; backward: read */
    A *loss_row;       /* forward/fused: [rows] */
    const A *dloss;    /* backward: [rows] (NONE) or [1] */
    T *dx;             /* NULL: no gradient */
    const A *scal;     /* W, Wsum, 1 / W (from ce_scalars_kernel), when needed */
    int64_t rows;
    int64_t ignore_index;
    int C;
    int reduction;
    A smoothing;       /* e */
    A e_over_c;        /* e / C: divisions are computed once, on the host (their slow paths are calls) */
    A grad_scale;      /* fused: the loss's gradient */
};

/* COMPUTE: compute lse (forward, fused), else read it (backward). GRAD: write dlogits (backward,
 * fused). Compile-time flags keep each instance small. The explicit minimum of 1 block an SM
 * stops ptxas (CUDA 13) from trading a few spills for occupancy at ~40 registers. */
template <class T, class I, bool WARP, bool COMPUTE, bool GRAD>
__global__ void __launch_bounds__(WARP ? 32 * warp_rows_per_block : max_threads, 1) ce_rows_kernel(ce_params<T, I> p)
{
    using A = typename acc_of<T>::type;
    using G = group<WARP>;
    const int C = p.C;
    const A e = p.smoothing, nan = A(NAN);
    for (int64_t r = G::first(); r < p.rows; r += G::step()) {
        const T *xr = p.x + r * C;
        T *dxr = GRAD ? p.dx + r * C : nullptr;
        int64_t y = (int64_t)p.target[r];
        if (y == p.ignore_index) {
            if (COMPUTE && G::tid() == 0) {
                if (p.lse)
                    p.lse[r] = 0;
                p.loss_row[r] = 0;
            }
            if (GRAD)
                row_fill<G>(dxr, C, A(0));
            continue;
        }
        int valid = y >= 0 && y < C;
        int yc = valid ? (int)y : -1;
        A wy = valid && p.weight ? p.weight[yc] : A(1);
        A wsum = p.weight ? (e > 0 ? p.scal[1] : A(0)) : A(C);
        /* Vector loads need xr and dxr equally aligned; when they are not, go element by element. */
        int head = aligned_head(xr, C);
        if (GRAD && (((uintptr_t)xr ^ (uintptr_t)dxr) & 15))
            head = C;
        /* lse = m + ls. The forward keeps the two apart: x - m is exact near the max, so the loss
         * and the fused gradient stay accurate for logits around 1e4 in f32. */
        A m, ls;
        if (COMPUTE) {
            /* The smoothing sum is taken relative to x_0 so that it does not cancel for large
             * logits: sum_c w_c (lse - x_c) = Wsum (lse - x_0) - sum_c w_c (x_c - x_0). */
            const A x0 = ld(xr[0]);
            part<A> acc = {-A(INFINITY), A(0), A(0)};
            row_for<G>(xr, C, head, [&](int c0, auto &v) {
                const int N = (int)(sizeof(v) / sizeof(v[0]));
                A vm = v[0];
#pragma unroll
                for (int k = 1; k < N; k++)
                    vm = v[k] > vm ? v[k] : vm;
                A mx = acc.m > vm ? acc.m : vm;
                A s = acc.m == mx ? acc.s : acc.s * exp_a(acc.m - mx);
#pragma unroll
                for (int k = 0; k < N; k++)
                    s += exp_a(v[k] - mx);
                acc.m = mx;
                acc.s = s;
                if (e > 0) {
#pragma unroll
                    for (int k = 0; k < N; k++)
                        acc.sw += (p.weight ? p.weight[c0 + k] : A(1)) * (v[k] - x0);
                }
            });
            acc = group_merge(acc, G());
            m = acc.m;
            ls = log_a(acc.s);
            if (G::tid() == 0) {
                A l = nan;
                if (valid) {
                    l = (A(1) - e) * wy * ((m - ld(xr[yc])) + ls);
                    if (e > 0)
                        l += p.e_over_c * (wsum * ((m - x0) + ls) - acc.sw);
                }
                if (p.lse)
                    p.lse[r] = m + ls;
                p.loss_row[r] = l;
            }
        } else {
            m = p.lse[r];
            ls = 0;
        }
        if (!GRAD)
            continue;
        if (!valid) {
            row_fill<G>(dxr, C, nan);
            continue;
        }
        A g = COMPUTE ? p.grad_scale : p.dloss[p.reduction == FILO_LOSS_NONE ? r : 0];
        if (p.reduction == FILO_LOSS_MEAN)
            g *= p.scal[2];
        const A a = g * ((A(1) - e) * wy + p.e_over_c * wsum), b = g * (A(1) - e) * wy, cw = g * p.e_over_c;
        row_for<G>(xr, C, head, [&](int c0, auto &v) {
            const int N = (int)(sizeof(v) / sizeof(v[0]));
            vecn<T, N> o;
#pragma unroll
            for (int k = 0; k < N; k++) {
                A d = exp_a((v[k] - m) - ls) * a;
                if (c0 + k == yc)
                    d -= b;
                if (e > 0)
                    d -= cw * (p.weight ? p.weight[c0 + k] : A(1));
                st(&o.v[k], d);
            }
            *reinterpret_cast<vecn<T, N> *>(dxr + c0) = o;
        });
    }
}

/* scal[0] = W, the sum over non-ignored in-range rows of w_target (their count without weights);
 * scal[1] = Wsum = sum_c w_c (C without weights); scal[2] = 1 / W for the MEAN gradient. */
template <class I, class A>
__global__ void ce_scalars_kernel(const I *target, const A *weight, int64_t rows, int C, int64_t ignore_index, A *scal)
{
    A w = 0, ws = 0;
    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
        int64_t y = (int64_t)target[r];
        if (y != ignore_index && y >= 0 && y < C)
            w += weight ? weight[y] : A(1);
    }
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        ws += weight ? weight[c] : A(1);
    block_sum2(w, ws);
    if (threadIdx.x == 0) {
        scal[0] = w;
        scal[1] = ws;
        scal[2] = A(1) / w;
    }
}

/* loss = sum of the row losses (SUM), divided by W (MEAN): 0 / 0 = NaN when every row is ignored. */
template <class A> __global__ void ce_reduce_kernel(const A *loss_row, int64_t rows, const A *scal, int mean, A *loss)
{
    A s = 0, unused = 0;
    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x)
        s += loss_row[r];
    block_sum2(s, unused);
    if (threadIdx.x == 0)
        loss[0] = mean ? s / scal[0] : s;
}

template <class T> struct tag {
    using type = T;
};

/* Calls f(tag<T>, tag<I>) for the storage types of the logits and the targets. */
template <class F> filo_status dispatch(filo_dtype t, filo_dtype it, F f)
{
    auto with_t = [&](auto tt) {
        return it == FILO_I64 ? f(tt, tag<int64_t>()) : f(tt, tag<int32_t>());
    };
    switch (t) {
    case FILO_F32: return with_t(tag<float>());
    case FILO_F64: return with_t(tag<double>());
    case FILO_BF16: return with_t(tag<bf16_el>());
    case FILO_F16: return with_t(tag<f16_el>());
    default: return filo_error_set(FILO_ERR_DTYPE, "filo_cuda_cross_entropy", "unsupported dtype %s", filo_dtype_name(t));
    }
}

int row_threads(int64_t C, int V)
{
    /* About four vectors a thread, whole warps, 64..max_threads. */
    int64_t t = ((C + 4 * V - 1) / (4 * V) + 31) / 32 * 32;
    return (int)(t < 64 ? 64 : (t > max_threads ? max_threads : t));
}

} // namespace

extern "C" filo_status filo_cuda_cross_entropy(const filo_loss_desc *d, void *stream)
{
    return dispatch(d->dtype, d->target_dtype, [&](auto tt, auto it) {
        using T = typename decltype(tt)::type;
        using I = typename decltype(it)::type;
        using A = typename acc_of<T>::type;
        const char *where = "filo_cuda_cross_entropy";
        cudaStream_t s = (cudaStream_t)stream;
        int C = (int)d->cols;
        int reduce = d->compute && d->reduction != FILO_LOSS_NONE;
        int mean = d->reduction == FILO_LOSS_MEAN && (d->compute || d->rows > 0);
        A *scal = (A *)d->scratch, *loss_row = reduce ? scal + 3 : (A *)d->loss;
        if (mean || (d->weight && d->label_smoothing > 0)) {
            FILO_LAUNCH((ce_scalars_kernel<I, A>), 1, 256, 0, s)
            ((const I *)d->target, (const A *)d->weight, d->rows, C, d->ignore_index, scal);
            FILO_TRY(filo_cuda_check_launch(where));
        }
        if (d->rows > 0) {
            ce_params<T, I> p;
            p.x = (const T *)d->x;
            p.target = (const I *)d->target;
            p.weight = (const A *)d->weight;
            p.lse = (A *)d->lse;
            p.loss_row = loss_row;
            p.dloss = (const A *)d->dloss;
            p.dx = (T *)d->dx;
            p.scal = scal;
            p.rows = d->rows;
            p.ignore_index = d->ignore_index;
            p.C = C;
            p.reduction = d->reduction;
            p.smoothing = (A)d->label_smoothing;
            p.e_over_c = (A)(d->label_smoothing / (double)C);
            p.grad_scale = (A)d->grad_scale;
            int warp = C <= warp_row_max_cols;
            int64_t blocks = warp ? (d->rows + warp_rows_per_block - 1) / warp_rows_per_block : d->rows;
            unsigned grid = (unsigned)(blocks < 65536 ? blocks : 65536);
            int threads = warp ? 32 * warp_rows_per_block : row_threads(C, vec_width<T>::value);
            if (warp && !d->grad)
                FILO_LAUNCH((ce_rows_kernel<T, I, true, true, false>), grid, threads, 0, s)(p);
            else if (warp && !d->compute)
                FILO_LAUNCH((ce_rows_kernel<T, I, true, false, true>), grid, threads, 0, s)(p);
            else if (warp)
                FILO_LAUNCH((ce_rows_kernel<T, I, true, true, true>), grid, threads, 0, s)(p);
            else if (!d->grad)
                FILO_LAUNCH((ce_rows_kernel<T, I, false, true, false>), grid, threads, 0, s)(p);
            else if (!d->compute)
                FILO_LAUNCH((ce_rows_kernel<T, I, false, false, true>), grid, threads, 0, s)(p);
            else
                FILO_LAUNCH((ce_rows_kernel<T, I, false, true, true>), grid, threads, 0, s)(p);
            FILO_TRY(filo_cuda_check_launch(where));
        }
        if (reduce) {
            FILO_LAUNCH((ce_reduce_kernel<A>), 1, max_threads, 0, s)
            (loss_row, d->rows, scal, d->reduction == FILO_LOSS_MEAN, (A *)d->loss);
            FILO_TRY(filo_cuda_check_launch(where));
        }
        return FILO_OK;
    });
}
