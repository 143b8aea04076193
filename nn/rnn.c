/* LSTM and GRU layers (include/filo/rnn.h): PyTorch's parameters, one input-projection matmul per
 * layer and direction, then per step one recurrent matmul and one fused cell (filo_ag_lstm_cell /
 * filo_ag_gru_cell). Packed-sequence lengths reach the cells as a device tensor, so rows past
 * their length keep their state without any host work per step; their outputs are zeroed by one
 * mask product per direction. */
#include "filo/rnn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "filo/layout.h"
#include "nn_internal.h"

#define NAME_LEN 256
#define DESC_LEN 200

static int gates_of(filo_rnn_kind kind) { return kind == FILO_RNN_LSTM ? 4 : 3; }

static int dirs_of(const filo_rnn_config *cfg) { return cfg->bidirectional ? 2 : 1; }

static filo_status create(filo_params *ps, const char *prefix, const char *name, int ndim, const int64_t *shape,
                          double k, filo_param_role role, filo_var **out)
{
    char full[NAME_LEN];
    if (!filo_param_name_join(full, sizeof full, prefix, name))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "parameter name '%s.%s' is too long", prefix ? prefix : "", name);
    filo_init init = {FILO_INIT_UNIFORM, -k, k};
    return filo_params_create(ps, full, ndim, shape, init, role, out);
}

filo_status filo_rnn_init(filo_rnn *m, filo_params *ps, const char *prefix, const filo_rnn_config *cfg)
{
    if (!m || !ps || !cfg)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, ps and cfg must not be NULL");
    if (cfg->kind != FILO_RNN_LSTM && cfg->kind != FILO_RNN_GRU)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "kind must be FILO_RNN_LSTM or FILO_RNN_GRU, got %d", (int)cfg->kind);
    if (cfg->input_size < 1 || cfg->hidden_size < 1)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "input_size and hidden_size must be >= 1, got %lld and %lld",
                         (long long)cfg->input_size, (long long)cfg->hidden_size);
    if (cfg->num_layers < 1 || cfg->num_layers > FILO_RNN_MAX_LAYERS)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "num_layers must be in [1, %d], got %d", FILO_RNN_MAX_LAYERS,
                         cfg->num_layers);
    if (!(cfg->dropout >= 0.0 && cfg->dropout < 1.0))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dropout must be in [0, 1), got %g", cfg->dropout);
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->cfg.bidirectional = cfg->bidirectional ? 1 : 0;
    int64_t H = cfg->hidden_size, GH = gates_of(cfg->kind) * H;
    double k = 1.0 / sqrt((double)H);
    /* PyTorch's registration order: per layer, per direction, w_ih, w_hh, b_ih, b_hh. */
    for (int l = 0; l < cfg->num_layers; l++)
        for (int d = 0; d < dirs_of(cfg); d++) {
            const char *sfx = d ? "_reverse" : "";
            int64_t in = l == 0 ? cfg->input_size : H * dirs_of(cfg);
            int64_t w_ih[2] = {GH, in}, w_hh[2] = {GH, H};
            char name[64];
            snprintf(name, sizeof name, "weight_ih_l%d%s", l, sfx);
            FILO_TRY(create(ps, prefix, name, 2, w_ih, k, FILO_PARAM_WEIGHT, &m->w_ih[l][d]));
            snprintf(name, sizeof name, "weight_hh_l%d%s", l, sfx);
            FILO_TRY(create(ps, prefix, name, 2, w_hh, k, FILO_PARAM_WEIGHT, &m->w_hh[l][d]));
            snprintf(name, sizeof name, "bias_ih_l%d%s", l, sfx);
            FILO_TRY(create(ps, prefix, name, 1, &GH, k, FILO_PARAM_BIAS, &m->b_ih[l][d]));
            snprintf(name, sizeof name, "bias_hh_l%d%s", l, sfx);
            FILO_TRY(create(ps, prefix, name, 1, &GH, k, FILO_PARAM_BIAS, &m->b_hh[l][d]));
        }
    return FILO_OK;
}

/* What one forward shares across layers and directions. */
typedef struct rnn_run {
    const filo_rnn *m;
    filo_dtype ct;        /* the matmuls' dtype: f32 or the autocast dtype */
    int64_t B, L, H;
    filo_tensor *lengths; /* i64 [B] on the device, or NULL */
    filo_var *mask;       /* f32 [B, L, 1]: 1 up to each sequence's length, or NULL */
} rnn_run;

/* Entry i of a [layers * directions, B, H] state as a [B, H] view, or a zero constant. */
static filo_status state_at(const rnn_run *r, filo_var *s0, int i, filo_var **out)
{
    if (!s0) {
        int64_t shape[2] = {r->B, r->H};
        filo_tensor *z;
        FILO_TRY(filo_tensor_zeros(filo_var_value(r->m->w_ih[0][0])->device, FILO_F32, 2, shape, &z));
        filo_status s = filo_var_new(z, 0, out);
        filo_tensor_free(z);
        return s;
    }
    filo_var *sl;
    FILO_TRY(filo_ag_slice(s0, 0, i, i + 1, 1, &sl));
    filo_status s = filo_ag_squeeze(sl, 0, out);
    filo_var_free(sl);
    return s;
}

/* One step t: xs [B, 1, G*H] (step t of the input projection), whh in the matmul dtype; replaces
 * *h (and *c) by the new state. */
static filo_status step(const rnn_run *r, int layer, int dir, filo_var *xs, filo_var *whh, int64_t t, filo_var **h,
                        filo_var **c)
{
    const filo_rnn *m = r->m;
    filo_var *xt = NULL, *hc = NULL, *hg = NULL, *hn = NULL, *cn = NULL;
    filo_status s = filo_ag_squeeze(xs, 1, &xt);
    if (s == FILO_OK)
        s = filo_nn_cast_to(*h, r->ct, &hc);
    if (s == FILO_OK)
        s = filo_ag_matmul(hc, whh, 0, 1, NULL, FILO_MATMUL_EPILOGUE_NONE, &hg);
    if (s == FILO_OK && m->cfg.kind == FILO_RNN_LSTM)
        s = filo_ag_lstm_cell(xt, hg, m->b_ih[layer][dir], m->b_hh[layer][dir], r->lengths ? *h : NULL, *c, r->lengths,
                              t, &hn, &cn);
    else if (s == FILO_OK)
        s = filo_ag_gru_cell(xt, hg, m->b_ih[layer][dir], m->b_hh[layer][dir], *h, r->lengths, t, &hn);
    filo_var_free(xt);
    filo_var_free(hc);
    filo_var_free(hg);
    if (s != FILO_OK)
        return s;
    filo_var_free(*h);
    *h = hn;
    if (cn) {
        filo_var_free(*c);
        *c = cn;
    }
    return FILO_OK;
}

/* One direction of one layer over the whole sequence. inp [B, L, in] in the matmul dtype; h and c
 * hold the initial state and receive the final one; *out gets [B, L, H] f32. */
static filo_status direction(const rnn_run *r, int layer, int dir, filo_var *inp, filo_var **h, filo_var **c,
                             filo_var **out)
{
    const filo_rnn *m = r->m;
    int64_t L = r->L;
    filo_var *wih = NULL, *whh = NULL, *xg = NULL, *seq = NULL;
    filo_var **steps = calloc((size_t)L, sizeof *steps);
    filo_var **xs = calloc((size_t)L, sizeof *xs);
    int64_t *ones = malloc(sizeof *ones * (size_t)L);
    if (!steps || !xs || !ones) {
        free(steps);
        free(xs);
        free(ones);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for %lld steps", (long long)L);
    }
    for (int64_t k = 0; k < L; k++)
        ones[k] = 1;
    filo_status s = filo_nn_cast_to(m->w_ih[layer][dir], r->ct, &wih);
    if (s == FILO_OK)
        s = filo_nn_cast_to(m->w_hh[layer][dir], r->ct, &whh);
    /* The input projection of every step at once, split into per-step views by one node: its
     * backward is one concat of the step gradients, where a slice per step would write a full
     * [B, L, G*H] gradient each (quadratic in L). */
    if (s == FILO_OK)
        s = filo_ag_matmul(inp, wih, 0, 1, NULL, FILO_MATMUL_EPILOGUE_NONE, &xg);
    if (s == FILO_OK)
        s = filo_ag_split(xg, 1, ones, (int)L, xs);
    for (int64_t k = 0; k < L && s == FILO_OK; k++) {
        int64_t t = dir ? L - 1 - k : k;
        s = step(r, layer, dir, xs[t], whh, t, h, c);
        if (s == FILO_OK)
            s = filo_ag_unsqueeze(*h, 1, &steps[t]);
    }
    if (s == FILO_OK)
        s = filo_ag_concat(steps, (int)L, 1, &seq);
    if (s == FILO_OK && r->mask)
        s = filo_ag_mul(seq, r->mask, out);
    else if (s == FILO_OK)
        *out = filo_var_retain(seq);
    for (int64_t k = 0; k < L; k++) {
        filo_var_free(steps[k]);
        filo_var_free(xs[k]);
    }
    free(steps);
    free(xs);
    free(ones);
    filo_var_free(seq);
    filo_var_free(xg);
    filo_var_free(wih);
    filo_var_free(whh);
    return s;
}

/* lengths (CPU, i32/i64 [B], values in [1, L]) as an i64 device tensor and the f32 output mask. */
static filo_status prepare_lengths(rnn_run *r, const filo_tensor *lengths, filo_device device)
{
    char a[DESC_LEN];
    if (lengths->device.type != FILO_DEVICE_CPU)
        return FILO_FAIL(FILO_ERR_DEVICE, "lengths %s must be on the CPU", filo_tensor_describe(lengths, a, sizeof a));
    if (lengths->dtype != FILO_I32 && lengths->dtype != FILO_I64)
        return FILO_FAIL(FILO_ERR_DTYPE, "lengths %s must be i32 or i64", filo_tensor_describe(lengths, a, sizeof a));
    if (lengths->ndim != 1 || lengths->shape[0] != r->B)
        return FILO_FAIL(FILO_ERR_SHAPE, "lengths %s must have shape [%lld] (the batch of x)",
                         filo_tensor_describe(lengths, a, sizeof a), (long long)r->B);
    int64_t *len = malloc(sizeof(int64_t) * (size_t)r->B);
    float *mask = malloc(sizeof(float) * (size_t)(r->B * r->L));
    if (!len || !mask) {
        free(len);
        free(mask);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for %lld lengths", (long long)r->B);
    }
    filo_status s = filo_tensor_to_host_as(lengths, FILO_I64, len, sizeof(int64_t) * (size_t)r->B);
    for (int64_t b = 0; b < r->B && s == FILO_OK; b++) {
        if (len[b] < 1 || len[b] > r->L)
            s = FILO_FAIL(FILO_ERR_INVALID_ARG, "lengths[%lld] = %lld is outside [1, %lld] (the sequence length of x)",
                          (long long)b, (long long)len[b], (long long)r->L);
        for (int64_t t = 0; t < r->L; t++)
            mask[b * r->L + t] = t < len[b] ? 1.0f : 0.0f;
    }
    filo_tensor *mt = NULL;
    int64_t mshape[3] = {r->B, r->L, 1};
    if (s == FILO_OK)
        s = filo_tensor_from_host(device, FILO_I64, 1, &r->B, len, &r->lengths);
    if (s == FILO_OK)
        s = filo_tensor_from_host(device, FILO_F32, 3, mshape, mask, &mt);
    if (s == FILO_OK)
        s = filo_var_new(mt, 0, &r->mask);
    filo_tensor_free(mt);
    free(len);
    free(mask);
    return s;
}

/* h0 / c0: NULL or f32 [layers * directions, B, H] on the parameters' device. */
static filo_status check_state(const rnn_run *r, const char *what, filo_var *s0, filo_device device)
{
    char a[DESC_LEN];
    if (!s0)
        return FILO_OK;
    const filo_tensor *t = filo_var_value(s0);
    int64_t n = (int64_t)r->m->cfg.num_layers * dirs_of(&r->m->cfg);
    if (t->ndim != 3 || t->shape[0] != n || t->shape[1] != r->B || t->shape[2] != r->H)
        return FILO_FAIL(FILO_ERR_SHAPE, "%s %s must have shape [%lld, %lld, %lld] (layers * directions, batch, hidden)",
                         what, filo_tensor_describe(t, a, sizeof a), (long long)n, (long long)r->B, (long long)r->H);
    if (t->dtype != FILO_F32)
        return FILO_FAIL(FILO_ERR_DTYPE, "%s %s must be f32 (the cell state dtype)", what,
                         filo_tensor_describe(t, a, sizeof a));
    if (!filo_device_equal(t->device, device))
        return FILO_FAIL(FILO_ERR_DEVICE, "%s %s is not on the parameters' device", what,
                         filo_tensor_describe(t, a, sizeof a));
    return FILO_OK;
}

static filo_status check_forward(const filo_rnn *m, const filo_nn_ctx *ctx, filo_var *x, filo_var *c0, rnn_run *r,
                                 filo_device *device)
{
    char a[DESC_LEN];
    if (!m || !ctx || !x)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, ctx and x must not be NULL");
    if (!m->w_ih[0][0])
        return FILO_FAIL(FILO_ERR_STATE, "the module has no parameters (call filo_rnn_init first)");
    FILO_TRY(filo_nn_ctx_check(ctx));
    const filo_tensor *xv = filo_var_value(x);
    *device = filo_var_value(m->w_ih[0][0])->device;
    if (xv->ndim != 3 || xv->shape[2] != m->cfg.input_size)
        return FILO_FAIL(FILO_ERR_SHAPE, "x %s must be [batch, length, %lld] (batch-first, input_size %lld)",
                         filo_tensor_describe(xv, a, sizeof a), (long long)m->cfg.input_size,
                         (long long)m->cfg.input_size);
    if (xv->shape[0] < 1 || xv->shape[1] < 1)
        return FILO_FAIL(FILO_ERR_SHAPE, "x %s must have at least one sequence and one step",
                         filo_tensor_describe(xv, a, sizeof a));
    if (xv->dtype != FILO_F32 && xv->dtype != FILO_F64 && xv->dtype != FILO_BF16 && xv->dtype != FILO_F16)
        return FILO_FAIL(FILO_ERR_DTYPE, "x %s must be a float tensor", filo_tensor_describe(xv, a, sizeof a));
    if (!filo_device_equal(xv->device, *device))
        return FILO_FAIL(FILO_ERR_DEVICE, "x %s is not on the parameters' device", filo_tensor_describe(xv, a, sizeof a));
    if (c0 && m->cfg.kind == FILO_RNN_GRU)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "c0 was given to a GRU (only an LSTM has a cell state)");
    if (ctx->training && m->cfg.dropout > 0 && m->cfg.num_layers > 1 && !ctx->gen)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "training with dropout %g needs a generator (ctx->gen is NULL)",
                         m->cfg.dropout);
    r->m = m;
    r->ct = ctx->autocast;
    r->B = xv->shape[0];
    r->L = xv->shape[1];
    r->H = m->cfg.hidden_size;
    return FILO_OK;
}

/* The final states [layers * directions, B, H] from n [B, H] variables. */
static filo_status stack_states(filo_var **st, int n, filo_var **out)
{
    filo_var *u[2 * FILO_RNN_MAX_LAYERS] = {NULL};
    filo_status s = FILO_OK;
    for (int i = 0; i < n && s == FILO_OK; i++)
        s = filo_ag_unsqueeze(st[i], 0, &u[i]);
    if (s == FILO_OK)
        s = filo_ag_concat(u, n, 0, out);
    for (int i = 0; i < n; i++)
        filo_var_free(u[i]);
    return s;
}

filo_status filo_rnn_forward(const filo_rnn *m, const filo_nn_ctx *ctx, filo_var *x, const filo_tensor *lengths,
                             filo_var *h0, filo_var *c0, filo_var **out, filo_var **h_n, filo_var **c_n)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "the output pointer out is NULL");
    rnn_run r;
    memset(&r, 0, sizeof r);
    filo_device device;
    FILO_TRY(check_forward(m, ctx, x, c0, &r, &device));
    FILO_TRY(check_state(&r, "h0", h0, device));
    FILO_TRY(check_state(&r, "c0", c0, device));
    int lstm = m->cfg.kind == FILO_RNN_LSTM, dirs = dirs_of(&m->cfg), layers = m->cfg.num_layers;
    int n_states = layers * dirs;
    filo_var *hs[2 * FILO_RNN_MAX_LAYERS] = {NULL}, *cs[2 * FILO_RNN_MAX_LAYERS] = {NULL};
    filo_var *inp = NULL, *layer_out = NULL;
    filo_status s = lengths ? prepare_lengths(&r, lengths, device) : FILO_OK;
    if (s == FILO_OK)
        s = filo_nn_cast_to(x, r.ct, &inp);
    for (int l = 0; l < layers && s == FILO_OK; l++) {
        filo_var *outs[2] = {NULL, NULL};
        for (int d = 0; d < dirs && s == FILO_OK; d++) {
            int i = l * dirs + d;
            s = state_at(&r, h0, i, &hs[i]);
            if (s == FILO_OK && lstm)
                s = state_at(&r, c0, i, &cs[i]);
            if (s == FILO_OK)
                s = direction(&r, l, d, inp, &hs[i], &cs[i], &outs[d]);
        }
        if (s == FILO_OK)
            s = dirs == 2 ? filo_ag_concat(outs, 2, 2, &layer_out) : (layer_out = filo_var_retain(outs[0]), FILO_OK);
        filo_var_free(outs[0]);
        filo_var_free(outs[1]);
        filo_var_free(inp);
        inp = NULL;
        if (s != FILO_OK || l == layers - 1)
            break;
        /* Dropout between layers, as PyTorch: not after the last. */
        filo_var *next = layer_out;
        layer_out = NULL;
        if (ctx->training && m->cfg.dropout > 0) {
            filo_var *dropped = NULL;
            s = filo_ag_dropout(next, m->cfg.dropout, ctx->gen, &dropped);
            filo_var_free(next);
            next = dropped;
        }
        if (s == FILO_OK)
            s = filo_nn_cast_to(next, r.ct, &inp);
        filo_var_free(next);
    }
    filo_var *o = NULL, *hn = NULL, *cn = NULL;
    if (s == FILO_OK)
        s = filo_nn_cast_to(layer_out, r.ct, &o);
    if (s == FILO_OK && h_n)
        s = stack_states(hs, n_states, &hn);
    if (s == FILO_OK && c_n && lstm)
        s = stack_states(cs, n_states, &cn);
    filo_var_free(layer_out);
    filo_var_free(inp);
    for (int i = 0; i < n_states; i++) {
        filo_var_free(hs[i]);
        filo_var_free(cs[i]);
    }
    filo_var_free(r.mask);
    filo_tensor_free(r.lengths);
    if (s != FILO_OK) {
        filo_var_free(o);
        filo_var_free(hn);
        filo_var_free(cn);
        return s;
    }
    *out = o;
    if (h_n)
        *h_n = hn;
    if (c_n)
        *c_n = cn;
    return FILO_OK;
}
