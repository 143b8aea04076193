/* CPU optimizer rules: the reference for kernels/cuda/optim_rules.cu. Every element runs the
 * FILO_HD math of kernels/optim_rules_backend.h, as the CUDA kernels do (Adam and AdamW with f32
 * gradients 16 lanes at a time, same bits: kernels/cpu/adam_simd.h). LAMB's per-tensor norms
 * accumulate in double per chunk and add the chunks in order (CUDA sums each chunk in f32 first:
 * the trust ratios agree to about 1e-7 relative, not bitwise). Chunking depends only on sizes. */
#include <math.h>

#include "adam_simd.h"
#include "element.h"
#include "optim_rules_backend.h"
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

typedef struct rule_job {
    const filo_rule_desc *d;
    const filo_rule_tensor *t;
    filo_rule_step s;
    float scale;
    float ratio; /* LAMB phase 2: lr * trust */
    double p_sq[FILO_PARALLEL_MAX_CHUNKS], r_sq[FILO_PARALLEL_MAX_CHUNKS];
} rule_job;

static float slot(float *const *state, int k, int64_t i) { return state[k] ? state[k][i] : 0.0f; }

FILO_SIMD_CLONES static void rule_range(void *ctx, int chunk, int64_t begin, int64_t end)
{
    (void)chunk;
    rule_job *job = ctx;
    const filo_rule_tensor *t = job->t;
    int kind = job->d->c.kind;
    if ((kind == FILO_RULE_ADAM || kind == FILO_RULE_ADAMW) && job->d->grad_dtype == FILO_F32) {
        adam_range_f32(t->param, t->grad, t->state[0], t->state[1], NULL, FILO_F32, job->scale, &job->s.adam,
                       begin, end);
        return;
    }
    for (int64_t i = begin; i < end; i++) {
        float g = load_grad(t->grad, job->d->grad_dtype, i) * job->scale;
        float s0 = slot(t->state, 0, i), s1 = slot(t->state, 1, i), s2 = slot(t->state, 2, i);
        t->param[i] = filo_rule_update(&job->d->c, &job->s, t->param[i], g, &s0, &s1, &s2);
        if (t->state[0])
            t->state[0][i] = s0;
        if (t->state[1])
            t->state[1][i] = s1;
        if (t->state[2])
            t->state[2][i] = s2;
    }
}

static void lamb_moments_range(void *ctx, int chunk, int64_t begin, int64_t end)
{
    rule_job *job = ctx;
    const filo_rule_tensor *t = job->t;
    double p_sq = 0.0, r_sq = 0.0;
    for (int64_t i = begin; i < end; i++) {
        float g = load_grad(t->grad, job->d->grad_dtype, i) * job->scale;
        float p = t->param[i];
        float r = filo_lamb_moments(&job->d->c, &job->s, p, g, &t->state[0][i], &t->state[1][i]);
        p_sq += (double)p * p;
        r_sq += (double)r * r;
    }
    job->p_sq[chunk] = p_sq;
    job->r_sq[chunk] = r_sq;
}

static void lamb_update_range(void *ctx, int chunk, int64_t begin, int64_t end)
{
    (void)chunk;
    rule_job *job = ctx;
    const filo_rule_tensor *t = job->t;
    for (int64_t i = begin; i < end; i++) {
        float p = t->param[i];
        t->param[i] = p - job->ratio * filo_lamb_direction(&job->d->c, &job->s, p, t->state[0][i], t->state[1][i]);
    }
}

filo_status filo_cpu_rule_step(const filo_rule_desc *d)
{
    if (d->found_inf && *d->found_inf != 0.0f)
        return FILO_OK;
    double t = *d->step_count;
    rule_job job;
    job.d = d;
    job.scale = d->grad_scale ? *d->grad_scale : 1.0f;
    for (int k = 0; k < d->n; k++) {
        job.t = &d->tensors[k];
        if (job.t->numel == 0)
            continue;
        filo_rule_step_at(&d->c, t, (double)*job.t->lr, job.t->wd, &job.s);
        if (d->c.kind != FILO_RULE_LAMB) {
            filo_parallel_for(job.t->numel, GRAIN_ELEMENTS, rule_range, &job);
            continue;
        }
        int chunks = filo_parallel_for(job.t->numel, GRAIN_ELEMENTS, lamb_moments_range, &job);
        double p_sq = 0.0, r_sq = 0.0;
        for (int c = 0; c < chunks; c++) {
            p_sq += job.p_sq[c];
            r_sq += job.r_sq[c];
        }
        job.ratio = job.s.lr * filo_lamb_trust(p_sq, r_sq);
        filo_parallel_for(job.t->numel, GRAIN_ELEMENTS, lamb_update_range, &job);
    }
    return FILO_OK;
}
