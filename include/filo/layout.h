/* Data movement that changes layout: dtype casts, concatenation and splitting along a dim, and
 * constant padding (with cropping), with the backward each of them needs.
 *
 * Transpose and permute are views (filo_tensor_transpose / filo_tensor_permute in
 * filo/tensor.h); filo_tensor_contiguous materializes them.
 *
 * Outputs are new contiguous tensors on the inputs' device, owned by the caller, except
 * filo_split, which returns views of its input (as torch.split does). Inputs may be any strided
 * view. Calls are non-blocking on the device's current stream. Negative dims count from the end.
 * These ops only move elements: they are exact (bitwise) on every backend, for every dtype
 * (f32, f64, bf16, f16, i64, i32, u8). */
#ifndef FILO_LAYOUT_H
#define FILO_LAYOUT_H

#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out = x converted to `dtype` (a new tensor even when the dtype is x's). Float -> float rounds to
 * nearest even; float -> integer truncates toward zero; on the CPU a NaN or an out-of-range value
 * going to an integer type fails with FILO_ERR_INVALID_ARG (on CUDA its result is unspecified).
 * Backward: cast dy back to x's dtype. */
filo_status filo_cast(const filo_tensor *x, filo_dtype dtype, filo_tensor **out);

/* out = the n tensors xs[0..n) joined along `dim` (torch.cat). n >= 1; all have the same ndim
 * (>= 1), dtype and device, and equal sizes except along dim (which may be 0).
 * Backward: filo_split(dy, dim, the inputs' sizes along dim, n, dxs). */
filo_status filo_concat(const filo_tensor *const *xs, int n, int dim, filo_tensor **out);

/* outs[i] = the view of x along `dim` over [sizes[0] + ... + sizes[i-1], + sizes[i]) (torch.split
 * with a list of sizes). sizes[i] >= 0 and they sum to x's size along dim. outs must have room for
 * n views; on failure none is returned. Views share x's storage: make them contiguous
 * (filo_tensor_contiguous) to own a copy. Backward: filo_concat of the gradients. */
filo_status filo_split(const filo_tensor *x, int dim, const int64_t *sizes, int n, filo_tensor **outs);

/* n views of nearly equal size along dim: each ceil(size / n) long, the last one shorter or
 * fewer views when the size does not fill n (torch.chunk). Returns the count in *n_out. */
filo_status filo_chunk(const filo_tensor *x, int dim, int n, filo_tensor **outs, int *n_out);

/* Constant padding, F.pad(x, pads, mode="constant", value). pads has 2 * npairs entries
 * (1 <= npairs <= x->ndim): (left, right) for the last dim, then for the dim before it, and so on.
 * A negative pad crops. Every output size (size + left + right) must be >= 0. value is converted
 * to x's dtype: rounded for floats, truncated toward zero for integer dtypes, whose range must
 * hold it (FILO_ERR_INVALID_ARG otherwise, also for NaN).
 * Backward: the matching slice of dy, filo_pad_backward. */
filo_status filo_pad(const filo_tensor *x, int npairs, const int64_t *pads, double value, filo_tensor **out);

/* dx = the part of dy (the padded output's gradient) that came from x: dy cropped by pads (pads
 * negated: padding becomes cropping and cropping becomes zero padding), as a contiguous copy. */
filo_status filo_pad_backward(const filo_tensor *dy, int npairs, const int64_t *pads, filo_tensor **dx);

#ifdef __cplusplus
}
#endif
#endif
