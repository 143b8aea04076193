/* Differentiable views and copies (filo/ag.h): reshape, transpose, permute, slice, expand,
 * squeeze, unsqueeze, contiguous and to. Finite differences in float64 on the CPU and f32 parity
 * on every backend for each op and its variants (negative dims, strided slices, new leading
 * dims, reshape of a non-contiguous input, device round trips); outputs are views where the
 * tensor function gives one; one bad argument per op. */
#include <string.h>

#include "gradcheck.h"

static void check_both(const gradcheck_case *c)
{
    gradcheck_fd(c);
    gradcheck_parity(c, FILO_F32);
}

/* The arguments of one view op; each runner reads the fields its op takes. */
typedef struct view_args {
    int ndim;
    int64_t shape[FILO_MAX_DIMS];
    int dim0, dim1;
    int dims[FILO_MAX_DIMS];
    int64_t start, end, step;
    int transpose_first; /* the op sees x transposed (0, 1): a non-contiguous input */
} view_args;

/* in[0], or its (0, 1) transpose when the args ask for it; the caller frees the result. */
static filo_status input_of(const view_args *a, filo_var *x, filo_var **v)
{
    if (a->transpose_first)
        return filo_ag_transpose(x, 0, 1, v);
    *v = filo_var_retain(x);
    return FILO_OK;
}

static filo_status run_reshape(void *ctx, filo_var *const *in, filo_var **out)
{
    const view_args *a = ctx;
    filo_var *x = NULL;
    filo_status s = input_of(a, in[0], &x);
    if (s == FILO_OK)
        s = filo_ag_reshape(x, a->ndim, a->shape, out);
    filo_var_free(x);
    return s;
}

Test(ag_views, reshape)
{
    view_args a[] = {
        {.ndim = 2, .shape = {5, -1}},
        {.ndim = 1, .shape = {-1}, .transpose_first = 1}, /* copies: the transpose cannot be viewed flat */
        {.ndim = 4, .shape = {2, 1, 3, 10}},
    };
    for (size_t k = 0; k < sizeof a / sizeof *a; k++) {
        gradcheck_case c = {.name = "reshape", .n_inputs = 1, .fn = run_reshape, .ctx = &a[k]};
        c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {3, 4, 5}, .lo = -2, .hi = 2};
        check_both(&c);
    }
    view_args scalar = {.ndim = 0};
    gradcheck_case c = {.name = "reshape to 0-d", .n_inputs = 1, .fn = run_reshape, .ctx = &scalar};
    c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {1, 1}, .lo = -2, .hi = 2};
    check_both(&c);
}

static filo_status run_transpose(void *ctx, filo_var *const *in, filo_var **out)
{
    const view_args *a = ctx;
    return filo_ag_transpose(in[0], a->dim0, a->dim1, out);
}

Test(ag_views, transpose)
{
    view_args a[] = {{.dim0 = 0, .dim1 = -1}, {.dim0 = -2, .dim1 = 0}, {.dim0 = 1, .dim1 = 1}};
    for (size_t k = 0; k < sizeof a / sizeof *a; k++) {
        gradcheck_case c = {.name = "transpose", .n_inputs = 1, .fn = run_transpose, .ctx = &a[k]};
        c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {3, 4, 5}, .lo = -2, .hi = 2};
        check_both(&c);
    }
}

static filo_status run_permute(void *ctx, filo_var *const *in, filo_var **out)
{
    return filo_ag_permute(in[0], ((const view_args *)ctx)->dims, out);
}

Test(ag_views, permute)
{
    view_args a[] = {{.dims = {2, 0, 1}}, {.dims = {-1, -3, 1}}, {.dims = {1, 2, 0}}, {.dims = {0, 1, 2}}};
    for (size_t k = 0; k < sizeof a / sizeof *a; k++) {
        gradcheck_case c = {.name = "permute", .n_inputs = 1, .fn = run_permute, .ctx = &a[k]};
        c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {2, 3, 5}, .lo = -2, .hi = 2};
        check_both(&c);
    }
}

static filo_status run_slice(void *ctx, filo_var *const *in, filo_var **out)
{
    const view_args *a = ctx;
    filo_var *x = NULL;
    filo_status s = input_of(a, in[0], &x);
    if (s == FILO_OK)
        s = filo_ag_slice(x, a->dim0, a->start, a->end, a->step, out);
    filo_var_free(x);
    return s;
}

Test(ag_views, slice)
{
    view_args a[] = {
        {.dim0 = -1, .start = -6, .end = 6, .step = 2}, /* negative dim and start, step 2 */
        {.dim0 = 0, .start = 1, .end = 5, .step = 3},
        {.dim0 = 1, .start = 0, .end = 7, .step = 1},
        {.dim0 = 0, .start = 2, .end = -1, .step = 1, .transpose_first = 1},
    };
    for (size_t k = 0; k < sizeof a / sizeof *a; k++) {
        gradcheck_case c = {.name = "slice", .n_inputs = 1, .fn = run_slice, .ctx = &a[k]};
        c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {5, 7}, .lo = -2, .hi = 2};
        check_both(&c);
    }
}

/* Two overlapping slices of one input: their gradients add up where they overlap. */
static filo_status run_overlapping_slices(void *ctx, filo_var *const *in, filo_var **out)
{
    (void)ctx;
    filo_var *a = NULL, *b = NULL;
    filo_status s = filo_ag_slice(in[0], 1, 0, 4, 1, &a);
    if (s == FILO_OK)
        s = filo_ag_slice(in[0], 1, 1, 5, 1, &b);
    if (s == FILO_OK)
        s = filo_ag_mul(a, b, out);
    filo_var_free(a);
    filo_var_free(b);
    return s;
}

Test(ag_views, overlapping_slices)
{
    gradcheck_case c = {.name = "overlapping slices", .n_inputs = 1, .fn = run_overlapping_slices};
    c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {3, 5}, .lo = -2, .hi = 2};
    check_both(&c);
}

static filo_status run_expand(void *ctx, filo_var *const *in, filo_var **out)
{
    const view_args *a = ctx;
    return filo_ag_expand(in[0], a->ndim, a->shape, out);
}

Test(ag_views, expand)
{
    struct {
        int in_ndim;
        int64_t in_shape[3];
        view_args a;
    } cases[] = {
        {2, {3, 1}, {.ndim = 3, .shape = {2, 3, 4}}},  /* a new leading dim and a size-1 dim */
        {2, {3, 1}, {.ndim = 3, .shape = {2, -1, 4}}}, /* -1 keeps a size */
        {1, {4}, {.ndim = 3, .shape = {2, 3, 4}}},     /* only new leading dims */
        {3, {1, 3, 1}, {.ndim = 3, .shape = {5, 3, 1}}},
        {2, {2, 3}, {.ndim = 2, .shape = {2, 3}}},     /* nothing to broadcast */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        gradcheck_case c = {.name = "expand", .n_inputs = 1, .fn = run_expand, .ctx = &cases[k].a};
        c.inputs[0] = (gradcheck_input){.ndim = cases[k].in_ndim, .lo = -2, .hi = 2};
        memcpy(c.inputs[0].shape, cases[k].in_shape, sizeof cases[k].in_shape);
        check_both(&c);
    }
}

static filo_status run_squeeze(void *ctx, filo_var *const *in, filo_var **out)
{
    return filo_ag_squeeze(in[0], ((const view_args *)ctx)->dim0, out);
}

static filo_status run_unsqueeze(void *ctx, filo_var *const *in, filo_var **out)
{
    return filo_ag_unsqueeze(in[0], ((const view_args *)ctx)->dim0, out);
}

Test(ag_views, squeeze)
{
    view_args dims[] = {{.dim0 = 1}, {.dim0 = -3}, {.dim0 = 3}, {.dim0 = -1}};
    for (size_t k = 0; k < sizeof dims / sizeof *dims; k++) {
        gradcheck_case c = {.name = "squeeze", .n_inputs = 1, .fn = run_squeeze, .ctx = &dims[k]};
        c.inputs[0] = (gradcheck_input){.ndim = 4, .shape = {3, 1, 4, 1}, .lo = -2, .hi = 2};
        check_both(&c);
    }
    view_args only = {.dim0 = 0};
    gradcheck_case c = {.name = "squeeze to 0-d", .n_inputs = 1, .fn = run_squeeze, .ctx = &only};
    c.inputs[0] = (gradcheck_input){.ndim = 1, .shape = {1}, .lo = -2, .hi = 2};
    check_both(&c);
}

Test(ag_views, unsqueeze)
{
    view_args dims[] = {{.dim0 = 0}, {.dim0 = 1}, {.dim0 = 2}, {.dim0 = -1}, {.dim0 = -3}};
    for (size_t k = 0; k < sizeof dims / sizeof *dims; k++) {
        gradcheck_case c = {.name = "unsqueeze", .n_inputs = 1, .fn = run_unsqueeze, .ctx = &dims[k]};
        c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {3, 4}, .lo = -2, .hi = 2};
        check_both(&c);
    }
}

static filo_status run_contiguous(void *ctx, filo_var *const *in, filo_var **out)
{
    filo_var *x = NULL;
    filo_status s = input_of(ctx, in[0], &x);
    if (s == FILO_OK)
        s = filo_ag_contiguous(x, out);
    filo_var_free(x);
    return s;
}

Test(ag_views, contiguous)
{
    view_args a[] = {{.transpose_first = 0}, {.transpose_first = 1}};
    for (size_t k = 0; k < sizeof a / sizeof *a; k++) {
        gradcheck_case c = {.name = "contiguous", .n_inputs = 1, .fn = run_contiguous, .ctx = &a[k]};
        c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {3, 5}, .lo = -2, .hi = 2};
        check_both(&c);
    }
}

/* A device other than `here` when the build has one (the CPU for a CUDA input, the first GPU
 * for a CPU input), else `here`. */
static filo_device other_device(filo_device here)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int n = filo_test_backends(devs);
    for (int i = 0; i < n; i++)
        if (!filo_device_equal(devs[i], here))
            return devs[i];
    return here;
}

/* x -> the other device -> exp there -> back, so each direction's backward is exercised. */
static filo_status run_to(void *ctx, filo_var *const *in, filo_var **out)
{
    (void)ctx;
    filo_device here = filo_var_value(in[0])->device;
    filo_var *there = NULL, *e = NULL;
    filo_status s = filo_ag_to(in[0], other_device(here), &there);
    if (s == FILO_OK)
        s = filo_ag_unary(FILO_UNARY_EXP, there, &e);
    if (s == FILO_OK)
        s = filo_ag_to(e, here, out);
    filo_var_free(there);
    filo_var_free(e);
    return s;
}

Test(ag_views, to_device_and_back)
{
    gradcheck_case c = {.name = "to", .n_inputs = 1, .fn = run_to};
    c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {3, 5}, .lo = -1, .hi = 1};
    check_both(&c);
}

/* The same device: a copy forward, the gradient passed through. */
static filo_status run_to_same(void *ctx, filo_var *const *in, filo_var **out)
{
    (void)ctx;
    filo_var *t = NULL;
    filo_status s = filo_ag_transpose(in[0], 0, 1, &t);
    if (s == FILO_OK)
        s = filo_ag_to(t, filo_var_value(in[0])->device, out);
    filo_var_free(t);
    return s;
}

Test(ag_views, to_same_device)
{
    gradcheck_case c = {.name = "to (same device)", .n_inputs = 1, .fn = run_to_same};
    c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {3, 5}, .lo = -1, .hi = 1};
    check_both(&c);
}

/* The outputs share the input's storage wherever the tensor function gives a view. */
Test(ag_views, outputs_are_views)
{
    int64_t shape[3] = {2, 1, 3}, flat = 6, wide[4] = {4, 2, 1, 3};
    int perm[3] = {2, 0, 1};
    filo_tensor *t;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 3, shape, &t));
    filo_var *x, *y[8];
    FILO_CHECK(filo_var_new(t, 1, &x));
    FILO_CHECK(filo_ag_reshape(x, 1, &flat, &y[0]));
    FILO_CHECK(filo_ag_transpose(x, 0, 2, &y[1]));
    FILO_CHECK(filo_ag_permute(x, perm, &y[2]));
    FILO_CHECK(filo_ag_slice(x, 2, 1, 3, 1, &y[3]));
    FILO_CHECK(filo_ag_expand(x, 4, wide, &y[4]));
    FILO_CHECK(filo_ag_squeeze(x, 1, &y[5]));
    FILO_CHECK(filo_ag_unsqueeze(x, 0, &y[6]));
    FILO_CHECK(filo_ag_contiguous(x, &y[7]));
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(filo_var_value(y[i])->storage, t->storage, "output %d (%s) is not a view", i,
                     filo_var_op_name(y[i]));
        cr_assert(filo_var_requires_grad(y[i]));
        filo_var_free(y[i]);
    }
    filo_var_free(x);
    filo_tensor_free(t);
}

Test(ag_views, bad_arguments)
{
    int64_t shape[2] = {2, 3}, flat = 6;
    int perm[2] = {1, 0};
    filo_tensor *t;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, shape, &t));
    filo_var *x, *y = NULL;
    FILO_CHECK(filo_var_new(t, 1, &x));
    FILO_CHECK_FAILS(filo_ag_reshape(NULL, 1, &flat, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_transpose(x, 0, 1, NULL), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_permute(NULL, perm, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_slice(NULL, 0, 0, 1, 1, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_expand(NULL, 2, shape, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_squeeze(NULL, 0, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_unsqueeze(x, 0, NULL), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_contiguous(NULL, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_to(NULL, filo_cpu(), &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    /* The tensor functions' own checks come through unchanged, and nothing is recorded. */
    int64_t live = filo_autograd_live_nodes();
    int64_t bad_shape = 7;
    FILO_CHECK_FAILS(filo_ag_reshape(x, 1, &bad_shape, &y), FILO_ERR_SHAPE, "");
    FILO_CHECK_FAILS(filo_ag_squeeze(x, 1, &y), FILO_ERR_SHAPE, "cannot squeeze");
    FILO_CHECK_FAILS(filo_ag_slice(x, 1, 0, 2, 0, &y), FILO_ERR_SHAPE, "step");
    FILO_CHECK_FAILS(filo_ag_expand(x, 2, (int64_t[]){4, 3}, &y), FILO_ERR_SHAPE, "cannot broadcast");
    cr_assert_eq(y, NULL);
    cr_assert_eq(filo_autograd_live_nodes(), live);
    filo_var_free(x);
    filo_tensor_free(t);
}
