/* Multi-tensor optimizer rules (SGD, Adam, AdamW, RAdam, RMSProp, AdaGrad, LAMB), the step
 * prologue and the loss-scale update. Reference: kernels/cpu/optim_rules.c; the element math is
 * kernels/optim_rules_backend.h, shared verbatim.
 *
 * Work table as kernels/cuda/optim.cu (apex's multi_tensor_apply): each (tensor, chunk of
 * FILO_OPTIM_CHUNK elements) is one block of 512 threads, and the table of pointers, per-tensor
 * group lr pointer and weight decay travels by value as a kernel argument, so a step needs one
 * launch per table (FILO_OPTIM_MAX_TENSORS tensors or FILO_OPTIM_MAX_BLOCKS chunks), no upload
 * and no host synchronization. Each block derives its step's scalars from the device step count
 * and its group's device lr (schedule factor, bias corrections, rectification in double).
 *
 * rule_kernel: one pass; traffic per element: read p, g and the rule's state, write p and state.
 * LAMB: lamb_moments_kernel updates the moments and writes each chunk's sums of p^2 and r^2
 * (per-thread f32, a fixed-order tree in double) to partial[2 (chunk0 + chunk)]; then
 * lamb_update_kernel: every block adds its tensor's chunk sums in order (bitwise the same in all
 * blocks of the tensor), forms the trust ratio and writes p -= lr trust r, recomputing r from the
 * stored moments (the same f32 code, so the same r). A non-zero found_inf makes every block of
 * every kernel return before touching memory. prepare_kernel and scaler_kernel: one thread. */
#include "compat.cuh"
#include "typed_elements.cuh"

#include <stdlib.h>

extern "C" {
#include "backend.h"
#include "element.h"
#include "error.h"
#include "optim_rules_backend.h"
}

namespace {

const int threads = 512;

struct rule_table {
    float *param[FILO_OPTIM_MAX_TENSORS];
    const void *grad[FILO_OPTIM_MAX_TENSORS];
    float *state[FILO_RULE_SLOTS][FILO_OPTIM_MAX_TENSORS];
    const float *lr[FILO_OPTIM_MAX_TENSORS];
    double wd[FILO_OPTIM_MAX_TENSORS];
    int64_t numel[FILO_OPTIM_MAX_TENSORS];
    int64_t chunk0[FILO_OPTIM_MAX_TENSORS]; /* global index of the tensor's first chunk (LAMB) */
    int chunk[FILO_OPTIM_MAX_BLOCKS];
    unsigned char tensor[FILO_OPTIM_MAX_BLOCKS];
};

static_assert(sizeof(rule_table) + sizeof(filo_rule_consts) + 64 <= 4096, "kernel arguments over 4 KiB");

/* Fills table slots with tensors 0..n-1 (empty ones skipped) and their chunks, launching each
 * time the table is full and at the end; a tensor straddling two launches goes again in slot 0. */
template <class Fill, class Launch> filo_status rules_apply(int n, const int64_t *numel, Fill fill, Launch launch)
{
    rule_table tab;
    int ntens = 0, nblk = 0;
    for (int i = 0; i < n; i++) {
        if (numel[i] == 0)
            continue;
        if (ntens == FILO_OPTIM_MAX_TENSORS) {
            FILO_TRY(launch(tab, nblk));
            ntens = nblk = 0;
        }
        int slot = ntens++;
        fill(tab, slot, i);
        int64_t chunks = (numel[i] + FILO_OPTIM_CHUNK - 1) / FILO_OPTIM_CHUNK;
        for (int64_t c = 0; c < chunks; c++) {
            if (nblk == FILO_OPTIM_MAX_BLOCKS) {
                FILO_TRY(launch(tab, nblk));
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
        FILO_TRY(launch(tab, nblk));
    return FILO_OK;
}

__device__ __forceinline__ bool skipped(const float *found_inf) { return found_inf && *found_inf != 0.0f; }

template <class G>
__global__ void __launch_bounds__(threads)
rule_kernel(rule_table tab, filo_rule_consts c, const float *grad_scale, const float *found_inf, const float *step_count)
{
    if (skipped(found_inf))
        return;
    int t = tab.tensor[blockIdx.x];
    filo_rule_step s;
    filo_rule_step_at(&c, (double)*step_count, (double)*tab.lr[t], tab.wd[t], &s);
    int64_t start = (int64_t)tab.chunk[blockIdx.x] * FILO_OPTIM_CHUNK;
    int64_t left = tab.numel[t] - start;
    int len = left < FILO_OPTIM_CHUNK ? (int)left : FILO_OPTIM_CHUNK;
    float *p = tab.param[t] + start;
    const G *g = (const G *)tab.grad[t] + start;
    float *s0 = tab.state[0][t] ? tab.state[0][t] + start : NULL;
    float *s1 = tab.state[1][t] ? tab.state[1][t] + start : NULL;
    float *s2 = tab.state[2][t] ? tab.state[2][t] + start : NULL;
    float scale = grad_scale ? *grad_scale : 1.0f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        float a = s0 ? s0[i] : 0.0f, b = s1 ? s1[i] : 0.0f, e = s2 ? s2[i] : 0.0f;
        p[i] = filo_rule_update(&c, &s, p[i], ld(g[i]) * scale, &a, &b, &e);
        if (s0)
            s0[i] = a;
        if (s1)
            s1[i] = b;
        if (s2)
            s2[i] = e;
    }
}

template <class G>
__global__ void __launch_bounds__(threads)
lamb_moments_kernel(rule_table tab, filo_rule_consts c, const float *grad_scale, const float *found_inf,
                    const float *step_count, float *partial)
{
    __shared__ double red[2][threads];
    if (skipped(found_inf))
        return;
    int t = tab.tensor[blockIdx.x];
    filo_rule_step s;
    filo_rule_step_at(&c, (double)*step_count, (double)*tab.lr[t], tab.wd[t], &s);
    int64_t start = (int64_t)tab.chunk[blockIdx.x] * FILO_OPTIM_CHUNK;
    int64_t left = tab.numel[t] - start;
    int len = left < FILO_OPTIM_CHUNK ? (int)left : FILO_OPTIM_CHUNK;
    float *p = tab.param[t] + start;
    const G *g = (const G *)tab.grad[t] + start;
    float *m = tab.state[0][t] + start;
    float *v = tab.state[1][t] + start;
    float scale = grad_scale ? *grad_scale : 1.0f;
    float p_sq = 0.0f, r_sq = 0.0f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        float mi = m[i], vi = v[i], pi = p[i];
        float r = filo_lamb_moments(&c, &s, pi, ld(g[i]) * scale, &mi, &vi);
        m[i] = mi;
        v[i] = vi;
        p_sq += pi * pi;
        r_sq += r * r;
    }
    red[0][threadIdx.x] = p_sq;
    red[1][threadIdx.x] = r_sq;
    __syncthreads();
    for (int half = threads / 2; half > 0; half >>= 1) {
        if ((int)threadIdx.x < half) {
            red[0][threadIdx.x] += red[0][threadIdx.x + half];
            red[1][threadIdx.x] += red[1][threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        int64_t b = tab.chunk0[t] + tab.chunk[blockIdx.x];
        partial[2 * b] = (float)red[0][0];
        partial[2 * b + 1] = (float)red[1][0];
    }
}

__global__ void __launch_bounds__(threads)
lamb_update_kernel(rule_table tab, filo_rule_consts c, const float *found_inf, const float *step_count,
                   const float *partial)
{
    __shared__ float ratio;
    if (skipped(found_inf))
        return;
    int t = tab.tensor[blockIdx.x];
    filo_rule_step s;
    filo_rule_step_at(&c, (double)*step_count, (double)*tab.lr[t], tab.wd[t], &s);
    if (threadIdx.x == 0) {
        int64_t chunks = (tab.numel[t] + FILO_OPTIM_CHUNK - 1) / FILO_OPTIM_CHUNK;
        double p_sq = 0.0, r_sq = 0.0;
        for (int64_t k = 0; k < chunks; k++) {
            p_sq += partial[2 * (tab.chunk0[t] + k)];
            r_sq += partial[2 * (tab.chunk0[t] + k) + 1];
        }
        ratio = s.lr * filo_lamb_trust(p_sq, r_sq);
    }
    __syncthreads();
    int64_t start = (int64_t)tab.chunk[blockIdx.x] * FILO_OPTIM_CHUNK;
    int64_t left = tab.numel[t] - start;
    int len = left < FILO_OPTIM_CHUNK ? (int)left : FILO_OPTIM_CHUNK;
    float *p = tab.param[t] + start;
    const float *m = tab.state[0][t] + start;
    const float *v = tab.state[1][t] + start;
    float q = ratio;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        float pi = p[i];
        p[i] = pi - q * filo_lamb_direction(&c, &s, pi, m[i], v[i]);
    }
}

__global__ void prepare_kernel(filo_prepare_desc d) { filo_step_prepare_run(&d); }

__global__ void scaler_kernel(filo_scaler_desc d) { filo_scaler_update_run(&d); }

template <class T> struct tag {
    using type = T;
};

template <class F> filo_status dispatch_grad(filo_dtype t, const char *where, F f)
{
    switch (t) {
    case FILO_F32: return f(tag<float>());
    case FILO_BF16: return f(tag<bf16_el>());
    case FILO_F16: return f(tag<f16_el>());
    default: return filo_error_set(FILO_ERR_DTYPE, where, "unsupported grad dtype %s", filo_dtype_name(t));
    }
}

} // namespace

extern "C" filo_status filo_cuda_rule_step(const filo_rule_desc *d, void *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    size_t n = (size_t)(d->n > 0 ? d->n : 1);
    int64_t *numel = (int64_t *)malloc(sizeof(int64_t) * n);
    int64_t *chunk0 = (int64_t *)malloc(sizeof(int64_t) * n);
    if (!numel || !chunk0) {
        free(numel);
        free(chunk0);
        return filo_error_set(FILO_ERR_OOM, __func__, "out of host memory for %d tensors", d->n);
    }
    int64_t total = 0;
    for (int i = 0; i < d->n; i++) {
        numel[i] = d->tensors[i].numel;
        chunk0[i] = total;
        total += (numel[i] + FILO_OPTIM_CHUNK - 1) / FILO_OPTIM_CHUNK;
    }
    auto fill = [&](rule_table &tab, int slot, int i) {
        const filo_rule_tensor &t = d->tensors[i];
        tab.param[slot] = t.param;
        tab.grad[slot] = t.grad;
        for (int k = 0; k < FILO_RULE_SLOTS; k++)
            tab.state[k][slot] = t.state[k];
        tab.lr[slot] = t.lr;
        tab.wd[slot] = t.wd;
        tab.numel[slot] = t.numel;
        tab.chunk0[slot] = chunk0[i];
    };
    filo_status st = dispatch_grad(d->grad_dtype, __func__, [&](auto gt) {
        using G = typename decltype(gt)::type;
        if (d->c.kind != FILO_RULE_LAMB) {
            auto launch = [&](const rule_table &tab, int blocks) {
                FILO_LAUNCH((rule_kernel<G>), (unsigned)blocks, threads, 0, s)
                (tab, d->c, d->grad_scale, d->found_inf, d->step_count);
                return filo_cuda_check_launch("filo_cuda_rule_step");
            };
            return rules_apply(d->n, numel, fill, launch);
        }
        auto moments = [&](const rule_table &tab, int blocks) {
            FILO_LAUNCH((lamb_moments_kernel<G>), (unsigned)blocks, threads, 0, s)
            (tab, d->c, d->grad_scale, d->found_inf, d->step_count, d->partial);
            return filo_cuda_check_launch("filo_cuda_rule_step");
        };
        FILO_TRY(rules_apply(d->n, numel, fill, moments));
        auto update = [&](const rule_table &tab, int blocks) {
            FILO_LAUNCH(lamb_update_kernel, (unsigned)blocks, threads, 0, s)
            (tab, d->c, d->found_inf, d->step_count, (const float *)d->partial);
            return filo_cuda_check_launch("filo_cuda_rule_step");
        };
        return rules_apply(d->n, numel, fill, update);
    });
    free(numel);
    free(chunk0);
    return st;
}

extern "C" filo_status filo_cuda_step_prepare(const filo_prepare_desc *d, void *stream)
{
    FILO_LAUNCH(prepare_kernel, 1, 1, 0, (cudaStream_t)stream)(*d);
    return filo_cuda_check_launch("filo_cuda_step_prepare");
}

extern "C" filo_status filo_cuda_scaler_update(const filo_scaler_desc *d, void *stream)
{
    FILO_LAUNCH(scaler_kernel, 1, 1, 0, (cudaStream_t)stream)(*d);
    return filo_cuda_check_launch("filo_cuda_scaler_update");
}
