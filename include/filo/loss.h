/* Fused softmax cross-entropy over the last dimension (PyTorch's F.cross_entropy with class-index
 * targets), forward, backward, and a fused forward + backward for the training loop.
 *
 * logits x is [..., C]; its leading dims are flattened into N rows. target has the leading shape
 * [...] (a 1-D x takes a 0-dim target) and holds class indices. With
 *   lse_i    = log sum_c exp(x_ic)                 (saved for backward, "lse")
 *   logp_ic  = x_ic - lse_i
 *   w_c      = weight[c], or 1 without weights;    Wsum = sum_c w_c   (C without weights)
 *   e        = label_smoothing in [0, 1]
 * a row i whose target y_i == ignore_index is ignored (loss 0, gradient 0, not counted), and
 * every other row has
 *   nll_i    = -w_{y_i} * logp_{i,y_i}
 *   smooth_i = -sum_c w_c * logp_ic
 *   loss_i   = (1 - e) * nll_i + (e / C) * smooth_i
 * The reductions are
 *   NONE  loss_i per row (0 for ignored rows), shape [...]
 *   SUM   sum_i loss_i, 0-dim
 *   MEAN  sum_i loss_i / W,  W = sum over non-ignored rows of w_{y_i}  (the row count without
 *         weights), 0-dim. Both the nll and the smoothing term are divided by W, as PyTorch does.
 *         A batch whose rows are all ignored gives 0 / 0 = NaN, as PyTorch does.
 * The gradient of loss_i with respect to x_ij, for a non-ignored row, is
 *   dloss_i/dx_ij = p_ij * ((1 - e) * w_{y_i} + e * Wsum / C) - (1 - e) * w_{y_i} * [j == y_i] - (e / C) * w_j
 * with p_ij = exp(x_ij - lse_i) recomputed from the saved lse (probabilities are never stored);
 * without weights this is softmax - smoothed one-hot. dlogits = g_i * dloss_i/dx_ij with
 * g_i = dloss_i (NONE), dloss (SUM) or dloss / W (MEAN); ignored rows get dlogits 0.
 *
 * dtypes: x is f32, f64, bf16 or f16 (bf16/f16 compute in f32, f64 in double). target is i64 or
 * i32. weight is [C], f32 (f64 for f64 x). loss, lse and dloss are f32, or f64 for f64 x.
 * dlogits has x's shape and dtype. The lse of an ignored row is 0: its logits are not read.
 *
 * Targets outside [0, C) that are not ignore_index: the CPU returns FILO_ERR_INVALID_ARG naming
 * the row. The CUDA kernels cannot report errors synchronously; they never read out of bounds
 * and give such a row loss NaN and dlogits NaN (so SUM/MEAN become NaN too); the row counts 0
 * in W.
 *
 * Outputs are new contiguous tensors on x's device, owned by the caller. Calls are
 * non-blocking on the device's current stream (MEAN's W is computed on the device). SUM and MEAN
 * add rows in a fixed order without atomics: results are bitwise reproducible run to run. */
#ifndef FILO_LOSS_H
#define FILO_LOSS_H

#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_loss_reduction {
    FILO_LOSS_NONE = 0,
    FILO_LOSS_SUM = 1,
    FILO_LOSS_MEAN = 2,
} filo_loss_reduction;

/* PyTorch's default ignore_index. */
#define FILO_CROSS_ENTROPY_IGNORE_INDEX (-100)

typedef struct filo_cross_entropy_options {
    const filo_tensor *weight;   /* NULL: every class weighs 1 */
    int64_t ignore_index;        /* FILO_CROSS_ENTROPY_IGNORE_INDEX by default */
    double label_smoothing;      /* in [0, 1] */
    filo_loss_reduction reduction;
} filo_cross_entropy_options;

/* The defaults of F.cross_entropy: no weights, ignore_index -100, no smoothing, MEAN. */
filo_cross_entropy_options filo_cross_entropy_defaults(void);

/* opts may be NULL (the defaults). loss: 0-dim for SUM/MEAN, x's leading shape for NONE.
 * lse: x's leading shape, for filo_cross_entropy_backward; may be NULL when not wanted. */
filo_status filo_cross_entropy_forward(const filo_tensor *logits, const filo_tensor *target,
                                       const filo_cross_entropy_options *opts, filo_tensor **loss,
                                       filo_tensor **lse);

/* dloss: 0-dim for SUM/MEAN, x's leading shape for NONE (loss's dtype). lse: the forward's.
 * opts must be the forward's. dlogits: x's shape and dtype. One read of logits, one write of
 * dlogits. */
filo_status filo_cross_entropy_backward(const filo_tensor *dloss, const filo_tensor *logits,
                                        const filo_tensor *target, const filo_tensor *lse,
                                        const filo_cross_entropy_options *opts, filo_tensor **dlogits);

/* Forward and backward in one call for a 0-dim loss (SUM or MEAN; NONE is rejected), as
 * llm.c's fused classifier: loss as the forward gives it, and dlogits as the backward would give
 * for dloss = grad_scale (1 for a plain loss; e.g. 1 / accumulation_steps). The row's logits are
 * read twice (the second read normally hits L2), dlogits written once; nothing else is saved. */
filo_status filo_cross_entropy_fused(const filo_tensor *logits, const filo_tensor *target,
                                     const filo_cross_entropy_options *opts, double grad_scale,
                                     filo_tensor **loss, filo_tensor **dlogits);

#ifdef __cplusplus
}
#endif
#endif
