/* CPU optimizer kernels: the reference for kernels/cuda/optim.cu.
 * The Adam step runs filo_adam_update (kernels/optim_backend.h) on every element, the same f32
 * code the CUDA kernel runs (16 lanes at a time for f32 gradients: kernels/cpu/adam_simd.h). The
 * gradient norm accumulates in double per chunk of a tensor (f32 gradients in 8 lanes, added in a
 * fixed order), adds the chunks and then the tensors in order and rounds once to f32 (the CUDA
 * kernel sums per chunk in f32, so the two agree to about 1e-7 relative, not bitwise). Large
 * tensors are split over the CPU pool; the chunking depends only on sizes, so results do not
 * depend on the thread count. */
#include <math.h>

#include "element.h"
#include "error.h"
#include "adam_simd.h"
#include "optim_backend.h"
#include "parallel.h"

#define GRAIN_ELEMENTS 32768

static float load_grad(const void *base, filo_dtype t, int64_t i)
{
    switch (t) {
    case FILO_BF16: return filo_el_bf16_to_f32(((const uint16_t *)base)[i]);
    case FILO_F16: return filo_el_f16_to_f32(((const uint16_t *)base)[i]);
    default: return ((const float *)base)[i];
    }
}

static void store_copy(void *base, filo_dtype t, int64_t i, float v)
{
    ((uint16_t *)base)[i] = t == FILO_F16 ? filo_el_f32_to_f16(v) : filo_el_f32_to_bf16(v);
}

typedef struct adam_job {
    const filo_adam_desc *d;
    const filo_adam_tensor *t;
    float scale;
} adam_job;

FILO_SIMD_CLONES static void adam_range(void *ctx, int chunk, int64_t begin, int64_t end)
{
    (void)chunk;
    const adam_job *job = ctx;
    const filo_adam_desc *d = job->d;
    const filo_adam_tensor *t = job->t;
    if (d->grad_dtype == FILO_F32) {
        adam_range_f32(t->param, t->grad, t->exp_avg, t->exp_avg_sq, t->copy, d->copy_dtype,
                       d->grad_scale ? job->scale : 1.0f, &d->s, begin, end);
        return;
    }
    for (int64_t i = begin; i < end; i++) {
        float g = load_grad(t->grad, d->grad_dtype, i);
        if (d->grad_scale)
            g = g * job->scale;
        float p = filo_adam_update(t->param[i], g, &t->exp_avg[i], &t->exp_avg_sq[i], &d->s);
        t->param[i] = p;
        if (t->copy)
            store_copy(t->copy, d->copy_dtype, i, p);
    }
}

filo_status filo_cpu_adam_step(const filo_adam_desc *d)
{
    if (d->found_inf) {
        double flag = filo_el_load_f(d->found_inf, d->found_inf_dtype);
        if (flag != 0.0)
            return FILO_OK;
    }
    filo_adam_desc at = *d;
    if (d->step_count) {
        *d->step_count += 1.0f;
        filo_adam_scalars_at_step(&at.s, (double)*d->step_count);
    }
    adam_job job = {&at, NULL, d->grad_scale ? *d->grad_scale : 1.0f};
    for (int k = 0; k < d->n; k++) {
        job.t = &d->tensors[k];
        filo_parallel_for(job.t->numel, GRAIN_ELEMENTS, adam_range, &job);
    }
    return FILO_OK;
}

typedef struct norm_job {
    const filo_grad_norm_desc *d;
    int k;
    double acc[FILO_PARALLEL_MAX_CHUNKS];
    int nonfinite[FILO_PARALLEL_MAX_CHUNKS];
} norm_job;

/* sum of g^2 (sq) or |g| over [begin, end) in double: 8 lanes, two accumulators, the lanes added
 * in a fixed tree, then the tail in order. */
FILO_SIMD_INLINE double sum_f32(const float *g, int64_t begin, int64_t end, int sq)
{
    filo_v8d acc[2] = {{0}};
    int64_t i = begin;
    for (; i + 16 <= end; i += 16)
        for (int k = 0; k < 2; k++) {
            filo_v8d v = __builtin_convertvector(*(const filo_v8f *)(g + i + 8 * k), filo_v8d);
            acc[k] += sq ? v * v : (filo_v8d)((filo_v8u64)v & 0x7fffffffffffffffull);
        }
    filo_v8d a = acc[0] + acc[1];
    double s = filo_simd_sum8d(&a);
    for (; i < end; i++)
        s += sq ? (double)g[i] * (double)g[i] : fabs((double)g[i]);
    return s;
}

FILO_SIMD_CLONES static void norm_range(void *ctx, int chunk, int64_t begin, int64_t end)
{
    norm_job *job = ctx;
    const filo_grad_norm_desc *d = job->d;
    double acc = 0.0;
    int nonfinite = 0;
    if (d->kind != FILO_NORM_INF && d->dtype == FILO_F32) {
        /* A typed loop the compiler vectorizes. Squares of floats cannot overflow a double sum,
         * so the sum is finite exactly when every element is. */
        acc = sum_f32((const float *)d->grads[job->k], begin, end, d->kind == FILO_NORM_L2);
        nonfinite = !isfinite(acc);
    } else {
        for (int64_t i = begin; i < end; i++) {
            double a = fabs((double)load_grad(d->grads[job->k], d->dtype, i));
            nonfinite |= !isfinite(a);
            if (d->kind == FILO_NORM_L2)
                acc += a * a;
            else if (d->kind == FILO_NORM_L1)
                acc += a;
            else if (a > acc || isnan(a))
                acc = isnan(acc) ? acc : a;
        }
    }
    job->acc[chunk] = acc;
    job->nonfinite[chunk] = nonfinite;
}

filo_status filo_cpu_grad_norm(const filo_grad_norm_desc *d)
{
    norm_job job;
    job.d = d;
    double acc = 0.0;
    int nonfinite = 0;
    for (int k = 0; k < d->n; k++) {
        job.k = k;
        int chunks = filo_parallel_for(d->numel[k], GRAIN_ELEMENTS, norm_range, &job);
        for (int c = 0; c < chunks; c++) {
            double a = job.acc[c];
            nonfinite |= job.nonfinite[c];
            if (d->kind != FILO_NORM_INF)
                acc += a;
            else if (a > acc || isnan(a))
                acc = isnan(acc) ? acc : a;
        }
    }
    if (d->norm)
        *d->norm = (float)(d->kind == FILO_NORM_L2 ? sqrt(acc) : acc);
    if (d->nonfinite)
        *d->nonfinite = nonfinite ? 1.0f : 0.0f;
    return FILO_OK;
}

filo_status filo_cpu_clip_coef(const float *norm, float max_norm, float *coef)
{
    *coef = filo_clip_coef_value(*norm, max_norm);
    return FILO_OK;
}
