/* Conv2d (nn.Conv2d with PyTorch's default init), max/avg pooling and Flatten. Conv2d is
 * matmul-like under autocast: x, weight and bias run in the autocast dtype. */
#include <math.h>

#include "error.h"
#include "nn_internal.h"

filo_status filo_nn_conv2d_init(filo_nn_conv2d *m, filo_params *ps, const char *prefix, int64_t in_channels,
                                int64_t out_channels, int64_t kh, int64_t kw, const filo_conv2d_params *p, int bias)
{
    if (!m || !ps)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m and ps must not be NULL");
    filo_conv2d_params cp = p ? *p : (filo_conv2d_params){0};
    int64_t groups = cp.groups ? cp.groups : 1;
    if (in_channels <= 0 || out_channels <= 0 || kh <= 0 || kw <= 0 || groups <= 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG,
                         "in_channels = %lld, out_channels = %lld, kernel %lldx%lld and groups = %lld must be positive",
                         (long long)in_channels, (long long)out_channels, (long long)kh, (long long)kw,
                         (long long)groups);
    if (in_channels % groups || out_channels % groups)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "groups = %lld must divide in_channels = %lld and out_channels = %lld",
                         (long long)groups, (long long)in_channels, (long long)out_channels);
    *m = (filo_nn_conv2d){NULL, NULL, cp, in_channels, out_channels, kh, kw};
    char name[FILO_NN_NAME_MAX];
    /* As nn.Linear: kaiming_uniform(a = sqrt 5) and a bias in +-1/sqrt(fan_in). */
    FILO_TRY(filo_params_create(ps, filo_param_name_join(name, sizeof name, prefix, "weight"), 4,
                                (int64_t[]){out_channels, in_channels / groups, kh, kw},
                                (filo_init){FILO_INIT_KAIMING_UNIFORM, sqrt(5.0), 0}, FILO_PARAM_WEIGHT, &m->weight));
    if (bias) {
        double bound = 1.0 / sqrt((double)(in_channels / groups * kh * kw));
        FILO_TRY(filo_params_create(ps, filo_param_name_join(name, sizeof name, prefix, "bias"), 1, &out_channels,
                                    (filo_init){FILO_INIT_UNIFORM, -bound, bound}, FILO_PARAM_BIAS, &m->bias));
    }
    return FILO_OK;
}

filo_status filo_nn_conv2d_forward(const filo_nn_conv2d *m, const filo_nn_ctx *ctx, filo_var *x, filo_var **y)
{
    if (!m || !x || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, x and y must not be NULL");
    *y = NULL;
    FILO_TRY(filo_nn_ctx_check(ctx));
    if (!m->weight)
        return FILO_FAIL(FILO_ERR_STATE, "the Conv2d has no weight (not initialized)");
    const filo_tensor *xv = filo_var_value(x);
    char buf[96];
    if (xv->ndim != 4 || xv->shape[1] != m->in_channels)
        return FILO_FAIL(FILO_ERR_SHAPE, "x is %s; it must be [N, %lld, H, W]", filo_tensor_describe(xv, buf, sizeof buf),
                         (long long)m->in_channels);
    filo_var *xc = NULL, *wc = NULL, *bc = NULL;
    filo_status s = filo_autocast_for_matmul(ctx, x, &xc);
    if (s == FILO_OK)
        s = filo_autocast_for_matmul(ctx, m->weight, &wc);
    if (s == FILO_OK && m->bias)
        s = filo_autocast_for_matmul(ctx, m->bias, &bc);
    if (s == FILO_OK)
        s = filo_ag_conv2d(xc, wc, bc, &m->p, y);
    filo_var_free(xc);
    filo_var_free(wc);
    filo_var_free(bc);
    return s;
}

filo_status filo_nn_maxpool2d_forward(const filo_pool2d_params *p, filo_var *x, filo_var **y)
{
    if (!p || !x || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "p, x and y must not be NULL");
    return filo_ag_maxpool2d(x, p, y);
}

filo_status filo_nn_avgpool2d_forward(const filo_pool2d_params *p, filo_var *x, filo_var **y)
{
    if (!p || !x || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "p, x and y must not be NULL");
    return filo_ag_avgpool2d(x, p, y);
}

filo_status filo_nn_flatten(filo_var *x, int start_dim, int end_dim, filo_var **y)
{
    if (!x || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and y must not be NULL");
    const filo_tensor *v = filo_var_value(x);
    int nd = v->ndim > 0 ? v->ndim : 1;
    int s0 = start_dim < 0 ? start_dim + nd : start_dim, e0 = end_dim < 0 ? end_dim + nd : end_dim;
    if (s0 < 0 || s0 >= nd || e0 < 0 || e0 >= nd || s0 > e0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "start_dim = %d and end_dim = %d do not name dims start <= end of a %d-d tensor",
                         start_dim, end_dim, v->ndim);
    if (v->ndim == 0)
        return filo_ag_reshape(x, 1, (int64_t[]){1}, y);
    int64_t shape[FILO_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < s0; d++)
        shape[n++] = v->shape[d];
    int64_t merged = 1;
    for (int d = s0; d <= e0; d++)
        merged *= v->shape[d];
    shape[n++] = merged;
    for (int d = e0 + 1; d < v->ndim; d++)
        shape[n++] = v->shape[d];
    return filo_ag_reshape(x, n, shape, y);
}
