/* Fused normalization over the last dimension: LayerNorm and RMSNorm, forward and backward.
 *
 * x is [..., C]; the leading dims are flattened into rows and each row is normalized on its own.
 * Values follow PyTorch's F.layer_norm and nn.RMSNorm:
 *   LayerNorm  y = (h - mean) * rstd * gamma + beta,  rstd = 1 / sqrt(var + eps)  (biased var)
 *   RMSNorm    y = h * rstd * gamma,                  rstd = 1 / sqrt(mean(h^2) + eps)
 * where h = x, or h = x + residual when a residual is given (the add is fused: h is written out
 * because post-LN transformers feed it on as the next residual).
 *
 * dtypes: x, residual, y, h, dy and dx are f32, f64, bf16 or f16, all the same. gamma and beta
 * have x's dtype, or f32 when x is bf16 or f16; dgamma and dbeta have gamma's dtype. The saved
 * statistics (mean, rstd) are f32, or f64 for f64 inputs, with x's leading shape (x[..., C] gives
 * [...]; a 1-D x gives a 0-dim tensor). bf16/f16 compute in f32; f64 computes in double.
 *
 * Outputs are new contiguous tensors on the inputs' device, owned by the caller. Calls are
 * non-blocking on the device's current stream. The backward is bitwise reproducible run to run:
 * dgamma and dbeta are reduced in a fixed order, without atomics. */
#ifndef FILO_NORM_H
#define FILO_NORM_H

#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* residual: NULL, or x's shape and dtype (then h_out must be non-NULL and receives x + residual).
 * beta: NULL for no bias. eps >= 0. mean and rstd receive the per-row statistics for backward. */
filo_status filo_layernorm_forward(const filo_tensor *x, const filo_tensor *residual, const filo_tensor *gamma,
                                   const filo_tensor *beta, double eps, filo_tensor **y, filo_tensor **h_out,
                                   filo_tensor **mean, filo_tensor **rstd);

/* h is the tensor forward normalized: its h_out when a residual was fused, else x. dx is the
 * gradient of x and, when a residual was fused, also the gradient of the residual (d(residual) =
 * dx): it is returned once. dbeta may be NULL when the forward had no beta. */
filo_status filo_layernorm_backward(const filo_tensor *dy, const filo_tensor *h, const filo_tensor *mean,
                                    const filo_tensor *rstd, const filo_tensor *gamma, filo_tensor **dx,
                                    filo_tensor **dgamma, filo_tensor **dbeta);

/* Same contract as LayerNorm, without mean and beta. */
filo_status filo_rmsnorm_forward(const filo_tensor *x, const filo_tensor *residual, const filo_tensor *gamma,
                                 double eps, filo_tensor **y, filo_tensor **h_out, filo_tensor **rstd);

filo_status filo_rmsnorm_backward(const filo_tensor *dy, const filo_tensor *h, const filo_tensor *rstd,
                                  const filo_tensor *gamma, filo_tensor **dx, filo_tensor **dgamma);

#ifdef __cplusplus
}
#endif
#endif
