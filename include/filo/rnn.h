/* Recurrent layers: LSTM and GRU (multi-layer, optionally bidirectional), batch-first, with
 * PyTorch's parameter names, shapes, gate order and equations, so torch.nn.LSTM / nn.GRU
 * weights load unchanged.
 *
 * Parameters of layer k under prefix, with suffix "" (forward) and "_reverse" (backward
 * direction): weight_ih_l{k}{suffix} [G*H, in_k], weight_hh_l{k}{suffix} [G*H, H],
 * bias_ih_l{k}{suffix} [G*H], bias_hh_l{k}{suffix} [G*H]; G = 4 (LSTM: gates i, f, g, o) or
 * 3 (GRU: r, z, n). in_0 = input_size, in_k = H * directions. All initialized U(-1/sqrt(H),
 * 1/sqrt(H)) as PyTorch does.
 *
 * LSTM:  i = sig(W_ii x + b_ii + W_hi h + b_hi), f = sig(...), g = tanh(...), o = sig(...)
 *        c' = f * c + i * g,  h' = o * tanh(c')
 * GRU:   r = sig(W_ir x + b_ir + W_hr h + b_hr), z = sig(...),
 *        n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h
 *
 * The input projection of all time steps is one matmul per layer and direction; each step then
 * does one [B, H] x [H, G*H] matmul and one fused gate op. Dropout (between layers, not after
 * the last, as PyTorch) applies when ctx->training. Under autocast the matmuls run in the
 * autocast dtype, `out` is in that dtype, and the cell state (h_n, c_n) stays f32.
 *
 * lengths: NULL (all sequences have length L) or an i32/i64 tensor [B] on the CPU with values in
 * [1, L]: packed-sequence semantics, as pack_padded_sequence: steps past a sequence's length
 * produce zeros in `out`, leave its state unchanged, and the reverse direction starts at the
 * sequence's last valid step. */
#ifndef FILO_RNN_H
#define FILO_RNN_H

#include <stdint.h>

#include "filo/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FILO_RNN_MAX_LAYERS 8

typedef enum filo_rnn_kind { FILO_RNN_LSTM = 0, FILO_RNN_GRU = 1 } filo_rnn_kind;

typedef struct filo_rnn_config {
    filo_rnn_kind kind;
    int64_t input_size, hidden_size;
    int num_layers;    /* 1..FILO_RNN_MAX_LAYERS */
    int bidirectional; /* BiLSTM / BiGRU: out has 2 * hidden_size features */
    double dropout;    /* between layers */
} filo_rnn_config;

typedef struct filo_rnn {
    filo_rnn_config cfg;
    /* [layer][direction] */
    filo_var *w_ih[FILO_RNN_MAX_LAYERS][2], *w_hh[FILO_RNN_MAX_LAYERS][2];
    filo_var *b_ih[FILO_RNN_MAX_LAYERS][2], *b_hh[FILO_RNN_MAX_LAYERS][2];
} filo_rnn;

filo_status filo_rnn_init(filo_rnn *m, filo_params *ps, const char *prefix, const filo_rnn_config *cfg);

/* x [B, L, input_size]. h0, c0: NULL (zeros) or [layers * directions, B, H] (c0 LSTM only).
 * out: [B, L, directions * H], the last layer's hidden states. h_n, c_n: NULL, or receive
 * [layers * directions, B, H] final states (c_n LSTM only; NULL for GRU). */
filo_status filo_rnn_forward(const filo_rnn *m, const filo_nn_ctx *ctx, filo_var *x, const filo_tensor *lengths,
                             filo_var *h0, filo_var *c0, filo_var **out, filo_var **h_n, filo_var **c_n);

#ifdef __cplusplus
}
#endif
#endif
