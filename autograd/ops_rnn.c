/* Differentiable fused LSTM and GRU cells over the kernels of filo/rnn_cell.h. The biases'
 * gradients are the row sums of the gate gradients (in the gates' dtype, then cast to the bias's). */
#include "error.h"
#include "filo/ag.h"
#include "filo/layout.h"
#include "filo/reduce.h"
#include "filo/rnn_cell.h"
#include "node.h"

/* The nodes' inputs. */
enum { IN_XG, IN_HG, IN_B_IH, IN_B_HH, IN_H_PREV, IN_C_PREV };
/* What the forwards saved, in this order: the activations, the state before (LSTM: c_prev;
 * GRU: h_prev), the LSTM's c', then lengths when given. */
enum { SAVED_ACT, SAVED_STATE, SAVED_C, SAVED_LENGTHS };
enum { GRU_SAVED_LENGTHS = SAVED_C };

typedef struct cell_ctx {
    int64_t step;
    filo_dtype gates_dtype;
    int lengths; /* whether SAVED_LENGTHS exists */
} cell_ctx;

/* The gradient of a bias [G*H] from the gate gradient g [B, G*H]. */
static filo_status bias_grad(const filo_tensor *g, filo_dtype bias_dtype, filo_tensor **out)
{
    filo_tensor *s;
    FILO_TRY(filo_reduce(FILO_REDUCE_SUM, g, 0, 0, &s));
    if (s->dtype == bias_dtype) {
        *out = s;
        return FILO_OK;
    }
    filo_status st = filo_cast(s, bias_dtype, out);
    filo_tensor_free(s);
    return st;
}

/* Fills the gradients of xg, hg and the biases from dxg and dhg (which may be the same tensor). */
static filo_status gate_grads(filo_node *n, const filo_tensor *dxg, const filo_tensor *dhg, filo_dtype bias_dtype,
                              filo_tensor **grad_in)
{
    if (filo_node_needs_grad(n, IN_XG))
        FILO_TRY(filo_tensor_alias(dxg, &grad_in[IN_XG]));
    if (filo_node_needs_grad(n, IN_HG))
        FILO_TRY(filo_tensor_alias(dhg, &grad_in[IN_HG]));
    if (filo_node_needs_grad(n, IN_B_IH))
        FILO_TRY(bias_grad(dxg, bias_dtype, &grad_in[IN_B_IH]));
    if (filo_node_needs_grad(n, IN_B_HH)) {
        if (dxg == dhg && grad_in[IN_B_IH])
            return filo_tensor_alias(grad_in[IN_B_IH], &grad_in[IN_B_HH]);
        FILO_TRY(bias_grad(dhg, bias_dtype, &grad_in[IN_B_HH]));
    }
    return FILO_OK;
}

static filo_dtype state_dtype(filo_dtype gates) { return gates == FILO_F64 ? FILO_F64 : FILO_F32; }

static filo_status lstm_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const cell_ctx *c = n->ctx;
    const filo_tensor *lengths = c->lengths ? filo_node_saved(n, SAVED_LENGTHS) : NULL;
    filo_tensor *dg = NULL, *dhp = NULL, *dcp = NULL;
    int want_h = filo_node_needs_grad(n, IN_H_PREV), want_c = filo_node_needs_grad(n, IN_C_PREV);
    filo_status s = filo_lstm_cell_backward(grad_out[0], grad_out[1], filo_node_saved(n, SAVED_ACT),
                                            filo_node_saved(n, SAVED_STATE), filo_node_saved(n, SAVED_C), lengths,
                                            c->step, c->gates_dtype, &dg, want_h ? &dhp : NULL, want_c ? &dcp : NULL);
    if (s == FILO_OK)
        s = gate_grads(n, dg, dg, state_dtype(c->gates_dtype), grad_in);
    filo_tensor_free(dg);
    grad_in[IN_H_PREV] = dhp;
    grad_in[IN_C_PREV] = dcp;
    return s;
}

static filo_status gru_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const cell_ctx *c = n->ctx;
    const filo_tensor *lengths = c->lengths ? filo_node_saved(n, GRU_SAVED_LENGTHS) : NULL;
    filo_tensor *dxg = NULL, *dhg = NULL, *dhp = NULL;
    filo_status s = filo_gru_cell_backward(grad_out[0], filo_node_saved(n, SAVED_ACT), filo_node_saved(n, SAVED_STATE),
                                           lengths, c->step, c->gates_dtype, &dxg, &dhg,
                                           filo_node_needs_grad(n, IN_H_PREV) ? &dhp : NULL);
    if (s == FILO_OK)
        s = gate_grads(n, dxg, dhg, state_dtype(c->gates_dtype), grad_in);
    filo_tensor_free(dxg);
    filo_tensor_free(dhg);
    grad_in[IN_H_PREV] = dhp;
    return s;
}

static const filo_tensor *value_or_null(filo_var *v) { return v ? filo_var_value(v) : NULL; }

filo_status filo_ag_lstm_cell(filo_var *xg, filo_var *hg, filo_var *b_ih, filo_var *b_hh, filo_var *h_prev,
                              filo_var *c_prev, const filo_tensor *lengths, int64_t step, filo_var **h, filo_var **c)
{
    if (!xg || !hg || !c_prev || !h || !c)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "xg, hg, c_prev, h and c must not be NULL");
    filo_tensor *outs[2] = {NULL, NULL}, *act = NULL;
    const filo_tensor *hp = lengths ? value_or_null(h_prev) : NULL;
    FILO_TRY(filo_lstm_cell_forward(filo_var_value(xg), filo_var_value(hg), value_or_null(b_ih), value_or_null(b_hh),
                                    hp, filo_var_value(c_prev), lengths, step, &outs[0], &outs[1], &act));
    /* Without lengths h_prev is not read, so it gets no gradient. */
    filo_var *in[6] = {xg, hg, b_ih, b_hh, lengths ? h_prev : NULL, c_prev};
    filo_node *n;
    filo_status s = filo_node_begin("lstm_cell", lstm_backward, 6, in, 2, sizeof(cell_ctx), &n);
    if (s == FILO_OK && n) {
        cell_ctx *cc = n->ctx;
        cc->step = step;
        cc->gates_dtype = filo_var_value(xg)->dtype;
        cc->lengths = lengths != NULL;
        s = filo_node_save(n, act);
        if (s == FILO_OK)
            s = filo_node_save(n, filo_var_value(c_prev));
        if (s == FILO_OK)
            s = filo_node_save(n, outs[1]);
        if (s == FILO_OK && lengths)
            s = filo_node_save(n, lengths);
    }
    filo_tensor_free(act);
    filo_var *res[2] = {NULL, NULL};
    s = filo_node_finish(n, s, 2, outs, res);
    if (s == FILO_OK) {
        *h = res[0];
        *c = res[1];
    }
    return s;
}

filo_status filo_ag_gru_cell(filo_var *xg, filo_var *hg, filo_var *b_ih, filo_var *b_hh, filo_var *h_prev,
                             const filo_tensor *lengths, int64_t step, filo_var **h)
{
    if (!xg || !hg || !h_prev || !h)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "xg, hg, h_prev and h must not be NULL");
    filo_tensor *out = NULL, *act = NULL;
    FILO_TRY(filo_gru_cell_forward(filo_var_value(xg), filo_var_value(hg), value_or_null(b_ih), value_or_null(b_hh),
                                   filo_var_value(h_prev), lengths, step, &out, &act));
    filo_var *in[5] = {xg, hg, b_ih, b_hh, h_prev};
    filo_node *n;
    filo_status s = filo_node_begin("gru_cell", gru_backward, 5, in, 1, sizeof(cell_ctx), &n);
    if (s == FILO_OK && n) {
        cell_ctx *cc = n->ctx;
        cc->step = step;
        cc->gates_dtype = filo_var_value(xg)->dtype;
        cc->lengths = lengths != NULL;
        s = filo_node_save(n, act);
        if (s == FILO_OK)
            s = filo_node_save(n, filo_var_value(h_prev));
        if (s == FILO_OK && lengths)
            s = filo_node_save(n, lengths);
    }
    filo_tensor_free(act);
    return filo_node_finish(n, s, 1, &out, h);
}
