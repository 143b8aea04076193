/* The kernel benchmark cases: each fused kernel and key op at BERT shapes, with the fewest bytes
 * it must move and the FLOPs it does. dims are per case: rows/cols for row-wise ops, M/N/K for
 * GEMMs, B/H/L/D for attention. Shapes: "base" is BERT-base at batch 32, sequence 128 (4096
 * tokens, hidden 768, 12 heads, FFN 3072); "mini" is BERT-mini at batch 16 (2048 tokens, hidden
 * 256, 4 heads, FFN 1024), the CPU default. The convolution cases use CNN shapes instead. */
#include <stdlib.h>
#include <string.h>

#include "kernel_cases.h"

/* ---- a context of up to 8 tensors and a few scalars ---- */

typedef struct tensors_ctx {
    filo_tensor *t[8];
    int n;
    int64_t dims[4];
    filo_generator gen;
} tensors_ctx;

static void teardown_tensors(void *p)
{
    tensors_ctx *c = p;
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        filo_tensor_free(c->t[i]);
    free(c);
}

/* Adds a tensor of uniform values in [lo, hi) to the context. */
static filo_status add_tensor(tensors_ctx *c, filo_device device, filo_dtype dtype, int ndim, const int64_t *shape,
                              double lo, double hi)
{
    filo_tensor *t = NULL;
    BENCH_TRY(filo_tensor_empty(device, dtype, ndim, shape, &t));
    c->t[c->n++] = t;
    if (filo_dtype_is_float(dtype))
        return filo_tensor_uniform(t, &c->gen, lo, hi);
    return filo_tensor_fill(t, lo);
}

static filo_status new_ctx(const int64_t *dims, void **out)
{
    tensors_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return FILO_ERR_OOM;
    memcpy(c->dims, dims, sizeof c->dims);
    filo_generator_init(&c->gen, 1234);
    *out = c;
    return FILO_OK;
}

static double el(filo_dtype t) { return (double)filo_dtype_size(t); }

/* rows x cols inputs: n_in tensors of the dtype (plus params [cols] in f32 for half dtypes). */
static filo_status setup_rows(filo_device device, filo_dtype dtype, const int64_t *dims, int n_in, int n_params,
                              void **ctx)
{
    BENCH_TRY(new_ctx(dims, ctx));
    tensors_ctx *c = *ctx;
    filo_dtype pt = dtype == FILO_BF16 || dtype == FILO_F16 ? FILO_F32 : dtype;
    for (int i = 0; i < n_in; i++)
        BENCH_TRY(add_tensor(c, device, dtype, 2, dims, -2.0, 2.0));
    for (int i = 0; i < n_params; i++)
        BENCH_TRY(add_tensor(c, device, pt, 1, &dims[1], 0.5, 1.5));
    return FILO_OK;
}

static double rows_cols(const int64_t *d) { return (double)d[0] * (double)d[1]; }

static filo_status free_outputs(filo_status st, filo_tensor **outs, int n)
{
    for (int i = 0; i < n; i++)
        filo_tensor_free(outs[i]);
    return st;
}

/* ---- GELU (erf form), elementwise: read x, write y ---- */

static filo_status setup_gelu(filo_device d, filo_dtype t, const int64_t *dims, void **ctx)
{
    return setup_rows(d, t, dims, 1, 0, ctx);
}
static filo_status run_gelu(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *y = NULL;
    return free_outputs(filo_unary(FILO_UNARY_GELU, c->t[0], &y), &y, 1);
}
static double bytes_rw2(filo_dtype t, const int64_t *d) { return 2 * rows_cols(d) * el(t); }

/* ---- add, elementwise binary: read a and b, write y ---- */

static filo_status setup_add(filo_device d, filo_dtype t, const int64_t *dims, void **ctx)
{
    return setup_rows(d, t, dims, 2, 0, ctx);
}
static filo_status run_add(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *y = NULL;
    return free_outputs(filo_binary(FILO_BINARY_ADD, c->t[0], c->t[1], &y), &y, 1);
}
static double bytes_rw3(filo_dtype t, const int64_t *d) { return 3 * rows_cols(d) * el(t); }

/* ---- softmax over the last axis: read x, write y ---- */

static filo_status run_softmax(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *y = NULL;
    return free_outputs(filo_softmax(c->t[0], &y), &y, 1);
}

/* ---- a bias gradient: column sums over the rows (sum over dim 0): read x, write one row ---- */

static filo_status run_col_sums(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *y = NULL;
    return free_outputs(filo_reduce(FILO_REDUCE_SUM, c->t[0], 0, 0, &y), &y, 1);
}
static double bytes_col_sums(filo_dtype t, const int64_t *d) { return (rows_cols(d) + (double)d[1]) * el(t); }

/* ---- LayerNorm with the residual fused: read x and residual, write y and h; 2 stats a row ---- */

static filo_status setup_layernorm(filo_device d, filo_dtype t, const int64_t *dims, void **ctx)
{
    return setup_rows(d, t, dims, 2, 2, ctx);
}
static filo_status run_layernorm_fwd(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *o[4] = {NULL};
    return free_outputs(filo_layernorm_forward(c->t[0], c->t[1], c->t[2], c->t[3], 1e-12, &o[0], &o[1], &o[2], &o[3]),
                        o, 4);
}
static double bytes_layernorm_fwd(filo_dtype t, const int64_t *d)
{
    return 4 * rows_cols(d) * el(t) + 2.0 * (double)d[0] * 4;
}

/* Backward: read dy and h (and the two stats), write dx; dgamma/dbeta are [cols]. */
static filo_status setup_layernorm_bwd(filo_device d, filo_dtype t, const int64_t *dims, void **ctx)
{
    BENCH_TRY(setup_rows(d, t, dims, 2, 2, ctx));
    tensors_ctx *c = *ctx;
    filo_tensor *y = NULL, *mean = NULL, *rstd = NULL;
    BENCH_TRY(filo_layernorm_forward(c->t[0], NULL, c->t[2], c->t[3], 1e-12, &y, NULL, &mean, &rstd));
    filo_tensor_free(y);
    c->t[c->n++] = mean;
    c->t[c->n++] = rstd;
    return FILO_OK;
}
static filo_status run_layernorm_bwd(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *o[3] = {NULL};
    /* t[1] plays dy; t[0] is h = x; t[4], t[5] the statistics; t[2] gamma. */
    return free_outputs(filo_layernorm_backward(c->t[1], c->t[0], c->t[4], c->t[5], c->t[2], &o[0], &o[1], &o[2]),
                        o, 3);
}
static double bytes_layernorm_bwd(filo_dtype t, const int64_t *d)
{
    return 3 * rows_cols(d) * el(t) + 2.0 * (double)d[0] * 4;
}

/* ---- GEMM with a bias + GELU epilogue (the FFN's first matmul): M x K times K x N ---- */

static filo_status setup_matmul(filo_device d, filo_dtype t, const int64_t *dims, void **ctx)
{
    BENCH_TRY(new_ctx(dims, ctx));
    tensors_ctx *c = *ctx;
    int64_t a[2] = {dims[0], dims[2]}, b[2] = {dims[2], dims[1]};
    BENCH_TRY(add_tensor(c, d, t, 2, a, -1.0, 1.0));
    BENCH_TRY(add_tensor(c, d, t, 2, b, -0.05, 0.05));
    BENCH_TRY(add_tensor(c, d, t, 1, &dims[1], -0.1, 0.1));
    return FILO_OK;
}
static filo_status run_matmul_bias(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *y = NULL;
    return free_outputs(filo_matmul(c->t[0], c->t[1], 0, 0, c->t[2], FILO_MATMUL_EPILOGUE_BIAS, &y, NULL), &y, 1);
}
static filo_status run_matmul_bias_gelu(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *o[2] = {NULL};
    return free_outputs(filo_matmul(c->t[0], c->t[1], 0, 0, c->t[2], FILO_MATMUL_EPILOGUE_BIAS_GELU, &o[0], &o[1]),
                        o, 2);
}
static double bytes_matmul(filo_dtype t, const int64_t *d)
{
    return ((double)d[0] * d[2] + (double)d[2] * d[1] + (double)d[0] * d[1] + d[1]) * el(t);
}
static double bytes_matmul_gelu(filo_dtype t, const int64_t *d)
{
    return bytes_matmul(t, d) + (double)d[0] * d[1] * el(t);
}
static double flops_matmul(const int64_t *d) { return 2.0 * (double)d[0] * d[1] * d[2]; }

/* ---- AdamW multi-tensor step with a bf16 copy: dims {tensors, elements each} ----
 * Per element: read param, grad, exp_avg, exp_avg_sq (f32), write the three back and the copy. */

#define ADAM_MAX_TENSORS 32

typedef struct adam_ctx {
    filo_tensor *p[ADAM_MAX_TENSORS], *g[ADAM_MAX_TENSORS], *m[ADAM_MAX_TENSORS], *v[ADAM_MAX_TENSORS],
        *copy[ADAM_MAX_TENSORS];
    int n;
    int64_t step;
} adam_ctx;

static void teardown_adam(void *p)
{
    adam_ctx *c = p;
    if (!c)
        return;
    for (int i = 0; i < c->n; i++) {
        filo_tensor_free(c->p[i]);
        filo_tensor_free(c->g[i]);
        filo_tensor_free(c->m[i]);
        filo_tensor_free(c->v[i]);
        filo_tensor_free(c->copy[i]);
    }
    free(c);
}

static filo_status setup_adam(filo_device d, filo_dtype t, const int64_t *dims, void **ctx)
{
    (void)t;
    adam_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return FILO_ERR_OOM;
    *ctx = c;
    filo_generator gen;
    filo_generator_init(&gen, 7);
    c->n = (int)(dims[0] < ADAM_MAX_TENSORS ? dims[0] : ADAM_MAX_TENSORS);
    for (int i = 0; i < c->n; i++) {
        BENCH_TRY(filo_tensor_empty(d, FILO_F32, 1, &dims[1], &c->p[i]));
        BENCH_TRY(filo_tensor_empty(d, FILO_F32, 1, &dims[1], &c->g[i]));
        BENCH_TRY(filo_tensor_zeros(d, FILO_F32, 1, &dims[1], &c->m[i]));
        BENCH_TRY(filo_tensor_zeros(d, FILO_F32, 1, &dims[1], &c->v[i]));
        BENCH_TRY(filo_tensor_empty(d, FILO_BF16, 1, &dims[1], &c->copy[i]));
        BENCH_TRY(filo_tensor_uniform(c->p[i], &gen, -0.1, 0.1));
        BENCH_TRY(filo_tensor_uniform(c->g[i], &gen, -1e-3, 1e-3));
    }
    return FILO_OK;
}

static filo_status run_adam(void *p)
{
    adam_ctx *c = p;
    filo_adam_options opt = filo_adam_defaults(1);
    opt.step = ++c->step;
    return filo_adam_step(c->n, c->p, (const filo_tensor *const *)c->g, c->m, c->v, c->copy, &opt);
}

static double bytes_adam(filo_dtype t, const int64_t *d)
{
    (void)t;
    return (double)d[0] * (double)d[1] * (7 * 4 + 2);
}

/* ---- global grad norm over the same tensors: read every grad once ---- */

static filo_status run_grad_norm(void *p)
{
    adam_ctx *c = p;
    filo_tensor *norm = NULL;
    return free_outputs(filo_grad_norm((const filo_tensor *const *)c->g, c->n, 2.0, &norm, NULL), &norm, 1);
}

static double bytes_grad_norm(filo_dtype t, const int64_t *d)
{
    (void)t;
    return (double)d[0] * (double)d[1] * 4;
}

/* ---- fused attention, dims {B, H, L, D}, no mask, no dropout ----
 * FLOPs: forward 4*B*H*L*L*D (QK^T and PV); backward counted as 2.5x the forward (FlashAttention's
 * convention: dV, dP, dS->dQ, dK), whatever the kernel actually recomputes. Bytes: Q, K, V, out
 * (and dout, dQ, dK, dV in backward) once each. */

static filo_status setup_attention(filo_device d, filo_dtype t, const int64_t *dims, void **ctx)
{
    BENCH_TRY(new_ctx(dims, ctx));
    tensors_ctx *c = *ctx;
    for (int i = 0; i < 4; i++) /* q, k, v, dout */
        BENCH_TRY(add_tensor(c, d, t, 4, dims, -1.0, 1.0));
    filo_tensor *out = NULL, *lse = NULL;
    BENCH_TRY(filo_attention_forward(c->t[0], c->t[1], c->t[2], NULL, 0.125, 0.0, NULL, &out, &lse, NULL));
    c->t[c->n++] = out;
    c->t[c->n++] = lse;
    return FILO_OK;
}

static filo_status run_attention_fwd(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *o[2] = {NULL};
    return free_outputs(filo_attention_forward(c->t[0], c->t[1], c->t[2], NULL, 0.125, 0.0, NULL, &o[0], &o[1], NULL),
                        o, 2);
}

static filo_status run_attention_bwd(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *o[3] = {NULL};
    filo_attention_dropout none = {0};
    return free_outputs(filo_attention_backward(c->t[3], c->t[0], c->t[1], c->t[2], c->t[4], c->t[5], NULL, 0.125,
                                                &none, &o[0], &o[1], &o[2]),
                        o, 3);
}

/* One training step's attention: the forward (keeping the log-sum-exp) then the backward, the
 * unit FlashAttention's fwd+bwd figures time. */
static filo_status run_attention_fwd_bwd(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *o[5] = {NULL};
    filo_attention_dropout none = {0};
    filo_status st = filo_attention_forward(c->t[0], c->t[1], c->t[2], NULL, 0.125, 0.0, NULL, &o[0], &o[1], NULL);
    if (st == FILO_OK)
        st = filo_attention_backward(c->t[3], c->t[0], c->t[1], c->t[2], o[0], o[1], NULL, 0.125, &none, &o[2], &o[3],
                                     &o[4]);
    return free_outputs(st, o, 5);
}

static double attention_elems(const int64_t *d) { return (double)d[0] * d[1] * d[2] * d[3]; }
static double bytes_attention_fwd(filo_dtype t, const int64_t *d) { return 4 * attention_elems(d) * el(t); }
static double bytes_attention_bwd(filo_dtype t, const int64_t *d) { return 8 * attention_elems(d) * el(t); }
static double flops_attention_fwd(const int64_t *d) { return 4.0 * attention_elems(d) * (double)d[2]; }
static double flops_attention_bwd(const int64_t *d) { return 2.5 * flops_attention_fwd(d); }
static double bytes_attention_fwd_bwd(filo_dtype t, const int64_t *d) { return 12 * attention_elems(d) * el(t); }
static double flops_attention_fwd_bwd(const int64_t *d) { return 3.5 * flops_attention_fwd(d); }

/* ---- fused bias + GELU (erf form): forward reads x, writes y; backward reads dy and x, writes dx
 * (plus dbias [cols]) ---- */

static filo_status setup_bias_act(filo_device d, filo_dtype t, const int64_t *dims, void **ctx)
{
    BENCH_TRY(setup_rows(d, t, dims, 2, 0, ctx)); /* x (or residual), dy */
    tensors_ctx *c = *ctx;
    return add_tensor(c, d, t, 1, &dims[1], -0.1, 0.1); /* bias */
}

static filo_status run_bias_gelu_fwd(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *y = NULL;
    return free_outputs(filo_bias_gelu_forward(c->t[0], c->t[2], 0, &y), &y, 1);
}

static filo_status run_bias_gelu_bwd(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *o[2] = {NULL};
    return free_outputs(filo_bias_gelu_backward(c->t[1], c->t[0], c->t[2], 0, &o[0], &o[1]), o, 2);
}

/* ---- bias + dropout(p = 0.1) + residual: read x and residual, write y ---- */

static filo_status run_bias_dropout_residual(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *y = NULL;
    filo_dropout_state state;
    return free_outputs(filo_bias_dropout_residual_forward(c->t[0], c->t[2], c->t[1], 0.1, &c->gen, &y, &state), &y,
                        1);
}

static filo_status run_dropout(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *y = NULL;
    filo_dropout_state state;
    return free_outputs(filo_dropout(c->t[0], 0.1, &c->gen, &y, &state), &y, 1);
}

/* ---- 3x3 convolution (pad 1, C in = K out) and 2x2 max pooling, dims {N, C, H, W} ---- */

static filo_status setup_conv(filo_device d, filo_dtype t, const int64_t *dims, void **ctx)
{
    BENCH_TRY(new_ctx(dims, ctx));
    tensors_ctx *c = *ctx;
    int64_t w[4] = {dims[1], dims[1], 3, 3};
    BENCH_TRY(add_tensor(c, d, t, 4, dims, -1.0, 1.0));
    BENCH_TRY(add_tensor(c, d, t, 4, w, -0.1, 0.1));
    return add_tensor(c, d, t, 1, &dims[1], -0.1, 0.1);
}

static filo_status run_conv_fwd(void *p)
{
    tensors_ctx *c = p;
    filo_conv2d_params params = {.pad_h = 1, .pad_w = 1};
    filo_tensor *y = NULL;
    return free_outputs(filo_conv2d_forward(c->t[0], c->t[1], c->t[2], &params, &y), &y, 1);
}

static double conv_elems(const int64_t *d) { return (double)d[0] * d[1] * d[2] * d[3]; }
static double bytes_conv(filo_dtype t, const int64_t *d) { return (2 * conv_elems(d) + 9.0 * d[1] * d[1]) * el(t); }
static double flops_conv(const int64_t *d) { return 2.0 * 9.0 * conv_elems(d) * (double)d[1]; }

static filo_status run_maxpool(void *p)
{
    tensors_ctx *c = p;
    filo_pool2d_params params = {.kernel_h = 2, .kernel_w = 2};
    filo_tensor *o[2] = {NULL};
    return free_outputs(filo_maxpool2d_forward(c->t[0], &params, &o[0], &o[1]), o, 2);
}

/* Reads x, writes a quarter of it and an i64 index per output. */
static double bytes_maxpool(filo_dtype t, const int64_t *d) { return conv_elems(d) * (el(t) * 1.25 + 8.0 / 4); }

/* ---- fused softmax cross-entropy (loss and dlogits in one call): dims {rows, classes}; reads the
 * logits, writes dlogits (the fewest bytes; the kernel may read a row twice) ---- */

static filo_status setup_cross_entropy(filo_device d, filo_dtype t, const int64_t *dims, void **ctx)
{
    BENCH_TRY(setup_rows(d, t, dims, 1, 0, ctx));
    tensors_ctx *c = *ctx;
    return add_tensor(c, d, FILO_I64, 1, dims, 7.0, 7.0); /* every target class 7 */
}

static filo_status run_cross_entropy(void *p)
{
    tensors_ctx *c = p;
    filo_cross_entropy_options opts = filo_cross_entropy_defaults();
    filo_tensor *o[2] = {NULL};
    return free_outputs(filo_cross_entropy_fused(c->t[0], c->t[1], &opts, 1.0, &o[0], &o[1]), o, 2);
}

/* ---- embedding lookup and its deterministic backward: dims {tokens, vocab, hidden} ----
 * ids are token * 7919 mod vocab (spread, some repeats). Forward reads the rows it gathers and
 * writes them; backward reads dy and writes the whole [vocab, hidden] gradient. */

static filo_status setup_embedding(filo_device d, filo_dtype t, const int64_t *dims, void **ctx)
{
    BENCH_TRY(new_ctx(dims, ctx));
    tensors_ctx *c = *ctx;
    int64_t w[2] = {dims[1], dims[2]}, dy[2] = {dims[0], dims[2]};
    BENCH_TRY(add_tensor(c, d, t, 2, w, -0.1, 0.1));
    BENCH_TRY(add_tensor(c, d, t, 2, dy, -0.1, 0.1));
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)dims[0]);
    if (!ids)
        return FILO_ERR_OOM;
    for (int64_t i = 0; i < dims[0]; i++)
        ids[i] = i * 7919 % dims[1];
    filo_tensor *idt = NULL;
    filo_status st = filo_tensor_from_host(d, FILO_I64, 1, dims, ids, &idt);
    free(ids);
    BENCH_TRY(st);
    c->t[c->n++] = idt;
    return FILO_OK;
}

static filo_status run_embedding_fwd(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *y = NULL;
    return free_outputs(filo_embedding(c->t[0], c->t[2], &y), &y, 1);
}

static filo_status run_embedding_bwd(void *p)
{
    tensors_ctx *c = p;
    filo_tensor *dw = NULL;
    return free_outputs(filo_embedding_backward(c->t[1], c->t[2], c->dims[1], -1, &dw), &dw, 1);
}

static double bytes_embedding_fwd(filo_dtype t, const int64_t *d) { return 2.0 * d[0] * d[2] * el(t) + 8.0 * d[0]; }
static double bytes_embedding_bwd(filo_dtype t, const int64_t *d)
{
    return ((double)d[0] * d[2] + (double)d[1] * d[2]) * el(t) + 8.0 * d[0];
}

static const bench_case gelu_case = {"gelu (erf)", setup_gelu, run_gelu, teardown_tensors, bytes_rw2, NULL};
static const bench_case add_case = {"add", setup_add, run_add, teardown_tensors, bytes_rw3, NULL};
static const bench_case softmax_case = {"softmax", setup_gelu, run_softmax, teardown_tensors, bytes_rw2, NULL};
static const bench_case col_sums_case = {"bias grad (column sums)", setup_gelu, run_col_sums, teardown_tensors,
                                         bytes_col_sums, NULL};
static const bench_case ln_fwd_case = {"layernorm+residual fwd", setup_layernorm, run_layernorm_fwd,
                                       teardown_tensors, bytes_layernorm_fwd, NULL};
static const bench_case ln_bwd_case = {"layernorm bwd", setup_layernorm_bwd, run_layernorm_bwd, teardown_tensors,
                                       bytes_layernorm_bwd, NULL};
static const bench_case mm_bias_case = {"matmul+bias (QKV)", setup_matmul, run_matmul_bias, teardown_tensors,
                                        bytes_matmul, flops_matmul};
static const bench_case mm_down_case = {"matmul+bias (FFN down)", setup_matmul, run_matmul_bias, teardown_tensors,
                                        bytes_matmul, flops_matmul};
static const bench_case mm_gelu_case = {"matmul+bias+gelu (FFN up)", setup_matmul, run_matmul_bias_gelu,
                                        teardown_tensors, bytes_matmul_gelu, flops_matmul};

static const bench_case adam_case = {"adamw step (+bf16 copy)", setup_adam, run_adam, teardown_adam, bytes_adam,
                                     NULL};
static const bench_case grad_norm_case = {"grad norm", setup_adam, run_grad_norm, teardown_adam, bytes_grad_norm,
                                          NULL};

static const bench_case attn_fwd_case = {"attention fwd", setup_attention, run_attention_fwd, teardown_tensors,
                                         bytes_attention_fwd, flops_attention_fwd};
static const bench_case attn_bwd_case = {"attention bwd", setup_attention, run_attention_bwd, teardown_tensors,
                                         bytes_attention_bwd, flops_attention_bwd};
static const bench_case attn_fwd_bwd_case = {"attention fwd+bwd", setup_attention, run_attention_fwd_bwd,
                                             teardown_tensors, bytes_attention_fwd_bwd, flops_attention_fwd_bwd};

static const bench_case bias_gelu_fwd_case = {"bias+gelu fwd", setup_bias_act, run_bias_gelu_fwd, teardown_tensors,
                                              bytes_rw2, NULL};
static const bench_case bias_gelu_bwd_case = {"bias+gelu bwd", setup_bias_act, run_bias_gelu_bwd, teardown_tensors,
                                              bytes_rw3, NULL};
static const bench_case bdr_case = {"bias+dropout+residual fwd", setup_bias_act, run_bias_dropout_residual,
                                    teardown_tensors, bytes_rw3, NULL};
static const bench_case dropout_case = {"dropout fwd", setup_bias_act, run_dropout, teardown_tensors, bytes_rw2, NULL};

static const bench_case conv_case = {"conv2d 3x3 fwd", setup_conv, run_conv_fwd, teardown_tensors, bytes_conv,
                                     flops_conv};
static const bench_case maxpool_case = {"maxpool 2x2 fwd", setup_conv, run_maxpool, teardown_tensors, bytes_maxpool,
                                        NULL};

static const bench_case ce_case = {"cross-entropy fused (MLM)", setup_cross_entropy, run_cross_entropy,
                                   teardown_tensors, bytes_rw2, NULL};

static const bench_case emb_fwd_case = {"embedding fwd", setup_embedding, run_embedding_fwd, teardown_tensors,
                                        bytes_embedding_fwd, NULL};
static const bench_case emb_bwd_case = {"embedding bwd (det.)", setup_embedding, run_embedding_bwd, teardown_tensors,
                                        bytes_embedding_bwd, NULL};

/* Shapes: tokens x hidden for row ops, the attention probabilities' rows x seq for softmax. */
#define BASE_ROWS(c) {4096, c, 0, 0}
#define MINI_ROWS(c) {2048, c, 0, 0}
#define QUICK_ROWS {33, 65, 0, 0}

const bench_entry bench_entries[] = {
    {&gelu_case, FILO_F32, BASE_ROWS(3072), MINI_ROWS(1024), QUICK_ROWS},
    {&gelu_case, FILO_BF16, BASE_ROWS(3072), MINI_ROWS(1024), QUICK_ROWS},
    {&add_case, FILO_BF16, BASE_ROWS(768), MINI_ROWS(256), QUICK_ROWS},
    {&bias_gelu_fwd_case, FILO_BF16, BASE_ROWS(3072), MINI_ROWS(1024), QUICK_ROWS},
    {&bias_gelu_bwd_case, FILO_BF16, BASE_ROWS(3072), MINI_ROWS(1024), QUICK_ROWS},
    {&bdr_case, FILO_BF16, BASE_ROWS(768), MINI_ROWS(256), QUICK_ROWS},
    {&dropout_case, FILO_BF16, BASE_ROWS(768), MINI_ROWS(256), QUICK_ROWS},
    {&emb_fwd_case, FILO_F32, {4096, 30522, 768, 0}, {2048, 30522, 256, 0}, {33, 129, 7, 0}},
    {&emb_bwd_case, FILO_F32, {4096, 30522, 768, 0}, {2048, 30522, 256, 0}, {33, 129, 7, 0}},
    /* the masked-LM head over BERT's 30522-word vocabulary: every token (base), 512 rows (mini) */
    {&ce_case, FILO_BF16, {4096, 30522, 0, 0}, {512, 30522, 0, 0}, {7, 129, 0, 0}},
    {&softmax_case, FILO_F32, {32 * 12 * 128, 128, 0, 0}, {16 * 4 * 128, 128, 0, 0}, QUICK_ROWS},
    /* the QKV projection's dbias */
    {&col_sums_case, FILO_F32, BASE_ROWS(2304), MINI_ROWS(768), QUICK_ROWS},
    {&ln_fwd_case, FILO_F32, BASE_ROWS(768), MINI_ROWS(256), QUICK_ROWS},
    {&ln_fwd_case, FILO_BF16, BASE_ROWS(768), MINI_ROWS(256), QUICK_ROWS},
    {&ln_bwd_case, FILO_BF16, BASE_ROWS(768), MINI_ROWS(256), QUICK_ROWS},
    {&ln_bwd_case, FILO_F32, BASE_ROWS(768), MINI_ROWS(256), QUICK_ROWS},
    /* GEMMs: bf16 is the GPU's training dtype, f32 the CPU's */
    {&mm_bias_case, FILO_BF16, {4096, 2304, 768, 0}, {2048, 768, 256, 0}, {33, 65, 17, 0}},
    {&mm_bias_case, FILO_F32, {4096, 2304, 768, 0}, {2048, 768, 256, 0}, {33, 65, 17, 0}},
    {&mm_down_case, FILO_BF16, {4096, 768, 3072, 0}, {2048, 256, 1024, 0}, {33, 17, 65, 0}},
    {&mm_down_case, FILO_F32, {4096, 768, 3072, 0}, {2048, 256, 1024, 0}, {33, 17, 65, 0}},
    {&mm_gelu_case, FILO_BF16, {4096, 3072, 768, 0}, {2048, 1024, 256, 0}, {33, 65, 17, 0}},
    {&mm_gelu_case, FILO_F32, {4096, 3072, 768, 0}, {2048, 1024, 256, 0}, {33, 65, 17, 0}},
    {&attn_fwd_case, FILO_BF16, {32, 12, 128, 64}, {16, 4, 128, 64}, {1, 2, 33, 64}},
    {&attn_bwd_case, FILO_BF16, {32, 12, 128, 64}, {16, 4, 128, 64}, {1, 2, 33, 64}},
    /* seq 512, head dim 64: the size FlashAttention-2's published figures use */
    {&attn_fwd_case, FILO_BF16, {8, 12, 512, 64}, {2, 4, 512, 64}, {1, 1, 65, 64}},
    {&attn_bwd_case, FILO_BF16, {8, 12, 512, 64}, {2, 4, 512, 64}, {1, 1, 65, 64}},
    {&attn_fwd_bwd_case, FILO_BF16, {8, 12, 512, 64}, {2, 4, 512, 64}, {1, 1, 65, 64}},
    /* a CNN layer: ResNet-ish on a GPU, MNIST-sized on the CPU */
    {&conv_case, FILO_BF16, {64, 128, 56, 56}, {64, 32, 28, 28}, {2, 3, 7, 7}},
    {&maxpool_case, FILO_BF16, {64, 128, 56, 56}, {64, 32, 28, 28}, {2, 3, 8, 8}},
    /* BERT-base has 110M parameters, BERT-mini 11M: as 16 equal tensors. */
    {&adam_case, FILO_F32, {16, 6881280, 0, 0}, {16, 700416, 0, 0}, {3, 1001, 0, 0}},
    {&grad_norm_case, FILO_F32, {16, 6881280, 0, 0}, {16, 700416, 0, 0}, {3, 1001, 0, 0}},
};
const int bench_entry_count = (int)(sizeof bench_entries / sizeof bench_entries[0]);
