/* Fused LayerNorm / RMSNorm over the last dimension, forward and backward, with an optional fused
 * residual add (h = x + residual). Reference: kernels/cpu/norm.c (filo_cpu_norm_forward,
 * filo_cpu_norm_backward); the math is written out in include/filo/norm.h.
 *
 * norm_forward_kernel: one block per row (grid-stride when rows > 65536), 32..512 threads, each
 * thread a strided set of columns. One read of x (and residual) computes per-thread Welford
 * statistics (sum of squares for RMSNorm), merged across the block in a fixed order; the row
 * stays in shared memory (when C values of the compute type fit in 48 KiB) so that the write of
 * y (and h) does not read it again. Traffic: read x (+ residual), write y (+ h), 2 stats a row.
 *
 * norm_backward_kernel: min(rows, FILO_NORM_BWD_MAX_BLOCKS) blocks, each owning every
 * gridDim.x-th row. One read of dy and h gives the two row sums (sum dxhat, sum dxhat*xhat) and
 * adds the row's dgamma/dbeta terms into the block's own per-column sums; dx is then written from
 * dxhat and xhat kept in shared memory. Each block leaves its column sums in a [blocks, C] scratch
 * and norm_partial_reduce_kernel (32 columns x 8 lanes a block) adds them in a fixed order:
 * no atomics, so dgamma and dbeta are bitwise reproducible. Traffic: read dy and h, write dx,
 * plus the scratch (blocks * C values, written once and read once).
 *
 * bf16/f16 compute in f32 and round once at the store; f64 computes in double. Loads and stores
 * go through runtime/element.h, the same conversions as the CPU reference. */
#include "compat.cuh"
#include "block_reduce.cuh"
#include "typed_elements.cuh"

extern "C" {
#include "backend.h"
#include "element.h"
#include "error.h"
#include "norm_backend.h"
}

namespace {

/* v rounded to T, back in the compute type: the value a store of v would leave in memory. */
template <class T, class A> __device__ __forceinline__ A round_as(A v)
{
    T t;
    st(&t, v);
    return ld(t);
}

const int max_threads = 512;
const size_t smem_budget = 48 * 1024; /* dynamic shared memory usable without an opt-in */

template <class A> struct welford {
    A n, mean, m2;
};

/* Chan et al.'s merge of two partial (count, mean, sum of squared deviations). */
template <class A> __device__ __forceinline__ void welford_merge(welford<A> &a, A n, A mean, A m2)
{
    A total = a.n + n;
    if (total == 0)
        return;
    A delta = mean - a.mean;
    A wb = n / total;
    a.mean += delta * wb;
    a.m2 += m2 + delta * delta * a.n * wb;
    a.n = total;
}

/* The block's merged statistics, returned to every thread. Lane 0 of each warp, then warp 0,
 * merge in a fixed order, so the result does not depend on timing. */
template <class A> __device__ welford<A> block_welford(welford<A> w)
{
    __shared__ A sn[33], smean[33], sm2[33];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    for (int off = 16; off > 0; off >>= 1) {
        A n = __shfl_down_sync(0xffffffffu, w.n, off);
        A mean = __shfl_down_sync(0xffffffffu, w.mean, off);
        A m2 = __shfl_down_sync(0xffffffffu, w.m2, off);
        welford_merge(w, n, mean, m2);
    }
    if (lane == 0) {
        sn[warp] = w.n;
        smean[warp] = w.mean;
        sm2[warp] = w.m2;
    }
    __syncthreads();
    if (warp == 0) {
        welford<A> b = {0, 0, 0};
        if (lane < nwarps)
            b = welford<A>{sn[lane], smean[lane], sm2[lane]};
        for (int off = 16; off > 0; off >>= 1) {
            A n = __shfl_down_sync(0xffffffffu, b.n, off);
            A mean = __shfl_down_sync(0xffffffffu, b.mean, off);
            A m2 = __shfl_down_sync(0xffffffffu, b.m2, off);
            welford_merge(b, n, mean, m2);
        }
        if (lane == 0) {
            sn[32] = b.n;
            smean[32] = b.mean;
            sm2[32] = b.m2;
        }
    }
    __syncthreads();
    return welford<A>{sn[32], smean[32], sm2[32]};
}

template <class T, class G, bool RMS>
__global__ void __launch_bounds__(max_threads)
norm_forward_kernel(const T *x, const T *res, T *h, const G *gamma, const G *beta, T *y,
                    typename acc_of<T>::type *mean_out, typename acc_of<T>::type *rstd_out, int64_t rows, int C,
                    typename acc_of<T>::type eps, int cache)
{
    using A = typename acc_of<T>::type;
    FILO_DYNAMIC_SHARED(A, row);
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * C;
        const T *rr = res ? res + r * C : nullptr;
        T *hr = res ? h + r * C : nullptr;
        welford<A> w = {0, 0, 0};
        A ss = 0, unused = 0;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            A v = ld(xr[c]);
            if (rr) {
                v = round_as<T>(v + ld(rr[c]));
                st(&hr[c], v);
            }
            if (cache)
                row[c] = v;
            if (RMS) {
                ss += v * v;
            } else {
                w.n += A(1);
                A delta = v - w.mean;
                w.mean += delta / w.n;
                w.m2 += delta * (v - w.mean);
            }
        }
        A mean = 0, var;
        if (RMS) {
            block_sum2(ss, unused);
            var = ss / A(C);
        } else {
            w = block_welford(w);
            mean = w.mean;
            var = w.m2 / A(C);
        }
        A rstd = A(1) / sqrt(var + eps);
        if (threadIdx.x == 0) {
            if (!RMS)
                mean_out[r] = mean;
            rstd_out[r] = rstd;
        }
        T *yr = y + r * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            A v = cache ? row[c] : (hr ? ld(hr[c]) : ld(xr[c]));
            A out = (v - mean) * rstd * A(ld(gamma[c]));
            if (beta)
                out += A(ld(beta[c]));
            st(&yr[c], out);
        }
    }
}

template <class T, class G, bool RMS>
__global__ void __launch_bounds__(max_threads)
norm_backward_kernel(const T *dy, const T *h, const typename acc_of<T>::type *mean,
                     const typename acc_of<T>::type *rstd, const G *gamma, T *dx, typename acc_of<T>::type *partial,
                     int64_t rows, int C, int smem_acc, int cache)
{
    using A = typename acc_of<T>::type;
    const int nacc = RMS ? 1 : 2;
    FILO_DYNAMIC_SHARED(A, smem);
    /* Per-column sums (dgamma, then dbeta): in shared memory when they fit, else straight in the
     * block's scratch row. Thread t owns columns t, t + blockDim.x, ... in every array it touches,
     * so none of them needs a barrier. */
    A *acc = smem_acc ? smem : partial + (int64_t)blockIdx.x * nacc * C;
    A *dxhat_row = smem + nacc * C, *xhat_row = dxhat_row + C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        acc[c] = 0;
        if (!RMS)
            acc[C + c] = 0;
    }
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *dyr = dy + r * C, *hr = h + r * C;
        A m = RMS ? A(0) : mean[r];
        A rs = rstd[r];
        A s1 = 0, s2 = 0;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            A g = ld(dyr[c]);
            A xhat = (ld(hr[c]) - m) * rs;
            A dxhat = g * A(ld(gamma[c]));
            s1 += dxhat;
            s2 += dxhat * xhat;
            acc[c] += g * xhat;
            if (!RMS)
                acc[C + c] += g;
            if (cache) {
                dxhat_row[c] = dxhat;
                xhat_row[c] = xhat;
            }
        }
        block_sum2(s1, s2);
        A mean_dxhat = RMS ? A(0) : s1 / A(C);
        A mean_dxhat_xhat = s2 / A(C);
        T *dxr = dx + r * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            A xhat, dxhat;
            if (cache) {
                xhat = xhat_row[c];
                dxhat = dxhat_row[c];
            } else {
                xhat = (ld(hr[c]) - m) * rs;
                dxhat = ld(dyr[c]) * A(ld(gamma[c]));
            }
            st(&dxr[c], rs * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat));
        }
    }
    if (smem_acc) {
        A *out = partial + (int64_t)blockIdx.x * nacc * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            out[c] = acc[c];
            if (!RMS)
                out[C + c] = acc[C + c];
        }
    }
}

/* partial is [blocks, width] with width = C (dgamma) or 2C (dgamma | dbeta). Block (32, 8):
 * lane y adds blocks y, y + 8, ... of its column, then lane 0 adds the 8 sums in order. */
template <class G, class A>
__global__ void norm_partial_reduce_kernel(const A *partial, int64_t blocks, int C, int width, G *dgamma, G *dbeta)
{
    __shared__ A part[8][33];
    int j = blockIdx.x * 32 + threadIdx.x;
    A s = 0;
    if (j < width)
        for (int64_t b = threadIdx.y; b < blocks; b += 8)
            s += partial[b * width + j];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y != 0 || j >= width)
        return;
    A t = 0;
    for (int k = 0; k < 8; k++)
        t += part[k][threadIdx.x];
    if (j < C)
        st(&dgamma[j], t);
    else if (dbeta)
        st(&dbeta[j - C], t);
}

int block_threads(int64_t C)
{
    /* About four columns a thread, whole warps, at most max_threads. */
    int64_t t = ((C + 3) / 4 + 31) / 32 * 32;
    return (int)(t < 32 ? 32 : (t > max_threads ? max_threads : t));
}

template <class T> struct tag {
    using type = T;
};

/* Calls f(tag<T>, tag<G>) for the storage types of x and gamma. */
template <class F> filo_status dispatch(filo_dtype t, filo_dtype g, const char *where, F f)
{
    switch (t) {
    case FILO_F32: return f(tag<float>(), tag<float>());
    case FILO_F64: return f(tag<double>(), tag<double>());
    case FILO_BF16: return g == FILO_F32 ? f(tag<bf16_el>(), tag<float>()) : f(tag<bf16_el>(), tag<bf16_el>());
    case FILO_F16: return g == FILO_F32 ? f(tag<f16_el>(), tag<float>()) : f(tag<f16_el>(), tag<f16_el>());
    default: return filo_error_set(FILO_ERR_DTYPE, where, "unsupported dtype %s", filo_dtype_name(t));
    }
}

} // namespace

extern "C" filo_status filo_cuda_norm_forward(const filo_norm_forward_desc *d, void *stream)
{
    if (d->rows == 0)
        return FILO_OK;
    return dispatch(d->dtype, d->param_dtype, __func__, [&](auto tt, auto gt) {
        using T = typename decltype(tt)::type;
        using G = typename decltype(gt)::type;
        using A = typename acc_of<T>::type;
        int C = (int)d->cols;
        size_t row_bytes = (size_t)C * sizeof(A);
        int cache = row_bytes <= smem_budget;
        unsigned grid = (unsigned)(d->rows < 65536 ? d->rows : 65536);
        int threads = block_threads(C);
        size_t smem = cache ? row_bytes : 0;
        cudaStream_t s = (cudaStream_t)stream;
        if (d->rms)
            FILO_LAUNCH((norm_forward_kernel<T, G, true>), grid, threads, smem, s)
            ((const T *)d->x, (const T *)d->residual, (T *)d->h, (const G *)d->gamma, (const G *)nullptr, (T *)d->y,
             (A *)nullptr, (A *)d->rstd, d->rows, C, (A)d->eps, cache);
        else
            FILO_LAUNCH((norm_forward_kernel<T, G, false>), grid, threads, smem, s)
            ((const T *)d->x, (const T *)d->residual, (T *)d->h, (const G *)d->gamma, (const G *)d->beta, (T *)d->y,
             (A *)d->mean, (A *)d->rstd, d->rows, C, (A)d->eps, cache);
        return filo_cuda_check_launch("filo_cuda_norm_forward");
    });
}

extern "C" filo_status filo_cuda_norm_backward(const filo_norm_backward_desc *d, void *stream)
{
    return dispatch(d->dtype, d->param_dtype, __func__, [&](auto tt, auto gt) {
        using T = typename decltype(tt)::type;
        using G = typename decltype(gt)::type;
        using A = typename acc_of<T>::type;
        int C = (int)d->cols;
        int nacc = d->rms ? 1 : 2;
        size_t acc_bytes = (size_t)nacc * C * sizeof(A), cache_bytes = (size_t)2 * C * sizeof(A);
        int smem_acc = acc_bytes <= smem_budget;
        int cache = smem_acc && acc_bytes + cache_bytes <= smem_budget;
        size_t smem = cache ? acc_bytes + cache_bytes : (smem_acc ? acc_bytes : 0);
        unsigned grid = (unsigned)d->partial_blocks;
        int threads = block_threads(C);
        cudaStream_t s = (cudaStream_t)stream;
        A *partial = (A *)d->partial;
        if (d->rms)
            FILO_LAUNCH((norm_backward_kernel<T, G, true>), grid, threads, smem, s)
            ((const T *)d->dy, (const T *)d->h, (const A *)nullptr, (const A *)d->rstd, (const G *)d->gamma,
             (T *)d->dx, partial, d->rows, C, smem_acc, cache);
        else
            FILO_LAUNCH((norm_backward_kernel<T, G, false>), grid, threads, smem, s)
            ((const T *)d->dy, (const T *)d->h, (const A *)d->mean, (const A *)d->rstd, (const G *)d->gamma,
             (T *)d->dx, partial, d->rows, C, smem_acc, cache);
        filo_status st_launch = filo_cuda_check_launch("filo_cuda_norm_backward");
        if (st_launch != FILO_OK)
            return st_launch;
        int width = nacc * C;
        FILO_LAUNCH((norm_partial_reduce_kernel<G, A>), (unsigned)((width + 31) / 32), dim3(32, 8), 0, s)
        ((const A *)partial, d->partial_blocks, C, width, (G *)d->dgamma, (G *)d->dbeta);
        return filo_cuda_check_launch("filo_cuda_norm_backward");
    });
}
