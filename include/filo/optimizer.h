/* Optimizers over parameter groups, learning-rate schedules, global-norm clipping, gradient
 * accumulation and dynamic loss scaling.
 *
 * Update rules are PyTorch's (torch.optim, foreach=False, maximize=False, differentiable=False),
 * with p the parameter, g its gradient, t the step (from 1), lr and wd the group's:
 *   SGD      g += wd p; with momentum: b = g (t == 1) or b = mu b + (1 - dampening) g;
 *            g = nesterov ? g + mu b : b;  p -= lr g
 *   Adam     g += wd p; Adam's moments and bias corrections (filo/optim.h)
 *   AdamW    p *= 1 - lr wd; then as Adam without the L2 term
 *   RAdam    Adam's moments; rho_inf = 2/(1-b2) - 1, rho_t = rho_inf - 2 t b2^t / (1 - b2^t);
 *            rho_t > 5: p -= lr m_hat r_t sqrt(bc2) / (sqrt(v) + eps) with the rectification r_t
 *            (PyTorch's placement of eps), else p -= lr m_hat. weight decay: L2 (g += wd p), or decoupled (p *= 1 - lr wd)
 *            when decoupled_weight_decay is set
 *   RMSProp  g += wd p; v = alpha v + (1 - alpha) g^2; centered: ga = alpha ga + (1 - alpha) g,
 *            avg = sqrt(v - ga^2) + eps, else avg = sqrt(v) + eps; momentum > 0:
 *            b = mu b + g / avg, p -= lr b; else p -= lr g / avg
 *   AdaGrad  g += wd p; clr = lr / (1 + (t - 1) lr_decay); s += g^2; p -= clr g / (sqrt(s) + eps)
 *   LAMB     (You et al. 2020, as NVIDIA apex's FusedLAMB with bias correction and grad
 *            averaging): Adam's moments with bias correction, r = m_hat / (sqrt(v_hat) + eps)
 *            + wd p; trust = ||p|| / ||r|| per tensor (1 when either norm is 0); p -= lr trust r
 *
 * A step never synchronizes the host: the step count, the scheduled learning rate, the clip
 * coefficient, the loss scale and the skip flag all live on the device, and every parameter of
 * a kind is updated by multi-tensor launches. A captured training step (filo/capture.h) that
 * calls filo_optimizer_step therefore follows the schedule and the loss scale on every replay.
 * Optimizer state is f32 (the f32 master weights of mixed precision are the parameters). One
 * device step counter serves every parameter (bias corrections, AdaGrad's lr decay, SGD's first
 * momentum step): a parameter that first gets a gradient after others have stepped uses it where
 * PyTorch keeps a count per parameter. */
#ifndef FILO_OPTIMIZER_H
#define FILO_OPTIMIZER_H

#include <stdint.h>

#include "filo/autograd.h"
#include "filo/params.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_optimizer_kind {
    FILO_OPT_SGD = 0,
    FILO_OPT_ADAM,
    FILO_OPT_ADAMW,
    FILO_OPT_RADAM,
    FILO_OPT_RMSPROP,
    FILO_OPT_ADAGRAD,
    FILO_OPT_LAMB,
} filo_optimizer_kind;

typedef struct filo_optimizer_config {
    filo_optimizer_kind kind;
    double lr;
    double weight_decay;   /* the default of groups added by filo_optimizer_add_params */
    double momentum;       /* SGD, RMSProp */
    double dampening;      /* SGD */
    int nesterov;          /* SGD */
    double beta1, beta2;   /* Adam, AdamW, RAdam, LAMB */
    double eps;            /* Adam family, RMSProp, AdaGrad, LAMB */
    double alpha;          /* RMSProp smoothing */
    int centered;          /* RMSProp */
    double lr_decay;       /* AdaGrad */
    double initial_accumulator_value; /* AdaGrad */
    int decoupled_weight_decay;       /* RAdam */
} filo_optimizer_config;

/* PyTorch's defaults for the kind: lr 1e-3 (RMSProp and AdaGrad 1e-2), betas (0.9, 0.999),
 * eps 1e-8 (AdaGrad 1e-10, LAMB 1e-6), weight_decay 0 (AdamW and LAMB 1e-2), alpha 0.99,
 * momentum, dampening, lr_decay and initial_accumulator_value 0. */
filo_optimizer_config filo_optimizer_defaults(filo_optimizer_kind kind);
const char *filo_optimizer_kind_name(filo_optimizer_kind kind); /* "sgd", "adamw", ... */
filo_status filo_optimizer_kind_parse(const char *name, filo_optimizer_kind *out);

/* ---- learning-rate schedules: lr = group lr * factor(step), step counted from 0 for the first
 * update, as Hugging Face's get_*_schedule_with_warmup ----
 *   CONSTANT  factor 1 after warmup
 *   LINEAR    warmup: step / warmup; then max(0, (total - step) / (total - warmup))
 *   COSINE    warmup, then max(min_factor, 0.5 (1 + cos(pi * cycles * 2 * progress))) with
 *             progress = (step - warmup) / (total - warmup), cycles 0.5 (one half wave)
 * warmup: step < warmup_steps gives step / warmup_steps (no warmup when 0).
 * The optimizer's kernels compute the factor on the device from its step counter: an update
 * uses factor(steps taken before it), so the schedule advances with the device step count, and
 * a skipped step (found_inf) advances neither. */
typedef enum filo_schedule_kind {
    FILO_SCHEDULE_CONSTANT = 0,
    FILO_SCHEDULE_LINEAR,
    FILO_SCHEDULE_COSINE,
} filo_schedule_kind;

typedef struct filo_schedule {
    filo_schedule_kind kind;
    int64_t warmup_steps;
    int64_t total_steps; /* LINEAR and COSINE: > warmup_steps */
    double min_factor;   /* COSINE floor, 0 by default */
} filo_schedule;

/* The factor at a step, computed on the host in double (the device kernel computes the same). */
double filo_schedule_factor(const filo_schedule *s, int64_t step);

typedef struct filo_optimizer filo_optimizer;

filo_status filo_optimizer_new(filo_device device, const filo_optimizer_config *cfg, filo_optimizer **out);
void filo_optimizer_free(filo_optimizer *opt);

/* Adds a group of n parameters (retained; float leaves on the optimizer's device, each in one
 * group only) with its own lr and weight decay. names: NULL, or n names used for the state in
 * checkpoints ("<name>.exp_avg"); without names a parameter is "group<g>.<i>". The state is
 * created here (zeros, AdaGrad's initial accumulator). *group (may be NULL): its index. */
filo_status filo_optimizer_add_group(filo_optimizer *opt, int n, filo_var *const *params, const char *const *names,
                                     double lr, double weight_decay, int *group);
/* The trainable parameters of a store as two groups, with the store's names: weights and
 * embeddings with cfg->weight_decay, biases and norms with 0 (BERT's recipe). */
filo_status filo_optimizer_add_params(filo_optimizer *opt, const filo_params *ps);

filo_status filo_optimizer_set_schedule(filo_optimizer *opt, const filo_schedule *s);
/* Changes a group's base lr (before the schedule's factor). Enqueues a device write. */
filo_status filo_optimizer_set_group_lr(filo_optimizer *opt, int group, double lr);

typedef struct filo_grad_scaler filo_grad_scaler;

typedef struct filo_step_options {
    /* > 0: scale all gradients so their global 2-norm is at most this (clip_grad_norm_), measured
     * after unscaling and accumulation averaging. 0: no clipping. */
    double max_grad_norm;
    /* k >= 1: the gradients hold the sum of k backward passes (gradient accumulation); they are
     * divided by k, so k half-size batches with mean losses step like one full batch. */
    int accumulated;
    /* NULL, or the loss scaler the backward's loss was scaled by: gradients are unscaled, a
     * step with an inf/NaN gradient is skipped (no parameter, state or step count changes), and
     * the scale is updated (filo_grad_scaler_update) at the end of the step. */
    filo_grad_scaler *scaler;
    /* NULL, or receives a new 0-dim f32 device tensor: the global gradient norm before clipping
     * (after unscaling and averaging), for logging. */
    filo_tensor **grad_norm;
} filo_step_options;

/* {max_grad_norm 0, accumulated 1, no scaler, no norm}. */
filo_step_options filo_step_defaults(void);

/* One update of every group from the parameters' current gradients; a parameter without a
 * gradient is skipped, as PyTorch skips p.grad is None (a step where no parameter has one changes
 * nothing, not even the count). opts NULL means the defaults. */
filo_status filo_optimizer_step(filo_optimizer *opt, const filo_step_options *opts);
/* Drops every parameter's gradient. */
void filo_optimizer_zero_grad(filo_optimizer *opt);

/* Steps taken (a skipped step is not counted); reads the device counter (synchronizes). */
int64_t filo_optimizer_step_count(const filo_optimizer *opt);
/* The current lr of a group (base lr times the schedule factor at the current step); host read. */
double filo_optimizer_group_lr(const filo_optimizer *opt, int group);
int filo_optimizer_group_count(const filo_optimizer *opt);

/* The optimizer's state as named tensors, for checkpoints: per parameter "<name>.<slot>"
 * (exp_avg, exp_avg_sq, momentum_buffer, square_avg, grad_avg, sum), and "step" (the device
 * step counter) and "group<g>.lr" (the base lr, 0-dim f32). The tensors are the optimizer's own
 * (borrowed): a checkpoint loader copies saved values into them. */
int filo_optimizer_state_count(const filo_optimizer *opt);
filo_status filo_optimizer_state_at(const filo_optimizer *opt, int i, const char **name, filo_tensor **t);
/* What the optimizer was built with, for checkpoints (either pointer may be NULL): its
 * configuration and its schedule (CONSTANT without warmup when none was set). */
filo_status filo_optimizer_get_config(const filo_optimizer *opt, filo_optimizer_config *cfg, filo_schedule *schedule);

/* ---- dynamic loss scaling for f16 (torch.amp.GradScaler's rule) ----
 * The loss is multiplied by `scale` before backward. At each step the gradients are checked:
 * any inf/NaN skips the step and multiplies the scale by backoff_factor; growth_interval steps
 * in a row without one multiply it by growth_factor. Scale and counters live on the device. */
typedef struct filo_grad_scaler_config {
    double init_scale;      /* 65536 */
    double growth_factor;   /* 2 */
    double backoff_factor;  /* 0.5 */
    int64_t growth_interval; /* 2000 */
} filo_grad_scaler_config;
filo_grad_scaler_config filo_grad_scaler_defaults(void);

filo_status filo_grad_scaler_new(filo_device device, const filo_grad_scaler_config *cfg, filo_grad_scaler **out);
void filo_grad_scaler_free(filo_grad_scaler *s);
/* scaled = loss * scale (a differentiable op; loss is 0-dim f32). */
filo_status filo_grad_scaler_scale(filo_grad_scaler *s, filo_var *loss, filo_var **scaled);
/* Updates the scale from the last step's found-inf flag (filo_optimizer_step calls it). */
filo_status filo_grad_scaler_update(filo_grad_scaler *s);
/* Host reads (synchronize): the current scale; whether the last step was skipped. */
double filo_grad_scaler_get_scale(const filo_grad_scaler *s);
int filo_grad_scaler_last_skipped(const filo_grad_scaler *s);
/* Device tensors for checkpoints (borrowed): "scale" (0-dim f32), "growth_tracker" (0-dim f32),
 * "found_inf" (0-dim f32, the last step's flag). */
filo_tensor *filo_grad_scaler_tensor(const filo_grad_scaler *s, const char *name);

#ifdef __cplusplus
}
#endif
#endif
