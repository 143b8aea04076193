/* Internal: the fused LSTM / GRU cell kernels' C signature (kernels/cpu/rnn_cell.c,
 * kernels/cuda/rnn_cell.cu) and the element math both run verbatim, in f32 and in double
 * (valid C11 and CUDA C++). kernels/rnn_cell.c checks the arguments, makes the state tensors
 * contiguous and allocates the outputs before calling them. The equations are in
 * include/filo/rnn_cell.h. */
#ifndef FILO_KERNELS_RNN_CELL_BACKEND_H
#define FILO_KERNELS_RNN_CELL_BACKEND_H

#include <math.h>
#include <stdint.h>

#include "element.h"
#include "filo/dtype.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One descriptor for the four calls. Gate tensors (xg, hg, dxg, dhg) have `dtype`, rows `ld`
 * elements apart for xg and hg, G*H apart for dxg/dhg; every other tensor is contiguous in the
 * state dtype (f64 for f64 gates, else f32). */
typedef struct filo_rnn_cell_desc {
    int gru;              /* 0: LSTM (G = 4), 1: GRU (G = 3) */
    int backward;
    int64_t batch, hidden;
    filo_dtype dtype;     /* gates: xg, hg (forward), dxg, dhg (backward) */
    filo_dtype state_dtype;
    const void *lengths;  /* NULL, or [B] of lengths_dtype (i32/i64): row b takes the step when step < lengths[b] */
    filo_dtype lengths_dtype;
    int64_t step;
    /* forward */
    const void *xg, *hg;
    int64_t xg_ld, hg_ld;
    const void *b_ih, *b_hh; /* [G*H] or NULL */
    const void *h_prev;   /* [B, H]; NULL only for an LSTM without lengths */
    const void *c_prev;   /* LSTM: [B, H] */
    void *h, *c;          /* [B, H] (c: LSTM) */
    void *saved;          /* [B, 4H]: LSTM i, f, g, o; GRU r, z, n, b_n */
    /* backward (reads saved, c_prev, c (LSTM) or h_prev (GRU)) */
    const void *dh, *dc;  /* dc: NULL means 0 */
    void *dxg, *dhg;      /* LSTM: dxg only (the pre-activation gradient) */
    void *dh_prev, *dc_prev; /* NULL: not wanted */
} filo_rnn_cell_desc;

filo_status filo_cpu_rnn_cell(const filo_rnn_cell_desc *d);
filo_status filo_cuda_rnn_cell(const filo_rnn_cell_desc *d, void *stream);

/* Whether row b takes the step. */
FILO_HD int filo_rnn_cell_active(const filo_rnn_cell_desc *d, int64_t b)
{
    if (!d->lengths)
        return 1;
    int64_t len = d->lengths_dtype == FILO_I64 ? ((const int64_t *)d->lengths)[b] : ((const int32_t *)d->lengths)[b];
    return d->step < len;
}

/* The element math of one (row, unit), in type T with suffix SFX. Inputs are the summed
 * pre-activations; the LSTM backward recomputes tanh(c') from the saved c'. */
#define FILO_RNN_CELL_MATH(T, SFX, EXP, TANH)                                                          \
    FILO_HD T filo_rnn_sigmoid_##SFX(T x) { return (T)1 / ((T)1 + EXP(-x)); }                          \
                                                                                                       \
    /* a[4] = pre-activations i, f, g, o -> act[4], c', h'. */                                          \
    FILO_HD void filo_lstm_forward_##SFX(const T *a, T c_prev, T *act, T *c, T *h)                     \
    {                                                                                                  \
        act[0] = filo_rnn_sigmoid_##SFX(a[0]);                                                         \
        act[1] = filo_rnn_sigmoid_##SFX(a[1]);                                                         \
        act[2] = TANH(a[2]);                                                                           \
        act[3] = filo_rnn_sigmoid_##SFX(a[3]);                                                         \
        *c = act[1] * c_prev + act[0] * act[2];                                                        \
        *h = act[3] * TANH(*c);                                                                        \
    }                                                                                                  \
                                                                                                       \
    /* act[4] = i, f, g, o; c' and its gradient dc (from later steps), dh -> da[4], dc_prev. */        \
    FILO_HD void filo_lstm_backward_##SFX(const T *act, T c_prev, T c, T dh, T dc, T *da, T *dc_prev)  \
    {                                                                                                  \
        T tc = TANH(c);                                                                                \
        T dct = dc + dh * act[3] * ((T)1 - tc * tc);                                                   \
        da[0] = dct * act[2] * act[0] * ((T)1 - act[0]);                                               \
        da[1] = dct * c_prev * act[1] * ((T)1 - act[1]);                                               \
        da[2] = dct * act[0] * ((T)1 - act[2] * act[2]);                                               \
        da[3] = dh * tc * act[3] * ((T)1 - act[3]);                                                    \
        *dc_prev = dct * act[1];                                                                       \
    }                                                                                                  \
                                                                                                       \
    /* ax[3] = (xg + b_ih) r, z, n; ah[3] = (hg + b_hh) r, z, n -> act[4] = r, z, n, b_n and h'. */    \
    FILO_HD void filo_gru_forward_##SFX(const T *ax, const T *ah, T h_prev, T *act, T *h)              \
    {                                                                                                  \
        T r = filo_rnn_sigmoid_##SFX(ax[0] + ah[0]);                                                   \
        T z = filo_rnn_sigmoid_##SFX(ax[1] + ah[1]);                                                   \
        T n = TANH(ax[2] + r * ah[2]);                                                                 \
        act[0] = r;                                                                                    \
        act[1] = z;                                                                                    \
        act[2] = n;                                                                                    \
        act[3] = ah[2];                                                                                \
        *h = ((T)1 - z) * n + z * h_prev;                                                              \
    }                                                                                                  \
                                                                                                       \
    /* act[4] = r, z, n, b_n; dh -> dax[3] (xg), dah[3] (hg), the direct dh_prev. */                   \
    FILO_HD void filo_gru_backward_##SFX(const T *act, T h_prev, T dh, T *dax, T *dah, T *dh_prev)     \
    {                                                                                                  \
        T r = act[0], z = act[1], n = act[2];                                                          \
        T dn = dh * ((T)1 - z) * ((T)1 - n * n);                                                       \
        T dz = dh * (h_prev - n) * z * ((T)1 - z);                                                     \
        T dr = dn * act[3] * r * ((T)1 - r);                                                           \
        dax[0] = dah[0] = dr;                                                                          \
        dax[1] = dah[1] = dz;                                                                          \
        dax[2] = dn;                                                                                   \
        dah[2] = dn * r;                                                                               \
        *dh_prev = dh * z;                                                                             \
    }

FILO_RNN_CELL_MATH(float, f, expf, tanhf)
FILO_RNN_CELL_MATH(double, d, exp, tanh)

#ifdef __cplusplus
}
#endif
#endif
