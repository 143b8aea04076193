/* Fused scaled-dot-product attention, forward and backward (FlashAttention-2 style: the
 * Lq x Lk score matrix is never stored; the backward recomputes it from the saved log-sum-exp).
 *
 * Per (batch b, head h), with S = scale * Q K^T:
 *   S[i][j] = -inf where key j is masked (below), P = softmax over j of S (each row),
 *   out = (P .* M / (1 - p)) V        M: the dropout keep mask (all ones when p == 0)
 *   lse[i] = log(sum_j exp(S[i][j]))  (the undropped softmax's normalizer)
 *
 * Shapes: q [B, H, Lq, D], k and v [B, H, Lk, D], out [B, H, Lq, D], lse [B, H, Lq].
 * q, k, v (and dout) may be strided views in the B, H and L dims (BERT's permuted views of a
 * [B, L, 3, H, D] projection are read in place); a view whose D stride is not 1 is first copied
 * to a contiguous tensor. out, lse and the gradients are new contiguous tensors.
 * D must be 32, 64 or 128. dtypes: q, k, v the same, f32, bf16 or f16 (computed in f32), or f64
 * (computed in double, CPU only: the CUDA backend rejects f64). lse is f32, f64 for f64 inputs.
 *
 * Masks:
 *  - key_lengths: NULL (every key valid) or an i32/i64 tensor [B] on the inputs' device with
 *    values in [0, Lk]; key j of batch b is masked when j >= key_lengths[b] (padding). The CPU
 *    path rejects values out of range; on CUDA they cannot be checked without a host sync, and
 *    the kernels clamp them to [0, Lk].
 *  - causal: key j is masked for query i when j > i, aligned top-left as PyTorch's
 *    scaled_dot_product_attention(is_causal=True) (not FlashAttention's bottom-right alignment
 *    when Lq != Lk).
 * A query row with no valid key (key_lengths[b] == 0, or Lk == 0) gives out = 0 and
 * lse = -inf; its gradients (and its contribution to dk, dv) are 0.
 *
 * Dropout: p in [0, 1] on the probabilities (p == 1 gives out = 0). Element (b, h, i, j) uses
 * the index ((b * H + h) * Lq + i) * Lk + j under runtime/element.h's filo_dropout_keep rule, with
 * seed and offset taken from the generator, which advances by B * H * Lq * Lk: CPU and CUDA drop
 * the same elements. The forward returns the (seed, offset, p) it used; pass it to the backward.
 *
 * Calls are non-blocking on the device's current stream. The backward is bitwise reproducible:
 * dk and dv are summed by the block that owns the key tile, dq by a separate pass over query
 * tiles, in a fixed order, without atomics. */
#ifndef FILO_ATTENTION_H
#define FILO_ATTENTION_H

#include "filo/rng.h"
#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The dropout a forward applied: what its backward needs to rebuild the same mask. */
typedef struct filo_attention_dropout {
    double p;        /* 0: no dropout */
    uint64_t seed;
    uint64_t offset; /* Philox block offset of element 0 */
} filo_attention_dropout;

/* The masks and the scale, shared by forward and backward. */
typedef struct filo_attention_mask {
    const filo_tensor *key_lengths; /* NULL: every key valid; else i32/i64 [B] */
    int causal;                     /* 1: key j > query i masked (top-left aligned) */
} filo_attention_mask;

/* scale: finite, usually 1 / sqrt(D). mask: NULL for no mask. dropout_p in [0, 1]; gen is
 * required when dropout_p > 0 (else ignored, may be NULL). dropout_state (may be NULL) receives
 * {p, seed, offset}. out and lse are required. */
filo_status filo_attention_forward(const filo_tensor *q, const filo_tensor *k, const filo_tensor *v,
                                   const filo_attention_mask *mask, double scale, double dropout_p,
                                   filo_generator *gen, filo_tensor **out, filo_tensor **lse,
                                   filo_attention_dropout *dropout_state);

/* dout [B, H, Lq, D] in q's dtype (any strided view); out and lse as the forward returned them;
 * mask, scale and dropout (NULL or the forward's dropout_state) as in the forward.
 * dq, dk, dv: q's, k's and v's shapes and dtype, contiguous. */
filo_status filo_attention_backward(const filo_tensor *dout, const filo_tensor *q, const filo_tensor *k,
                                    const filo_tensor *v, const filo_tensor *out, const filo_tensor *lse,
                                    const filo_attention_mask *mask, double scale,
                                    const filo_attention_dropout *dropout, filo_tensor **dq, filo_tensor **dk,
                                    filo_tensor **dv);

#ifdef __cplusplus
}
#endif
#endif
