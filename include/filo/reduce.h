/* Reductions (sum, mean, max, min, argmax, variance) and softmax / log-softmax, with PyTorch's
 * semantics. Inputs are floating-point tensors (f64, f32, bf16, f16), any strides; outputs are
 * new contiguous tensors on the input's device, computed on its current stream without waiting.
 *
 * Accumulation: double for f64, float for f32, bf16 and f16 (rounded once at the store), in a
 * tree order on both backends. Every reduction is deterministic run to run (no float atomics). */
#ifndef FILO_REDUCE_H
#define FILO_REDUCE_H

#include <limits.h>

#include "filo/status.h"
#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Pass as `dim` to reduce over every axis (PyTorch's dim=None). */
#define FILO_ALL_DIMS INT_MIN

typedef enum filo_reduce_op {
    FILO_REDUCE_SUM,   /* empty reduction: 0 */
    FILO_REDUCE_MEAN,  /* empty reduction: NaN */
    FILO_REDUCE_MAX,   /* NaN propagates; an empty reduced dim is FILO_ERR_SHAPE */
    FILO_REDUCE_MIN
} filo_reduce_op;

/* Reduces x along `dim` (negative counts from the end; a 0-d tensor accepts 0 and -1) or over
 * all axes with FILO_ALL_DIMS. keepdim keeps the reduced axes with size 1. Output dtype = x's. */
filo_status filo_reduce(filo_reduce_op op, const filo_tensor *x, int dim, int keepdim, filo_tensor **out);

/* i64 index of the first maximum along dim (NaN counts as the maximum, like PyTorch); with
 * FILO_ALL_DIMS, the index into the row-major flattened tensor. Empty reduced dim: FILO_ERR_SHAPE. */
filo_status filo_argmax(const filo_tensor *x, int dim, int keepdim, filo_tensor **out);

/* Variance sum((x - mean)^2) / max(0, N - correction): correction 0 is the population variance,
 * 1 the unbiased one; a negative correction is FILO_ERR_INVALID_ARG. Two-pass (mean first), so large offsets do not cancel. N <= correction
 * gives NaN or inf, as in PyTorch. */
filo_status filo_variance(const filo_tensor *x, int dim, int correction, int keepdim, filo_tensor **out);

/* exp(x - max) / sum(exp(x - max)) along the last axis (a 0-d tensor is one row of one). A row of
 * all -inf gives NaN, like PyTorch. */
filo_status filo_softmax(const filo_tensor *x, filo_tensor **out);
/* (x - max) - log(sum(exp(x - max))) along the last axis. */
filo_status filo_log_softmax(const filo_tensor *x, filo_tensor **out);

#ifdef __cplusplus
}
#endif
#endif
