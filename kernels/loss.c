/* Softmax cross-entropy: argument checks, contiguous inputs, output allocation and the dispatch
 * to kernels/cpu/loss.c or kernels/cuda/loss.cu by the logits' device. */
#include "filo/loss.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "loss_backend.h"

#define DESC_LEN 200

static filo_dtype acc_dtype(filo_dtype t) { return t == FILO_F64 ? FILO_F64 : FILO_F32; }

filo_cross_entropy_options filo_cross_entropy_defaults(void)
{
    filo_cross_entropy_options o = {
        .weight = NULL,
        .ignore_index = FILO_CROSS_ENTROPY_IGNORE_INDEX,
        .label_smoothing = 0.0,
        .reduction = FILO_LOSS_MEAN,
    };
    return o;
}

static filo_status check_logits(const char *op, const filo_tensor *x)
{
    char desc[DESC_LEN];
    if (!x)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "logits is NULL");
    if (x->dtype != FILO_F32 && x->dtype != FILO_F64 && x->dtype != FILO_BF16 && x->dtype != FILO_F16)
        return filo_error_set(FILO_ERR_DTYPE, op, "logits must be f32, f64, bf16 or f16, got %s",
                              filo_tensor_describe(x, desc, sizeof desc));
    if (x->ndim < 1 || x->shape[x->ndim - 1] < 1)
        return filo_error_set(FILO_ERR_SHAPE, op, "logits must have at least one dim and at least one class, got %s",
                              filo_tensor_describe(x, desc, sizeof desc));
    /* The kernels index a row with 32-bit ints. */
    if (x->shape[x->ndim - 1] > ((int64_t)1 << 30))
        return filo_error_set(FILO_ERR_SHAPE, op, "logits have over 2^30 classes: %s",
                              filo_tensor_describe(x, desc, sizeof desc));
    return FILO_OK;
}

/* t must have x's leading shape (lead = 1) or be 0-dim (lead = 0), the given dtype(s) and x's device. */
static filo_status check_aux(const char *op, const char *what, const filo_tensor *t, const filo_tensor *x, int lead,
                             filo_dtype dt, filo_dtype dt2)
{
    char a[DESC_LEN], b[DESC_LEN];
    if (!t)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", what);
    int same = lead ? t->ndim == x->ndim - 1 : t->ndim == 0;
    for (int i = 0; same && i < t->ndim; i++)
        same = t->shape[i] == x->shape[i];
    if (!same)
        return filo_error_set(FILO_ERR_SHAPE, op, "%s %s must %s of logits %s", what, filo_tensor_describe(t, a, sizeof a),
                              lead ? "have the leading shape" : "be 0-dim for a SUM/MEAN reduction",
                              filo_tensor_describe(x, b, sizeof b));
    if (t->dtype != dt && t->dtype != dt2)
        return filo_error_set(FILO_ERR_DTYPE, op, "%s %s must be %s%s%s for logits %s", what,
                              filo_tensor_describe(t, a, sizeof a), filo_dtype_name(dt), dt2 != dt ? " or " : "",
                              dt2 != dt ? filo_dtype_name(dt2) : "", filo_tensor_describe(x, b, sizeof b));
    if (!filo_device_equal(t->device, x->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "%s %s is not on the device of logits %s", what,
                              filo_tensor_describe(t, a, sizeof a), filo_tensor_describe(x, b, sizeof b));
    return FILO_OK;
}

static filo_status check_options(const char *op, const filo_cross_entropy_options *o, const filo_tensor *x)
{
    char a[DESC_LEN], b[DESC_LEN];
    if (o->reduction != FILO_LOSS_NONE && o->reduction != FILO_LOSS_SUM && o->reduction != FILO_LOSS_MEAN)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "reduction must be FILO_LOSS_NONE, SUM or MEAN, got %d",
                              (int)o->reduction);
    if (!(o->label_smoothing >= 0.0 && o->label_smoothing <= 1.0))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "label_smoothing must be in [0, 1], got %g", o->label_smoothing);
    const filo_tensor *w = o->weight;
    if (!w)
        return FILO_OK;
    int64_t C = x->shape[x->ndim - 1];
    if (w->ndim != 1 || w->shape[0] != C)
        return filo_error_set(FILO_ERR_SHAPE, op, "weight %s must have shape [%lld] (the classes of logits %s)",
                              filo_tensor_describe(w, a, sizeof a), (long long)C, filo_tensor_describe(x, b, sizeof b));
    if (w->dtype != acc_dtype(x->dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "weight %s must be %s for logits %s", filo_tensor_describe(w, a, sizeof a),
                              filo_dtype_name(acc_dtype(x->dtype)), filo_tensor_describe(x, b, sizeof b));
    if (!filo_device_equal(w->device, x->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "weight %s is not on the device of logits %s",
                              filo_tensor_describe(w, a, sizeof a), filo_tensor_describe(x, b, sizeof b));
    return FILO_OK;
}

#define MAX_TENSORS 5

/* Tensors owned by one call, freed together. */
typedef struct tensor_set {
    filo_tensor *t[MAX_TENSORS];
} tensor_set;

static void set_free(tensor_set *s)
{
    for (int i = 0; i < MAX_TENSORS; i++) {
        filo_tensor_free(s->t[i]);
        s->t[i] = NULL;
    }
}

static const void *data_of(const filo_tensor *t) { return t ? filo_tensor_data(t) : NULL; }

/* Makes the inputs contiguous (slots x, target, weight, lse, dloss), allocates the CUDA scratch
 * and runs the kernel. */
static filo_status run(const char *op, filo_loss_desc *d, const filo_tensor *x, const filo_tensor *target,
                       const filo_tensor *weight, const filo_tensor *lse_in, const filo_tensor *dloss)
{
    const filo_tensor *in[MAX_TENSORS] = {x, target, weight, lse_in, dloss};
    tensor_set c = {{NULL}};
    filo_tensor *scratch = NULL;
    filo_status st = FILO_OK;
    for (int i = 0; i < MAX_TENSORS && st == FILO_OK; i++)
        if (in[i])
            st = filo_tensor_contiguous(in[i], &c.t[i]);
    int cuda = x->device.type == FILO_DEVICE_CUDA;
    if (st == FILO_OK && cuda) {
        int64_t n = d->rows + 3;
        st = filo_tensor_empty(x->device, acc_dtype(x->dtype), 1, &n, &scratch);
    }
    if (st == FILO_OK) {
        d->rows = filo_tensor_numel(x) / d->cols;
        d->dtype = x->dtype;
        d->target_dtype = target->dtype;
        d->x = data_of(c.t[0]);
        d->target = data_of(c.t[1]);
        d->weight = data_of(c.t[2]);
        if (lse_in)
            d->lse = (void *)data_of(c.t[3]);
        d->dloss = data_of(c.t[4]);
        d->scratch = scratch ? filo_tensor_data(scratch) : NULL;
        if (!cuda) {
            st = filo_cpu_cross_entropy(d);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(x->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_cross_entropy(d, stream));
        }
    }
    set_free(&c);
    /* The scratch goes back to the caching allocator now: only later work on this stream, which
     * runs after the kernels that use it, can reuse it. */
    filo_tensor_free(scratch);
    return st == FILO_OK ? FILO_OK : filo_error_wrap(st, op);
}

static filo_status check_common(const char *op, const filo_tensor *logits, const filo_tensor *target,
                                const filo_cross_entropy_options *o)
{
    FILO_TRY(check_logits(op, logits));
    FILO_TRY(check_aux(op, "target", target, logits, 1, FILO_I64, FILO_I32));
    return check_options(op, o, logits);
}

static void desc_init(filo_loss_desc *d, const filo_tensor *x, const filo_cross_entropy_options *o)
{
    memset(d, 0, sizeof *d);
    d->cols = x->shape[x->ndim - 1];
    d->rows = filo_tensor_numel(x) / d->cols;
    d->reduction = (int)o->reduction;
    d->ignore_index = o->ignore_index;
    d->label_smoothing = o->label_smoothing;
}

filo_status filo_cross_entropy_forward(const filo_tensor *logits, const filo_tensor *target,
                                       const filo_cross_entropy_options *opts, filo_tensor **loss, filo_tensor **lse)
{
    const char *op = __func__;
    filo_cross_entropy_options o = opts ? *opts : filo_cross_entropy_defaults();
    FILO_TRY(check_common(op, logits, target, &o));
    if (!loss)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "the output pointer loss is NULL");
    filo_dtype ad = acc_dtype(logits->dtype);
    tensor_set out = {{NULL}};
    int none = o.reduction == FILO_LOSS_NONE;
    filo_status st = filo_tensor_empty(logits->device, ad, none ? logits->ndim - 1 : 0, logits->shape, &out.t[0]);
    if (st == FILO_OK && lse)
        st = filo_tensor_empty(logits->device, ad, logits->ndim - 1, logits->shape, &out.t[1]);
    if (st == FILO_OK) {
        filo_loss_desc d;
        desc_init(&d, logits, &o);
        d.compute = 1;
        d.loss = filo_tensor_data(out.t[0]);
        d.lse = out.t[1] ? filo_tensor_data(out.t[1]) : NULL;
        st = run(op, &d, logits, target, o.weight, NULL, NULL);
    }
    if (st != FILO_OK) {
        set_free(&out);
        return st;
    }
    *loss = out.t[0];
    if (lse)
        *lse = out.t[1];
    return FILO_OK;
}

filo_status filo_cross_entropy_backward(const filo_tensor *dloss, const filo_tensor *logits, const filo_tensor *target,
                                        const filo_tensor *lse, const filo_cross_entropy_options *opts,
                                        filo_tensor **dlogits)
{
    const char *op = __func__;
    filo_cross_entropy_options o = opts ? *opts : filo_cross_entropy_defaults();
    FILO_TRY(check_common(op, logits, target, &o));
    filo_dtype ad = acc_dtype(logits->dtype);
    FILO_TRY(check_aux(op, "lse", lse, logits, 1, ad, ad));
    FILO_TRY(check_aux(op, "dloss", dloss, logits, o.reduction == FILO_LOSS_NONE, ad, ad));
    if (!dlogits)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "the output pointer dlogits is NULL");
    filo_tensor *dx = NULL;
    filo_status st = filo_tensor_empty(logits->device, logits->dtype, logits->ndim, logits->shape, &dx);
    if (st == FILO_OK) {
        filo_loss_desc d;
        desc_init(&d, logits, &o);
        d.grad = 1;
        d.dx = filo_tensor_data(dx);
        st = run(op, &d, logits, target, o.weight, lse, dloss);
    }
    if (st != FILO_OK) {
        filo_tensor_free(dx);
        return st;
    }
    *dlogits = dx;
    return FILO_OK;
}

filo_status filo_cross_entropy_fused(const filo_tensor *logits, const filo_tensor *target,
                                     const filo_cross_entropy_options *opts, double grad_scale, filo_tensor **loss,
                                     filo_tensor **dlogits)
{
    const char *op = __func__;
    filo_cross_entropy_options o = opts ? *opts : filo_cross_entropy_defaults();
    FILO_TRY(check_common(op, logits, target, &o));
    if (o.reduction == FILO_LOSS_NONE)
        return filo_error_set(FILO_ERR_INVALID_ARG, op,
                              "the fused call needs a 0-dim loss (SUM or MEAN); use forward and backward for NONE");
    if (!isfinite(grad_scale))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "grad_scale must be finite, got %g", grad_scale);
    if (!loss || !dlogits)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (loss, dlogits) is NULL");
    tensor_set out = {{NULL}};
    filo_status st = filo_tensor_empty(logits->device, acc_dtype(logits->dtype), 0, logits->shape, &out.t[0]);
    if (st == FILO_OK)
        st = filo_tensor_empty(logits->device, logits->dtype, logits->ndim, logits->shape, &out.t[1]);
    if (st == FILO_OK) {
        filo_loss_desc d;
        desc_init(&d, logits, &o);
        d.compute = 1;
        d.grad = 1;
        d.grad_scale = grad_scale;
        d.loss = filo_tensor_data(out.t[0]);
        d.dx = filo_tensor_data(out.t[1]);
        st = run(op, &d, logits, target, o.weight, NULL, NULL);
    }
    if (st != FILO_OK) {
        set_free(&out);
        return st;
    }
    *loss = out.t[0];
    *dlogits = out.t[1];
    return FILO_OK;
}
