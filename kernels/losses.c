/* Elementwise losses (BCE with logits, focal, MSE): argument checks, output allocation and the
 * dispatch to kernels/cpu/losses.c or kernels/cuda/losses.cu by the input's device. The
 * target, the weight (broadcast through zero strides) and pos_weight are passed with their
 * strides and dtypes and never copied; only x and dloss are made contiguous. */
#include <math.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "losses_backend.h"

#define DESC_LEN 200

static filo_dtype acc_dtype(filo_dtype t) { return t == FILO_F64 ? FILO_F64 : FILO_F32; }

static int is_float(filo_dtype t) { return t == FILO_F32 || t == FILO_F64 || t == FILO_BF16 || t == FILO_F16; }

static const char *x_name(const filo_losses_args *a) { return a->kind == FILO_LOSSES_MSE ? "input" : "logits"; }

/* A float tensor on x's device. */
static filo_status check_float_on(const char *op, const char *what, const filo_tensor *t, const filo_tensor *x)
{
    char a[DESC_LEN], b[DESC_LEN];
    if (!is_float(t->dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "%s %s must be f32, f64, bf16 or f16", what,
                              filo_tensor_describe(t, a, sizeof a));
    if (!filo_device_equal(t->device, x->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "%s %s is not on the device of %s", what,
                              filo_tensor_describe(t, a, sizeof a), filo_tensor_describe(x, b, sizeof b));
    return FILO_OK;
}

static int same_shape(const filo_tensor *a, const filo_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    return 1;
}

static filo_status check_args(const char *op, const filo_losses_args *a)
{
    char s1[DESC_LEN], s2[DESC_LEN];
    const filo_tensor *x = a->x;
    if (!x)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", x_name(a));
    if (!is_float(x->dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "%s must be f32, f64, bf16 or f16, got %s", x_name(a),
                              filo_tensor_describe(x, s1, sizeof s1));
    if (a->reduction != FILO_LOSS_NONE && a->reduction != FILO_LOSS_SUM && a->reduction != FILO_LOSS_MEAN)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "reduction must be FILO_LOSS_NONE, SUM or MEAN, got %d",
                              (int)a->reduction);
    if (!a->y)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "target is NULL");
    FILO_TRY(check_float_on(op, "target", a->y, x));
    if (!same_shape(a->y, x))
        return filo_error_set(FILO_ERR_SHAPE, op, "target %s must have the shape of %s %s",
                              filo_tensor_describe(a->y, s1, sizeof s1), x_name(a), filo_tensor_describe(x, s2, sizeof s2));
    if (a->kind == FILO_LOSSES_FOCAL) {
        if (!(a->gamma >= 0.0) || !isfinite(a->gamma))
            return filo_error_set(FILO_ERR_INVALID_ARG, op, "gamma must be finite and >= 0, got %g", a->gamma);
        if (!isfinite(a->alpha))
            return filo_error_set(FILO_ERR_INVALID_ARG, op, "alpha must be finite (< 0 disables it), got %g", a->alpha);
    }
    const filo_tensor *w = a->weight, *pw = a->pos_weight;
    if (w) {
        FILO_TRY(check_float_on(op, "weight", w, x));
        int ok = w->ndim <= x->ndim;
        for (int j = 0; ok && j < w->ndim; j++) {
            int64_t ws = w->shape[j], xs = x->shape[x->ndim - w->ndim + j];
            ok = ws == xs || ws == 1;
        }
        if (!ok)
            return filo_error_set(FILO_ERR_SHAPE, op, "weight %s does not broadcast to logits %s",
                                  filo_tensor_describe(w, s1, sizeof s1), filo_tensor_describe(x, s2, sizeof s2));
    }
    if (pw) {
        FILO_TRY(check_float_on(op, "pos_weight", pw, x));
        int64_t C = x->ndim ? x->shape[x->ndim - 1] : 1;
        if (pw->ndim != 1 || pw->shape[0] != C)
            return filo_error_set(FILO_ERR_SHAPE, op, "pos_weight %s must have shape [%lld] (the last dim of logits %s)",
                                  filo_tensor_describe(pw, s1, sizeof s1), (long long)C,
                                  filo_tensor_describe(x, s2, sizeof s2));
    }
    return FILO_OK;
}

/* Fills everything of d but the output pointers; *xc is x made contiguous (freed by the caller). */
static filo_status desc_init(const filo_losses_args *a, filo_losses_desc *d, filo_tensor **xc)
{
    const filo_tensor *x = a->x;
    memset(d, 0, sizeof *d);
    FILO_TRY(filo_tensor_contiguous(x, xc));
    d->kind = (int)a->kind;
    d->reduction = (int)a->reduction;
    d->ndim = x->ndim;
    d->n = filo_tensor_numel(x);
    d->dtype = x->dtype;
    d->alpha = a->alpha;
    d->gamma = a->gamma;
    d->x = filo_tensor_data(*xc);
    d->y = filo_tensor_data(a->y);
    d->y_dtype = a->y->dtype;
    d->y_contiguous = filo_tensor_is_contiguous(a->y);
    for (int k = 0; k < x->ndim; k++) {
        d->shape[k] = x->shape[k];
        d->y_strides[k] = a->y->strides[k];
    }
    if (a->weight) {
        const filo_tensor *w = a->weight;
        d->weight = filo_tensor_data(w);
        d->w_dtype = w->dtype;
        /* x's dim k meets weight's dim j = k - (x dims - weight dims); missing or size-1 dims broadcast. */
        for (int k = 0; k < x->ndim; k++) {
            int j = k - (x->ndim - w->ndim);
            d->w_strides[k] = j >= 0 && w->shape[j] != 1 ? w->strides[j] : 0;
        }
    }
    if (a->pos_weight) {
        d->pos_weight = filo_tensor_data(a->pos_weight);
        d->pw_dtype = a->pos_weight->dtype;
        d->pw_stride = a->pos_weight->strides[0];
    }
    return FILO_OK;
}

static filo_status run(const char *op, const filo_tensor *x, filo_losses_desc *d)
{
    filo_status st;
    if (x->device.type != FILO_DEVICE_CUDA) {
        st = filo_cpu_losses(d);
    } else {
        filo_tensor *scratch = NULL;
        int64_t nb = FILO_LOSSES_MAX_BLOCKS;
        st = FILO_OK;
        if (!d->grad && d->reduction != FILO_LOSS_NONE) {
            st = filo_tensor_empty(x->device, acc_dtype(x->dtype), 1, &nb, &scratch);
            if (st == FILO_OK)
                d->scratch = filo_tensor_data(scratch);
        }
        void *stream = NULL;
        if (st == FILO_OK)
            st = filo_stream_current_native(x->device, &stream);
        if (st == FILO_OK)
            st = FILO_CUDA_CALL(filo_cuda_losses(d, stream));
        /* Back to the caching allocator: only later work on this stream can reuse it. */
        filo_tensor_free(scratch);
    }
    return st == FILO_OK ? FILO_OK : filo_error_wrap(st, op);
}

filo_status filo_losses_forward(const char *op, const filo_losses_args *a, filo_tensor **loss)
{
    if (!a || !loss)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "the arguments or the output pointer loss are NULL");
    FILO_TRY(check_args(op, a));
    const filo_tensor *x = a->x;
    int none = a->reduction == FILO_LOSS_NONE;
    filo_tensor *out = NULL, *xc = NULL;
    filo_status st = filo_tensor_empty(x->device, acc_dtype(x->dtype), none ? x->ndim : 0, x->shape, &out);
    filo_losses_desc d;
    if (st == FILO_OK)
        st = desc_init(a, &d, &xc);
    if (st == FILO_OK) {
        d.loss = filo_tensor_data(out);
        st = run(op, x, &d);
    }
    filo_tensor_free(xc);
    if (st != FILO_OK) {
        filo_tensor_free(out);
        return st;
    }
    *loss = out;
    return FILO_OK;
}

filo_status filo_losses_backward(const char *op, const filo_losses_args *a, const filo_tensor *dloss, filo_tensor **dx,
                                 filo_tensor **dy)
{
    char s1[DESC_LEN], s2[DESC_LEN];
    if (!a || (!dx && !dy))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "the arguments or both output pointers are NULL");
    if (dy && a->kind != FILO_LOSSES_MSE)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "only the MSE loss has a target gradient");
    FILO_TRY(check_args(op, a));
    const filo_tensor *x = a->x;
    filo_dtype ad = acc_dtype(x->dtype);
    int none = a->reduction == FILO_LOSS_NONE;
    if (!dloss)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dloss is NULL");
    if (dloss->dtype != ad || !filo_device_equal(dloss->device, x->device) ||
        dloss->ndim != (none ? x->ndim : 0) || (none && !same_shape(dloss, x)))
        return filo_error_set(FILO_ERR_SHAPE, op, "dloss %s must be %s, on the device and of the %s of %s %s",
                              filo_tensor_describe(dloss, s1, sizeof s1), filo_dtype_name(ad), none ? "shape" : "0-dim loss",
                              x_name(a), filo_tensor_describe(x, s2, sizeof s2));
    filo_tensor *gx = NULL, *gy = NULL, *xc = NULL, *dlc = NULL;
    filo_status st = FILO_OK;
    if (dx)
        st = filo_tensor_empty(x->device, x->dtype, x->ndim, x->shape, &gx);
    if (st == FILO_OK && dy)
        st = filo_tensor_empty(x->device, a->y->dtype, x->ndim, x->shape, &gy);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(dloss, &dlc);
    filo_losses_desc d;
    if (st == FILO_OK)
        st = desc_init(a, &d, &xc);
    if (st == FILO_OK) {
        d.grad = 1;
        d.dloss = filo_tensor_data(dlc);
        d.dx = gx ? filo_tensor_data(gx) : NULL;
        d.dy = gy ? filo_tensor_data(gy) : NULL;
        st = run(op, x, &d);
    }
    filo_tensor_free(xc);
    filo_tensor_free(dlc);
    if (st != FILO_OK) {
        filo_tensor_free(gx);
        filo_tensor_free(gy);
        return st;
    }
    if (dx)
        *dx = gx;
    if (dy)
        *dy = gy;
    return FILO_OK;
}
