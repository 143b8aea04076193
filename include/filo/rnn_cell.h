/* Fused LSTM and GRU cells: one time step of torch.nn.LSTM / nn.GRU after its two matmuls.
 *
 * The caller computes the input projection xg = x W_ih^T and the recurrent projection
 * hg = h W_hh^T (both [B, G*H], without biases); one pass then adds the biases, applies the gates'
 * nonlinearities and writes the new state, keeping what the backward needs. Gate order and
 * equations are PyTorch's (G = 4 for the LSTM: i, f, g, o; G = 3 for the GRU: r, z, n):
 *
 *   LSTM  a = xg + b_ih + hg + b_hh;  i = sig(a_i), f = sig(a_f), g = tanh(a_g), o = sig(a_o)
 *         c' = f * c + i * g,  h' = o * tanh(c')
 *   GRU   a = xg + b_ih;  b = hg + b_hh;  r = sig(a_r + b_r), z = sig(a_z + b_z)
 *         n = tanh(a_n + r * b_n),  h' = (1 - z) * n + z * h
 *
 * Packed sequences: lengths (NULL, or i32/i64 [B] on the cell's device) and step say which rows
 * take this step: row b does when step < lengths[b]. The other rows keep their state (h' = h,
 * c' = c) and pass their gradients straight through (dh_prev = dh, dc_prev = dc, zero gradients
 * for xg and hg). The kernels do not check the values of lengths (the layer does, on the host).
 *
 * dtypes: xg and hg are f32, f64, bf16 or f16 (one dtype); the "state dtype" S is f64 for f64 gates
 * and f32 otherwise: biases, h, c, the saved tensor, dh, dc and the state gradients are S, and the
 * math runs in S (bf16/f16 gates are read as f32). xg and hg may be row-strided views (their last
 * stride 1, e.g. one time step of a [B, L, G*H] projection); other layouts are copied.
 * Outputs are new contiguous tensors on the inputs' device, computed on its current stream. */
#ifndef FILO_RNN_CELL_H
#define FILO_RNN_CELL_H

#include <stdint.h>

#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* xg, hg [B, 4H]; b_ih, b_hh NULL or [4H]; c_prev [B, H]; h_prev [B, H], needed only with lengths
 * (NULL otherwise: it is not read). h, c: [B, H]. saved: [B, 4H], the activations i, f, g, o
 * (zeros on rows that skip the step). */
filo_status filo_lstm_cell_forward(const filo_tensor *xg, const filo_tensor *hg, const filo_tensor *b_ih,
                                   const filo_tensor *b_hh, const filo_tensor *h_prev, const filo_tensor *c_prev,
                                   const filo_tensor *lengths, int64_t step, filo_tensor **h, filo_tensor **c,
                                   filo_tensor **saved);

/* dh [B, H]; dc NULL (zero) or [B, H]; saved, c_prev, c (= the forward's c') as the forward gave
 * them. dgates [B, 4H] of gates_dtype (the forward's xg dtype): the gradient of the
 * pre-activations, which is both dxg and dhg (and, summed over rows, db_ih and db_hh).
 * dh_prev: NULL (not wanted) or receives the gradient of h_prev (dh on skipping rows, 0 on the
 * others: h reaches the gates only through hg). dc_prev: NULL or receives the gradient of c_prev. */
filo_status filo_lstm_cell_backward(const filo_tensor *dh, const filo_tensor *dc, const filo_tensor *saved,
                                    const filo_tensor *c_prev, const filo_tensor *c, const filo_tensor *lengths,
                                    int64_t step, filo_dtype gates_dtype, filo_tensor **dgates,
                                    filo_tensor **dh_prev, filo_tensor **dc_prev);

/* xg, hg [B, 3H]; b_ih, b_hh NULL or [3H]; h_prev [B, H]. h: [B, H]. saved: [B, 4H], the
 * activations r, z, n and b_n = (hg + b_hh)_n (zeros on rows that skip the step). */
filo_status filo_gru_cell_forward(const filo_tensor *xg, const filo_tensor *hg, const filo_tensor *b_ih,
                                  const filo_tensor *b_hh, const filo_tensor *h_prev, const filo_tensor *lengths,
                                  int64_t step, filo_tensor **h, filo_tensor **saved);

/* dh [B, H]; saved, h_prev as in the forward. dxg, dhg: [B, 3H] of gates_dtype (they differ in
 * the n block: dhg_n = dxg_n * r). dh_prev: NULL or receives the direct gradient of h_prev,
 * dh * z (dh on skipping rows); its path through hg is the matmul's. */
filo_status filo_gru_cell_backward(const filo_tensor *dh, const filo_tensor *saved, const filo_tensor *h_prev,
                                   const filo_tensor *lengths, int64_t step, filo_dtype gates_dtype,
                                   filo_tensor **dxg, filo_tensor **dhg, filo_tensor **dh_prev);

#ifdef __cplusplus
}
#endif
#endif
