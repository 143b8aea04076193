/* The parity helper: runs an op on every backend of the build and compares each output with the
 * CPU's output and with a float64 reference, on random non-zero inputs, with outputs poisoned.
 *
 * A test describes the inputs (dtype, shape, value range), gives `run` (calls the op on tensors
 * that live on some device and returns its outputs) and optionally `reference` (computes the
 * expected outputs in double from the inputs' exact values; when NULL, `run` on float64 copies
 * of the inputs on the CPU is the reference). Every output is compared in double with
 *   |got - want| <= atol + rtol * |want|   elementwise, and relative L2 norm <= norm_tol.
 * New tensors are filled with a poison pattern first (FILO_TENSOR_POISON, set by parity_run), so
 * an element an op forgets to write fails the comparison. */
#ifndef FILO_PARITY_H
#define FILO_PARITY_H

#include "filo_test.h"

#define PARITY_MAX_TENSORS 8

typedef struct parity_input {
    filo_dtype dtype;
    int ndim;
    int64_t shape[FILO_MAX_DIMS];
    double lo, hi;      /* uniform range; values are never exactly zero */
    int transpose_last; /* pass a non-contiguous view: the last two dims transposed in memory */
} parity_input;

typedef struct parity_case {
    const char *name;
    int n_inputs;
    parity_input inputs[PARITY_MAX_TENSORS];
    /* Calls the op. Returns FILO_OK and fills outputs[0..n_outputs). */
    filo_status (*run)(void *ctx, filo_tensor *const *inputs, filo_tensor **outputs);
    int n_outputs;
    /* Optional: expected outputs in double, from the inputs' values in row-major order.
     * want[k] has room for the k-th output of the CPU run (same shape). */
    void (*reference)(void *ctx, double *const *inputs, const parity_input *shapes, double **want);
    void *ctx;
    double rtol, atol;   /* 0: defaults for the inputs' lowest precision dtype */
    double norm_tol;     /* relative L2 error against the reference; 0: default */
    uint64_t seed;
} parity_case;

/* Runs the case on every backend; asserts (Criterion) on any mismatch, naming the backend, the
 * output, the element and both values. Returns the number of backends that ran. */
int parity_run(const parity_case *c);

/* Default tolerances: f64 1e-12, f32 1e-5, bf16 1e-2, f16 2e-3 (relative). */
double parity_default_rtol(filo_dtype dtype);

#endif
