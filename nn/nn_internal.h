/* Helpers the nn modules share: the autocast-aware affine map every matmul-like module runs on,
 * and the projection fused with bias + dropout + residual that transformer blocks use. */
#ifndef FILO_NN_INTERNAL_H
#define FILO_NN_INTERNAL_H

#include "filo/nn.h"

/* Room for "prefix.name" parameter names. */
#define FILO_NN_NAME_MAX 512

/* FILO_ERR_INVALID_ARG unless ctx is non-NULL with an autocast of f32, bf16 or f16. */
filo_status filo_nn_ctx_check(const filo_nn_ctx *ctx);

/* y = x w^T (+ b, + GELU per ep) for x [..., in] and w [out, in], in the autocast dtype (x, w and
 * b cast on the fly; gradients reach the f32 masters through the casts). */
filo_status filo_nn_affine(const filo_nn_ctx *ctx, filo_var *x, filo_var *w, filo_var *b, filo_matmul_epilogue ep,
                           filo_var **y);

/* y = residual + dropout(x W^T + b) for a Linear: the matmul without its bias, then the fused
 * bias + dropout + residual op (dropout only when ctx->training). residual: NULL, or the output's
 * shape; the projection is cast to the residual's dtype first, so an f32 residual stream stays
 * f32 under autocast. Without residual and dropout it is the plain Linear (bias epilogue). */
filo_status filo_nn_linear_dropout_residual(const filo_nn_linear *m, const filo_nn_ctx *ctx, filo_var *x, double p,
                                            filo_var *residual, filo_var **y);

/* The attention context of MHA before its output projection: [B, Lq, dim]. */
filo_status filo_nn_mha_context(const filo_nn_mha *m, const filo_nn_ctx *ctx, filo_var *x, filo_var *kv,
                                const filo_attention_mask *mask, filo_var **out);

/* Casts x to dtype (a new reference; a retain when it already has it). */
filo_status filo_nn_cast_to(filo_var *x, filo_dtype dtype, filo_var **out);

#endif
