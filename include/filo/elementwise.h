/* Elementwise ops with PyTorch semantics: unary math and activations, binary arithmetic and
 * comparisons with NumPy broadcasting, where, tensor-scalar arithmetic, arange and one_hot.
 *
 * Every op allocates its output on the inputs' device (contiguous) and enqueues its work on
 * that device's current stream without waiting for it. Inputs may be any strided views.
 *
 * Broadcasting: shapes are aligned at their last dims; two sizes fit when they are equal or one
 * of them is 1 (a missing leading dim counts as 1). The output has the larger rank and, per dim,
 * the size that is not 1 (0 when a size-0 dim meets a 1).
 *
 * dtypes: the arithmetic ops (unary, pow, add..min, the scalar variants) take f64, f32, bf16 and
 * f16; bf16 and f16 compute in f32 and round once at the store, f64 computes in double, so the
 * result is the exact function value rounded to the dtype up to the math library's last-bit
 * error. Comparisons and where take every dtype. */
#ifndef FILO_ELEMENTWISE_H
#define FILO_ELEMENTWISE_H

#include <stdint.h>

#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_unary_op {
    FILO_UNARY_NEG = 0,
    FILO_UNARY_ABS,
    FILO_UNARY_EXP,
    FILO_UNARY_LOG,
    FILO_UNARY_SQRT,
    FILO_UNARY_RSQRT,
    FILO_UNARY_TANH,
    FILO_UNARY_SIGMOID,
    FILO_UNARY_RELU,
    FILO_UNARY_GELU,      /* exact: 0.5 x (1 + erf(x / sqrt 2)), torch gelu(approximate='none') */
    FILO_UNARY_GELU_TANH, /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), approximate='tanh' */
    FILO_UNARY_SILU,
    FILO_UNARY_SOFTPLUS,  /* log(1 + exp(x)), and x itself where x > 20 (torch beta=1, threshold=20) */
    FILO_UNARY_OP_COUNT
} filo_unary_op;

typedef enum filo_binary_op {
    FILO_BINARY_ADD = 0,
    FILO_BINARY_SUB,
    FILO_BINARY_MUL,
    FILO_BINARY_DIV,
    FILO_BINARY_MAX,  /* torch.maximum: NaN if either side is NaN */
    FILO_BINARY_MIN,  /* torch.minimum */
    /* Comparisons: the output is u8, 1 where the relation holds and 0 elsewhere. */
    FILO_BINARY_EQ,
    FILO_BINARY_NE,
    FILO_BINARY_LT,
    FILO_BINARY_LE,
    FILO_BINARY_GT,
    FILO_BINARY_GE,
    FILO_BINARY_OP_COUNT
} filo_binary_op;

/* "neg", "add", "eq", ... ("invalid" for an unknown value). */
const char *filo_unary_op_name(filo_unary_op op);
const char *filo_binary_op_name(filo_binary_op op);

/* out = op(x), elementwise; x has a float dtype. */
filo_status filo_unary(filo_unary_op op, const filo_tensor *x, filo_tensor **out);
/* out = x ** p (C pow: negative x with non-integer p gives NaN, as in torch). */
filo_status filo_pow_scalar(const filo_tensor *x, double p, filo_tensor **out);

/* out = a op b with broadcasting. a and b must have the same dtype (FILO_ERR_DTYPE) and device
 * (FILO_ERR_DEVICE); arithmetic ops need a float dtype, comparisons take any dtype and give u8. */
filo_status filo_binary(filo_binary_op op, const filo_tensor *a, const filo_tensor *b, filo_tensor **out);
/* out = x op s, or s op x when `reversed` is non-zero (for sub and div: s - x, s / x), for the
 * arithmetic ops add..min. s is rounded to x's compute type (f32 for f32/bf16/f16). */
filo_status filo_binary_scalar(filo_binary_op op, const filo_tensor *x, double s, int reversed, filo_tensor **out);
/* out = cond ? a : b elementwise, all three broadcast together. cond is u8 (non-zero is true);
 * a and b have the same dtype (any) and device. */
filo_status filo_where(const filo_tensor *cond, const filo_tensor *a, const filo_tensor *b, filo_tensor **out);

/* A 1-D tensor start, start + step, ... of ceil((end - start) / step) elements (torch.arange).
 * Values are start + i * step computed in double, then converted to dtype (integer dtypes
 * truncate toward zero). step must be non-zero and point from start towards end (or
 * end == start, which gives an empty tensor); NaN or infinite arguments are rejected. */
filo_status filo_arange(filo_device device, filo_dtype dtype, double start, double end, double step,
                        filo_tensor **out);

/* out[..., c] = (indices[...] == c) for c in [0, num_classes), as out_dtype; out has the shape
 * of indices plus a last dim of num_classes. indices is i64 or i32; num_classes >= 1.
 * Out-of-range indices: on the CPU they are rejected with FILO_ERR_INVALID_ARG naming the value
 * and its position. On CUDA they are not checked (that would need a host synchronization): such
 * a row comes out all zeros. */
filo_status filo_one_hot(const filo_tensor *indices, int64_t num_classes, filo_dtype out_dtype, filo_tensor **out);

#ifdef __cplusplus
}
#endif
#endif
