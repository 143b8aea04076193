/* Optimizer ops: argument checks, contiguous grads, the step's scalars and the dispatch to
 * kernels/cpu/optim.c or kernels/cuda/optim.cu by the tensors' device. */
#include "filo/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "optim_backend.h"

#define DESC_LEN 200

static int same_shape(const filo_tensor *a, const filo_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    return 1;
}

static int is_grad_dtype(filo_dtype t) { return t == FILO_F32 || t == FILO_BF16 || t == FILO_F16; }

/* what[i] (shape, dtype, device) must match params[i] and `dev`; contiguous when in place. */
static filo_status check_entry(const char *op, const char *what, int i, const filo_tensor *t, const filo_tensor *param,
                               filo_device dev, int need_contiguous)
{
    char a[DESC_LEN], b[DESC_LEN];
    if (!t)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s[%d] is NULL", what, i);
    if (param && !same_shape(t, param))
        return filo_error_set(FILO_ERR_SHAPE, op, "%s[%d] %s must have the shape of params[%d] %s", what, i,
                              filo_tensor_describe(t, a, sizeof a), i, filo_tensor_describe(param, b, sizeof b));
    if (!filo_device_equal(t->device, dev)) {
        char d[32];
        return filo_error_set(FILO_ERR_DEVICE, op, "%s[%d] %s is not on %s (the device of the first tensor)", what, i,
                              filo_tensor_describe(t, a, sizeof a), filo_device_format(dev, d, sizeof d));
    }
    if (need_contiguous && !filo_tensor_is_contiguous(t))
        return filo_error_set(FILO_ERR_SHAPE, op, "%s[%d] %s is updated in place and must be contiguous", what, i,
                              filo_tensor_describe(t, a, sizeof a));
    return FILO_OK;
}

/* A 0-dim device scalar on `dev` of one of the allowed dtypes (u8_ok adds u8 to f32). */
static filo_status check_scalar(const char *op, const char *what, const filo_tensor *t, filo_device dev, int u8_ok)
{
    char a[DESC_LEN], d[32];
    if (t->ndim != 0)
        return filo_error_set(FILO_ERR_SHAPE, op, "%s must be a 0-dim tensor, got %s", what,
                              filo_tensor_describe(t, a, sizeof a));
    if (t->dtype != FILO_F32 && !(u8_ok && t->dtype == FILO_U8))
        return filo_error_set(FILO_ERR_DTYPE, op, "%s must be f32%s, got %s", what, u8_ok ? " or u8" : "",
                              filo_tensor_describe(t, a, sizeof a));
    if (!filo_device_equal(t->device, dev))
        return filo_error_set(FILO_ERR_DEVICE, op, "%s %s is not on %s (the device of the parameters)", what,
                              filo_tensor_describe(t, a, sizeof a), filo_device_format(dev, d, sizeof d));
    return FILO_OK;
}

filo_adam_options filo_adam_defaults(int decoupled)
{
    filo_adam_options o;
    memset(&o, 0, sizeof o);
    o.lr = 1e-3;
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    o.eps = 1e-8;
    o.weight_decay = decoupled ? 1e-2 : 0.0;
    o.decoupled = decoupled ? 1 : 0;
    o.step = 1;
    return o;
}

static filo_status check_options(const char *op, const filo_adam_options *o)
{
    if (!o)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "options is NULL");
    if (!(o->lr >= 0.0) || !isfinite(o->lr))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "lr must be finite and >= 0, got %g", o->lr);
    if (!(o->beta1 >= 0.0 && o->beta1 < 1.0))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "beta1 must be in [0, 1), got %g", o->beta1);
    if (!(o->beta2 >= 0.0 && o->beta2 < 1.0))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "beta2 must be in [0, 1), got %g", o->beta2);
    if (!(o->eps > 0.0) || !isfinite(o->eps))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "eps must be finite and > 0, got %g", o->eps);
    if (!(o->weight_decay >= 0.0) || !isfinite(o->weight_decay))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "weight_decay must be finite and >= 0, got %g",
                              o->weight_decay);
    if (o->step < 1)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "step must be >= 1 (the count of this step), got %lld",
                              (long long)o->step);
    if (o->decoupled != 0 && o->decoupled != 1)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "decoupled must be 0 (Adam) or 1 (AdamW), got %d",
                              o->decoupled);
    return FILO_OK;
}

static void free_all(filo_tensor **t, int n)
{
    if (!t)
        return;
    for (int i = 0; i < n; i++)
        filo_tensor_free(t[i]);
    free(t);
}

filo_status filo_adam_step(int n, filo_tensor *const *params, const filo_tensor *const *grads,
                           filo_tensor *const *exp_avgs, filo_tensor *const *exp_avg_sqs,
                           filo_tensor *const *copies, const filo_adam_options *opt)
{
    const char *op = __func__;
    char a[DESC_LEN], b[DESC_LEN];
    FILO_TRY(check_options(op, opt));
    if (n < 0)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "n must be >= 0, got %d", n);
    if (n == 0)
        return FILO_OK;
    if (!params || !grads || !exp_avgs || !exp_avg_sqs)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an array (params, grads, exp_avgs, exp_avg_sqs) is NULL");
    if (!params[0])
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "params[0] is NULL");
    filo_device dev = params[0]->device;
    filo_dtype gdt = grads[0] ? grads[0]->dtype : FILO_F32;
    int has_copy = 0;
    filo_dtype cdt = FILO_BF16;
    for (int i = 0; i < n; i++) {
        const filo_tensor *p = params[i];
        FILO_TRY(check_entry(op, "params", i, p, NULL, dev, 1));
        if (p->dtype != FILO_F32)
            return filo_error_set(FILO_ERR_DTYPE, op, "params[%d] %s must be f32 (master weights)", i,
                                  filo_tensor_describe(p, a, sizeof a));
        FILO_TRY(check_entry(op, "grads", i, grads[i], p, dev, 0));
        if (!is_grad_dtype(grads[i]->dtype))
            return filo_error_set(FILO_ERR_DTYPE, op, "grads[%d] %s must be f32, bf16 or f16", i,
                                  filo_tensor_describe(grads[i], a, sizeof a));
        if (grads[i]->dtype != gdt)
            return filo_error_set(FILO_ERR_DTYPE, op, "grads[%d] %s must have the dtype of grads[0] (%s): one grad "
                                  "dtype a call", i, filo_tensor_describe(grads[i], a, sizeof a), filo_dtype_name(gdt));
        FILO_TRY(check_entry(op, "exp_avgs", i, exp_avgs[i], p, dev, 1));
        FILO_TRY(check_entry(op, "exp_avg_sqs", i, exp_avg_sqs[i], p, dev, 1));
        const filo_tensor *st[2] = {exp_avgs[i], exp_avg_sqs[i]};
        for (int k = 0; k < 2; k++)
            if (st[k]->dtype != FILO_F32)
                return filo_error_set(FILO_ERR_DTYPE, op, "%s[%d] %s must be f32", k ? "exp_avg_sqs" : "exp_avgs", i,
                                      filo_tensor_describe(st[k], a, sizeof a));
        const filo_tensor *c = copies ? copies[i] : NULL;
        if (c) {
            FILO_TRY(check_entry(op, "copies", i, c, p, dev, 1));
            if (c->dtype != FILO_BF16 && c->dtype != FILO_F16)
                return filo_error_set(FILO_ERR_DTYPE, op, "copies[%d] %s must be bf16 or f16", i,
                                      filo_tensor_describe(c, a, sizeof a));
            if (has_copy && c->dtype != cdt)
                return filo_error_set(FILO_ERR_DTYPE, op, "copies[%d] %s must have the dtype of the other copies (%s)",
                                      i, filo_tensor_describe(c, a, sizeof a), filo_dtype_name(cdt));
            has_copy = 1;
            cdt = c->dtype;
        }
        /* In-place buffers that alias each other would be read after they are written. */
        if (filo_tensor_numel(p) > 0) {
            void *ptr[4] = {filo_tensor_data(p), filo_tensor_data(exp_avgs[i]), filo_tensor_data(exp_avg_sqs[i]),
                            c ? filo_tensor_data(c) : NULL};
            for (int x = 0; x < 4; x++)
                for (int y = x + 1; y < 4; y++)
                    if (ptr[x] && ptr[x] == ptr[y])
                        return filo_error_set(FILO_ERR_INVALID_ARG, op,
                                              "params[%d] %s: param, exp_avg, exp_avg_sq and copy must be distinct "
                                              "tensors", i, filo_tensor_describe(p, b, sizeof b));
        }
    }
    if (opt->grad_scale)
        FILO_TRY(check_scalar(op, "grad_scale", opt->grad_scale, dev, 0));
    if (opt->found_inf)
        FILO_TRY(check_scalar(op, "found_inf", opt->found_inf, dev, 1));

    /* Scalars in double as PyTorch's Python floats, then f32 for the element math. */
    if (opt->step_count)
        FILO_TRY(check_scalar(op, "step_count", opt->step_count, dev, 0));
    double lr = opt->lr, wd = opt->weight_decay;
    filo_adam_desc d;
    memset(&d, 0, sizeof d);
    d.s.beta1 = (float)opt->beta1;
    d.s.beta2 = (float)opt->beta2;
    d.s.one_minus_beta1 = (float)(1.0 - opt->beta1);
    d.s.one_minus_beta2 = (float)(1.0 - opt->beta2);
    d.s.eps = (float)opt->eps;
    d.s.decoupled = opt->decoupled;
    d.s.weight_decay = opt->decoupled ? 0.0f : (float)wd;
    d.s.decay = opt->decoupled ? (float)(1.0 - lr * wd) : 1.0f;
    d.s.lr = lr;
    d.s.beta1_d = opt->beta1;
    d.s.beta2_d = opt->beta2;
    filo_adam_scalars_at_step(&d.s, (double)opt->step);
    d.step_count = opt->step_count ? filo_tensor_data(opt->step_count) : NULL;
    d.n = n;
    d.grad_dtype = gdt;
    d.copy_dtype = cdt;
    d.has_copy = has_copy;
    d.grad_scale = opt->grad_scale ? filo_tensor_data(opt->grad_scale) : NULL;
    d.found_inf = opt->found_inf ? filo_tensor_data(opt->found_inf) : NULL;
    d.found_inf_dtype = opt->found_inf ? opt->found_inf->dtype : FILO_F32;

    filo_adam_tensor *tab = calloc((size_t)n, sizeof *tab);
    filo_tensor **gc = calloc((size_t)n, sizeof *gc);
    if (!tab || !gc) {
        free(tab);
        free(gc);
        return filo_error_set(FILO_ERR_OOM, op, "out of host memory for %d tensors", n);
    }
    filo_status st = FILO_OK;
    for (int i = 0; i < n && st == FILO_OK; i++) {
        st = filo_tensor_contiguous(grads[i], &gc[i]);
        if (st != FILO_OK)
            break;
        tab[i].numel = filo_tensor_numel(params[i]);
        tab[i].param = filo_tensor_data(params[i]);
        tab[i].grad = filo_tensor_data(gc[i]);
        tab[i].exp_avg = filo_tensor_data(exp_avgs[i]);
        tab[i].exp_avg_sq = filo_tensor_data(exp_avg_sqs[i]);
        tab[i].copy = copies && copies[i] ? filo_tensor_data(copies[i]) : NULL;
    }
    d.tensors = tab;
    if (st == FILO_OK) {
        if (dev.type == FILO_DEVICE_CPU) {
            st = filo_cpu_adam_step(&d);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(dev, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_adam_step(&d, stream));
        }
    }
    /* Contiguous grad copies go back to the caching allocator: only later work on this stream
     * reuses them, after the step has read them. */
    free_all(gc, n);
    free(tab);
    return st == FILO_OK ? FILO_OK : filo_error_wrap(st, op);
}

/* Grad-norm and found-inf: one reduction with optional outputs. */
static filo_status norm_reduce(const char *op, const filo_tensor *const *grads, int n, int kind, filo_tensor **norm,
                               filo_tensor **flag)
{
    char a[DESC_LEN];
    if (n < 1)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "n must be >= 1 (the grads give the device), got %d", n);
    if (!grads || !grads[0])
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "grads or grads[0] is NULL");
    filo_device dev = grads[0]->device;
    filo_dtype dt = grads[0]->dtype;
    int64_t partials = 0;
    for (int i = 0; i < n; i++) {
        FILO_TRY(check_entry(op, "grads", i, grads[i], NULL, dev, 0));
        if (!is_grad_dtype(grads[i]->dtype))
            return filo_error_set(FILO_ERR_DTYPE, op, "grads[%d] %s must be f32, bf16 or f16", i,
                                  filo_tensor_describe(grads[i], a, sizeof a));
        if (grads[i]->dtype != dt)
            return filo_error_set(FILO_ERR_DTYPE, op, "grads[%d] %s must have the dtype of grads[0] (%s): one grad "
                                  "dtype a call", i, filo_tensor_describe(grads[i], a, sizeof a), filo_dtype_name(dt));
        partials += (filo_tensor_numel(grads[i]) + FILO_OPTIM_CHUNK - 1) / FILO_OPTIM_CHUNK;
    }
    filo_tensor *out_norm = NULL, *out_flag = NULL, *scratch = NULL;
    filo_tensor **gc = calloc((size_t)n, sizeof *gc);
    const void **ptrs = calloc((size_t)n, sizeof *ptrs);
    int64_t *numel = calloc((size_t)n, sizeof *numel);
    filo_status st = (gc && ptrs && numel) ? FILO_OK : filo_error_set(FILO_ERR_OOM, op, "out of host memory");
    if (st == FILO_OK && norm)
        st = filo_tensor_empty(dev, FILO_F32, 0, NULL, &out_norm);
    if (st == FILO_OK && flag)
        st = filo_tensor_empty(dev, FILO_F32, 0, NULL, &out_flag);
    if (st == FILO_OK && dev.type == FILO_DEVICE_CUDA && partials > 0) {
        int64_t shape = 2 * partials;
        st = filo_tensor_empty(dev, FILO_F32, 1, &shape, &scratch);
    }
    for (int i = 0; i < n && st == FILO_OK; i++) {
        st = filo_tensor_contiguous(grads[i], &gc[i]);
        if (st == FILO_OK) {
            ptrs[i] = filo_tensor_data(gc[i]);
            numel[i] = filo_tensor_numel(gc[i]);
        }
    }
    if (st == FILO_OK) {
        filo_grad_norm_desc d = {
            .n = n,
            .grads = ptrs,
            .numel = numel,
            .dtype = dt,
            .kind = kind,
            .norm = out_norm ? filo_tensor_data(out_norm) : NULL,
            .nonfinite = out_flag ? filo_tensor_data(out_flag) : NULL,
            .partial = scratch ? filo_tensor_data(scratch) : NULL,
            .partial_count = partials,
        };
        if (dev.type == FILO_DEVICE_CPU) {
            st = filo_cpu_grad_norm(&d);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(dev, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_grad_norm(&d, stream));
        }
    }
    filo_tensor_free(scratch);
    free_all(gc, gc ? n : 0);
    free(ptrs);
    free(numel);
    if (st != FILO_OK) {
        filo_tensor_free(out_norm);
        filo_tensor_free(out_flag);
        return filo_error_wrap(st, op);
    }
    if (norm)
        *norm = out_norm;
    if (flag)
        *flag = out_flag;
    return FILO_OK;
}

filo_status filo_grad_norm(const filo_tensor *const *grads, int n, double norm_type, filo_tensor **norm,
                           filo_tensor **nonfinite)
{
    int kind;
    if (norm_type == 2.0)
        kind = FILO_NORM_L2;
    else if (norm_type == 1.0)
        kind = FILO_NORM_L1;
    else if (isinf(norm_type) && norm_type > 0)
        kind = FILO_NORM_INF;
    else
        return filo_error_set(FILO_ERR_UNSUPPORTED, __func__, "norm_type must be 2.0, 1.0 or INFINITY, got %g",
                              norm_type);
    if (!norm)
        return filo_error_set(FILO_ERR_INVALID_ARG, __func__, "the output pointer norm is NULL");
    return norm_reduce(__func__, grads, n, kind, norm, nonfinite);
}

filo_status filo_found_inf(const filo_tensor *const *grads, int n, filo_tensor **found_inf)
{
    if (!found_inf)
        return filo_error_set(FILO_ERR_INVALID_ARG, __func__, "the output pointer found_inf is NULL");
    return norm_reduce(__func__, grads, n, FILO_NORM_INF, NULL, found_inf);
}

filo_status filo_clip_coef(const filo_tensor *norm, double max_norm, filo_tensor **coef)
{
    const char *op = __func__;
    if (!norm)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "norm is NULL");
    if (!coef)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "the output pointer coef is NULL");
    FILO_TRY(check_scalar(op, "norm", norm, norm->device, 0));
    if (!(max_norm >= 0.0) || !isfinite(max_norm))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "max_norm must be finite and >= 0, got %g", max_norm);
    filo_tensor *out = NULL;
    filo_status st = filo_tensor_empty(norm->device, FILO_F32, 0, NULL, &out);
    if (st == FILO_OK) {
        const float *in = filo_tensor_data(norm);
        float *o = filo_tensor_data(out);
        if (norm->device.type == FILO_DEVICE_CPU) {
            st = filo_cpu_clip_coef(in, (float)max_norm, o);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(norm->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_clip_coef(in, (float)max_norm, o, stream));
        }
    }
    if (st != FILO_OK) {
        filo_tensor_free(out);
        return filo_error_wrap(st, op);
    }
    *coef = out;
    return FILO_OK;
}
