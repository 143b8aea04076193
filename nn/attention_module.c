/* MultiHeadAttention on the fused attention op. Self-attention projects q, k and v in one matmul
 * (the three weights concatenated) into [B, L, 3, H, D]; cross-attention projects q from x and k, v
 * together from kv. The attention op reads the heads as strided [B, H, L, D] views of those
 * projections in place: no copy is made between the projection and the kernel. */
#include <math.h>

#include "error.h"
#include "nn_internal.h"

filo_status filo_nn_mha_init(filo_nn_mha *m, filo_params *ps, const char *qkv_prefix, const char *out_name,
                             int64_t dim, int64_t heads, double dropout)
{
    if (!m || !ps || !out_name)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, ps and out_name must not be NULL");
    if (dim <= 0 || heads <= 0 || dim % heads != 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dim = %lld must be a positive multiple of heads = %lld",
                         (long long)dim, (long long)heads);
    int64_t hd = dim / heads;
    if (hd != 32 && hd != 64 && hd != 128)
        return FILO_FAIL(FILO_ERR_UNSUPPORTED,
                         "head_dim = dim / heads = %lld / %lld = %lld; the fused attention supports 32, 64 or 128",
                         (long long)dim, (long long)heads, (long long)hd);
    if (!(dropout >= 0.0 && dropout <= 1.0))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dropout = %g is outside [0, 1]", dropout);
    m->dim = dim;
    m->heads = heads;
    m->dropout = dropout;
    char name[FILO_NN_NAME_MAX];
    FILO_TRY(filo_nn_linear_init(&m->query, ps, filo_param_name_join(name, sizeof name, qkv_prefix, "query"), dim, dim, 1));
    FILO_TRY(filo_nn_linear_init(&m->key, ps, filo_param_name_join(name, sizeof name, qkv_prefix, "key"), dim, dim, 1));
    FILO_TRY(filo_nn_linear_init(&m->value, ps, filo_param_name_join(name, sizeof name, qkv_prefix, "value"), dim, dim, 1));
    return filo_nn_linear_init(&m->out, ps, out_name, dim, dim, 1);
}

/* n stacked projections of x: [B, L, n, H, D], one matmul with the weights concatenated. */
static filo_status project(const filo_nn_mha *m, const filo_nn_ctx *ctx, filo_var *x, const filo_nn_linear *const *lins,
                           int n, filo_var **out)
{
    filo_var *ws[3], *bs[3], *w = NULL, *b = NULL, *y = NULL;
    int n_bias = 0;
    for (int i = 0; i < n; i++) {
        ws[i] = lins[i]->weight;
        bs[i] = lins[i]->bias;
        n_bias += bs[i] != NULL;
    }
    if (n_bias != 0 && n_bias != n)
        return FILO_FAIL(FILO_ERR_STATE, "the stacked projections (query, key, value) must all have a bias or none");
    filo_status s;
    if (n == 1) {
        w = filo_var_retain(ws[0]);
        b = bs[0] ? filo_var_retain(bs[0]) : NULL;
        s = FILO_OK;
    } else {
        s = filo_ag_concat(ws, n, 0, &w);
        if (s == FILO_OK && n_bias)
            s = filo_ag_concat(bs, n, 0, &b);
    }
    if (s == FILO_OK)
        s = filo_nn_affine(ctx, x, w, b, b ? FILO_MATMUL_EPILOGUE_BIAS : FILO_MATMUL_EPILOGUE_NONE, &y);
    const filo_tensor *xv = filo_var_value(x);
    if (s == FILO_OK)
        s = filo_ag_reshape(y, 5, (int64_t[]){xv->shape[0], xv->shape[1], n, m->heads, m->dim / m->heads}, out);
    filo_var_free(w);
    filo_var_free(b);
    filo_var_free(y);
    return s;
}

/* Head i of a [B, L, n, H, D] projection as a [B, H, L, D] view. */
static filo_status head_view(filo_var *p, int i, filo_var **out)
{
    filo_var *sl, *sq;
    FILO_TRY(filo_ag_slice(p, 2, i, i + 1, 1, &sl));
    filo_status s = filo_ag_squeeze(sl, 2, &sq);
    filo_var_free(sl);
    FILO_TRY(s);
    s = filo_ag_permute(sq, (int[]){0, 2, 1, 3}, out);
    filo_var_free(sq);
    return s;
}

static filo_status check_input(const filo_nn_mha *m, const filo_var *x, const char *what)
{
    const filo_tensor *v = filo_var_value(x);
    char buf[96];
    if (v->ndim != 3 || v->shape[2] != m->dim)
        return FILO_FAIL(FILO_ERR_SHAPE, "%s is %s; it must be [B, L, %lld]", what,
                         filo_tensor_describe(v, buf, sizeof buf), (long long)m->dim);
    return FILO_OK;
}

filo_status filo_nn_mha_context(const filo_nn_mha *m, const filo_nn_ctx *ctx, filo_var *x, filo_var *kv,
                                const filo_attention_mask *mask, filo_var **out)
{
    if (!m || !x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, x and out must not be NULL");
    *out = NULL;
    FILO_TRY(filo_nn_ctx_check(ctx));
    if (!m->query.weight || !m->key.weight || !m->value.weight || !m->out.weight || m->heads <= 0)
        return FILO_FAIL(FILO_ERR_STATE, "the MultiHeadAttention is not initialized");
    FILO_TRY(check_input(m, x, "x"));
    if (kv) {
        FILO_TRY(check_input(m, kv, "kv"));
        if (filo_var_value(kv)->shape[0] != filo_var_value(x)->shape[0])
            return FILO_FAIL(FILO_ERR_SHAPE, "kv has batch %lld, x has %lld", (long long)filo_var_value(kv)->shape[0],
                             (long long)filo_var_value(x)->shape[0]);
    }
    double p = ctx->training ? m->dropout : 0.0;
    if (p > 0.0 && !ctx->gen)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "training with attention dropout p = %g needs ctx->gen", p);
    filo_var *pq = NULL, *pkv = NULL, *q = NULL, *k = NULL, *v = NULL, *att = NULL, *perm = NULL;
    filo_status s;
    if (!kv) {
        const filo_nn_linear *lins[3] = {&m->query, &m->key, &m->value};
        s = project(m, ctx, x, lins, 3, &pq);
        if (s == FILO_OK)
            s = head_view(pq, 0, &q);
        if (s == FILO_OK)
            s = head_view(pq, 1, &k);
        if (s == FILO_OK)
            s = head_view(pq, 2, &v);
    } else {
        const filo_nn_linear *lq[1] = {&m->query}, *lkv[2] = {&m->key, &m->value};
        s = project(m, ctx, x, lq, 1, &pq);
        if (s == FILO_OK)
            s = project(m, ctx, kv, lkv, 2, &pkv);
        if (s == FILO_OK)
            s = head_view(pq, 0, &q);
        if (s == FILO_OK)
            s = head_view(pkv, 0, &k);
        if (s == FILO_OK)
            s = head_view(pkv, 1, &v);
    }
    int64_t hd = m->dim / m->heads;
    if (s == FILO_OK)
        s = filo_ag_attention(q, k, v, mask, 1.0 / sqrt((double)hd), p, p > 0.0 ? ctx->gen : NULL, &att);
    /* [B, H, Lq, D] -> [B, Lq, H * D]: the one copy, as the output projection needs rows. */
    if (s == FILO_OK)
        s = filo_ag_permute(att, (int[]){0, 2, 1, 3}, &perm);
    const filo_tensor *xv = filo_var_value(x);
    if (s == FILO_OK)
        s = filo_ag_reshape(perm, 3, (int64_t[]){xv->shape[0], xv->shape[1], m->dim}, out);
    filo_var *all[] = {pq, pkv, q, k, v, att, perm};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_var_free(all[i]);
    return s;
}

filo_status filo_nn_mha_forward(const filo_nn_mha *m, const filo_nn_ctx *ctx, filo_var *x, filo_var *kv,
                                const filo_attention_mask *mask, filo_var **y)
{
    if (!y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "y is NULL");
    filo_var *c;
    FILO_TRY(filo_nn_mha_context(m, ctx, x, kv, mask, &c));
    filo_status s = filo_nn_linear_forward(&m->out, ctx, c, y);
    filo_var_free(c);
    return s;
}
