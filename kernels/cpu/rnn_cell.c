/* CPU fused LSTM / GRU cells, forward and backward: the reference for kernels/cuda/rnn_cell.cu.
 * Each (row, unit) runs the element math of kernels/rnn_cell_backend.h, in f32 for f32/bf16/f16
 * gates and in double for f64, exactly as the CUDA kernel does. Rows are spread over the CPU pool. */
#include "element.h"
#include "error.h"
#include "parallel.h"
#include "rnn_cell_backend.h"

static double load(const void *base, filo_dtype t, int64_t i)
{
    return filo_el_load_f((const char *)base + i * (int64_t)filo_el_size(t), t);
}

static void store(void *base, filo_dtype t, int64_t i, double v)
{
    filo_el_store_f((char *)base + i * (int64_t)filo_el_size(t), t, v);
}

/* Rounds to the math type: f32 unless the state is f64. */
static double to_math(const filo_rnn_cell_desc *d, double v) { return d->state_dtype == FILO_F64 ? v : (double)(float)v; }

/* The G pre-activations of unit j of row b: (xg + b_ih) into ax, (hg + b_hh) into ah, each sum
 * rounded to the math type as the kernel's f32 adds are. */
static void load_pre(const filo_rnn_cell_desc *d, int G, int64_t b, int64_t j, double *ax, double *ah)
{
    int64_t H = d->hidden;
    filo_dtype S = d->state_dtype;
    for (int k = 0; k < G; k++) {
        int64_t col = k * H + j;
        double x = to_math(d, load(d->xg, d->dtype, b * d->xg_ld + col));
        double h = to_math(d, load(d->hg, d->dtype, b * d->hg_ld + col));
        if (d->b_ih)
            x = to_math(d, x + load(d->b_ih, S, col));
        if (d->b_hh)
            h = to_math(d, h + load(d->b_hh, S, col));
        ax[k] = x;
        ah[k] = h;
    }
}

static void lstm_forward_unit(const filo_rnn_cell_desc *d, int64_t b, int64_t j)
{
    int64_t H = d->hidden, i = b * H + j;
    filo_dtype S = d->state_dtype;
    if (!filo_rnn_cell_active(d, b)) {
        store(d->h, S, i, load(d->h_prev, S, i));
        store(d->c, S, i, load(d->c_prev, S, i));
        for (int k = 0; k < 4; k++)
            store(d->saved, S, b * 4 * H + k * H + j, 0.0);
        return;
    }
    double ax[4], ah[4], act[4], c, h;
    load_pre(d, 4, b, j, ax, ah);
    double cp = load(d->c_prev, S, i);
    if (S == FILO_F64) {
        double a[4];
        for (int k = 0; k < 4; k++)
            a[k] = ax[k] + ah[k];
        filo_lstm_forward_d(a, cp, act, &c, &h);
    } else {
        float a[4], actf[4], cf, hf;
        for (int k = 0; k < 4; k++)
            a[k] = (float)ax[k] + (float)ah[k];
        filo_lstm_forward_f(a, (float)cp, actf, &cf, &hf);
        for (int k = 0; k < 4; k++)
            act[k] = actf[k];
        c = cf;
        h = hf;
    }
    store(d->h, S, i, h);
    store(d->c, S, i, c);
    for (int k = 0; k < 4; k++)
        store(d->saved, S, b * 4 * H + k * H + j, act[k]);
}

static void lstm_backward_unit(const filo_rnn_cell_desc *d, int64_t b, int64_t j)
{
    int64_t H = d->hidden, i = b * H + j;
    filo_dtype S = d->state_dtype;
    double dh = load(d->dh, S, i), dc = d->dc ? load(d->dc, S, i) : 0.0;
    if (!filo_rnn_cell_active(d, b)) {
        for (int k = 0; k < 4; k++)
            store(d->dxg, d->dtype, b * 4 * H + k * H + j, 0.0);
        if (d->dh_prev)
            store(d->dh_prev, S, i, dh);
        if (d->dc_prev)
            store(d->dc_prev, S, i, dc);
        return;
    }
    double act[4], da[4], dcp;
    for (int k = 0; k < 4; k++)
        act[k] = load(d->saved, S, b * 4 * H + k * H + j);
    double cp = load(d->c_prev, S, i), c = load(d->c, S, i);
    if (S == FILO_F64) {
        filo_lstm_backward_d(act, cp, c, dh, dc, da, &dcp);
    } else {
        float actf[4], daf[4], dcpf;
        for (int k = 0; k < 4; k++)
            actf[k] = (float)act[k];
        filo_lstm_backward_f(actf, (float)cp, (float)c, (float)dh, (float)dc, daf, &dcpf);
        for (int k = 0; k < 4; k++)
            da[k] = daf[k];
        dcp = dcpf;
    }
    for (int k = 0; k < 4; k++)
        store(d->dxg, d->dtype, b * 4 * H + k * H + j, da[k]);
    if (d->dh_prev)
        store(d->dh_prev, S, i, 0.0);
    if (d->dc_prev)
        store(d->dc_prev, S, i, dcp);
}

static void gru_forward_unit(const filo_rnn_cell_desc *d, int64_t b, int64_t j)
{
    int64_t H = d->hidden, i = b * H + j;
    filo_dtype S = d->state_dtype;
    double hp = load(d->h_prev, S, i);
    if (!filo_rnn_cell_active(d, b)) {
        store(d->h, S, i, hp);
        for (int k = 0; k < 4; k++)
            store(d->saved, S, b * 4 * H + k * H + j, 0.0);
        return;
    }
    double ax[3], ah[3], act[4], h;
    load_pre(d, 3, b, j, ax, ah);
    if (S == FILO_F64) {
        filo_gru_forward_d(ax, ah, hp, act, &h);
    } else {
        float axf[3], ahf[3], actf[4], hf;
        for (int k = 0; k < 3; k++) {
            axf[k] = (float)ax[k];
            ahf[k] = (float)ah[k];
        }
        filo_gru_forward_f(axf, ahf, (float)hp, actf, &hf);
        for (int k = 0; k < 4; k++)
            act[k] = actf[k];
        h = hf;
    }
    store(d->h, S, i, h);
    for (int k = 0; k < 4; k++)
        store(d->saved, S, b * 4 * H + k * H + j, act[k]);
}

static void gru_backward_unit(const filo_rnn_cell_desc *d, int64_t b, int64_t j)
{
    int64_t H = d->hidden, i = b * H + j;
    filo_dtype S = d->state_dtype;
    double dh = load(d->dh, S, i);
    if (!filo_rnn_cell_active(d, b)) {
        for (int k = 0; k < 3; k++) {
            store(d->dxg, d->dtype, b * 3 * H + k * H + j, 0.0);
            store(d->dhg, d->dtype, b * 3 * H + k * H + j, 0.0);
        }
        if (d->dh_prev)
            store(d->dh_prev, S, i, dh);
        return;
    }
    double act[4], dax[3], dah[3], dhp;
    for (int k = 0; k < 4; k++)
        act[k] = load(d->saved, S, b * 4 * H + k * H + j);
    double hp = load(d->h_prev, S, i);
    if (S == FILO_F64) {
        filo_gru_backward_d(act, hp, dh, dax, dah, &dhp);
    } else {
        float actf[4], daxf[3], dahf[3], dhpf;
        for (int k = 0; k < 4; k++)
            actf[k] = (float)act[k];
        filo_gru_backward_f(actf, (float)hp, (float)dh, daxf, dahf, &dhpf);
        for (int k = 0; k < 3; k++) {
            dax[k] = daxf[k];
            dah[k] = dahf[k];
        }
        dhp = dhpf;
    }
    for (int k = 0; k < 3; k++) {
        store(d->dxg, d->dtype, b * 3 * H + k * H + j, dax[k]);
        store(d->dhg, d->dtype, b * 3 * H + k * H + j, dah[k]);
    }
    if (d->dh_prev)
        store(d->dh_prev, S, i, dhp);
}

static void cell_rows(void *ctx, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    const filo_rnn_cell_desc *d = ctx;
    void (*unit)(const filo_rnn_cell_desc *, int64_t, int64_t) =
        d->gru ? (d->backward ? gru_backward_unit : gru_forward_unit)
               : (d->backward ? lstm_backward_unit : lstm_forward_unit);
    for (int64_t b = r0; b < r1; b++)
        for (int64_t j = 0; j < d->hidden; j++)
            unit(d, b, j);
}

filo_status filo_cpu_rnn_cell(const filo_rnn_cell_desc *d)
{
    int64_t per_row = d->hidden > 0 ? d->hidden : 1;
    filo_parallel_for(d->batch, per_row < 4096 ? 4096 / per_row : 1, cell_rows, (void *)d);
    return FILO_OK;
}
