/* Multi-tensor optimizer kernels: the fused Adam/AdamW step, the global gradient norm (two
 * stages, fixed order) and the clipping coefficient. Reference: kernels/cpu/optim.c
 * (filo_cpu_adam_step, filo_cpu_grad_norm, filo_cpu_clip_coef); the formulas are written out in
 * include/filo/optim.h.
 *
 * Work table (after apex's multi_tensor_apply): every tensor is cut into chunks of
 * FILO_OPTIM_CHUNK elements and each (tensor, chunk) pair is one block of 512 threads. The table
 * of tensor pointers and work items is a fixed-size struct passed by value as a kernel argument
 * (under the 4 KiB parameter limit), so a step needs no device allocation, no upload and no host
 * synchronization; a new launch starts only when the table is full (FILO_OPTIM_MAX_TENSORS
 * tensors or FILO_OPTIM_MAX_BLOCKS chunks).
 *
 * adam_kernel: one pass, each thread a strided set of its chunk's elements. Traffic per element:
 * read p, g, m, v; write p, m, v (and the bf16/f16 copy). A non-zero found_inf makes every block
 * return before touching memory.
 *
 * norm_partial_kernel: each block reduces its chunk (sum of g^2, sum of |g| or max |g|, per
 * thread in f32, then warp shuffles and one warp in a fixed order) into partial[2 * b] and the
 * chunk's non-finite flag into partial[2 * b + 1], b being the chunk's global index.
 * norm_final_kernel: one block of 256 threads adds the partials in double in a fixed order and
 * writes the norm and the flag. No atomics: bitwise the same run to run and independent of the
 * GPU. clip_coef_kernel: one thread, filo_clip_coef_value. */
#include "compat.cuh"
#include "typed_elements.cuh"

#include <stdlib.h>

#include <type_traits>

extern "C" {
#include "backend.h"
#include "element.h"
#include "error.h"
#include "optim_backend.h"
}

namespace {

const int threads = 512;
const int final_threads = 256;

struct no_copy {
    uint16_t bits;
};
__device__ __forceinline__ void st(no_copy *, float) {}

struct adam_table {
    float *param[FILO_OPTIM_MAX_TENSORS];
    const void *grad[FILO_OPTIM_MAX_TENSORS];
    float *exp_avg[FILO_OPTIM_MAX_TENSORS];
    float *exp_avg_sq[FILO_OPTIM_MAX_TENSORS];
    void *copy[FILO_OPTIM_MAX_TENSORS];
    int64_t numel[FILO_OPTIM_MAX_TENSORS];
    int chunk[FILO_OPTIM_MAX_BLOCKS];
    unsigned char tensor[FILO_OPTIM_MAX_BLOCKS];
};

struct norm_table {
    const void *grad[FILO_OPTIM_MAX_TENSORS];
    int64_t numel[FILO_OPTIM_MAX_TENSORS];
    int chunk[FILO_OPTIM_MAX_BLOCKS];
    unsigned char tensor[FILO_OPTIM_MAX_BLOCKS];
};

static_assert(sizeof(adam_table) + sizeof(filo_adam_scalars) + 64 <= 4096, "kernel arguments over 4 KiB");

/* Fills table slots with tensors 0..n-1 (empty ones skipped) and their chunks, calling
 * launch(table, blocks, first_global_block) each time the table is full and at the end. A
 * tensor whose chunks straddle two launches is put again in slot 0 of the next table. */
template <class Table, class Fill, class Launch>
filo_status multi_tensor_apply(int n, const int64_t *numel, Fill fill, Launch launch)
{
    Table tab;
    int ntens = 0, nblk = 0;
    int64_t base = 0;
    for (int i = 0; i < n; i++) {
        if (numel[i] == 0)
            continue;
        if (ntens == FILO_OPTIM_MAX_TENSORS) {
            FILO_TRY(launch(tab, nblk, base));
            base += nblk;
            ntens = nblk = 0;
        }
        int slot = ntens++;
        fill(tab, slot, i);
        int64_t chunks = (numel[i] + FILO_OPTIM_CHUNK - 1) / FILO_OPTIM_CHUNK;
        for (int64_t c = 0; c < chunks; c++) {
            if (nblk == FILO_OPTIM_MAX_BLOCKS) {
                FILO_TRY(launch(tab, nblk, base));
                base += nblk;
                nblk = 0;
                ntens = 1;
                slot = 0;
                fill(tab, 0, i);
            }
            tab.tensor[nblk] = (unsigned char)slot;
            tab.chunk[nblk] = (int)c;
            nblk++;
        }
    }
    if (nblk > 0)
        FILO_TRY(launch(tab, nblk, base));
    return FILO_OK;
}

template <class G, class C>
__global__ void __launch_bounds__(threads)
adam_kernel(adam_table tab, filo_adam_scalars s, const float *grad_scale, const void *found_inf, int found_inf_u8,
            const float *step_count)
{
    if (found_inf) {
        float flag = found_inf_u8 ? (float)*(const unsigned char *)found_inf : *(const float *)found_inf;
        if (flag != 0.0f)
            return;
    }
    if (step_count)
        filo_adam_scalars_at_step(&s, (double)*step_count);
    int t = tab.tensor[blockIdx.x];
    int64_t start = (int64_t)tab.chunk[blockIdx.x] * FILO_OPTIM_CHUNK;
    int64_t left = tab.numel[t] - start;
    int len = left < FILO_OPTIM_CHUNK ? (int)left : FILO_OPTIM_CHUNK;
    float *p = tab.param[t] + start;
    const G *g = (const G *)tab.grad[t] + start;
    float *m = tab.exp_avg[t] + start;
    float *v = tab.exp_avg_sq[t] + start;
    C *copy = (C *)tab.copy[t];
    if (copy)
        copy += start;
    float scale = grad_scale ? *grad_scale : 1.0f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        float gi = ld(g[i]);
        if (grad_scale)
            gi = gi * scale;
        float mi = m[i], vi = v[i];
        float pi = filo_adam_update(p[i], gi, &mi, &vi, &s);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        if (copy)
            st(&copy[i], pi);
    }
}

/* a combined with b under the norm's rule; max keeps NaN once seen, as PyTorch's max does. */
template <int KIND> __device__ __forceinline__ float combine(float a, float b)
{
    if (KIND == FILO_NORM_INF)
        return (b > a || b != b) && a == a ? b : a;
    return a + b;
}

template <class G, int KIND>
__global__ void __launch_bounds__(threads) norm_partial_kernel(norm_table tab, int64_t base, float *partial)
{
    __shared__ float warp_acc[threads / 32];
    int t = tab.tensor[blockIdx.x];
    int64_t start = (int64_t)tab.chunk[blockIdx.x] * FILO_OPTIM_CHUNK;
    int64_t left = tab.numel[t] - start;
    int len = left < FILO_OPTIM_CHUNK ? (int)left : FILO_OPTIM_CHUNK;
    const G *g = (const G *)tab.grad[t] + start;
    float acc = 0.0f;
    int bad = 0;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        float a = fabsf(ld(g[i]));
        bad |= !(a <= 3.402823466e+38f); /* inf or NaN */
        acc = combine<KIND>(acc, KIND == FILO_NORM_L2 ? a * a : a);
    }
    for (int off = 16; off > 0; off >>= 1)
        acc = combine<KIND>(acc, __shfl_down_sync(0xffffffffu, acc, off));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0)
        warp_acc[warp] = acc;
    bad = __syncthreads_or(bad);
    if (warp == 0) {
        float x = lane < (int)(blockDim.x >> 5) ? warp_acc[lane] : 0.0f;
        for (int off = 16; off > 0; off >>= 1)
            x = combine<KIND>(x, __shfl_down_sync(0xffffffffu, x, off));
        if (lane == 0) {
            partial[2 * (base + blockIdx.x)] = x;
            partial[2 * (base + blockIdx.x) + 1] = bad ? 1.0f : 0.0f;
        }
    }
}

template <int KIND>
__global__ void __launch_bounds__(final_threads)
norm_final_kernel(const float *partial, int64_t count, float *norm, float *nonfinite)
{
    __shared__ double warp_acc[final_threads / 32];
    double acc = 0.0;
    int bad = 0;
    for (int64_t b = threadIdx.x; b < count; b += blockDim.x) {
        double x = partial[2 * b];
        bad |= partial[2 * b + 1] != 0.0f;
        if (KIND == FILO_NORM_INF)
            acc = (x > acc || x != x) && acc == acc ? x : acc;
        else
            acc += x;
    }
    for (int off = 16; off > 0; off >>= 1) {
        double y = __shfl_down_sync(0xffffffffu, acc, off);
        acc = KIND == FILO_NORM_INF ? ((y > acc || y != y) && acc == acc ? y : acc) : acc + y;
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0)
        warp_acc[warp] = acc;
    bad = __syncthreads_or(bad);
    if (threadIdx.x == 0) {
        double total = warp_acc[0];
        for (int w = 1; w < (int)(blockDim.x >> 5); w++) {
            double y = warp_acc[w];
            total = KIND == FILO_NORM_INF ? ((y > total || y != y) && total == total ? y : total) : total + y;
        }
        if (norm)
            *norm = (float)(KIND == FILO_NORM_L2 ? sqrt(total) : total);
        if (nonfinite)
            *nonfinite = bad ? 1.0f : 0.0f;
    }
}

/* The device step counter of a step: +1 unless found_inf is set; it runs before the update. */
__global__ void adam_count_kernel(float *step_count, const void *found_inf, int found_inf_u8)
{
    if (found_inf) {
        float flag = found_inf_u8 ? (float)*(const unsigned char *)found_inf : *(const float *)found_inf;
        if (flag != 0.0f)
            return;
    }
    *step_count += 1.0f;
}

__global__ void clip_coef_kernel(const float *norm, float max_norm, float *coef)
{
    *coef = filo_clip_coef_value(*norm, max_norm);
}

template <class T> struct tag {
    using type = T;
};

/* Calls f(tag<G>) for the grads' storage type. */
template <class F> filo_status dispatch_grad(filo_dtype t, const char *where, F f)
{
    switch (t) {
    case FILO_F32: return f(tag<float>());
    case FILO_BF16: return f(tag<bf16_el>());
    case FILO_F16: return f(tag<f16_el>());
    default: return filo_error_set(FILO_ERR_DTYPE, where, "unsupported grad dtype %s", filo_dtype_name(t));
    }
}

template <class F> filo_status dispatch_copy(int has_copy, filo_dtype t, F f)
{
    if (!has_copy)
        return f(tag<no_copy>());
    return t == FILO_F16 ? f(tag<f16_el>()) : f(tag<bf16_el>());
}

template <class F> filo_status dispatch_kind(int kind, F f)
{
    switch (kind) {
    case FILO_NORM_L2: return f(std::integral_constant<int, FILO_NORM_L2>());
    case FILO_NORM_L1: return f(std::integral_constant<int, FILO_NORM_L1>());
    default: return f(std::integral_constant<int, FILO_NORM_INF>());
    }
}

} // namespace

extern "C" filo_status filo_cuda_adam_step(const filo_adam_desc *d, void *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    int64_t *numel = (int64_t *)malloc(sizeof(int64_t) * (size_t)(d->n > 0 ? d->n : 1));
    if (!numel)
        return filo_error_set(FILO_ERR_OOM, __func__, "out of host memory for %d tensors", d->n);
    for (int i = 0; i < d->n; i++)
        numel[i] = d->tensors[i].numel;
    int u8 = d->found_inf_dtype == FILO_U8;
    if (d->step_count) {
        FILO_LAUNCH(adam_count_kernel, 1, 1, 0, s)(d->step_count, d->found_inf, u8);
        filo_status c = filo_cuda_check_launch("filo_cuda_adam_step");
        if (c != FILO_OK) {
            free(numel);
            return c;
        }
    }
    filo_status st = dispatch_grad(d->grad_dtype, __func__, [&](auto gt) {
        using G = typename decltype(gt)::type;
        return dispatch_copy(d->has_copy, d->copy_dtype, [&](auto ct) {
            using C = typename decltype(ct)::type;
            auto fill = [&](adam_table &tab, int slot, int i) {
                const filo_adam_tensor &t = d->tensors[i];
                tab.param[slot] = t.param;
                tab.grad[slot] = t.grad;
                tab.exp_avg[slot] = t.exp_avg;
                tab.exp_avg_sq[slot] = t.exp_avg_sq;
                tab.copy[slot] = t.copy;
                tab.numel[slot] = t.numel;
            };
            auto launch = [&](const adam_table &tab, int blocks, int64_t) {
                FILO_LAUNCH((adam_kernel<G, C>), (unsigned)blocks, threads, 0, s)
                (tab, d->s, d->grad_scale, d->found_inf, u8, d->step_count);
                return filo_cuda_check_launch("filo_cuda_adam_step");
            };
            return multi_tensor_apply<adam_table>(d->n, numel, fill, launch);
        });
    });
    free(numel);
    return st;
}

extern "C" filo_status filo_cuda_grad_norm(const filo_grad_norm_desc *d, void *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    return dispatch_grad(d->dtype, __func__, [&](auto gt) {
        using G = typename decltype(gt)::type;
        return dispatch_kind(d->kind, [&](auto kt) {
            constexpr int KIND = decltype(kt)::value;
            auto fill = [&](norm_table &tab, int slot, int i) {
                tab.grad[slot] = d->grads[i];
                tab.numel[slot] = d->numel[i];
            };
            auto launch = [&](const norm_table &tab, int blocks, int64_t base) {
                FILO_LAUNCH((norm_partial_kernel<G, KIND>), (unsigned)blocks, threads, 0, s)(tab, base, d->partial);
                return filo_cuda_check_launch("filo_cuda_grad_norm");
            };
            FILO_TRY(multi_tensor_apply<norm_table>(d->n, d->numel, fill, launch));
            FILO_LAUNCH((norm_final_kernel<KIND>), 1, final_threads, 0, s)
            ((const float *)d->partial, d->partial_count, d->norm, d->nonfinite);
            return filo_cuda_check_launch("filo_cuda_grad_norm");
        });
    });
}

extern "C" filo_status filo_cuda_clip_coef(const float *norm, float max_norm, float *coef, void *stream)
{
    FILO_LAUNCH(clip_coef_kernel, 1, 1, 0, (cudaStream_t)stream)(norm, max_norm, coef);
    return filo_cuda_check_launch("filo_cuda_clip_coef");
}
