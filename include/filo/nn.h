/* Modules: layers as C structs with named parameters, on the differentiable ops of filo/ag.h.
 *
 * Each module filo_nn_X has
 *   filo_nn_X_init(m, ps, prefix, sizes...)  creates its parameters in the store `ps` under
 *                                         "prefix.name" (Hugging Face / PyTorch names) with
 *                                         PyTorch's default initialization;
 *   filo_nn_X_forward(m, ctx, inputs..., out) runs it, returning a new variable.
 * A module struct holds borrowed pointers to parameters the store owns: there is nothing to free
 * per module. Structs may be copied; they are plain values.
 *
 * The forward context says what PyTorch keeps in module.training and in autocast's thread
 * state, explicitly:
 *   training   dropout is applied only when set (eval mode otherwise);
 *   gen        the generator dropout draws from (required when training with dropout > 0);
 *   autocast   FILO_F32: off. FILO_BF16 or FILO_F16: matmuls (Linear, attention projections,
 *              FeedForward, LSTM/GRU gates) and attention run in that dtype (inputs and weights
 *              cast on the fly; the f32 master weights get f32 gradients through the cast),
 *              while norms, softmax and losses compute in f32, as torch.autocast does. Module
 *              outputs are then in the autocast dtype for matmul-like modules. Norms read a
 *              bf16/f16 x with their f32 weights directly (no cast pass) and return x's dtype;
 *              when x and the residual differ (a bf16 sublayer output on an f32 residual stream)
 *              both are taken to f32, so a transformer's residual stream stays f32.
 *
 * Shapes follow PyTorch: Linear takes [..., in] and gives [..., out]; sequence modules take
 * batch-first [B, L, H]; Conv2d and pooling take NCHW. */
#ifndef FILO_NN_H
#define FILO_NN_H

#include <stdint.h>

#include "filo/ag.h"
#include "filo/params.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct filo_nn_ctx {
    int training;
    filo_generator *gen;
    filo_dtype autocast;
} filo_nn_ctx;

/* {training, gen, FILO_F32}. */
filo_nn_ctx filo_nn_ctx_make(int training, filo_generator *gen);

/* Casts x to the autocast dtype for a matmul-like op (no-op when autocast is f32 or x already has
 * it) / to f32 for a norm, softmax or loss. Returns a new reference either way. */
filo_status filo_autocast_for_matmul(const filo_nn_ctx *ctx, filo_var *x, filo_var **out);
filo_status filo_autocast_for_f32(const filo_nn_ctx *ctx, filo_var *x, filo_var **out);

typedef enum filo_activation {
    FILO_ACT_GELU = 0, /* exact erf GELU (BERT's "gelu") */
    FILO_ACT_GELU_TANH,
    FILO_ACT_RELU,
    FILO_ACT_TANH,
    FILO_ACT_SILU,
    FILO_ACT_SIGMOID,
    FILO_ACT_NONE,
} filo_activation;

/* Parses Hugging Face's hidden_act names ("gelu", "gelu_new"/"gelu_pytorch_tanh", "relu",
 * "tanh", "silu"/"swish", "sigmoid"); FILO_ERR_INVALID_ARG naming the string otherwise. */
filo_status filo_activation_parse(const char *name, filo_activation *out);
/* y = act(x), a differentiable op. */
filo_status filo_nn_activate(filo_activation act, filo_var *x, filo_var **y);

/* ---- Linear: y = x W^T + b.  weight [out, in], bias [out] ---- */
typedef struct filo_nn_linear {
    filo_var *weight, *bias; /* bias NULL when created without */
    int64_t in_features, out_features;
} filo_nn_linear;
filo_status filo_nn_linear_init(filo_nn_linear *m, filo_params *ps, const char *prefix, int64_t in_features,
                             int64_t out_features, int bias);
filo_status filo_nn_linear_forward(const filo_nn_linear *m, const filo_nn_ctx *ctx, filo_var *x, filo_var **y);
/* y = act(x W^T + b) with the activation fused into the matmul epilogue where the op library has
 * one (GELU), else applied after. */
filo_status filo_nn_linear_forward_act(const filo_nn_linear *m, const filo_nn_ctx *ctx, filo_var *x,
                                    filo_activation act, filo_var **y);

/* ---- Embedding: weight [num, dim]; ids i32/i64 of any shape -> [..., dim] ---- */
typedef struct filo_nn_embedding {
    filo_var *weight;
    int64_t num_embeddings, dim;
    int64_t padding_idx; /* -1: none; that row starts at zero and gets no gradient */
} filo_nn_embedding;
filo_status filo_nn_embedding_init(filo_nn_embedding *m, filo_params *ps, const char *prefix, int64_t num, int64_t dim,
                                int64_t padding_idx);
filo_status filo_nn_embedding_forward(const filo_nn_embedding *m, const filo_nn_ctx *ctx, const filo_tensor *ids,
                                   filo_var **y);

/* ---- LayerNorm (weight, bias) and RMSNorm (weight) over the last dim ---- */
typedef struct filo_nn_layernorm {
    filo_var *weight, *bias;
    int64_t dim;
    double eps;
} filo_nn_layernorm;
filo_status filo_nn_layernorm_init(filo_nn_layernorm *m, filo_params *ps, const char *prefix, int64_t dim, double eps);
/* y = LN(x + residual); residual may be NULL. h_out as filo_ag_layernorm (NULL when unused). */
filo_status filo_nn_layernorm_forward(const filo_nn_layernorm *m, const filo_nn_ctx *ctx, filo_var *x, filo_var *residual,
                                   filo_var **y, filo_var **h_out);

typedef struct filo_nn_rmsnorm {
    filo_var *weight;
    int64_t dim;
    double eps;
} filo_nn_rmsnorm;
filo_status filo_nn_rmsnorm_init(filo_nn_rmsnorm *m, filo_params *ps, const char *prefix, int64_t dim, double eps);
filo_status filo_nn_rmsnorm_forward(const filo_nn_rmsnorm *m, const filo_nn_ctx *ctx, filo_var *x, filo_var *residual,
                                 filo_var **y, filo_var **h_out);

/* ---- Dropout: identity unless ctx->training and p > 0 ---- */
typedef struct filo_nn_dropout {
    double p;
} filo_nn_dropout;
filo_status filo_nn_dropout_forward(const filo_nn_dropout *m, const filo_nn_ctx *ctx, filo_var *x, filo_var **y);

/* ---- FeedForward: dropout(act(x W1^T + b1) W2^T + b2); names "<up>" and "<down>" given at init
 * (BERT: "intermediate.dense" and "output.dense") ---- */
typedef struct filo_nn_feedforward {
    filo_nn_linear up, down;
    filo_activation act;
    double dropout;
} filo_nn_feedforward;
filo_status filo_nn_feedforward_init(filo_nn_feedforward *m, filo_params *ps, const char *up_name, const char *down_name,
                                  int64_t dim, int64_t hidden, filo_activation act, double dropout);
filo_status filo_nn_feedforward_forward(const filo_nn_feedforward *m, const filo_nn_ctx *ctx, filo_var *x, filo_var **y);

/* ---- MultiHeadAttention on the fused attention op ----
 * Parameters "<qkv_prefix>.query", ".key", ".value" (Linear dim -> dim) and "<out_name>" (Linear
 * dim -> dim): BERT's "attention.self" and "attention.output.dense". head_dim = dim / heads must
 * be 32, 64 or 128 (the fused kernel's sizes). dropout is on the attention probabilities. */
typedef struct filo_nn_mha {
    filo_nn_linear query, key, value, out;
    int64_t dim, heads;
    double dropout;
} filo_nn_mha;
filo_status filo_nn_mha_init(filo_nn_mha *m, filo_params *ps, const char *qkv_prefix, const char *out_name, int64_t dim,
                          int64_t heads, double dropout);
/* x [B, Lq, dim]. kv: NULL for self-attention, or [B, Lk, dim] for cross-attention (keys and
 * values projected from it). mask: NULL, or key lengths (padding, i32/i64 [B]) and/or causal.
 * y [B, Lq, dim] after the output projection. */
filo_status filo_nn_mha_forward(const filo_nn_mha *m, const filo_nn_ctx *ctx, filo_var *x, filo_var *kv,
                             const filo_attention_mask *mask, filo_var **y);

/* ---- TransformerEncoderLayer, BERT's names under prefix:
 *   attention.self.{query,key,value}, attention.output.dense, attention.output.LayerNorm,
 *   intermediate.dense, output.dense, output.LayerNorm.
 * post_ln 1 (BERT): h = LN1(x + drop(attn(x))), y = LN2(h + drop(ffn(h)));
 * post_ln 0 (pre-LN): h = x + drop(attn(LN1(x))), y = h + drop(ffn(LN2(h))). */
typedef struct filo_nn_transformer_layer {
    filo_nn_mha attn;
    filo_nn_layernorm attn_norm, ffn_norm;
    filo_nn_linear intermediate, output;
    filo_activation act;
    double dropout;
    int post_ln;
} filo_nn_transformer_layer;
typedef struct filo_nn_transformer_config {
    int64_t dim, heads, ffn_dim;
    filo_activation act;
    double dropout;      /* hidden dropout (after attention output and FFN) */
    double attn_dropout; /* on attention probabilities */
    double eps;          /* LayerNorm eps */
    int post_ln;
} filo_nn_transformer_config;
filo_status filo_nn_transformer_layer_init(filo_nn_transformer_layer *m, filo_params *ps, const char *prefix,
                                        const filo_nn_transformer_config *cfg);
filo_status filo_nn_transformer_layer_forward(const filo_nn_transformer_layer *m, const filo_nn_ctx *ctx, filo_var *x,
                                           const filo_attention_mask *mask, filo_var **y);

/* ---- Highway (Srivastava et al.): t = sigmoid(x Wg^T + bg), y = t * act(x Wt^T + bt) + (1 - t) * x;
 * parameters "transform" and "gate" (Linear dim -> dim); gate bias starts at -1 (carry) ---- */
typedef struct filo_nn_highway {
    filo_nn_linear transform, gate;
    filo_activation act;
} filo_nn_highway;
filo_status filo_nn_highway_init(filo_nn_highway *m, filo_params *ps, const char *prefix, int64_t dim, filo_activation act);
filo_status filo_nn_highway_forward(const filo_nn_highway *m, const filo_nn_ctx *ctx, filo_var *x, filo_var **y);

/* ---- Conv2d: weight [out, in / groups, kh, kw], bias [out]; PyTorch's default init ---- */
typedef struct filo_nn_conv2d {
    filo_var *weight, *bias;
    filo_conv2d_params p;
    int64_t in_channels, out_channels, kh, kw;
} filo_nn_conv2d;
filo_status filo_nn_conv2d_init(filo_nn_conv2d *m, filo_params *ps, const char *prefix, int64_t in_channels,
                             int64_t out_channels, int64_t kh, int64_t kw, const filo_conv2d_params *p, int bias);
filo_status filo_nn_conv2d_forward(const filo_nn_conv2d *m, const filo_nn_ctx *ctx, filo_var *x, filo_var **y);

/* ---- Pooling (no parameters) and Flatten ---- */
filo_status filo_nn_maxpool2d_forward(const filo_pool2d_params *p, filo_var *x, filo_var **y);
filo_status filo_nn_avgpool2d_forward(const filo_pool2d_params *p, filo_var *x, filo_var **y);
/* Merges dims start_dim..end_dim (negative counts from the end; PyTorch's nn.Flatten is 1, -1). */
filo_status filo_nn_flatten(filo_var *x, int start_dim, int end_dim, filo_var **y);

#ifdef __cplusplus
}
#endif
#endif
