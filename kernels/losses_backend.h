/* Internal: the elementwise losses of include/filo/losses.h (binary cross-entropy with logits,
 * sigmoid focal loss, mean squared error): the tensor-level calls nn/losses.c records on the
 * tape, the kernels' descriptor, and the element math that kernels/cpu/losses.c and
 * kernels/cuda/losses.cu both run verbatim.
 *
 * The element math is written once for a compute type (float for f32/bf16/f16 inputs, double for
 * f64) by FILO_LOSSES_DEFINE; each function returns the loss of one element and, through *d when
 * d is non-NULL, its derivative with respect to the logit (or MSE's input). */
#ifndef FILO_KERNELS_LOSSES_BACKEND_H
#define FILO_KERNELS_LOSSES_BACKEND_H

#include <math.h>
#include <stdint.h>

#include "element.h"
#include "filo/loss.h"
#include "filo/status.h"
#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_losses_kind {
    FILO_LOSSES_BCE = 0,
    FILO_LOSSES_FOCAL,
    FILO_LOSSES_MSE,
} filo_losses_kind;

/* ---- tensor level (kernels/losses.c) ---- */

/* One loss call. x: the logits (MSE: the input); y: the target, x's shape, any float dtype;
 * weight: NULL or broadcastable to x; pos_weight: NULL or [C] (x's last dim); alpha, gamma:
 * the focal loss's. Tensors of any strides; all on x's device. */
typedef struct filo_losses_args {
    filo_losses_kind kind;
    filo_loss_reduction reduction;
    const filo_tensor *x, *y, *weight, *pos_weight;
    double alpha, gamma;
} filo_losses_args;

/* Checks everything, errors named after `op` (the public function). loss: a new tensor, x's
 * shape (NONE) or 0-dim, f32 (f64 for f64 x). */
filo_status filo_losses_forward(const char *op, const filo_losses_args *a, filo_tensor **loss);
/* dloss: the loss's shape and dtype. dx (x's shape and dtype) and dy (y's; MSE only) are new
 * tensors; either pointer may be NULL when that gradient is not wanted. */
filo_status filo_losses_backward(const char *op, const filo_losses_args *a, const filo_tensor *dloss,
                                 filo_tensor **dx, filo_tensor **dy);

/* ---- kernels ---- */

/* Blocks of the CUDA SUM/MEAN partial sums: the scratch holds this many accumulators. */
#define FILO_LOSSES_MAX_BLOCKS 512

/* x, loss, dloss, dx, dy are contiguous; y, weight and pos_weight are read through element
 * strides (weight's are 0 along broadcast dims), so they are never copied. "A" is the
 * accumulation dtype: f64 for f64 x, else f32 (loss, dloss, scratch). */
typedef struct filo_losses_desc {
    int kind;                 /* filo_losses_kind */
    int reduction;            /* filo_loss_reduction */
    int grad;                 /* 0: forward writes loss; 1: backward writes dx / dy */
    int ndim;                 /* x's dims (shape below) */
    int64_t n;                /* elements of x */
    int64_t shape[FILO_MAX_DIMS];
    int64_t y_strides[FILO_MAX_DIMS];
    int64_t w_strides[FILO_MAX_DIMS];
    int64_t pw_stride;        /* element stride of pos_weight along its one dim */
    filo_dtype dtype;         /* x and dx */
    filo_dtype y_dtype, w_dtype, pw_dtype;
    int y_contiguous;         /* y indexed by the flat index */
    double alpha, gamma;
    const void *x, *y, *weight, *pos_weight; /* weight, pos_weight: NULL when absent */
    void *loss;               /* forward: [n] (NONE) or [1] of A */
    const void *dloss;        /* backward: [n] (NONE) or [1] of A */
    void *dx;                 /* backward: NULL or [n] of dtype */
    void *dy;                 /* backward, MSE: NULL or [n] of y_dtype */
    void *scratch;            /* CUDA SUM/MEAN forward: FILO_LOSSES_MAX_BLOCKS of A */
} filo_losses_desc;

filo_status filo_cpu_losses(const filo_losses_desc *d);
filo_status filo_cuda_losses(const filo_losses_desc *d, void *stream);

/* Offsets of flat element i of x in a tensor with the given element strides over x's shape. */
FILO_HD int64_t filo_losses_offset(const filo_losses_desc *d, const int64_t *strides, int64_t i)
{
    int64_t off = 0;
    for (int k = d->ndim - 1; k >= 0 && i > 0; k--) {
        int64_t s = d->shape[k];
        off += (i % s) * strides[k];
        i /= s;
    }
    return off;
}

FILO_HD double filo_losses_load(const void *base, filo_dtype t, int64_t i)
{
    return filo_el_load_f((const char *)base + i * (int64_t)filo_el_size(t), t);
}

/* The element math for compute type T (suffix S) with its libm functions. */
#define FILO_LOSSES_DEFINE(T, S, EXP, LOG1P, POW)                                                      \
    /* softplus(-x) = -log(sigmoid(x)) = log1p(exp(-|x|)) + max(-x, 0), with p = sigmoid(x) and       \
     * pm = 1 - p computed from the same exp(-|x|): no cancellation and finite for any finite x. */   \
    FILO_HD T filo_losses_logsig_##S(T x, T *p, T *pm)                                               \
    {                                                                                                  \
        T e = EXP(x < 0 ? x : -x);                                                                     \
        T r = (T)1 / ((T)1 + e);                                                                       \
        *p = x >= 0 ? r : e * r;                                                                       \
        *pm = x >= 0 ? e * r : r;                                                                      \
        return LOG1P(e) + (x < 0 ? -x : (T)0);                                                         \
    }                                                                                                  \
    /* BCE with logits: w ((1 - y) x + c softplus(-x)), c = 1 + (pw - 1) y;                           \
     * d/dx = w (c p - pw y). */                                                                       \
    FILO_HD T filo_losses_bce_##S(T x, T y, T w, T pw, T *d)                                           \
    {                                                                                                  \
        T p, pm;                                                                                       \
        T sp = filo_losses_logsig_##S(x, &p, &pm);                                                     \
        T c = (T)1 + (pw - (T)1) * y;                                                                  \
        if (d)                                                                                         \
            *d = w * (c * p - pw * y);                                                                 \
        return w * (((T)1 - y) * x + c * sp);                                                          \
    }                                                                                                  \
    /* Focal: a_t ce q^gamma with q = 1 - p_t = p (1 - y) + pm y (no cancellation near 0).             \
     * d/dx = a_t ((p - y) q^gamma + ce gamma q^gamma (dq / q)), dq = (1 - 2y) p pm; |dq / q| <= 1,    \
     * so the second term cannot overflow where q^(gamma - 1) would; at q = 0 it is 0 (its limit).   \
     * pow(0, 0) = 1 as in PyTorch. */                                                                 \
    FILO_HD T filo_losses_focal_##S(T x, T y, T alpha, T gamma, T *d)                                  \
    {                                                                                                  \
        T p, pm;                                                                                       \
        T ce = ((T)1 - y) * x + filo_losses_logsig_##S(x, &p, &pm);                                    \
        T q = p * ((T)1 - y) + pm * y;                                                                 \
        T mod = gamma == (T)0 ? (T)1 : POW(q, gamma);                                                  \
        T at = alpha >= (T)0 ? alpha * y + ((T)1 - alpha) * ((T)1 - y) : (T)1;                         \
        if (d) {                                                                                       \
            T t = gamma == (T)0 || q == (T)0 ? (T)0 : gamma * mod * (((T)1 - (T)2 * y) * p * pm / q); \
            *d = at * ((p - y) * mod + ce * t);                                                        \
        }                                                                                              \
        return at * ce * mod;                                                                          \
    }                                                                                                  \
    /* One element of the described loss: reads x, y, weight and pos_weight of element i. */          \
    FILO_HD T filo_losses_element_##S(const filo_losses_desc *dd, int64_t i, T *d)                    \
    {                                                                                                  \
        T x = (T)filo_losses_load(dd->x, dd->dtype, i);                                                \
        int64_t yi = dd->y_contiguous ? i : filo_losses_offset(dd, dd->y_strides, i);                  \
        T y = (T)filo_losses_load(dd->y, dd->y_dtype, yi);                                             \
        if (dd->kind == FILO_LOSSES_MSE) {                                                             \
            if (d)                                                                                     \
                *d = (T)2 * (x - y);                                                                   \
            return (x - y) * (x - y);                                                                  \
        }                                                                                              \
        if (dd->kind == FILO_LOSSES_FOCAL)                                                             \
            return filo_losses_focal_##S(x, y, (T)dd->alpha, (T)dd->gamma, d);                         \
        T w = dd->weight ? (T)filo_losses_load(dd->weight, dd->w_dtype,                                \
                                               filo_losses_offset(dd, dd->w_strides, i))               \
                         : (T)1;                                                                       \
        T pw = dd->pos_weight ? (T)filo_losses_load(dd->pos_weight, dd->pw_dtype,                      \
                                                    (dd->ndim ? i % dd->shape[dd->ndim - 1] : 0) *     \
                                                        dd->pw_stride)                                 \
                              : (T)1;                                                                  \
        return filo_losses_bce_##S(x, y, w, pw, d);                                                    \
    }

FILO_LOSSES_DEFINE(float, f32, expf, log1pf, powf)
FILO_LOSSES_DEFINE(double, f64, exp, log1p, pow)

#ifdef __cplusplus
}
#endif
#endif
