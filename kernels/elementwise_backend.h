/* Internal: the elementwise ops' backend interface (kernels/cpu/elementwise.c and
 * kernels/cuda/elementwise.cu) and the per-element math both backends share verbatim, so that
 * the CPU and the GPU evaluate the same expressions. Valid C11 and CUDA C++. */
#ifndef FILO_KERNELS_ELEMENTWISE_BACKEND_H
#define FILO_KERNELS_ELEMENTWISE_BACKEND_H

#include <math.h>
#include <stdint.h>

#include "element.h"
#include "filo/elementwise.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FILO_EW_MAX_INPUTS 3

/* What an elementwise launch computes. */
typedef enum filo_ew_kind {
    FILO_EW_UNARY,    /* out = unary(op, in0), op a filo_unary_op or FILO_EW_POW with `scalar` */
    FILO_EW_SCALAR,   /* out = binary(op, in0, scalar), or (scalar, in0) when `reversed` */
    FILO_EW_BINARY,   /* out = binary(op, in0, in1), an arithmetic op */
    FILO_EW_COMPARE,  /* out (u8) = compare(op, in0, in1) */
    FILO_EW_WHERE     /* out = in0 (u8) ? in1 : in2 */
} filo_ew_kind;

/* Unary op code of x ** scalar, after the public ones. */
#define FILO_EW_POW ((int)FILO_UNARY_OP_COUNT)

/* One elementwise launch over a broadcast, collapsed layout: element i (row-major over shape)
 * is written at out + i (the output is contiguous) and reads input k at
 * in[k] + sum_d idx_d * strides[k][d] (stride 0 on broadcast dims). */
typedef struct filo_ew_desc {
    filo_ew_kind kind;
    int op;
    double scalar;
    int reversed;
    filo_dtype dtype;     /* of the value inputs (in1, in2 for where); of out unless COMPARE */
    int n_inputs;
    int ndim;             /* 0..8 after collapsing */
    int64_t numel;
    int64_t shape[FILO_MAX_DIMS];
    int64_t strides[FILO_EW_MAX_INPUTS][FILO_MAX_DIMS];
    const void *in[FILO_EW_MAX_INPUTS];
    void *out;
} filo_ew_desc;

/* One-hot scatter: rows[r] = the index at row-major position r of an `ndim`-dim view. */
typedef struct filo_one_hot_desc {
    int ndim;
    int64_t rows;
    int64_t shape[FILO_MAX_DIMS];
    int64_t strides[FILO_MAX_DIMS];
    const void *indices;
    filo_dtype index_dtype;
    int64_t num_classes;
    void *out;            /* rows x num_classes, already zeroed */
    filo_dtype out_dtype;
} filo_one_hot_desc;

/* True when the layout is one flat run: the output and every input either walk it with stride 1
 * or stay on one element (stride 0). Kernels then index with i alone. */
static inline int filo_ew_is_flat(const filo_ew_desc *d)
{
    if (d->ndim == 0)
        return 1;
    if (d->ndim > 1)
        return 0;
    for (int k = 0; k < d->n_inputs; k++)
        if (d->strides[k][0] != 0 && d->strides[k][0] != 1)
            return 0;
    return 1;
}

void filo_cpu_elementwise(const filo_ew_desc *d);
void filo_cpu_arange(void *out, filo_dtype dtype, int64_t n, double start, double step);
/* Fills the ones of an already-zeroed output. Returns the first row whose index is out of range,
 * or -1 when every index is valid (then all rows are written). */
int64_t filo_cpu_one_hot(const filo_one_hot_desc *d);

filo_status filo_cuda_elementwise(const filo_ew_desc *d, void *stream);
filo_status filo_cuda_arange(void *out, filo_dtype dtype, int64_t n, double start, double step, void *stream);
filo_status filo_cuda_one_hot(const filo_one_hot_desc *d, void *stream);

/* ---- per-element math, in float (f32, bf16, f16) and in double (f64) ---- */

#define FILO_EW_DEFINE_MATH(T, SFX, EXP, LOG, LOG1P, SQRT, TANH, ERF, POW, FABS)                   \
    FILO_HD T filo_ew_unary_##SFX(int op, T x, T p)                                               \
    {                                                                                             \
        switch (op) {                                                                             \
        case FILO_UNARY_NEG: return -x;                                                           \
        case FILO_UNARY_ABS: return FABS(x);                                                      \
        case FILO_UNARY_EXP: return EXP(x);                                                       \
        case FILO_UNARY_LOG: return LOG(x);                                                       \
        case FILO_UNARY_SQRT: return SQRT(x);                                                     \
        case FILO_UNARY_RSQRT: return (T)1 / SQRT(x);                                             \
        case FILO_UNARY_TANH: return TANH(x);                                                     \
        case FILO_UNARY_SIGMOID: return (T)1 / ((T)1 + EXP(-x));                                  \
        /* x < 0 is false for NaN, which passes through as in torch.relu. */                      \
        case FILO_UNARY_RELU: return x < (T)0 ? (T)0 : x;                                         \
        case FILO_UNARY_GELU: return (T)0.5 * x * ((T)1 + ERF(x * (T)0.70710678118654752440));    \
        case FILO_UNARY_GELU_TANH:                                                                \
            return (T)0.5 * x *                                                                   \
                   ((T)1 + TANH((T)0.79788456080286535588 * (x + (T)0.044715 * x * x * x)));      \
        case FILO_UNARY_SILU: return x / ((T)1 + EXP(-x));                                        \
        case FILO_UNARY_SOFTPLUS: return x > (T)20 ? x : LOG1P(EXP(x));                           \
        case FILO_EW_POW: return POW(x, p);                                                       \
        default: return x;                                                                        \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    FILO_HD T filo_ew_binary_##SFX(int op, T a, T b)                                              \
    {                                                                                             \
        switch (op) {                                                                             \
        case FILO_BINARY_ADD: return a + b;                                                       \
        case FILO_BINARY_SUB: return a - b;                                                       \
        case FILO_BINARY_MUL: return a * b;                                                       \
        case FILO_BINARY_DIV: return a / b;                                                       \
        /* a != a: a NaN wins; a NaN b falls through to b. */                                     \
        case FILO_BINARY_MAX: return (a != a || a > b) ? a : b;                                   \
        case FILO_BINARY_MIN: return (a != a || a < b) ? a : b;                                   \
        default: return a;                                                                        \
        }                                                                                         \
    }

FILO_EW_DEFINE_MATH(float, f, expf, logf, log1pf, sqrtf, tanhf, erff, powf, fabsf)
FILO_EW_DEFINE_MATH(double, d, exp, log, log1p, sqrt, tanh, erf, pow, fabs)

/* Comparisons on values of one type, exact for every dtype (bf16/f16 widen to float exactly). */
#define FILO_EW_COMPARE(op, a, b)                                                                 \
    ((op) == FILO_BINARY_EQ   ? (a) == (b)                                                        \
     : (op) == FILO_BINARY_NE ? (a) != (b)                                                        \
     : (op) == FILO_BINARY_LT ? (a) < (b)                                                         \
     : (op) == FILO_BINARY_LE ? (a) <= (b)                                                        \
     : (op) == FILO_BINARY_GT ? (a) > (b)                                                         \
                              : (a) >= (b))

#ifdef __cplusplus
}
#endif
#endif
