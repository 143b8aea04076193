/* Internal: the dropout kernels' C signatures (kernels/cpu/dropout.c, kernels/cuda/dropout.cu).
 * One transform serves the dropout forward and backward and the fused bias + dropout + residual
 * forward (kernels/bias_act.c), and its no-bias backward:
 *   y[i] = residual[i] + mask(i) * scale * (x[i] + bias[i % cols])
 * with the optional terms left out when their pointer is NULL. The arithmetic is in f32 (double
 * for f64) in this order: h = x + bias, h * scale (rounded), + residual, one rounding to dtype;
 * both backends do exactly these operations, so their outputs are bitwise equal. */
#ifndef FILO_KERNELS_DROPOUT_BACKEND_H
#define FILO_KERNELS_DROPOUT_BACKEND_H

#include <stdint.h>

#include "filo/dropout.h"
#include "filo/dtype.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_dropout_mode {
    FILO_DROPOUT_KEEP_ALL = 0, /* p == 0: mask 1, scale 1 */
    FILO_DROPOUT_DROP_ALL = 1, /* p == 1: mask 0 */
    FILO_DROPOUT_MASK = 2,     /* 0 < p < 1: the Philox rule */
} filo_dropout_mode;

/* All pointers address contiguous data. */
typedef struct filo_dropout_desc {
    int64_t n;              /* elements */
    int64_t cols;           /* bias length (x's last dim); used only when bias != NULL */
    filo_dtype dtype;       /* x, residual, y */
    filo_dtype bias_dtype;  /* dtype, or f32 when dtype is bf16/f16 */
    filo_dropout_mode mode;
    uint64_t seed, offset;  /* element i uses Philox block offset + i / 4, lane i % 4 */
    uint32_t threshold;     /* filo_dropout_threshold(p) */
    double scale;           /* 1 / (1 - p): used as (float)scale unless dtype is f64 */
    const void *x;
    const void *bias;       /* NULL: none */
    const void *residual;   /* NULL: none */
    void *y;
} filo_dropout_desc;

filo_status filo_cpu_dropout_apply(const filo_dropout_desc *d);
filo_status filo_cuda_dropout_apply(const filo_dropout_desc *d, void *stream);

/* ---- host helpers of kernels/dropout.c, shared with kernels/bias_act.c ---- */

/* p in [0, 1] and a generator when p > 0; `op` names the caller in the message. */
filo_status filo_dropout_check_p(const char *op, double p, const filo_generator *gen);
/* A non-NULL state with p in [0, 1] and numel >= 0 (as a forward fills it). */
filo_status filo_dropout_check_state(const char *op, const filo_dropout_state *state);
/* The state a forward over n elements records, from gen (NULL only when p == 0). Does not
 * advance gen: the caller does (filo_generator_advance) once its call has succeeded. */
filo_dropout_state filo_dropout_state_make(const filo_generator *gen, double p, int64_t n);
/* mode, seed, offset, threshold and scale of a desc for dtype from a state. */
void filo_dropout_desc_set_mask(filo_dropout_desc *d, const filo_dropout_state *state, filo_dtype dtype);
/* y = new contiguous tensor of x's shape: residual + mask * scale * (x + bias) (kernels'
 * transform above), computed on x's device. bias/residual may be NULL; checked by the caller. */
filo_status filo_dropout_apply_tensors(const char *op, const filo_tensor *x, const filo_tensor *bias,
                                       const filo_tensor *residual, const filo_dropout_state *state,
                                       filo_tensor **y);

#ifdef __cplusplus
}
#endif
#endif
