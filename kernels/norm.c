/* LayerNorm and RMSNorm: argument checks, contiguous inputs, output allocation and the dispatch
 * to kernels/cpu/norm.c or kernels/cuda/norm.cu by the inputs' device. */
#include "filo/norm.h"

#include <stddef.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "op_checks.h"
#include "norm_backend.h"

#define DESC_LEN 200

static filo_dtype stat_dtype(filo_dtype t) { return t == FILO_F64 ? FILO_F64 : FILO_F32; }

static int is_norm_dtype(filo_dtype t) { return t == FILO_F32 || t == FILO_F64 || t == FILO_BF16 || t == FILO_F16; }

/* x (or dy/h) must be a float tensor with at least one dim and a non-empty last dim. */
static filo_status check_input(const char *op, const char *what, const filo_tensor *t)
{
    char desc[DESC_LEN];
    if (!t)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", what);
    if (!is_norm_dtype(t->dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "%s must be f32, f64, bf16 or f16, got %s", what,
                              filo_tensor_describe(t, desc, sizeof desc));
    if (t->ndim < 1 || t->shape[t->ndim - 1] == 0)
        return filo_error_set(FILO_ERR_SHAPE, op, "%s must have at least one dim and a non-empty last dim, got %s",
                              what, filo_tensor_describe(t, desc, sizeof desc));
    /* The kernels index a row (and the backward's 2C-wide scratch row) with 32-bit ints. */
    if (t->shape[t->ndim - 1] > ((int64_t)1 << 30))
        return filo_error_set(FILO_ERR_SHAPE, op, "%s has a last dim over 2^30: %s", what,
                              filo_tensor_describe(t, desc, sizeof desc));
    return FILO_OK;
}

/* gamma/beta: [C], x's dtype (or f32 when x is bf16/f16), x's device. */
static filo_status check_param(const char *op, const char *what, const filo_tensor *p, const filo_tensor *x)
{
    char a[DESC_LEN], b[DESC_LEN];
    if (!p)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", what);
    int64_t C = x->shape[x->ndim - 1];
    if (p->ndim != 1 || p->shape[0] != C)
        return filo_error_set(FILO_ERR_SHAPE, op, "%s %s must have shape [%lld] (the last dim of %s)", what,
                              filo_tensor_describe(p, a, sizeof a), (long long)C, filo_tensor_describe(x, b, sizeof b));
    int half = x->dtype == FILO_BF16 || x->dtype == FILO_F16;
    if (p->dtype != x->dtype && !(half && p->dtype == FILO_F32))
        return filo_error_set(FILO_ERR_DTYPE, op, "%s %s must have the dtype of %s%s", what,
                              filo_tensor_describe(p, a, sizeof a), filo_tensor_describe(x, b, sizeof b),
                              half ? " or f32" : "");
    if (!filo_device_equal(p->device, x->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "%s %s is not on the device of %s", what,
                              filo_tensor_describe(p, a, sizeof a), filo_tensor_describe(x, b, sizeof b));
    return FILO_OK;
}

/* mean/rstd: x's leading shape, the statistics' dtype, x's device. */
static filo_status check_stat(const char *op, const char *what, const filo_tensor *s, const filo_tensor *x)
{
    char a[DESC_LEN], b[DESC_LEN];
    if (!s)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", what);
    int same = s->ndim == x->ndim - 1;
    for (int i = 0; same && i < s->ndim; i++)
        same = s->shape[i] == x->shape[i];
    if (!same)
        return filo_error_set(FILO_ERR_SHAPE, op, "%s %s must have the leading shape of %s", what,
                              filo_tensor_describe(s, a, sizeof a), filo_tensor_describe(x, b, sizeof b));
    if (s->dtype != stat_dtype(x->dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "%s %s must be %s for %s", what, filo_tensor_describe(s, a, sizeof a),
                              filo_dtype_name(stat_dtype(x->dtype)), filo_tensor_describe(x, b, sizeof b));
    if (!filo_device_equal(s->device, x->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "%s %s is not on the device of %s", what,
                              filo_tensor_describe(s, a, sizeof a), filo_tensor_describe(x, b, sizeof b));
    return FILO_OK;
}

/* Contiguous aliases (or copies) of up to 5 optional inputs, released together. */
typedef struct contig_set {
    filo_tensor *t[5];
} contig_set;

static void contig_free(contig_set *s)
{
    for (int i = 0; i < 5; i++) {
        filo_tensor_free(s->t[i]);
        s->t[i] = NULL;
    }
}

static filo_status contig_make(contig_set *s, const filo_tensor *const *in, int n)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < n; i++) {
        if (!in[i])
            continue;
        filo_status st = filo_tensor_contiguous(in[i], &s->t[i]);
        if (st != FILO_OK) {
            contig_free(s);
            return st;
        }
    }
    return FILO_OK;
}

static const void *data_of(const filo_tensor *t) { return t ? filo_tensor_data(t) : NULL; }

/* Outputs allocated so far, freed together when a later step fails. */
typedef struct out_set {
    filo_tensor *t[4];
} out_set;

static void out_free(out_set *o)
{
    for (int i = 0; i < 4; i++) {
        filo_tensor_free(o->t[i]);
        o->t[i] = NULL;
    }
}

static filo_status norm_forward(const char *op, int rms, const filo_tensor *x, const filo_tensor *residual,
                                const filo_tensor *gamma, const filo_tensor *beta, double eps, filo_tensor **y,
                                filo_tensor **h_out, filo_tensor **mean, filo_tensor **rstd)
{
    FILO_TRY(check_input(op, "x", x));
    if (residual)
        FILO_TRY(filo_check_like(op, "residual", residual, "x", x));
    FILO_TRY(check_param(op, "gamma", gamma, x));
    if (beta)
        FILO_TRY(check_param(op, "beta", beta, x));
    if (beta && beta->dtype != gamma->dtype)
        return filo_error_set(FILO_ERR_DTYPE, op, "beta is %s but gamma is %s", filo_dtype_name(beta->dtype),
                              filo_dtype_name(gamma->dtype));
    if (!(eps >= 0.0) || eps > 1e300)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "eps must be finite and >= 0, got %g", eps);
    if (!y || !rstd || (!rms && !mean))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (y, %srstd) is NULL", rms ? "" : "mean, ");
    if (residual && !h_out)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "h_out is NULL but a residual is given (h = x + residual is an output)");

    filo_dtype sd = stat_dtype(x->dtype);
    out_set o = {{NULL}};
    filo_status st = filo_tensor_empty(x->device, x->dtype, x->ndim, x->shape, &o.t[0]);
    if (st == FILO_OK && residual)
        st = filo_tensor_empty(x->device, x->dtype, x->ndim, x->shape, &o.t[1]);
    if (st == FILO_OK && !rms)
        st = filo_tensor_empty(x->device, sd, x->ndim - 1, x->shape, &o.t[2]);
    if (st == FILO_OK)
        st = filo_tensor_empty(x->device, sd, x->ndim - 1, x->shape, &o.t[3]);
    if (st != FILO_OK) {
        out_free(&o);
        return filo_error_wrap(st, op);
    }

    const filo_tensor *in[5] = {x, residual, gamma, beta, NULL};
    contig_set c;
    st = contig_make(&c, in, 4);
    if (st != FILO_OK) {
        out_free(&o);
        return filo_error_wrap(st, op);
    }
    filo_norm_forward_desc d = {
        .rms = rms,
        .cols = x->shape[x->ndim - 1],
        .dtype = x->dtype,
        .param_dtype = gamma->dtype,
        .eps = eps,
        .x = data_of(c.t[0]),
        .residual = data_of(c.t[1]),
        .gamma = data_of(c.t[2]),
        .beta = data_of(c.t[3]),
        .y = filo_tensor_data(o.t[0]),
        .h = o.t[1] ? filo_tensor_data(o.t[1]) : NULL,
        .mean = o.t[2] ? filo_tensor_data(o.t[2]) : NULL,
        .rstd = filo_tensor_data(o.t[3]),
    };
    d.rows = filo_tensor_numel(x) / d.cols;
    if (d.rows > 0) {
        if (x->device.type == FILO_DEVICE_CPU) {
            st = filo_cpu_norm_forward(&d);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(x->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_norm_forward(&d, stream));
        }
    }
    contig_free(&c);
    if (st != FILO_OK) {
        out_free(&o);
        return filo_error_wrap(st, op);
    }
    *y = o.t[0];
    if (h_out)
        *h_out = o.t[1];
    if (mean)
        *mean = o.t[2];
    *rstd = o.t[3];
    return FILO_OK;
}

static filo_status norm_backward(const char *op, int rms, const filo_tensor *dy, const filo_tensor *h,
                                 const filo_tensor *mean, const filo_tensor *rstd, const filo_tensor *gamma,
                                 filo_tensor **dx, filo_tensor **dgamma, filo_tensor **dbeta)
{
    FILO_TRY(check_input(op, "h", h));
    FILO_TRY(filo_check_like(op, "dy", dy, "h", h));
    if (!rms)
        FILO_TRY(check_stat(op, "mean", mean, h));
    FILO_TRY(check_stat(op, "rstd", rstd, h));
    FILO_TRY(check_param(op, "gamma", gamma, h));
    if (!dx || !dgamma)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (dx, dgamma) is NULL");

    int64_t C = h->shape[h->ndim - 1];
    int64_t rows = filo_tensor_numel(h) / C;
    out_set o = {{NULL}};
    filo_tensor *partial = NULL;
    filo_status st = filo_tensor_empty(h->device, h->dtype, h->ndim, h->shape, &o.t[0]);
    if (st == FILO_OK)
        st = filo_tensor_empty(h->device, gamma->dtype, 1, &C, &o.t[1]);
    if (st == FILO_OK && dbeta)
        st = filo_tensor_empty(h->device, gamma->dtype, 1, &C, &o.t[2]);
    if (st == FILO_OK && rows == 0) {
        /* No rows: the parameter gradients are empty sums. */
        st = filo_tensor_fill(o.t[1], 0.0);
        if (st == FILO_OK && o.t[2])
            st = filo_tensor_fill(o.t[2], 0.0);
    }
    int64_t blocks = rows < FILO_NORM_BWD_MAX_BLOCKS ? rows : FILO_NORM_BWD_MAX_BLOCKS;
    if (st == FILO_OK && rows > 0 && h->device.type == FILO_DEVICE_CUDA) {
        int64_t shape[2] = {blocks, (rms ? 1 : 2) * C};
        st = filo_tensor_empty(h->device, stat_dtype(h->dtype), 2, shape, &partial);
    }
    if (st != FILO_OK) {
        out_free(&o);
        return filo_error_wrap(st, op);
    }

    const filo_tensor *in[5] = {dy, h, rms ? NULL : mean, rstd, gamma};
    contig_set c;
    st = contig_make(&c, in, 5);
    if (st == FILO_OK && rows > 0) {
        filo_norm_backward_desc d = {
            .rms = rms,
            .rows = rows,
            .cols = C,
            .dtype = h->dtype,
            .param_dtype = gamma->dtype,
            .dy = data_of(c.t[0]),
            .h = data_of(c.t[1]),
            .mean = data_of(c.t[2]),
            .rstd = data_of(c.t[3]),
            .gamma = data_of(c.t[4]),
            .dx = filo_tensor_data(o.t[0]),
            .dgamma = filo_tensor_data(o.t[1]),
            .dbeta = o.t[2] ? filo_tensor_data(o.t[2]) : NULL,
            .partial = partial ? filo_tensor_data(partial) : NULL,
            .partial_blocks = blocks,
        };
        if (h->device.type == FILO_DEVICE_CPU) {
            st = filo_cpu_norm_backward(&d);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(h->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_norm_backward(&d, stream));
        }
    }
    contig_free(&c);
    /* The scratch goes back to the caching allocator now: it is reused only by later work on this
     * stream, which runs after the kernels that read it. */
    filo_tensor_free(partial);
    if (st != FILO_OK) {
        out_free(&o);
        return filo_error_wrap(st, op);
    }
    *dx = o.t[0];
    *dgamma = o.t[1];
    if (dbeta)
        *dbeta = o.t[2];
    return FILO_OK;
}

filo_status filo_layernorm_forward(const filo_tensor *x, const filo_tensor *residual, const filo_tensor *gamma,
                                   const filo_tensor *beta, double eps, filo_tensor **y, filo_tensor **h_out,
                                   filo_tensor **mean, filo_tensor **rstd)
{
    return norm_forward(__func__, 0, x, residual, gamma, beta, eps, y, h_out, mean, rstd);
}

filo_status filo_layernorm_backward(const filo_tensor *dy, const filo_tensor *h, const filo_tensor *mean,
                                    const filo_tensor *rstd, const filo_tensor *gamma, filo_tensor **dx,
                                    filo_tensor **dgamma, filo_tensor **dbeta)
{
    return norm_backward(__func__, 0, dy, h, mean, rstd, gamma, dx, dgamma, dbeta);
}

filo_status filo_rmsnorm_forward(const filo_tensor *x, const filo_tensor *residual, const filo_tensor *gamma,
                                 double eps, filo_tensor **y, filo_tensor **h_out, filo_tensor **rstd)
{
    return norm_forward(__func__, 1, x, residual, gamma, NULL, eps, y, h_out, NULL, rstd);
}

filo_status filo_rmsnorm_backward(const filo_tensor *dy, const filo_tensor *h, const filo_tensor *rstd,
                                  const filo_tensor *gamma, filo_tensor **dx, filo_tensor **dgamma)
{
    return norm_backward(__func__, 1, dy, h, NULL, rstd, gamma, dx, dgamma, NULL);
}
