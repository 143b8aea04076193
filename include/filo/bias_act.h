/* Fused pointwise ops over x [..., N] with a per-column bias [N]: bias + GELU, and
 * bias + dropout + residual, forward and backward.
 *
 *   filo_bias_gelu_forward              y = gelu(x + bias)
 *     approximate 0: gelu(h) = h * Phi(h) = 0.5 h erfc(-h / sqrt 2)         (F.gelu, 'none')
 *     approximate 1: gelu(h) = 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))  (F.gelu, 'tanh')
 *   filo_bias_gelu_backward             dx = dy * gelu'(x + bias), dbias = sum of dx over rows.
 *     It recomputes h from the pre-bias input x: nothing but x is saved by the forward.
 *   filo_bias_dropout_residual_forward  y = residual + dropout_p(x + bias)
 *     The mask is filo_dropout's (include/filo/dropout.h): same Philox rule, same element
 *     indexing (x's row-major order), so for the same (seed, offset) and shape the two ops drop
 *     the same elements. The state is filled as filo_dropout fills it.
 *   filo_bias_dropout_residual_backward dx = dy * mask / (1 - p), dbias = sum of dx over rows.
 *     d(residual) = dy exactly: the caller reuses dy, no tensor is made for it.
 *
 * bias may be NULL (no bias; the backward then gives no dbias). residual may be NULL.
 * dtypes: x, residual, dy, y and dx are f32, f64, bf16 or f16, all the same; bias has x's dtype,
 * or f32 when x is bf16 or f16; dbias has the bias's dtype (the dropout backward, which does not
 * see the bias, takes it from with_bias: dy's dtype, or f32). bf16/f16 compute in f32, f64 in
 * double. The bias + dropout + residual forward is bitwise the same on the CPU and CUDA (fixed
 * operation order, no contraction); GELU goes through each backend's erfc/exp (a few ulp apart).
 *
 * dbias is reduced in a fixed order without atomics (bitwise reproducible run to run): on CUDA
 * each of min(ceil(rows / 32), 128) row chunks leaves per-column partial sums, added in chunk
 * order; the CPU adds rows in order.
 *
 * Inputs may be any strided view; outputs are new contiguous tensors on x's device, owned by the
 * caller. Non-blocking on the device's current stream. */
#ifndef FILO_BIAS_ACT_H
#define FILO_BIAS_ACT_H

#include "filo/dropout.h"
#include "filo/rng.h"
#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* approximate: 0 (erf form) or 1 (tanh form). */
filo_status filo_bias_gelu_forward(const filo_tensor *x, const filo_tensor *bias, int approximate, filo_tensor **y);

/* x and bias are the forward's inputs. dbias: NULL when bias is NULL (it is not written then);
 * else it receives [N] of bias's dtype. */
filo_status filo_bias_gelu_backward(const filo_tensor *dy, const filo_tensor *x, const filo_tensor *bias,
                                    int approximate, filo_tensor **dx, filo_tensor **dbias);

/* p in [0, 1]; gen may be NULL only when p == 0. state (non-NULL) receives (seed, offset, p, numel). */
filo_status filo_bias_dropout_residual_forward(const filo_tensor *x, const filo_tensor *bias,
                                               const filo_tensor *residual, double p, filo_generator *gen,
                                               filo_tensor **y, filo_dropout_state *state);

/* dy: y's shape (the mask covers state->numel elements in row-major order; dbias sums over the
 * rows of dy's last dim). with_bias: 0 (no dbias; it may be NULL), 1 (dbias [N] of dy's dtype)
 * or 2 (dbias [N] in f32, for a bf16/f16 x whose bias was f32; an f64 dy rejects it).
 * d(residual) is dy itself: no tensor is made for it. */
filo_status filo_bias_dropout_residual_backward(const filo_tensor *dy, const filo_dropout_state *state, int with_bias,
                                                filo_tensor **dx, filo_tensor **dbias);

#ifdef __cplusplus
}
#endif
#endif
