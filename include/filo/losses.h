/* Training losses on variables, with PyTorch's definitions (torch.nn.functional):
 * cross-entropy, binary cross-entropy with logits (multi-label), focal loss and mean squared
 * error. Each is one fused kernel on the CPU and on CUDA with its own backward (the inputs are
 * read once and nothing of logits' size is saved but the inputs), and runs in f32 whatever the
 * input dtype (bf16/f16 logits are read as such; the loss is f32), as under torch.autocast.
 *
 * Reductions: FILO_LOSS_NONE gives the per-element loss in the input's shape, SUM a 0-dim sum,
 * MEAN a 0-dim mean over all elements (the divisor stays on the device).
 * Targets, weight and pos_weight may have any float dtype and any strides (read as they are). */
#ifndef FILO_LOSSES_H
#define FILO_LOSSES_H

#include "filo/autograd.h"
#include "filo/loss.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Softmax cross-entropy over the last dim, the same op as filo_ag_cross_entropy (class weights,
 * label smoothing, ignore_index, reductions as filo/loss.h). */
filo_status filo_loss_cross_entropy(filo_var *logits, const filo_tensor *target, const filo_cross_entropy_options *opts,
                                    filo_var **loss);

typedef struct filo_bce_options {
    filo_loss_reduction reduction; /* MEAN by default */
    const filo_tensor *weight;     /* NULL or broadcastable to the logits: per-element rescaling */
    const filo_tensor *pos_weight; /* NULL or [C] (last dim): weight of positive examples */
} filo_bce_options;
filo_bce_options filo_bce_defaults(void);

/* binary_cross_entropy_with_logits: with s = sigmoid(x), per element
 *   l = -w * (pw * y * log(s) + (1 - y) * log(1 - s)), computed stably as
 *   l = w * ((1 - y) * x + (1 + (pw - 1) * y) * (log1p(exp(-|x|)) + max(-x, 0))).
 * target: the logits' shape, float (soft labels in [0, 1] allowed); no gradient. */
filo_status filo_loss_bce_with_logits(filo_var *logits, const filo_tensor *target, const filo_bce_options *opts,
                                      filo_var **loss);

/* Sigmoid focal loss (Lin et al., torchvision.ops.sigmoid_focal_loss): p = sigmoid(x),
 * ce = bce_with_logits(x, y), p_t = p y + (1 - p)(1 - y), l = ce * (1 - p_t)^gamma, and with
 * alpha >= 0: l *= alpha y + (1 - alpha)(1 - y). alpha < 0 disables weighting. gamma >= 0. */
filo_status filo_loss_focal(filo_var *logits, const filo_tensor *target, double alpha, double gamma,
                            filo_loss_reduction reduction, filo_var **loss);

/* mse_loss: (x - y)^2. target may be a variable (gradients flow to both) or NULL with
 * target_tensor given (a plain tensor); shapes equal. */
filo_status filo_loss_mse(filo_var *input, filo_var *target, const filo_tensor *target_tensor,
                          filo_loss_reduction reduction, filo_var **loss);

#ifdef __cplusplus
}
#endif
#endif
