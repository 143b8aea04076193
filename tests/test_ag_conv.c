/* Differentiable conv2d, max pooling and average pooling (filo/ag.h): finite-difference checks in
 * float64 on the CPU (the CPU convolution runs f64 in plain loops) and f32 gradient parity on
 * every backend (the emulated CUDA convolution runs on the CPU's oneDNN) for stride, padding,
 * dilation, groups, bias or none, constant inputs, and the pooling options (padding, stride,
 * dilation, ceil_mode, count_include_pad); one bad argument per op. */
#include <string.h>

#include "gradcheck.h"

/* ---- conv2d ---- */

typedef struct conv_args {
    const char *name;
    int64_t x[4], w[4];
    filo_conv2d_params p;
    int null_params; /* pass NULL for p (the defaults) */
    int bias;        /* in[2] is the bias */
} conv_args;

static filo_status run_conv(void *ctx, filo_var *const *in, filo_var **out)
{
    const conv_args *a = ctx;
    return filo_ag_conv2d(in[0], in[1], a->bias ? in[2] : NULL, a->null_params ? NULL : &a->p, out);
}

static gradcheck_case conv_case(const conv_args *a)
{
    gradcheck_case c = {.name = a->name, .n_inputs = 2 + a->bias, .fn = run_conv, .ctx = (void *)a};
    c.inputs[0] = (gradcheck_input){.ndim = 4, .lo = -1, .hi = 1};
    c.inputs[1] = (gradcheck_input){.ndim = 4, .lo = -1, .hi = 1};
    c.inputs[2] = (gradcheck_input){.ndim = 1, .shape = {a->w[0]}, .lo = -1, .hi = 1};
    memcpy(c.inputs[0].shape, a->x, sizeof a->x);
    memcpy(c.inputs[1].shape, a->w, sizeof a->w);
    return c;
}

static const conv_args conv_cases[] = {
    {"conv defaults", {2, 3, 5, 5}, {4, 3, 3, 3}, {0}, 1, 1},
    {"conv stride 2 pad 1", {2, 3, 5, 5}, {4, 3, 3, 3},
     {.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1}, 0, 0},
    {"conv stride 2 pad 1 bias", {2, 3, 5, 5}, {4, 3, 3, 3},
     {.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1}, 0, 1},
    {"conv dilation 2 pad 2", {2, 3, 5, 5}, {2, 3, 3, 3},
     {.pad_h = 2, .pad_w = 2, .dilation_h = 2, .dilation_w = 2}, 0, 1},
    {"conv groups 2", {2, 4, 5, 5}, {6, 2, 3, 3}, {.pad_h = 1, .pad_w = 1, .groups = 2}, 0, 1},
    {"conv groups 2 no bias", {2, 4, 5, 5}, {4, 2, 3, 3},
     {.stride_h = 2, .stride_w = 1, .pad_w = 1, .groups = 2}, 0, 0},
    {"conv depthwise", {2, 3, 5, 5}, {3, 1, 3, 3}, {.pad_h = 1, .pad_w = 1, .groups = 3}, 0, 1},
    {"conv 2x3 filter asymmetric", {2, 3, 5, 6}, {2, 3, 2, 3},
     {.stride_h = 1, .stride_w = 2, .pad_w = 1, .dilation_h = 2}, 0, 1},
};
#define N_CONV ((int)(sizeof conv_cases / sizeof *conv_cases))

Test(ag_conv, conv2d)
{
    for (int k = 0; k < N_CONV; k++) {
        gradcheck_case c = conv_case(&conv_cases[k]);
        gradcheck_fd(&c);
        gradcheck_parity(&c, FILO_F32);
    }
}

/* One or two of x, w, bias constant: the backward asks the kernel only for the others. */
Test(ag_conv, conv2d_constant_inputs)
{
    static const int constant[][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {1, 1, 0}, {0, 1, 1}};
    const conv_args *a = &conv_cases[4];
    for (size_t k = 0; k < sizeof constant / sizeof *constant; k++) {
        gradcheck_case c = conv_case(a);
        for (int i = 0; i < 3; i++)
            c.inputs[i].no_grad = constant[k][i];
        gradcheck_fd(&c);
        gradcheck_parity(&c, FILO_F32);
    }
}

Test(ag_conv, conv2d_bad_argument)
{
    int64_t shape[4] = {1, 1, 3, 3};
    filo_tensor *t;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 4, shape, &t));
    filo_var *x, *y = NULL;
    FILO_CHECK(filo_var_new(t, 1, &x));
    FILO_CHECK_FAILS(filo_ag_conv2d(x, NULL, NULL, NULL, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    cr_assert_null(y);
    filo_var_free(x);
    filo_tensor_free(t);
}

/* ---- pooling ---- */

typedef struct pool_args {
    const char *name;
    int64_t x[4];
    filo_pool2d_params p;
} pool_args;

static filo_status run_maxpool(void *ctx, filo_var *const *in, filo_var **out)
{
    return filo_ag_maxpool2d(in[0], &((const pool_args *)ctx)->p, out);
}

static filo_status run_avgpool(void *ctx, filo_var *const *in, filo_var **out)
{
    return filo_ag_avgpool2d(in[0], &((const pool_args *)ctx)->p, out);
}

static gradcheck_case pool_case(const pool_args *a, int max)
{
    gradcheck_case c = {.name = a->name, .n_inputs = 1, .fn = max ? run_maxpool : run_avgpool, .ctx = (void *)a};
    /* Random values have no ties, so each window's maximum is clear of a step of h. */
    c.inputs[0] = (gradcheck_input){.ndim = 4, .lo = -1, .hi = 1};
    memcpy(c.inputs[0].shape, a->x, sizeof a->x);
    return c;
}

static const pool_args max_cases[] = {
    {"maxpool 2x2", {2, 3, 5, 5}, {.kernel_h = 2, .kernel_w = 2}},
    {"maxpool 3x3 stride 2 pad 1", {2, 3, 5, 5},
     {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1}},
    {"maxpool 2x2 ceil_mode", {2, 3, 5, 5}, {.kernel_h = 2, .kernel_w = 2, .ceil_mode = 1}},
    {"maxpool 3x3 stride 2 pad 1 ceil_mode", {1, 2, 6, 6},
     {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .ceil_mode = 1}},
    {"maxpool 3x3 dilation 2 pad 1", {2, 3, 5, 5},
     {.kernel_h = 3, .kernel_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1, .dilation_h = 2,
      .dilation_w = 2}},
    {"maxpool 2x3 stride 1x2 overlapping", {2, 3, 5, 5},
     {.kernel_h = 2, .kernel_w = 3, .stride_h = 1, .stride_w = 2, .pad_w = 1}},
};
#define N_MAX ((int)(sizeof max_cases / sizeof *max_cases))

static const pool_args avg_cases[] = {
    {"avgpool 2x2", {2, 3, 5, 5}, {.kernel_h = 2, .kernel_w = 2}},
    {"avgpool 3x3 stride 2 pad 1 count_include_pad", {2, 3, 5, 5},
     {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .count_include_pad = 1}},
    {"avgpool 3x3 stride 2 pad 1", {2, 3, 5, 5},
     {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1}},
    {"avgpool 2x2 ceil_mode", {2, 3, 5, 5}, {.kernel_h = 2, .kernel_w = 2, .ceil_mode = 1}},
    /* The last window overhangs the padded input: its divisor counts the clipped window. */
    {"avgpool 3x3 stride 2 pad 1 ceil_mode count_include_pad", {1, 2, 6, 6},
     {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .ceil_mode = 1,
      .count_include_pad = 1}},
    {"avgpool 3x3 stride 2 pad 1 ceil_mode", {1, 2, 6, 6},
     {.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .ceil_mode = 1}},
    {"avgpool 3x2 stride 1x2 overlapping", {2, 3, 5, 5},
     {.kernel_h = 3, .kernel_w = 2, .stride_h = 1, .stride_w = 2, .pad_h = 1}},
};
#define N_AVG ((int)(sizeof avg_cases / sizeof *avg_cases))

Test(ag_conv, maxpool2d)
{
    for (int k = 0; k < N_MAX; k++) {
        gradcheck_case c = pool_case(&max_cases[k], 1);
        gradcheck_fd(&c);
        gradcheck_parity(&c, FILO_F32);
    }
}

Test(ag_conv, avgpool2d)
{
    for (int k = 0; k < N_AVG; k++) {
        gradcheck_case c = pool_case(&avg_cases[k], 0);
        gradcheck_fd(&c);
        gradcheck_parity(&c, FILO_F32);
    }
}

/* Pooling after a convolution: the pooling's gradient reaches x and w through the conv node. */
static filo_status run_conv_pool(void *ctx, filo_var *const *in, filo_var **out)
{
    const pool_args *a = ctx;
    filo_conv2d_params p = {.pad_h = 1, .pad_w = 1};
    filo_var *h = NULL;
    filo_status s = filo_ag_conv2d(in[0], in[1], NULL, &p, &h);
    if (s == FILO_OK)
        s = filo_ag_maxpool2d(h, &a->p, out);
    filo_var_free(h);
    return s;
}

Test(ag_conv, conv_then_pool)
{
    const pool_args *a = &max_cases[1];
    gradcheck_case c = {.name = "conv2d then maxpool2d", .n_inputs = 2, .fn = run_conv_pool, .ctx = (void *)a};
    c.inputs[0] = (gradcheck_input){.ndim = 4, .shape = {2, 2, 5, 5}, .lo = -1, .hi = 1};
    c.inputs[1] = (gradcheck_input){.ndim = 4, .shape = {3, 2, 3, 3}, .lo = -1, .hi = 1};
    gradcheck_fd(&c);
    gradcheck_parity(&c, FILO_F32);
}

Test(ag_conv, pool_bad_argument)
{
    int64_t shape[4] = {1, 1, 4, 4};
    filo_tensor *t;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 4, shape, &t));
    filo_var *x, *y = NULL;
    FILO_CHECK(filo_var_new(t, 1, &x));
    FILO_CHECK_FAILS(filo_ag_maxpool2d(x, NULL, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_avgpool2d(x, NULL, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    cr_assert_null(y);
    filo_var_free(x);
    filo_tensor_free(t);
}
