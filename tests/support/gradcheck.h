/* Gradient checks for the differentiable ops (filo/ag.h).
 *
 * A case gives the inputs (shape, value range, whether each needs a gradient) and `fn`, which
 * applies the op to variables and returns one output variable. Both checks project the output
 * onto fixed random weights R, so every output element matters: L = sum(out * R), and the
 * backward starts from grad_root = R.
 *
 * gradcheck_fd: float64 on the CPU. Each input element is moved by +-h and the central
 * difference of L is compared with the analytic gradient:
 *   |analytic - numeric| <= atol + rtol * |numeric|   (defaults 1e-6 and 1e-5).
 * gradcheck_parity: the same function in `dtype` on every backend (cpu, cuda-emulated or a real
 * GPU); each backend's gradients are compared with the float64 CPU gradients of the same input
 * values (rtol/atol by dtype). New tensors are poisoned (FILO_TENSOR_POISON) during these runs,
 * so a backward that forgets to write an element fails.
 * Both assert through Criterion with the case name, backend, input and element. */
#ifndef FILO_GRADCHECK_H
#define FILO_GRADCHECK_H

#include "filo_test.h"

#define GRADCHECK_MAX_INPUTS 8

typedef struct gradcheck_input {
    int ndim;
    int64_t shape[FILO_MAX_DIMS];
    double lo, hi;          /* uniform range (values never 0); ignored when values != NULL */
    const double *values;   /* optional explicit values, row-major */
    int no_grad;            /* 1: a constant input (no gradient checked) */
} gradcheck_input;

typedef struct gradcheck_case {
    const char *name;
    int n_inputs;
    gradcheck_input inputs[GRADCHECK_MAX_INPUTS];
    filo_status (*fn)(void *ctx, filo_var *const *inputs, filo_var **out);
    void *ctx;
    double rtol, atol;  /* 0: defaults */
    double h;           /* 0: 1e-6 */
    uint64_t seed;
} gradcheck_case;

void gradcheck_fd(const gradcheck_case *c);
/* Returns the number of backends that ran. */
int gradcheck_parity(const gradcheck_case *c, filo_dtype dtype);

#endif
