/* 2-D convolution: argument checks, the parameters' defaults, the output size, contiguous
 * inputs, output allocation and the dispatch to kernels/cpu/conv.c or kernels/cuda_conv.c.
 * On CUDA the bias is added by the elementwise op and dbias is summed by the reduction op (both
 * deterministic and defined for every dtype), so cuDNN only runs the convolutions proper. */
#include "filo/conv.h"

#include <string.h>

#include "backend.h"
#include "conv_backend.h"
#include "error.h"
#include "filo/elementwise.h"
#include "filo/reduce.h"

#define DESC_LEN 200

static int is_conv_dtype(filo_dtype t) { return t == FILO_F32 || t == FILO_F64 || t == FILO_BF16 || t == FILO_F16; }

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* Checks p and fills the resolved parameters and OH, OW of d (H, W, R, S set by the caller). */
static filo_status resolve(const char *op, const filo_conv2d_params *p, filo_conv2d_desc *d)
{
    filo_conv2d_params z;
    memset(&z, 0, sizeof z);
    if (!p)
        p = &z;
    if (p->stride_h < 0 || p->stride_w < 0 || p->pad_h < 0 || p->pad_w < 0 || p->dilation_h < 0 ||
        p->dilation_w < 0 || p->groups < 0)
        return filo_error_set(FILO_ERR_INVALID_ARG, op,
                              "stride %lldx%lld, pad %lldx%lld, dilation %lldx%lld and groups %lld must be >= 0",
                              (long long)p->stride_h, (long long)p->stride_w, (long long)p->pad_h, (long long)p->pad_w,
                              (long long)p->dilation_h, (long long)p->dilation_w, (long long)p->groups);
    const int64_t lim = (int64_t)1 << 30;
    if (p->stride_h > lim || p->stride_w > lim || p->pad_h > lim || p->pad_w > lim || p->dilation_h > lim ||
        p->dilation_w > lim)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "stride, pad and dilation must be at most 2^30");
    d->sh = p->stride_h ? p->stride_h : 1;
    d->sw = p->stride_w ? p->stride_w : 1;
    d->ph = p->pad_h;
    d->pw = p->pad_w;
    d->dh = p->dilation_h ? p->dilation_h : 1;
    d->dw = p->dilation_w ? p->dilation_w : 1;
    d->groups = p->groups ? p->groups : 1;
    d->OH = floor_div(d->H + 2 * d->ph - d->dh * (d->R - 1) - 1, d->sh) + 1;
    d->OW = floor_div(d->W + 2 * d->pw - d->dw * (d->S - 1) - 1, d->sw) + 1;
    if (d->OH < 1 || d->OW < 1)
        return filo_error_set(FILO_ERR_SHAPE, op,
                              "output size %lldx%lld is too small: input %lldx%lld, filter %lldx%lld, stride %lldx%lld, "
                              "pad %lldx%lld, dilation %lldx%lld",
                              (long long)d->OH, (long long)d->OW,
                              (long long)d->H, (long long)d->W, (long long)d->R, (long long)d->S, (long long)d->sh,
                              (long long)d->sw, (long long)d->ph, (long long)d->pw, (long long)d->dh, (long long)d->dw);
    return FILO_OK;
}

filo_status filo_conv2d_output_size(const filo_conv2d_params *p, int64_t H, int64_t W, int64_t R, int64_t S,
                                    int64_t *oh, int64_t *ow)
{
    if (H < 1 || W < 1 || R < 1 || S < 1)
        return filo_error_set(FILO_ERR_SHAPE, __func__, "input %lldx%lld and filter %lldx%lld must be >= 1",
                              (long long)H, (long long)W, (long long)R, (long long)S);
    filo_conv2d_desc d = {.H = H, .W = W, .R = R, .S = S};
    FILO_TRY(resolve(__func__, p, &d));
    *oh = d.OH;
    *ow = d.OW;
    return FILO_OK;
}

/* x, w (and bias): ranks, dtypes, devices, channels and groups; fills d. */
static filo_status check_args(const char *op, const filo_tensor *x, const filo_tensor *w, const filo_tensor *bias,
                              const filo_conv2d_params *p, filo_conv2d_desc *d)
{
    char a[DESC_LEN], b[DESC_LEN];
    if (!x || !w)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", x ? "w" : "x");
    filo_tensor_describe(x, a, sizeof a);
    filo_tensor_describe(w, b, sizeof b);
    if (!is_conv_dtype(x->dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "x must be f32, f64, bf16 or f16, got %s", a);
    if (w->dtype != x->dtype)
        return filo_error_set(FILO_ERR_DTYPE, op, "w %s must have the dtype of x %s", b, a);
    if (!filo_device_equal(w->device, x->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "w %s is not on the device of x %s", b, a);
    if (x->ndim != 4)
        return filo_error_set(FILO_ERR_SHAPE, op, "x must be 4-D [N, C, H, W], got %s", a);
    if (w->ndim != 4)
        return filo_error_set(FILO_ERR_SHAPE, op, "w must be 4-D [K, C/groups, R, S], got %s", b);
    if (x->shape[1] < 1 || x->shape[2] < 1 || x->shape[3] < 1)
        return filo_error_set(FILO_ERR_SHAPE, op, "x %s must have C, H, W >= 1", a);
    if (w->shape[0] < 1 || w->shape[1] < 1 || w->shape[2] < 1 || w->shape[3] < 1)
        return filo_error_set(FILO_ERR_SHAPE, op, "w %s must have K, C/groups, R, S >= 1", b);
    *d = (filo_conv2d_desc){.dtype = x->dtype, .N = x->shape[0], .C = x->shape[1], .H = x->shape[2],
                            .W = x->shape[3], .K = w->shape[0], .R = w->shape[2], .S = w->shape[3]};
    FILO_TRY(resolve(op, p, d));
    if (d->C % d->groups != 0 || d->K % d->groups != 0)
        return filo_error_set(FILO_ERR_SHAPE, op, "groups %lld must divide the channels of x %s and the filters of w %s",
                              (long long)d->groups, a, b);
    if (w->shape[1] * d->groups != d->C)
        return filo_error_set(FILO_ERR_SHAPE, op,
                              "channel mismatch: w %s has %lld channels a group, x %s has %lld / %lld groups = %lld",
                              b, (long long)w->shape[1], a, (long long)d->C, (long long)d->groups,
                              (long long)(d->C / d->groups));
    if (bias) {
        filo_tensor_describe(bias, b, sizeof b);
        if (bias->ndim != 1 || bias->shape[0] != d->K)
            return filo_error_set(FILO_ERR_SHAPE, op, "bias %s must have shape [%lld] (the filters of w)", b,
                                  (long long)d->K);
        if (bias->dtype != x->dtype)
            return filo_error_set(FILO_ERR_DTYPE, op, "bias %s must have the dtype of x %s", b, a);
        if (!filo_device_equal(bias->device, x->device))
            return filo_error_set(FILO_ERR_DEVICE, op, "bias %s is not on the device of x %s", b, a);
    }
    return FILO_OK;
}

static const void *data_of(const filo_tensor *t) { return t ? filo_tensor_data(t) : NULL; }

/* *y += bias[k] broadcast over [N, K, OH, OW] (replaces *y). */
static filo_status add_bias(const filo_tensor *bias, filo_tensor **y)
{
    int64_t shape[3] = {bias->shape[0], 1, 1};
    filo_tensor *b3 = NULL, *sum = NULL;
    FILO_TRY(filo_tensor_view(bias, 3, shape, &b3));
    filo_status st = filo_binary(FILO_BINARY_ADD, *y, b3, &sum);
    filo_tensor_free(b3);
    if (st != FILO_OK)
        return st;
    filo_tensor_free(*y);
    *y = sum;
    return FILO_OK;
}

/* dbias[k] = sum over n, oh, ow of dy (contiguous): dy as [K, N, OH * OW] rows, reduced in one
 * pass over the last dim of a [K, N * OH * OW] copy, so bf16/f16 round once. */
static filo_status bias_grad(const filo_tensor *dy, const filo_conv2d_desc *d, filo_tensor **dbias)
{
    int64_t s3[3] = {d->N, d->K, d->OH * d->OW}, s2[2] = {d->K, d->N * d->OH * d->OW};
    filo_tensor *v = NULL, *t = NULL, *rows = NULL;
    filo_status st = filo_tensor_view(dy, 3, s3, &v);
    if (st == FILO_OK)
        st = filo_tensor_transpose(v, 0, 1, &t);
    if (st == FILO_OK)
        st = filo_tensor_reshape(t, 2, s2, &rows);
    if (st == FILO_OK)
        st = filo_reduce(FILO_REDUCE_SUM, rows, 1, 0, dbias);
    filo_tensor_free(v);
    filo_tensor_free(t);
    filo_tensor_free(rows);
    return st;
}

filo_status filo_conv2d_forward(const filo_tensor *x, const filo_tensor *w, const filo_tensor *bias,
                                const filo_conv2d_params *p, filo_tensor **y)
{
    static const char op[] = "filo_conv2d_forward";
    filo_conv2d_desc d;
    FILO_TRY(check_args(op, x, w, bias, p, &d));
    if (!y)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "y is NULL");
    int64_t shape[4] = {d.N, d.K, d.OH, d.OW};
    filo_tensor *out = NULL, *cx = NULL, *cw = NULL, *cb = NULL;
    filo_status st = filo_tensor_empty(x->device, x->dtype, 4, shape, &out);
    if (st == FILO_OK && d.N > 0) {
        st = filo_tensor_contiguous(x, &cx);
        if (st == FILO_OK)
            st = filo_tensor_contiguous(w, &cw);
        if (st == FILO_OK && bias)
            st = filo_tensor_contiguous(bias, &cb);
        if (st == FILO_OK) {
            if (x->device.type == FILO_DEVICE_CPU) {
                st = filo_cpu_conv2d_forward(&d, data_of(cx), data_of(cw), data_of(cb), filo_tensor_data(out));
            } else {
                void *s = NULL;
                st = filo_stream_current_native(x->device, &s);
                if (st == FILO_OK)
                    st = FILO_CUDA_CALL(filo_cuda_conv2d_forward(&d, data_of(cx), data_of(cw), filo_tensor_data(out),
                                                                 x->device.index, s));
                if (st == FILO_OK && cb)
                    st = add_bias(cb, &out);
            }
        }
    }
    filo_tensor_free(cx);
    filo_tensor_free(cw);
    filo_tensor_free(cb);
    if (st != FILO_OK) {
        filo_tensor_free(out);
        return filo_error_wrap(st, op);
    }
    *y = out;
    return FILO_OK;
}

filo_status filo_conv2d_backward(const filo_tensor *dy, const filo_tensor *x, const filo_tensor *w,
                                 const filo_conv2d_params *p, filo_tensor **dx, filo_tensor **dw,
                                 filo_tensor **dbias)
{
    static const char op[] = "filo_conv2d_backward";
    char a[DESC_LEN], b[DESC_LEN];
    filo_conv2d_desc d;
    FILO_TRY(check_args(op, x, w, NULL, p, &d));
    if (!dy)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dy is NULL");
    if (!dx && !dw && !dbias)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dx, dw and dbias are all NULL: nothing to compute");
    filo_tensor_describe(dy, a, sizeof a);
    filo_tensor_describe(x, b, sizeof b);
    int64_t yshape[4] = {d.N, d.K, d.OH, d.OW};
    if (dy->ndim != 4 || memcmp(dy->shape, yshape, sizeof yshape) != 0)
        return filo_error_set(FILO_ERR_SHAPE, op, "dy %s must have the forward output's shape [%lld, %lld, %lld, %lld] (x %s)",
                              a, (long long)yshape[0], (long long)yshape[1], (long long)yshape[2], (long long)yshape[3], b);
    if (dy->dtype != x->dtype)
        return filo_error_set(FILO_ERR_DTYPE, op, "dy %s must have the dtype of x %s", a, b);
    if (!filo_device_equal(dy->device, x->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "dy %s is not on the device of x %s", a, b);

    filo_tensor *o[3] = {NULL, NULL, NULL}, *cdy = NULL, *cx = NULL, *cw = NULL;
    filo_status st = FILO_OK;
    if (dx)
        st = filo_tensor_empty(x->device, x->dtype, 4, x->shape, &o[0]);
    if (st == FILO_OK && dw)
        st = filo_tensor_empty(x->device, x->dtype, 4, w->shape, &o[1]);
    /* On CUDA with samples, bias_grad allocates dbias itself. */
    int cuda_dbias = x->device.type != FILO_DEVICE_CPU && d.N > 0;
    if (st == FILO_OK && dbias && !cuda_dbias)
        st = filo_tensor_empty(x->device, x->dtype, 1, &d.K, &o[2]);
    if (st == FILO_OK && d.N == 0) {
        /* No samples: the weight and bias gradients are empty sums. */
        if (o[1])
            st = filo_tensor_fill(o[1], 0.0);
        if (st == FILO_OK && o[2])
            st = filo_tensor_fill(o[2], 0.0);
    } else if (st == FILO_OK) {
        st = filo_tensor_contiguous(dy, &cdy);
        if (st == FILO_OK && dw)
            st = filo_tensor_contiguous(x, &cx);
        if (st == FILO_OK && dx)
            st = filo_tensor_contiguous(w, &cw);
        if (st == FILO_OK) {
            void *pdx = o[0] ? filo_tensor_data(o[0]) : NULL, *pdw = o[1] ? filo_tensor_data(o[1]) : NULL;
            void *pdb = o[2] ? filo_tensor_data(o[2]) : NULL;
            if (x->device.type == FILO_DEVICE_CPU) {
                st = filo_cpu_conv2d_backward(&d, data_of(cdy), data_of(cx), data_of(cw), pdx, pdw, pdb);
            } else {
                void *s = NULL;
                st = filo_stream_current_native(x->device, &s);
                if (st == FILO_OK && (pdx || pdw))
                    st = FILO_CUDA_CALL(filo_cuda_conv2d_backward(&d, data_of(cdy), data_of(cx), data_of(cw), pdx, pdw,
                                                                  x->device.index, s));
                if (st == FILO_OK && dbias)
                    st = bias_grad(cdy, &d, &o[2]);
            }
        }
    }
    filo_tensor_free(cdy);
    filo_tensor_free(cx);
    filo_tensor_free(cw);
    if (st != FILO_OK) {
        for (int i = 0; i < 3; i++)
            filo_tensor_free(o[i]);
        return filo_error_wrap(st, op);
    }
    if (dx)
        *dx = o[0];
    if (dw)
        *dw = o[1];
    if (dbias)
        *dbias = o[2];
    return FILO_OK;
}
