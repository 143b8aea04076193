/* Fused LSTM / GRU cells: argument checks, contiguous state tensors, output allocation and the
 * dispatch to kernels/cpu/rnn_cell.c or kernels/cuda/rnn_cell.cu by the device. */
#include "filo/rnn_cell.h"

#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "rnn_cell_backend.h"

#define DESC_LEN 200
#define MAX_OWNED 8

static filo_dtype state_dtype_of(filo_dtype gates) { return gates == FILO_F64 ? FILO_F64 : FILO_F32; }

static int is_gate_dtype(filo_dtype t) { return t == FILO_F32 || t == FILO_F64 || t == FILO_BF16 || t == FILO_F16; }

/* What one call checks against: the batch, hidden size, gate count, dtypes and device. */
typedef struct cell_shape {
    const char *op;
    int64_t B, H;
    int G;
    filo_dtype dtype, state;
    filo_device device;
} cell_shape;

/* Tensors one call made (contiguous copies, outputs), freed together on failure. */
typedef struct owned {
    filo_tensor *t[MAX_OWNED];
    int n;
} owned;

static void owned_free(owned *o)
{
    for (int i = 0; i < o->n; i++)
        filo_tensor_free(o->t[i]);
    o->n = 0;
}

static filo_tensor *owned_add(owned *o, filo_tensor *t)
{
    o->t[o->n++] = t;
    return t;
}

/* t must exist, be [rows, cols] (cols only for a 1-D tensor when rows < 0), of dtype dt and on
 * the call's device. */
static filo_status check_tensor(const cell_shape *c, const char *what, const filo_tensor *t, int64_t rows, int64_t cols,
                                filo_dtype dt)
{
    char a[DESC_LEN], want[64];
    if (!t)
        return filo_error_set(FILO_ERR_INVALID_ARG, c->op, "%s is NULL", what);
    int ok = rows < 0 ? (t->ndim == 1 && t->shape[0] == cols) : (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols);
    if (rows < 0)
        snprintf(want, sizeof want, "[%lld]", (long long)cols);
    else
        snprintf(want, sizeof want, "[%lld, %lld]", (long long)rows, (long long)cols);
    if (!ok)
        return filo_error_set(FILO_ERR_SHAPE, c->op, "%s %s must have shape %s (batch %lld, hidden %lld)", what,
                              filo_tensor_describe(t, a, sizeof a), want, (long long)c->B, (long long)c->H);
    if (t->dtype != dt)
        return filo_error_set(FILO_ERR_DTYPE, c->op, "%s %s must be %s", what, filo_tensor_describe(t, a, sizeof a),
                              filo_dtype_name(dt));
    if (!filo_device_equal(t->device, c->device))
        return filo_error_set(FILO_ERR_DEVICE, c->op, "%s %s is not on the cell's device", what,
                              filo_tensor_describe(t, a, sizeof a));
    return FILO_OK;
}

static filo_status check_lengths(const cell_shape *c, const filo_tensor *lengths, int64_t step)
{
    char a[DESC_LEN];
    if (step < 0)
        return filo_error_set(FILO_ERR_INVALID_ARG, c->op, "step must be >= 0, got %lld", (long long)step);
    if (!lengths)
        return FILO_OK;
    if (lengths->ndim != 1 || lengths->shape[0] != c->B)
        return filo_error_set(FILO_ERR_SHAPE, c->op, "lengths %s must have shape [%lld] (the batch)",
                              filo_tensor_describe(lengths, a, sizeof a), (long long)c->B);
    if (lengths->dtype != FILO_I32 && lengths->dtype != FILO_I64)
        return filo_error_set(FILO_ERR_DTYPE, c->op, "lengths %s must be i32 or i64",
                              filo_tensor_describe(lengths, a, sizeof a));
    if (!filo_device_equal(lengths->device, c->device))
        return filo_error_set(FILO_ERR_DEVICE, c->op, "lengths %s is not on the cell's device",
                              filo_tensor_describe(lengths, a, sizeof a));
    return FILO_OK;
}

/* The shape of a forward call from its gates and its state tensor [B, H]. */
static filo_status forward_shape(cell_shape *c, const char *op, int G, const filo_tensor *xg, const filo_tensor *hg,
                                 const filo_tensor *state, const char *state_name)
{
    char a[DESC_LEN], b[DESC_LEN];
    memset(c, 0, sizeof *c);
    c->op = op;
    c->G = G;
    if (!xg || !hg)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "xg and hg must not be NULL");
    if (!state)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", state_name);
    if (!is_gate_dtype(xg->dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "xg %s must be f32, f64, bf16 or f16", filo_tensor_describe(xg, a, sizeof a));
    if (state->ndim != 2)
        return filo_error_set(FILO_ERR_SHAPE, op, "%s %s must be [batch, hidden]", state_name,
                              filo_tensor_describe(state, a, sizeof a));
    c->B = state->shape[0];
    c->H = state->shape[1];
    c->dtype = xg->dtype;
    c->state = state_dtype_of(xg->dtype);
    c->device = xg->device;
    if (xg->ndim != 2 || xg->shape[0] != c->B || xg->shape[1] != G * c->H)
        return filo_error_set(FILO_ERR_SHAPE, op, "xg %s must have shape [%lld, %lld] (%d gates of hidden %lld, from %s %s)",
                              filo_tensor_describe(xg, a, sizeof a), (long long)c->B, (long long)(G * c->H), G,
                              (long long)c->H, state_name, filo_tensor_describe(state, b, sizeof b));
    return check_tensor(c, "hg", hg, c->B, G * c->H, c->dtype);
}

/* xg / hg as the kernel reads them: rows with unit stride inside, else a contiguous copy. */
static filo_status gate_rows(owned *o, const filo_tensor *t, const void **data, int64_t *ld)
{
    if (t->strides[1] == 1 && t->strides[0] >= t->shape[1]) {
        *data = filo_tensor_data(t);
        *ld = t->strides[0];
        return FILO_OK;
    }
    filo_tensor *c;
    FILO_TRY(filo_tensor_contiguous(t, &c));
    owned_add(o, c);
    *data = filo_tensor_data(c);
    *ld = t->shape[1];
    return FILO_OK;
}

static filo_status contig(owned *o, const filo_tensor *t, const void **data)
{
    *data = NULL;
    if (!t)
        return FILO_OK;
    filo_tensor *c;
    FILO_TRY(filo_tensor_contiguous(t, &c));
    owned_add(o, c);
    *data = filo_tensor_data(c);
    return FILO_OK;
}

static filo_status new_out(owned *o, const cell_shape *c, filo_dtype dt, int64_t cols, void **data)
{
    int64_t shape[2] = {c->B, cols};
    filo_tensor *t;
    FILO_TRY(filo_tensor_empty(c->device, dt, 2, shape, &t));
    owned_add(o, t);
    *data = filo_tensor_data(t);
    return FILO_OK;
}

static filo_status run(const cell_shape *c, filo_rnn_cell_desc *d)
{
    d->batch = c->B;
    d->hidden = c->H;
    d->dtype = d->backward ? d->dtype : c->dtype;
    d->state_dtype = c->state;
    if (c->device.type != FILO_DEVICE_CUDA)
        return filo_cpu_rnn_cell(d);
    void *stream = NULL;
    FILO_TRY(filo_stream_current_native(c->device, &stream));
    return FILO_CUDA_CALL(filo_cuda_rnn_cell(d, stream));
}

/* Inputs after the contiguous copies (kept in `in`) and outputs (the last n_out of `out`). */
static filo_status finish(const char *op, filo_status st, owned *in, owned *out, filo_tensor **const *dst, int n)
{
    owned_free(in);
    if (st != FILO_OK) {
        owned_free(out);
        return filo_error_wrap(st, op);
    }
    for (int i = 0, k = 0; i < n; i++)
        if (dst[i])
            *dst[i] = out->t[k++];
    return FILO_OK;
}

static filo_status forward_common(const cell_shape *c, filo_rnn_cell_desc *d, owned *in, const filo_tensor *xg,
                                  const filo_tensor *hg, const filo_tensor *b_ih, const filo_tensor *b_hh,
                                  const filo_tensor *lengths)
{
    if (b_ih)
        FILO_TRY(check_tensor(c, "b_ih", b_ih, -1, c->G * c->H, c->state));
    if (b_hh)
        FILO_TRY(check_tensor(c, "b_hh", b_hh, -1, c->G * c->H, c->state));
    FILO_TRY(gate_rows(in, xg, &d->xg, &d->xg_ld));
    FILO_TRY(gate_rows(in, hg, &d->hg, &d->hg_ld));
    FILO_TRY(contig(in, b_ih, &d->b_ih));
    FILO_TRY(contig(in, b_hh, &d->b_hh));
    FILO_TRY(contig(in, lengths, &d->lengths));
    d->lengths_dtype = lengths ? lengths->dtype : FILO_I64;
    return FILO_OK;
}

filo_status filo_lstm_cell_forward(const filo_tensor *xg, const filo_tensor *hg, const filo_tensor *b_ih,
                                   const filo_tensor *b_hh, const filo_tensor *h_prev, const filo_tensor *c_prev,
                                   const filo_tensor *lengths, int64_t step, filo_tensor **h, filo_tensor **c,
                                   filo_tensor **saved)
{
    const char *op = __func__;
    cell_shape cs;
    FILO_TRY(forward_shape(&cs, op, 4, xg, hg, c_prev, "c_prev"));
    FILO_TRY(check_tensor(&cs, "c_prev", c_prev, cs.B, cs.H, cs.state));
    FILO_TRY(check_lengths(&cs, lengths, step));
    if (lengths && !h_prev)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "h_prev is needed with lengths (rows past their length keep it)");
    if (h_prev && lengths)
        FILO_TRY(check_tensor(&cs, "h_prev", h_prev, cs.B, cs.H, cs.state));
    if (!h || !c || !saved)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (h, c, saved) is NULL");
    filo_rnn_cell_desc d;
    memset(&d, 0, sizeof d);
    d.step = step;
    owned in = {{NULL}, 0}, out = {{NULL}, 0};
    filo_status st = forward_common(&cs, &d, &in, xg, hg, b_ih, b_hh, lengths);
    if (st == FILO_OK)
        st = contig(&in, lengths ? h_prev : NULL, &d.h_prev);
    if (st == FILO_OK)
        st = contig(&in, c_prev, &d.c_prev);
    if (st == FILO_OK)
        st = new_out(&out, &cs, cs.state, cs.H, &d.h);
    if (st == FILO_OK)
        st = new_out(&out, &cs, cs.state, cs.H, &d.c);
    if (st == FILO_OK)
        st = new_out(&out, &cs, cs.state, 4 * cs.H, &d.saved);
    if (st == FILO_OK)
        st = run(&cs, &d);
    filo_tensor **const dst[3] = {h, c, saved};
    return finish(op, st, &in, &out, dst, 3);
}

filo_status filo_gru_cell_forward(const filo_tensor *xg, const filo_tensor *hg, const filo_tensor *b_ih,
                                  const filo_tensor *b_hh, const filo_tensor *h_prev, const filo_tensor *lengths,
                                  int64_t step, filo_tensor **h, filo_tensor **saved)
{
    const char *op = __func__;
    cell_shape cs;
    FILO_TRY(forward_shape(&cs, op, 3, xg, hg, h_prev, "h_prev"));
    FILO_TRY(check_tensor(&cs, "h_prev", h_prev, cs.B, cs.H, cs.state));
    FILO_TRY(check_lengths(&cs, lengths, step));
    if (!h || !saved)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (h, saved) is NULL");
    filo_rnn_cell_desc d;
    memset(&d, 0, sizeof d);
    d.gru = 1;
    d.step = step;
    owned in = {{NULL}, 0}, out = {{NULL}, 0};
    filo_status st = forward_common(&cs, &d, &in, xg, hg, b_ih, b_hh, lengths);
    if (st == FILO_OK)
        st = contig(&in, h_prev, &d.h_prev);
    if (st == FILO_OK)
        st = new_out(&out, &cs, cs.state, cs.H, &d.h);
    if (st == FILO_OK)
        st = new_out(&out, &cs, cs.state, 4 * cs.H, &d.saved);
    if (st == FILO_OK)
        st = run(&cs, &d);
    filo_tensor **const dst[2] = {h, saved};
    return finish(op, st, &in, &out, dst, 2);
}

/* The shape of a backward call from dh [B, H]; saved must be [B, 4H] of dh's dtype. */
static filo_status backward_shape(cell_shape *c, const char *op, int G, const filo_tensor *dh, const filo_tensor *saved,
                                  filo_dtype gates_dtype)
{
    char a[DESC_LEN];
    memset(c, 0, sizeof *c);
    c->op = op;
    c->G = G;
    if (!dh)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dh is NULL");
    if (!is_gate_dtype(gates_dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "gates_dtype must be f32, f64, bf16 or f16, got %s",
                              filo_dtype_name(gates_dtype));
    if (dh->ndim != 2)
        return filo_error_set(FILO_ERR_SHAPE, op, "dh %s must be [batch, hidden]", filo_tensor_describe(dh, a, sizeof a));
    c->B = dh->shape[0];
    c->H = dh->shape[1];
    c->dtype = gates_dtype;
    c->state = state_dtype_of(gates_dtype);
    c->device = dh->device;
    FILO_TRY(check_tensor(c, "dh", dh, c->B, c->H, c->state));
    return check_tensor(c, "saved", saved, c->B, 4 * c->H, c->state);
}

filo_status filo_lstm_cell_backward(const filo_tensor *dh, const filo_tensor *dc, const filo_tensor *saved,
                                    const filo_tensor *c_prev, const filo_tensor *c, const filo_tensor *lengths,
                                    int64_t step, filo_dtype gates_dtype, filo_tensor **dgates,
                                    filo_tensor **dh_prev, filo_tensor **dc_prev)
{
    const char *op = __func__;
    cell_shape cs;
    FILO_TRY(backward_shape(&cs, op, 4, dh, saved, gates_dtype));
    if (dc)
        FILO_TRY(check_tensor(&cs, "dc", dc, cs.B, cs.H, cs.state));
    FILO_TRY(check_tensor(&cs, "c_prev", c_prev, cs.B, cs.H, cs.state));
    FILO_TRY(check_tensor(&cs, "c", c, cs.B, cs.H, cs.state));
    FILO_TRY(check_lengths(&cs, lengths, step));
    if (!dgates)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "the output pointer dgates is NULL");
    filo_rnn_cell_desc d;
    memset(&d, 0, sizeof d);
    d.backward = 1;
    d.dtype = gates_dtype;
    d.step = step;
    const void *saved_data = NULL, *c_data = NULL;
    owned in = {{NULL}, 0}, out = {{NULL}, 0};
    filo_status st = contig(&in, dh, &d.dh);
    if (st == FILO_OK)
        st = contig(&in, dc, &d.dc);
    if (st == FILO_OK)
        st = contig(&in, saved, &saved_data);
    if (st == FILO_OK)
        st = contig(&in, c_prev, &d.c_prev);
    if (st == FILO_OK)
        st = contig(&in, c, &c_data);
    /* The kernel reads these through the forward's output fields. */
    d.saved = (void *)saved_data;
    d.c = (void *)c_data;
    if (st == FILO_OK)
        st = contig(&in, lengths, &d.lengths);
    d.lengths_dtype = lengths ? lengths->dtype : FILO_I64;
    if (st == FILO_OK)
        st = new_out(&out, &cs, gates_dtype, 4 * cs.H, &d.dxg);
    if (st == FILO_OK && dh_prev)
        st = new_out(&out, &cs, cs.state, cs.H, &d.dh_prev);
    if (st == FILO_OK && dc_prev)
        st = new_out(&out, &cs, cs.state, cs.H, &d.dc_prev);
    if (st == FILO_OK)
        st = run(&cs, &d);
    filo_tensor **const dst[3] = {dgates, dh_prev, dc_prev};
    return finish(op, st, &in, &out, dst, 3);
}

filo_status filo_gru_cell_backward(const filo_tensor *dh, const filo_tensor *saved, const filo_tensor *h_prev,
                                   const filo_tensor *lengths, int64_t step, filo_dtype gates_dtype,
                                   filo_tensor **dxg, filo_tensor **dhg, filo_tensor **dh_prev)
{
    const char *op = __func__;
    cell_shape cs;
    FILO_TRY(backward_shape(&cs, op, 3, dh, saved, gates_dtype));
    FILO_TRY(check_tensor(&cs, "h_prev", h_prev, cs.B, cs.H, cs.state));
    FILO_TRY(check_lengths(&cs, lengths, step));
    if (!dxg || !dhg)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (dxg, dhg) is NULL");
    filo_rnn_cell_desc d;
    memset(&d, 0, sizeof d);
    d.gru = 1;
    d.backward = 1;
    d.dtype = gates_dtype;
    d.step = step;
    const void *saved_data = NULL;
    owned in = {{NULL}, 0}, out = {{NULL}, 0};
    filo_status st = contig(&in, dh, &d.dh);
    if (st == FILO_OK)
        st = contig(&in, saved, &saved_data);
    d.saved = (void *)saved_data;
    if (st == FILO_OK)
        st = contig(&in, h_prev, &d.h_prev);
    if (st == FILO_OK)
        st = contig(&in, lengths, &d.lengths);
    d.lengths_dtype = lengths ? lengths->dtype : FILO_I64;
    if (st == FILO_OK)
        st = new_out(&out, &cs, gates_dtype, 3 * cs.H, &d.dxg);
    if (st == FILO_OK)
        st = new_out(&out, &cs, gates_dtype, 3 * cs.H, &d.dhg);
    if (st == FILO_OK && dh_prev)
        st = new_out(&out, &cs, cs.state, cs.H, &d.dh_prev);
    if (st == FILO_OK)
        st = run(&cs, &d);
    filo_tensor **const dst[3] = {dxg, dhg, dh_prev};
    return finish(op, st, &in, &out, dst, 3);
}
