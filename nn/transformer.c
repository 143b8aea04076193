/* TransformerEncoderLayer with BERT's parameter names, post-LN (BERT) or pre-LN.
 *
 * Fusions: the FFN's GELU rides in the intermediate matmul's epilogue. Where a sublayer output
 * meets the residual stream, eval mode (no dropout) keeps the output projection's bias in its
 * matmul epilogue and adds the residual inside the LayerNorm (post-LN: LN(proj, residual);
 * pre-LN: LN2 returns h = x + proj as its h_out). With dropout the projection runs without bias
 * and the fused bias + dropout + residual op makes h in one pass. */
#include "error.h"
#include "nn_internal.h"

filo_status filo_nn_transformer_layer_init(filo_nn_transformer_layer *m, filo_params *ps, const char *prefix,
                                           const filo_nn_transformer_config *cfg)
{
    if (!m || !ps || !cfg)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, ps and cfg must not be NULL");
    if ((int)cfg->act < 0 || cfg->act > FILO_ACT_NONE)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown activation %d", (int)cfg->act);
    if (!(cfg->dropout >= 0.0 && cfg->dropout <= 1.0) || !(cfg->attn_dropout >= 0.0 && cfg->attn_dropout <= 1.0))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dropout = %g and attn_dropout = %g must be in [0, 1]", cfg->dropout,
                         cfg->attn_dropout);
    if (cfg->ffn_dim <= 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "ffn_dim = %lld must be positive", (long long)cfg->ffn_dim);
    m->act = cfg->act;
    m->dropout = cfg->dropout;
    m->post_ln = cfg->post_ln;
    char a[FILO_NN_NAME_MAX], b[FILO_NN_NAME_MAX];
    FILO_TRY(filo_nn_mha_init(&m->attn, ps, filo_param_name_join(a, sizeof a, prefix, "attention.self"),
                              filo_param_name_join(b, sizeof b, prefix, "attention.output.dense"), cfg->dim, cfg->heads,
                              cfg->attn_dropout));
    FILO_TRY(filo_nn_layernorm_init(&m->attn_norm, ps, filo_param_name_join(a, sizeof a, prefix, "attention.output.LayerNorm"),
                                    cfg->dim, cfg->eps));
    FILO_TRY(filo_nn_linear_init(&m->intermediate, ps, filo_param_name_join(a, sizeof a, prefix, "intermediate.dense"),
                                 cfg->dim, cfg->ffn_dim, 1));
    FILO_TRY(filo_nn_linear_init(&m->output, ps, filo_param_name_join(a, sizeof a, prefix, "output.dense"), cfg->ffn_dim,
                                 cfg->dim, 1));
    return filo_nn_layernorm_init(&m->ffn_norm, ps, filo_param_name_join(a, sizeof a, prefix, "output.LayerNorm"),
                                  cfg->dim, cfg->eps);
}

/* residual + drop(lin(x)) normalized by ln: *y = LN(that), and *h_out = the sum (NULL: not wanted). */
static filo_status add_norm(const filo_nn_transformer_layer *m, const filo_nn_ctx *ctx, const filo_nn_linear *lin,
                            const filo_nn_layernorm *ln, filo_var *x, filo_var *residual, filo_var **y, filo_var **h_out)
{
    filo_var *proj = NULL, *h = NULL;
    filo_status s;
    if (ctx->training && m->dropout > 0.0) {
        FILO_TRY(filo_nn_linear_dropout_residual(lin, ctx, x, m->dropout, residual, &h));
        s = filo_nn_layernorm_forward(ln, ctx, h, NULL, y, NULL);
        if (s == FILO_OK && h_out)
            *h_out = filo_var_retain(h);
    } else {
        FILO_TRY(filo_nn_linear_forward(lin, ctx, x, &proj));
        s = filo_nn_layernorm_forward(ln, ctx, proj, residual, y, h_out);
    }
    filo_var_free(proj);
    filo_var_free(h);
    return s;
}

filo_status filo_nn_transformer_layer_forward(const filo_nn_transformer_layer *m, const filo_nn_ctx *ctx, filo_var *x,
                                              const filo_attention_mask *mask, filo_var **y)
{
    if (!m || !x || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, x and y must not be NULL");
    *y = NULL;
    FILO_TRY(filo_nn_ctx_check(ctx));
    if (ctx->training && m->dropout > 0.0 && !ctx->gen)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "training with dropout p = %g needs ctx->gen", m->dropout);
    filo_var *c = NULL, *h = NULL, *n1 = NULL, *n2 = NULL, *ff = NULL;
    filo_status s;
    if (m->post_ln) {
        /* h = LN1(x + drop(attn(x))), y = LN2(h + drop(ffn(h))) */
        s = filo_nn_mha_context(&m->attn, ctx, x, NULL, mask, &c);
        if (s == FILO_OK)
            s = add_norm(m, ctx, &m->attn.out, &m->attn_norm, c, x, &h, NULL);
        if (s == FILO_OK)
            s = filo_nn_linear_forward_act(&m->intermediate, ctx, h, m->act, &ff);
        if (s == FILO_OK)
            s = add_norm(m, ctx, &m->output, &m->ffn_norm, ff, h, y, NULL);
    } else {
        /* h = x + drop(attn(LN1(x))), y = h + drop(ffn(LN2(h))) */
        s = filo_nn_layernorm_forward(&m->attn_norm, ctx, x, NULL, &n1, NULL);
        if (s == FILO_OK)
            s = filo_nn_mha_context(&m->attn, ctx, n1, NULL, mask, &c);
        if (s == FILO_OK)
            s = add_norm(m, ctx, &m->attn.out, &m->ffn_norm, c, x, &n2, &h);
        if (s == FILO_OK)
            s = filo_nn_linear_forward_act(&m->intermediate, ctx, n2, m->act, &ff);
        if (s == FILO_OK)
            s = filo_nn_linear_dropout_residual(&m->output, ctx, ff, m->dropout, h, y);
    }
    filo_var *all[] = {c, h, n1, n2, ff};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_var_free(all[i]);
    return s;
}
