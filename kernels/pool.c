/* Max and average pooling: argument checks, the parameters' defaults, the output size, contiguous
 * inputs, output allocation and the dispatch to kernels/cpu/pool.c or kernels/cuda/pool.cu. */
#include "filo/pool.h"

#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "pool_backend.h"

#define DESC_LEN 200

static int is_pool_dtype(filo_dtype t) { return t == FILO_F32 || t == FILO_F64 || t == FILO_BF16 || t == FILO_F16; }

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* PyTorch's pooling_output_shape. */
static int64_t out_dim(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, int ceil_mode)
{
    int64_t o = floor_div(in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0), s) + 1;
    if (ceil_mode && (o - 1) * s >= in + p)
        o--;
    return o;
}

/* Checks p and fills the resolved kernel/stride/pad/dilation fields of d (H, W set by caller). */
static filo_status resolve(const char *op, int avg, const filo_pool2d_params *p, filo_pool2d_desc *d)
{
    if (!p)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "params is NULL");
    if (p->kernel_h < 1 || p->kernel_w < 1)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "kernel must be >= 1, got %lldx%lld", (long long)p->kernel_h,
                              (long long)p->kernel_w);
    if (p->stride_h < 0 || p->stride_w < 0 || p->pad_h < 0 || p->pad_w < 0 || p->dilation_h < 0 || p->dilation_w < 0)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "stride %lldx%lld, pad %lldx%lld and dilation %lldx%lld must be >= 0",
                              (long long)p->stride_h, (long long)p->stride_w, (long long)p->pad_h, (long long)p->pad_w,
                              (long long)p->dilation_h, (long long)p->dilation_w);
    if (p->pad_h > p->kernel_h / 2 || p->pad_w > p->kernel_w / 2)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "pad %lldx%lld must be at most half of the kernel %lldx%lld",
                              (long long)p->pad_h, (long long)p->pad_w, (long long)p->kernel_h, (long long)p->kernel_w);
    if (p->kernel_h > (1 << 20) || p->kernel_w > (1 << 20) || p->stride_h > (1 << 20) || p->stride_w > (1 << 20) ||
        p->dilation_h > (1 << 20) || p->dilation_w > (1 << 20))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "kernel, stride and dilation must be at most 2^20");
    d->kh = p->kernel_h;
    d->kw = p->kernel_w;
    d->sh = p->stride_h ? p->stride_h : p->kernel_h;
    d->sw = p->stride_w ? p->stride_w : p->kernel_w;
    d->ph = p->pad_h;
    d->pw = p->pad_w;
    d->dh = p->dilation_h ? p->dilation_h : 1;
    d->dw = p->dilation_w ? p->dilation_w : 1;
    if (avg && (d->dh != 1 || d->dw != 1))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "average pooling has no dilation (got %lldx%lld)",
                              (long long)d->dh, (long long)d->dw);
    /* The CUDA kernels index within a plane with 32-bit ints. */
    if (d->H > ((int64_t)1 << 30) || d->W > ((int64_t)1 << 30) || d->H * d->W > INT32_MAX)
        return filo_error_set(FILO_ERR_SHAPE, op, "an input plane of %lldx%lld has 2^31 elements or more",
                              (long long)d->H, (long long)d->W);
    d->count_include_pad = p->count_include_pad != 0;
    d->OH = out_dim(d->H, d->kh, d->sh, d->ph, d->dh, p->ceil_mode != 0);
    d->OW = out_dim(d->W, d->kw, d->sw, d->pw, d->dw, p->ceil_mode != 0);
    if (d->OH * d->OW > INT32_MAX)
        return filo_error_set(FILO_ERR_SHAPE, op, "an output plane of %lldx%lld has 2^31 elements or more",
                              (long long)d->OH, (long long)d->OW);
    if (d->OH < 1 || d->OW < 1)
        return filo_error_set(FILO_ERR_SHAPE, op,
                              "output size %lldx%lld is too small (input %lldx%lld, kernel %lldx%lld, stride %lldx%lld, "
                              "pad %lldx%lld, dilation %lldx%lld)",
                              (long long)d->OH, (long long)d->OW, (long long)d->H, (long long)d->W, (long long)d->kh,
                              (long long)d->kw, (long long)d->sh, (long long)d->sw, (long long)d->ph, (long long)d->pw,
                              (long long)d->dh, (long long)d->dw);
    return FILO_OK;
}

filo_status filo_pool2d_output_size(const filo_pool2d_params *p, int64_t H, int64_t W, int64_t *oh, int64_t *ow)
{
    filo_pool2d_desc d = {.H = H, .W = W};
    if (H < 1 || W < 1)
        return filo_error_set(FILO_ERR_SHAPE, __func__, "input size %lldx%lld must be >= 1", (long long)H, (long long)W);
    FILO_TRY(resolve(__func__, 0, p, &d));
    *oh = d.OH;
    *ow = d.OW;
    return FILO_OK;
}

/* x (or dy): a 4-D float tensor with non-empty spatial dims. */
static filo_status check_x(const char *op, const char *what, const filo_tensor *x)
{
    char desc[DESC_LEN];
    if (!x)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", what);
    if (!is_pool_dtype(x->dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "%s must be f32, f64, bf16 or f16, got %s", what,
                              filo_tensor_describe(x, desc, sizeof desc));
    if (x->ndim != 4)
        return filo_error_set(FILO_ERR_SHAPE, op, "%s must be 4-D [N, C, H, W], got %s", what,
                              filo_tensor_describe(x, desc, sizeof desc));
    if (x->shape[2] < 1 || x->shape[3] < 1)
        return filo_error_set(FILO_ERR_SHAPE, op, "%s must have H, W >= 1, got %s", what,
                              filo_tensor_describe(x, desc, sizeof desc));
    return FILO_OK;
}

typedef enum { MAX_FWD, MAX_BWD, AVG_FWD, AVG_BWD } pool_kind;

static filo_status launch(pool_kind k, filo_device dev, const filo_pool2d_desc *d)
{
    if (d->planes == 0)
        return FILO_OK;
    if (dev.type == FILO_DEVICE_CPU) {
        switch (k) {
        case MAX_FWD: return filo_cpu_maxpool2d_forward(d);
        case MAX_BWD: return filo_cpu_maxpool2d_backward(d);
        case AVG_FWD: return filo_cpu_avgpool2d_forward(d);
        default: return filo_cpu_avgpool2d_backward(d);
        }
    }
    void *s = NULL;
    FILO_TRY(filo_stream_current_native(dev, &s));
    switch (k) {
    case MAX_FWD: return FILO_CUDA_CALL(filo_cuda_maxpool2d_forward(d, s));
    case MAX_BWD: return FILO_CUDA_CALL(filo_cuda_maxpool2d_backward(d, s));
    case AVG_FWD: return FILO_CUDA_CALL(filo_cuda_avgpool2d_forward(d, s));
    default: return FILO_CUDA_CALL(filo_cuda_avgpool2d_backward(d, s));
    }
}

static filo_status pool_forward(const char *op, int avg, const filo_tensor *x, const filo_pool2d_params *p,
                                filo_tensor **y, filo_tensor **indices)
{
    FILO_TRY(check_x(op, "x", x));
    if (!y || (!avg && !indices))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (y%s) is NULL", avg ? "" : ", indices");
    filo_pool2d_desc d = {.dtype = x->dtype, .planes = x->shape[0] * x->shape[1], .H = x->shape[2], .W = x->shape[3]};
    FILO_TRY(resolve(op, avg, p, &d));
    int64_t shape[4] = {x->shape[0], x->shape[1], d.OH, d.OW};
    filo_tensor *out = NULL, *idx = NULL, *cx = NULL;
    filo_status st = filo_tensor_empty(x->device, x->dtype, 4, shape, &out);
    if (st == FILO_OK && !avg)
        st = filo_tensor_empty(x->device, FILO_I64, 4, shape, &idx);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(x, &cx);
    if (st == FILO_OK) {
        d.x = filo_tensor_data(cx);
        d.y = filo_tensor_data(out);
        d.indices = idx ? filo_tensor_data(idx) : NULL;
        st = launch(avg ? AVG_FWD : MAX_FWD, x->device, &d);
    }
    filo_tensor_free(cx);
    if (st != FILO_OK) {
        filo_tensor_free(out);
        filo_tensor_free(idx);
        return filo_error_wrap(st, op);
    }
    *y = out;
    if (!avg)
        *indices = idx;
    return FILO_OK;
}

static filo_status pool_backward(const char *op, int avg, const filo_tensor *dy, const filo_tensor *indices,
                                 const int64_t *x_shape, const filo_pool2d_params *p, filo_tensor **dx)
{
    char a[DESC_LEN], b[DESC_LEN];
    FILO_TRY(check_x(op, "dy", dy));
    if (!x_shape)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "x_shape is NULL");
    if (!dx)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dx is NULL");
    if (x_shape[0] < 0 || x_shape[1] < 0 || x_shape[2] < 1 || x_shape[3] < 1)
        return filo_error_set(FILO_ERR_SHAPE, op, "x_shape [%lld, %lld, %lld, %lld] must have N, C >= 0 and H, W >= 1",
                              (long long)x_shape[0], (long long)x_shape[1], (long long)x_shape[2], (long long)x_shape[3]);
    filo_pool2d_desc d = {.dtype = dy->dtype, .planes = x_shape[0] * x_shape[1], .H = x_shape[2], .W = x_shape[3]};
    FILO_TRY(resolve(op, avg, p, &d));
    int64_t want[4] = {x_shape[0], x_shape[1], d.OH, d.OW};
    if (memcmp(want, dy->shape, sizeof want) != 0)
        return filo_error_set(FILO_ERR_SHAPE, op,
                              "dy %s must have the forward output's shape [%lld, %lld, %lld, %lld] (x_shape [%lld, %lld, %lld, %lld])",
                              filo_tensor_describe(dy, a, sizeof a), (long long)want[0], (long long)want[1],
                              (long long)want[2], (long long)want[3], (long long)x_shape[0], (long long)x_shape[1],
                              (long long)x_shape[2], (long long)x_shape[3]);
    if (!avg) {
        if (!indices)
            return filo_error_set(FILO_ERR_INVALID_ARG, op, "indices is NULL");
        if (indices->dtype != FILO_I64)
            return filo_error_set(FILO_ERR_DTYPE, op, "indices %s must be i64",
                                  filo_tensor_describe(indices, a, sizeof a));
        if (indices->ndim != 4 || memcmp(indices->shape, dy->shape, sizeof want) != 0)
            return filo_error_set(FILO_ERR_SHAPE, op, "indices %s must have the shape of dy %s",
                                  filo_tensor_describe(indices, a, sizeof a), filo_tensor_describe(dy, b, sizeof b));
        if (!filo_device_equal(indices->device, dy->device))
            return filo_error_set(FILO_ERR_DEVICE, op, "indices %s is not on the device of dy %s",
                                  filo_tensor_describe(indices, a, sizeof a), filo_tensor_describe(dy, b, sizeof b));
    }
    filo_tensor *out = NULL, *cdy = NULL, *cidx = NULL;
    filo_status st = filo_tensor_empty(dy->device, dy->dtype, 4, x_shape, &out);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(dy, &cdy);
    if (st == FILO_OK && !avg)
        st = filo_tensor_contiguous(indices, &cidx);
    if (st == FILO_OK) {
        d.dy = filo_tensor_data(cdy);
        d.dx = filo_tensor_data(out);
        d.indices = cidx ? filo_tensor_data(cidx) : NULL;
        st = launch(avg ? AVG_BWD : MAX_BWD, dy->device, &d);
    }
    filo_tensor_free(cdy);
    filo_tensor_free(cidx);
    if (st != FILO_OK) {
        filo_tensor_free(out);
        return filo_error_wrap(st, op);
    }
    *dx = out;
    return FILO_OK;
}

filo_status filo_maxpool2d_forward(const filo_tensor *x, const filo_pool2d_params *p, filo_tensor **y,
                                   filo_tensor **indices)
{
    return pool_forward(__func__, 0, x, p, y, indices);
}

filo_status filo_maxpool2d_backward(const filo_tensor *dy, const filo_tensor *indices, const int64_t x_shape[4],
                                    const filo_pool2d_params *p, filo_tensor **dx)
{
    return pool_backward(__func__, 0, dy, indices, x_shape, p, dx);
}

filo_status filo_avgpool2d_forward(const filo_tensor *x, const filo_pool2d_params *p, filo_tensor **y)
{
    return pool_forward(__func__, 1, x, p, y, NULL);
}

filo_status filo_avgpool2d_backward(const filo_tensor *dy, const int64_t x_shape[4], const filo_pool2d_params *p,
                                    filo_tensor **dx)
{
    return pool_backward(__func__, 1, dy, NULL, x_shape, p, dx);
}
