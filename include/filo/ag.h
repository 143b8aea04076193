/* Differentiable ops: every op of the op library that has a gradient, on variables.
 *
 * Each filo_ag_* function runs the op library's kernel on its inputs' values (same semantics,
 * dtypes, devices and errors as the kernel it names) and returns a new variable. When gradient
 * recording is on (filo_grad_enabled) and an input requires a gradient, it also records a node
 * whose backward gives each such input its gradient; tensor inputs that are not variables
 * (indices, masks, targets, key lengths) never get one.
 *
 * Gradients follow PyTorch's definitions: broadcast inputs get their gradient summed back to
 * their shape; max/min (elementwise and reductions) split the gradient evenly between ties;
 * relu and abs have gradient 0 at 0. */
#ifndef FILO_AG_H
#define FILO_AG_H

#include "filo/attention.h"
#include "filo/autograd.h"
#include "filo/bias_act.h"
#include "filo/conv.h"
#include "filo/elementwise.h"
#include "filo/loss.h"
#include "filo/matmul.h"
#include "filo/pool.h"
#include "filo/reduce.h"
#include "filo/rnn_cell.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- elementwise (filo/elementwise.h) ---- */
filo_status filo_ag_unary(filo_unary_op op, filo_var *x, filo_var **out);
filo_status filo_ag_pow_scalar(filo_var *x, double p, filo_var **out);
/* Arithmetic ops add..min only (comparisons have no gradient: use filo_binary on values). */
filo_status filo_ag_binary(filo_binary_op op, filo_var *a, filo_var *b, filo_var **out);
filo_status filo_ag_add(filo_var *a, filo_var *b, filo_var **out);
filo_status filo_ag_sub(filo_var *a, filo_var *b, filo_var **out);
filo_status filo_ag_mul(filo_var *a, filo_var *b, filo_var **out);
filo_status filo_ag_div(filo_var *a, filo_var *b, filo_var **out);
filo_status filo_ag_binary_scalar(filo_binary_op op, filo_var *x, double s, int reversed, filo_var **out);
/* cond: a u8 tensor (no gradient). */
filo_status filo_ag_where(const filo_tensor *cond, filo_var *a, filo_var *b, filo_var **out);

/* ---- reductions, softmax (filo/reduce.h) ---- */
filo_status filo_ag_reduce(filo_reduce_op op, filo_var *x, int dim, int keepdim, filo_var **out);
filo_status filo_ag_sum(filo_var *x, int dim, int keepdim, filo_var **out);
filo_status filo_ag_mean(filo_var *x, int dim, int keepdim, filo_var **out);
filo_status filo_ag_var(filo_var *x, int dim, int correction, int keepdim, filo_var **out);
filo_status filo_ag_softmax(filo_var *x, filo_var **out);
filo_status filo_ag_log_softmax(filo_var *x, filo_var **out);

/* ---- views and copies (filo/tensor.h); the outputs are views of the input where the tensor
 * function gives a view ---- */
filo_status filo_ag_reshape(filo_var *x, int ndim, const int64_t *shape, filo_var **out);
filo_status filo_ag_transpose(filo_var *x, int dim0, int dim1, filo_var **out);
filo_status filo_ag_permute(filo_var *x, const int *dims, filo_var **out);
filo_status filo_ag_slice(filo_var *x, int dim, int64_t start, int64_t end, int64_t step, filo_var **out);
filo_status filo_ag_expand(filo_var *x, int ndim, const int64_t *shape, filo_var **out);
filo_status filo_ag_squeeze(filo_var *x, int dim, filo_var **out);
filo_status filo_ag_unsqueeze(filo_var *x, int dim, filo_var **out);
filo_status filo_ag_contiguous(filo_var *x, filo_var **out);
/* A contiguous copy on `device` (the gradient goes back to x's device). */
filo_status filo_ag_to(filo_var *x, filo_device device, filo_var **out);

/* ---- layout (filo/layout.h) ---- */
filo_status filo_ag_cast(filo_var *x, filo_dtype dtype, filo_var **out);
filo_status filo_ag_concat(filo_var *const *xs, int n, int dim, filo_var **out);
/* outs: n new variables. */
filo_status filo_ag_split(filo_var *x, int dim, const int64_t *sizes, int n, filo_var **outs);
filo_status filo_ag_pad(filo_var *x, int npairs, const int64_t *pads, double value, filo_var **out);

/* ---- indexing (filo/indexing.h); index, ids and mask are plain tensors ---- */
filo_status filo_ag_index_select(filo_var *x, int dim, const filo_tensor *index, filo_var **out);
filo_status filo_ag_gather(filo_var *x, int dim, const filo_tensor *index, filo_var **out);
filo_status filo_ag_scatter_add(filo_var *self, int dim, const filo_tensor *index, filo_var *src, filo_var **out);
/* padding_idx: rows with this id get no gradient (-1: none), as nn.Embedding's. */
filo_status filo_ag_embedding(filo_var *weight, const filo_tensor *ids, int64_t padding_idx, filo_var **out);
filo_status filo_ag_masked_fill(filo_var *x, const filo_tensor *mask, double value, filo_var **out);

/* ---- fused layers ---- */
/* y = layernorm(x (+ residual)); residual NULL or a variable; beta may be NULL. h_out: NULL, or
 * receives x + residual as a variable (it needs a residual), the next residual of a post-LN
 * transformer: gradients flowing into it are added to those of x and residual. */
filo_status filo_ag_layernorm(filo_var *x, filo_var *residual, filo_var *gamma, filo_var *beta, double eps,
                              filo_var **y, filo_var **h_out);
filo_status filo_ag_rmsnorm(filo_var *x, filo_var *residual, filo_var *gamma, double eps, filo_var **y,
                            filo_var **h_out);
/* bias: NULL with EPILOGUE_NONE, else a variable [N]. */
filo_status filo_ag_matmul(filo_var *a, filo_var *b, int trans_a, int trans_b, filo_var *bias,
                           filo_matmul_epilogue ep, filo_var **out);
/* mask: NULL or masks (its key_lengths tensor is kept alive by the node). */
filo_status filo_ag_attention(filo_var *q, filo_var *k, filo_var *v, const filo_attention_mask *mask, double scale,
                              double dropout_p, filo_generator *gen, filo_var **out);
filo_status filo_ag_dropout(filo_var *x, double p, filo_generator *gen, filo_var **out);
/* bias: NULL or a variable. */
filo_status filo_ag_bias_gelu(filo_var *x, filo_var *bias, int approximate, filo_var **out);
/* bias and residual: NULL or variables. */
filo_status filo_ag_bias_dropout_residual(filo_var *x, filo_var *bias, filo_var *residual, double p,
                                          filo_generator *gen, filo_var **out);
/* target (and opts->weight) are plain tensors. loss: 0-dim for SUM/MEAN, x's leading shape for NONE. */
filo_status filo_ag_cross_entropy(filo_var *logits, const filo_tensor *target, const filo_cross_entropy_options *opts,
                                  filo_var **loss);
/* bias: NULL or a variable. */
filo_status filo_ag_conv2d(filo_var *x, filo_var *w, filo_var *bias, const filo_conv2d_params *p, filo_var **y);
filo_status filo_ag_maxpool2d(filo_var *x, const filo_pool2d_params *p, filo_var **y);
filo_status filo_ag_avgpool2d(filo_var *x, const filo_pool2d_params *p, filo_var **y);

/* ---- recurrent cells (filo/rnn_cell.h): one step after the two matmuls ----
 * b_ih, b_hh: NULL or variables [G*H] in the state dtype (they get the row sums of the gate
 * gradients). lengths (a plain tensor, kept alive by the node) and step as in filo/rnn_cell.h.
 * The LSTM reads h_prev only with lengths (rows past their length keep it), so without lengths
 * h_prev may be NULL and gets no gradient; c receives c' (its gradient reaches c_prev). */
filo_status filo_ag_lstm_cell(filo_var *xg, filo_var *hg, filo_var *b_ih, filo_var *b_hh, filo_var *h_prev,
                              filo_var *c_prev, const filo_tensor *lengths, int64_t step, filo_var **h, filo_var **c);
filo_status filo_ag_gru_cell(filo_var *xg, filo_var *hg, filo_var *b_ih, filo_var *b_hh, filo_var *h_prev,
                             const filo_tensor *lengths, int64_t step, filo_var **h);

#ifdef __cplusplus
}
#endif
#endif
