/* Dropout, forward and backward, with a mask that is never stored.
 *
 * filo_dropout zeroes each element of x with probability p and scales the kept ones by
 * 1 / (1 - p) (the scale is computed in f32 for f32, bf16 and f16, in double for f64; the
 * product is rounded once to x's dtype). The keep decision of element i (x's row-major order) is
 * THE dropout rule of filo (runtime/element.h): Philox4x32-10 block (offset + i / 4) under key
 * seed, lane i % 4, kept when that 32-bit output is >= round(p * 2^32). The CPU and CUDA give
 * bitwise the same mask and the same values for the same (seed, offset), whatever the launch.
 * A dropped element is set to 0 (selected, not multiplied: a NaN or inf there gives 0).
 *
 * The generator supplies (seed, offset) and is advanced past the numel(x) outputs used
 * (filo_generator_advance); the state records them, with p and numel(x), so the backward
 * regenerates the mask: dx = dy * mask / (1 - p), the same transform applied to dy.
 *
 * p == 0: y is a copy of x, gen may be NULL and is not advanced. p == 1: y is all zeros (gen is
 * still required and advanced, so a sequence of calls uses the same offsets whatever p is).
 * p outside [0, 1] (or NaN) is an error.
 *
 * dtypes: f32, f64, bf16, f16. x may be any strided view; outputs are new contiguous tensors on
 * x's device, owned by the caller. Non-blocking on the device's current stream. */
#ifndef FILO_DROPOUT_H
#define FILO_DROPOUT_H

#include <stdint.h>

#include "filo/rng.h"
#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the backward needs to regenerate a mask; filled by the forward, plain data. */
typedef struct filo_dropout_state {
    uint64_t seed;
    uint64_t offset; /* first Philox block (the generator's offset before the call) */
    double p;
    int64_t numel;   /* elements the mask covers: the backward checks dy against it */
} filo_dropout_state;

/* out receives dropout(x); state (non-NULL) receives (seed, offset, p, numel). */
filo_status filo_dropout(const filo_tensor *x, double p, filo_generator *gen, filo_tensor **out,
                         filo_dropout_state *state);

/* dx = dy * mask / (1 - p) with the mask of `state`. dy has the forward's numel (any shape with
 * that many elements, any dtype the forward accepts). */
filo_status filo_dropout_backward(const filo_tensor *dy, const filo_dropout_state *state, filo_tensor **dx);

#ifdef __cplusplus
}
#endif
#endif
