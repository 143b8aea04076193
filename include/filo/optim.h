/* Fused optimizer kernels: a multi-tensor Adam/AdamW step, the global gradient norm, the
 * clipping coefficient and the non-finite check of loss scaling.
 *
 * Adam / AdamW step (the formulas of PyTorch's torch.optim.Adam and torch.optim.AdamW with
 * amsgrad=False, maximize=False), for each element of each parameter tensor, with t = step:
 *   g = grad * grad_scale                      (when a grad_scale tensor is given)
 *   Adam  (L2):        g = g + weight_decay * p                    (when weight_decay != 0)
 *   AdamW (decoupled): p = p * (1 - lr * weight_decay)
 *   m = beta1 * m + (1 - beta1) * g             (exp_avg)
 *   v = beta2 * v + (1 - beta2) * g * g         (exp_avg_sq)
 *   bias_correction1 = 1 - beta1^t,  bias_correction2 = 1 - beta2^t
 *   denom = sqrt(v) / sqrt(bias_correction2) + eps
 *   p = p - (lr / bias_correction1) * m / denom
 *   copy = p rounded to bf16 or f16            (when a copy tensor is given)
 * The scalars (1 - lr*wd, lr / bias_correction1, sqrt(bias_correction2), 1 - beta1, 1 - beta2)
 * are computed in double on the host, as PyTorch computes its Python-float scalars; the element
 * math is f32 (PyTorch's opmath for f32 master weights).
 *
 * All parameter tensors of one call form one parameter group (same hyperparameters). All of them
 * are updated by one kernel launch over a table of (tensor, chunk) work items passed as a kernel
 * argument (a further launch only past 24 tensors or 320 chunks of 65536 elements): no host
 * synchronization and no device allocation (except contiguous copies of strided grads).
 *
 * Device scalars keep a training step free of host synchronization:
 *   grad_scale: NULL, or a 0-dim f32 tensor that multiplies every gradient before use. Pass the
 *     coefficient of filo_clip_coef here for global-norm clipping, or 1/loss_scale to unscale.
 *   found_inf: NULL, or a 0-dim f32 or u8 tensor; when it is non-zero (NaN counts as non-zero)
 *     the step writes nothing: params, exp_avg, exp_avg_sq and the copies are left bitwise
 *     unchanged. The step count t is the caller's: PyTorch's GradScaler does not count a skipped
 *     step, so a caller that reads the flag later should not advance t for it.
 *   step_count: NULL, or a 0-dim f32 tensor holding the steps taken so far. The step adds 1 to it
 *     on the device (not when found_inf is set) and uses the result as t instead of `step`, with
 *     the bias corrections computed on the device in double. Nothing about the step count is
 *     then baked in on the host, so a captured training step (filo/capture.h) replays correctly
 *     (PyTorch's capturable=True). f32 counts exactly up to 2^24 steps.
 *
 * dtypes: params, exp_avg and exp_avg_sq are f32; grads are f32, bf16 or f16 (one dtype for the
 * whole call); copies are bf16 or f16 (one dtype for the call). Shapes of grad, exp_avg,
 * exp_avg_sq and copy equal the param's shape. Params, states and copies are updated in place
 * and must be contiguous; grads may be any strided view (a contiguous copy is made). Every tensor
 * is on the device of params[0]. Empty tensors are skipped. The step is deterministic and
 * elementwise: CPU and CUDA agree to f32 rounding (nvcc may contract a multiply-add). */
#ifndef FILO_OPTIM_H
#define FILO_OPTIM_H

#include <stdint.h>

#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct filo_adam_options {
    double lr;           /* >= 0 */
    double beta1, beta2; /* in [0, 1) */
    double eps;          /* > 0 */
    double weight_decay; /* >= 0 */
    int decoupled;       /* 1: AdamW (p *= 1 - lr*wd), 0: Adam (g += wd*p) */
    int64_t step;        /* t >= 1: the count of this step, bias correction uses it */
    const filo_tensor *grad_scale; /* NULL or 0-dim f32 */
    const filo_tensor *found_inf;  /* NULL or 0-dim f32/u8 */
    filo_tensor *step_count;       /* NULL or 0-dim f32, see below */
} filo_adam_options;

/* PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8; weight_decay 0 (Adam) or 1e-2
 * (AdamW); step 1; no device scalars. */
filo_adam_options filo_adam_defaults(int decoupled);

/* One step over n >= 0 parameter tensors. copies: NULL (no copy), or n entries each NULL or a
 * bf16/f16 tensor receiving the updated param. A bad argument is reported before anything is
 * modified. */
filo_status filo_adam_step(int n, filo_tensor *const *params, const filo_tensor *const *grads,
                           filo_tensor *const *exp_avgs, filo_tensor *const *exp_avg_sqs,
                           filo_tensor *const *copies, const filo_adam_options *opt);

/* The norm of all n >= 1 gradients together, as torch.nn.utils.get_total_norm /
 * clip_grad_norm_: norm_type 2.0 (sqrt of the sum of squares), 1.0 (sum of |g|) or INFINITY
 * (max |g|). grads are f32, bf16 or f16 (one dtype for the call), any strides, one device.
 * *norm receives a new 0-dim f32 tensor on that device. nonfinite: NULL, or receives a new 0-dim
 * f32 tensor, 1 when any gradient element is inf or NaN and 0 otherwise (usable as found_inf).
 * CUDA reduces in a fixed order (per-chunk partial sums in f32, then one block adds them in
 * double): bitwise the same run to run, no atomics. */
filo_status filo_grad_norm(const filo_tensor *const *grads, int n, double norm_type, filo_tensor **norm,
                           filo_tensor **nonfinite);

/* *coef receives a new 0-dim f32 tensor: min(1, max_norm / (norm + 1e-6)), computed in f32 on
 * norm's device like clip_grad_norm_ (a NaN norm gives NaN, an inf norm gives 0). norm is a
 * 0-dim f32 tensor, max_norm finite and >= 0. Pass the result as grad_scale. */
filo_status filo_clip_coef(const filo_tensor *norm, double max_norm, filo_tensor **coef);

/* *found_inf receives a new 0-dim f32 tensor: 1 when any element of the n >= 1 grads is inf or
 * NaN, else 0 (the check of loss scaling, PyTorch's _amp_foreach_non_finite_check). */
filo_status filo_found_inf(const filo_tensor *const *grads, int n, filo_tensor **found_inf);

#ifdef __cplusplus
}
#endif
#endif
