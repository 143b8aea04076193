/* Internal: the update rules of filo/optimizer.h (SGD, Adam, AdamW, RAdam, RMSProp, AdaGrad,
 * LAMB), the learning-rate schedule, the step's prologue (unscale, average, clip, skip, count) and
 * the loss scaler's update, as FILO_HD element math that kernels/cpu/optim_rules.c and
 * kernels/cuda/optim_rules.cu run verbatim, plus their C signatures. kernels/optim_rules.c
 * dispatches by device; nn/optimizer.c builds the descriptors.
 *
 * Everything that depends on the step count is computed where the count lives (the device): the
 * schedule factor, the scheduled lr, bias corrections, RAdam's rectification and AdaGrad's decayed
 * lr, in double as PyTorch's Python floats, rounded once to f32 for the element math. */
#ifndef FILO_KERNELS_OPTIM_RULES_BACKEND_H
#define FILO_KERNELS_OPTIM_RULES_BACKEND_H

#include <math.h>
#include <stdint.h>

#include "filo/device.h"
#include "optim_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FILO_RULES_PI 3.14159265358979323846

/* Rule kinds: the values of filo_optimizer_kind. */
enum {
    FILO_RULE_SGD = 0,
    FILO_RULE_ADAM,
    FILO_RULE_ADAMW,
    FILO_RULE_RADAM,
    FILO_RULE_RMSPROP,
    FILO_RULE_ADAGRAD,
    FILO_RULE_LAMB,
};

/* State slots of a parameter (unused slots are NULL):
 *   SGD      0 momentum_buffer (momentum != 0)
 *   Adam, AdamW, RAdam, LAMB   0 exp_avg, 1 exp_avg_sq
 *   RMSProp  0 square_avg, 1 momentum_buffer (momentum > 0), 2 grad_avg (centered)
 *   AdaGrad  0 sum */
#define FILO_RULE_SLOTS 3

/* A schedule (kinds as filo_schedule_kind: 0 constant, 1 linear, 2 cosine). */
typedef struct filo_sched_desc {
    int kind;
    double warmup, total, min_factor;
} filo_sched_desc;

/* Hugging Face's get_{constant,linear,cosine}_schedule_with_warmup lambdas at `step` (0 for the
 * first update). */
FILO_HD double filo_sched_factor_at(const filo_sched_desc *s, double step)
{
    if (step < s->warmup)
        return step / (s->warmup > 1.0 ? s->warmup : 1.0);
    double span = s->total - s->warmup;
    span = span > 1.0 ? span : 1.0;
    if (s->kind == 1) {
        double f = (s->total - step) / span;
        return f > 0.0 ? f : 0.0;
    }
    if (s->kind == 2) {
        double progress = (step - s->warmup) / span;
        double f = 0.5 * (1.0 + cos(FILO_RULES_PI * 0.5 * 2.0 * progress));
        return f > s->min_factor ? f : s->min_factor;
    }
    return 1.0;
}

/* A rule's hyperparameters, f32 for the element math and double for the step-dependent terms. */
typedef struct filo_rule_consts {
    int kind;
    int nesterov, centered, decoupled, has_momentum;
    float momentum, one_minus_dampening;
    float beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
    float alpha, one_minus_alpha;
    double beta1_d, beta2_d, lr_decay;
    filo_sched_desc sched;
} filo_rule_consts;

/* The scalars of one step for one parameter tensor (its group's lr and weight decay). */
typedef struct filo_rule_step {
    filo_adam_scalars adam; /* Adam, AdamW */
    float lr, wd;
    float step_size; /* RAdam: lr rect / bc1 (or lr / bc1); AdaGrad: the decayed lr */
    float bc1, bc2_sqrt;
    int first;      /* t == 1: SGD's momentum buffer starts as the gradient */
    int rectified;  /* RAdam: rho_t > 5 */
} filo_rule_step;

/* t: the step count including this step (>= 1); base_lr: the group's lr before the schedule. */
FILO_HD void filo_rule_step_at(const filo_rule_consts *c, double t, double base_lr, double wd, filo_rule_step *s)
{
    double lr = base_lr * filo_sched_factor_at(&c->sched, t - 1.0);
    double bc1 = 1.0 - pow(c->beta1_d, t), bc2 = 1.0 - pow(c->beta2_d, t);
    s->lr = (float)lr;
    s->wd = (float)wd;
    s->first = t <= 1.0;
    s->bc1 = (float)bc1;
    s->bc2_sqrt = (float)sqrt(bc2);
    s->step_size = 0.0f;
    s->rectified = 0;
    if (c->kind == FILO_RULE_ADAM || c->kind == FILO_RULE_ADAMW) {
        int dec = c->kind == FILO_RULE_ADAMW;
        s->adam.beta1 = c->beta1;
        s->adam.beta2 = c->beta2;
        s->adam.one_minus_beta1 = c->one_minus_beta1;
        s->adam.one_minus_beta2 = c->one_minus_beta2;
        s->adam.eps = c->eps;
        s->adam.decoupled = dec;
        s->adam.weight_decay = dec ? 0.0f : (float)wd;
        s->adam.decay = dec ? (float)(1.0 - lr * wd) : 1.0f;
        s->adam.lr = lr;
        s->adam.beta1_d = c->beta1_d;
        s->adam.beta2_d = c->beta2_d;
        filo_adam_scalars_at_step(&s->adam, t);
    } else if (c->kind == FILO_RULE_RADAM) {
        s->adam.decay = (float)(1.0 - lr * wd);
        double rho_inf = 2.0 / (1.0 - c->beta2_d) - 1.0;
        double rho_t = rho_inf - 2.0 * t * pow(c->beta2_d, t) / bc2;
        s->rectified = rho_t > 5.0;
        if (s->rectified) {
            double rect = sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t));
            s->step_size = (float)(lr * rect / bc1);
        } else {
            s->step_size = (float)(lr / bc1);
        }
    } else if (c->kind == FILO_RULE_ADAGRAD) {
        s->step_size = (float)(lr / (1.0 + (t - 1.0) * c->lr_decay));
    }
}

/* One element of every rule but LAMB: returns the new p; s0..s2 are the element's state slots
 * (in registers; unused ones are ignored). g is already unscaled, averaged and clipped. */
FILO_HD float filo_rule_update(const filo_rule_consts *c, const filo_rule_step *s, float p, float g, float *s0,
                               float *s1, float *s2)
{
    switch (c->kind) {
    case FILO_RULE_SGD:
        if (s->wd != 0.0f)
            g = g + s->wd * p;
        if (c->has_momentum) {
            float b = s->first ? g : c->momentum * *s0 + c->one_minus_dampening * g;
            *s0 = b;
            g = c->nesterov ? g + c->momentum * b : b;
        }
        return p - s->lr * g;
    case FILO_RULE_ADAM:
    case FILO_RULE_ADAMW:
        return filo_adam_update(p, g, s0, s1, &s->adam);
    case FILO_RULE_RADAM: {
        if (c->decoupled)
            p = p * s->adam.decay;
        else if (s->wd != 0.0f)
            g = g + s->wd * p;
        float m = c->beta1 * *s0 + c->one_minus_beta1 * g;
        float v = c->beta2 * *s1 + c->one_minus_beta2 * (g * g);
        *s0 = m;
        *s1 = v;
        if (s->rectified)
            return p - s->step_size * m * (s->bc2_sqrt / (sqrtf(v) + c->eps));
        return p - s->step_size * m;
    }
    case FILO_RULE_RMSPROP: {
        if (s->wd != 0.0f)
            g = g + s->wd * p;
        float v = c->alpha * *s0 + c->one_minus_alpha * (g * g);
        *s0 = v;
        float avg;
        if (c->centered) {
            float ga = c->alpha * *s2 + c->one_minus_alpha * g;
            *s2 = ga;
            avg = sqrtf(v - ga * ga) + c->eps;
        } else {
            avg = sqrtf(v) + c->eps;
        }
        if (c->has_momentum) {
            float b = c->momentum * *s1 + g / avg;
            *s1 = b;
            return p - s->lr * b;
        }
        return p - s->lr * (g / avg);
    }
    case FILO_RULE_ADAGRAD: {
        if (s->wd != 0.0f)
            g = g + s->wd * p;
        float sum = *s0 + g * g;
        *s0 = sum;
        return p - s->step_size * (g / (sqrtf(sum) + c->eps));
    }
    default:
        return p;
    }
}

/* LAMB's update direction r = m_hat / (sqrt(v_hat) + eps) + wd p from the updated moments. */
FILO_HD float filo_lamb_direction(const filo_rule_consts *c, const filo_rule_step *s, float p, float m, float v)
{
    return (m / s->bc1) / (sqrtf(v) / s->bc2_sqrt + c->eps) + s->wd * p;
}

/* LAMB phase 1 for one element: updates the moments and returns r. */
FILO_HD float filo_lamb_moments(const filo_rule_consts *c, const filo_rule_step *s, float p, float g, float *m,
                                float *v)
{
    float mv = c->beta1 * *m + c->one_minus_beta1 * g;
    float vv = c->beta2 * *v + c->one_minus_beta2 * (g * g);
    *m = mv;
    *v = vv;
    return filo_lamb_direction(c, s, p, mv, vv);
}

/* The per-tensor trust ratio from the sums of p^2 and r^2 (1 when either norm is 0). */
FILO_HD float filo_lamb_trust(double p_sq, double r_sq)
{
    double pn = sqrt(p_sq), rn = sqrt(r_sq);
    return pn != 0.0 && rn != 0.0 ? (float)(pn / rn) : 1.0f;
}

/* One parameter tensor of a rules step: contiguous f32 param and state, grad of the call's
 * dtype, the group's device base lr and weight decay. */
typedef struct filo_rule_tensor {
    float *param;
    const void *grad;
    float *state[FILO_RULE_SLOTS];
    const float *lr;
    double wd;
    int64_t numel;
} filo_rule_tensor;

typedef struct filo_rule_desc {
    int n;
    const filo_rule_tensor *tensors; /* host array of n */
    filo_dtype grad_dtype;           /* f32, bf16 or f16 */
    filo_rule_consts c;
    const float *grad_scale;         /* NULL or one f32: multiplies every gradient */
    const float *found_inf;          /* NULL or one f32: non-zero skips the whole step */
    const float *step_count;         /* one f32: the count including this step */
    /* LAMB on CUDA: 2 f32 (sum p^2, sum r^2) per chunk of FILO_OPTIM_CHUNK elements of each
     * tensor, partial_count chunks in all. */
    float *partial;
    int64_t partial_count;
} filo_rule_desc;

/* The step's prologue: up to 3 raw gradient norms (one per grad dtype) and non-finite flags. */
typedef struct filo_prepare_desc {
    int nnorm;
    const float *norm[3];       /* NULL entries are skipped */
    const float *nonfinite[3];  /* NULL entries are skipped */
    const float *scale;         /* the loss scale, or NULL */
    double k;                   /* accumulated backward passes */
    float max_norm;             /* 0: no clipping */
    float *found_inf;           /* NULL (no scaler), or receives 1/0 */
    float *grad_scale;          /* receives 1 / (scale k) times the clip coefficient */
    float *norm_out;            /* NULL, or receives the unscaled, averaged norm */
    float *step_count;          /* + 1 unless found_inf */
} filo_prepare_desc;

FILO_HD void filo_step_prepare_run(const filo_prepare_desc *d)
{
    int found = 0;
    double sq = 0.0;
    for (int i = 0; i < d->nnorm; i++) {
        if (d->nonfinite[i] && *d->nonfinite[i] != 0.0f)
            found = 1;
        if (d->norm[i]) {
            double x = *d->norm[i];
            sq += x * x;
        }
    }
    /* PyTorch's unscale multiplies by the f32 reciprocal of the scale computed in double. */
    float mult = (float)(1.0 / ((d->scale ? (double)*d->scale : 1.0) * d->k));
    float norm = (float)sqrt(sq) * mult;
    float coef = d->max_norm > 0.0f ? filo_clip_coef_value(norm, d->max_norm) : 1.0f;
    if (d->norm_out)
        *d->norm_out = norm;
    *d->grad_scale = mult * coef;
    if (d->found_inf)
        *d->found_inf = found ? 1.0f : 0.0f;
    if (!found)
        *d->step_count += 1.0f;
}

/* torch.amp's _amp_update_scale_: backoff on a found inf, growth after `interval` clean steps
 * (only to a finite scale). */
typedef struct filo_scaler_desc {
    float *scale;
    float *growth_tracker;
    const float *found_inf;
    float growth_factor, backoff_factor, growth_interval;
} filo_scaler_desc;

FILO_HD void filo_scaler_update_run(const filo_scaler_desc *d)
{
    if (*d->found_inf != 0.0f) {
        *d->scale = *d->scale * d->backoff_factor;
        *d->growth_tracker = 0.0f;
        return;
    }
    float successful = *d->growth_tracker + 1.0f;
    if (successful >= d->growth_interval) {
        float grown = *d->scale * d->growth_factor;
        if (grown - grown == 0.0f) /* finite */
            *d->scale = grown;
        *d->growth_tracker = 0.0f;
    } else {
        *d->growth_tracker = successful;
    }
}

filo_status filo_cpu_rule_step(const filo_rule_desc *d);
filo_status filo_cuda_rule_step(const filo_rule_desc *d, void *stream);
filo_status filo_cuda_step_prepare(const filo_prepare_desc *d, void *stream);
filo_status filo_cuda_scaler_update(const filo_scaler_desc *d, void *stream);

/* Dispatch by device (kernels/optim_rules.c). */
filo_status filo_rule_step_run(filo_device dev, const filo_rule_desc *d);
filo_status filo_step_prepare(filo_device dev, const filo_prepare_desc *d);
filo_status filo_scaler_update(filo_device dev, const filo_scaler_desc *d);

#ifdef __cplusplus
}
#endif
#endif
