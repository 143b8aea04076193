/* Differentiable layout ops (filo/ag.h): cast, concat, split and pad. Finite differences in
 * float64 on the CPU and f32 parity on every backend: casts between f32, f64, bf16 and f16 both
 * ways, a concat of three inputs along a middle dim, splits whose outputs are partly unused,
 * pads that crop; one bad argument per op. */
#include <string.h>

#include "gradcheck.h"

static void check_both(const gradcheck_case *c)
{
    gradcheck_fd(c);
    gradcheck_parity(c, FILO_F32);
}

/* ---- cast ---- */

static filo_status run_cast(void *ctx, filo_var *const *in, filo_var **out)
{
    return filo_ag_cast(in[0], *(const filo_dtype *)ctx, out);
}

/* Multiples of 1/8 in [-2, 2] and a step h of 1/8: every dtype holds x and x +- h exactly, so the
 * finite differences of a rounding cast are exact too. The analytic side starts from the weights
 * R rounded to the output dtype (the gradient of a bf16 output is bf16), hence rtol of about one
 * rounding of that dtype. */
static const double eighths[15] = {-2, -1.75, -1.5, -1.125, -0.875, -0.625, -0.375, -0.125,
                                   0.25, 0.5, 0.75, 1.0, 1.25, 1.625, 2.0};

Test(ag_layout, cast)
{
    const filo_dtype targets[] = {FILO_F32, FILO_F64, FILO_BF16, FILO_F16};
    for (size_t k = 0; k < sizeof targets / sizeof *targets; k++) {
        filo_dtype to = targets[k];
        double rtol = to == FILO_BF16 ? 4e-3 : to == FILO_F16 ? 1e-3 : 0;
        gradcheck_case c = {.name = filo_dtype_name(to), .n_inputs = 1, .fn = run_cast, .ctx = &to, .h = 0.125,
                            .rtol = rtol};
        c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {3, 5}, .values = eighths};
        gradcheck_fd(&c);
        c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {4, 9}, .lo = -3, .hi = 3};
        gradcheck_parity(&c, FILO_F32);
    }
    /* From bf16: the gradient comes back as bf16. */
    filo_dtype to = FILO_F32;
    gradcheck_case c = {.name = "bf16 -> f32", .n_inputs = 1, .fn = run_cast, .ctx = &to};
    c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {4, 9}, .lo = -3, .hi = 3};
    gradcheck_parity(&c, FILO_BF16);
}

/* A cast to an integer dtype leaves the graph: its output cannot carry a gradient. */
Test(ag_layout, cast_to_integer_has_no_gradient)
{
    int64_t shape = 3;
    filo_tensor *t = filo_test_upload(filo_cpu(), FILO_F32, 1, &shape, (double[]){1.5, -2.0, 7.25});
    filo_var *x, *y;
    FILO_CHECK(filo_var_new(t, 1, &x));
    FILO_CHECK(filo_ag_cast(x, FILO_I32, &y));
    cr_assert_eq(filo_var_value(y)->dtype, FILO_I32);
    cr_assert(!filo_var_requires_grad(y));
    cr_assert(filo_var_is_leaf(y));
    double *v = filo_test_download(filo_var_value(y));
    cr_assert(v[0] == 1 && v[1] == -2 && v[2] == 7);
    free(v);
    filo_var_free(y);
    filo_var_free(x);
    filo_tensor_free(t);
}

/* ---- concat ---- */

static filo_status run_concat(void *ctx, filo_var *const *in, filo_var **out)
{
    return filo_ag_concat(in, 3, *(const int *)ctx, out);
}

Test(ag_layout, concat)
{
    const int dims[] = {1, -2};
    for (size_t k = 0; k < 2; k++) {
        gradcheck_case c = {.name = "concat", .n_inputs = 3, .fn = run_concat, .ctx = (void *)&dims[k]};
        c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {2, 1, 3}, .lo = -2, .hi = 2};
        c.inputs[1] = (gradcheck_input){.ndim = 3, .shape = {2, 3, 3}, .lo = -2, .hi = 2};
        c.inputs[2] = (gradcheck_input){.ndim = 3, .shape = {2, 2, 3}, .lo = -2, .hi = 2};
        check_both(&c);
        c.inputs[1].no_grad = 1; /* a constant in the middle: the others still get theirs */
        check_both(&c);
    }
    /* An empty input along the dim. */
    int dim = 0;
    gradcheck_case c = {.name = "concat with an empty input", .n_inputs = 3, .fn = run_concat, .ctx = &dim};
    c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {2, 3}, .lo = -2, .hi = 2};
    c.inputs[1] = (gradcheck_input){.ndim = 2, .shape = {0, 3}, .lo = -2, .hi = 2};
    c.inputs[2] = (gradcheck_input){.ndim = 2, .shape = {3, 3}, .lo = -2, .hi = 2};
    check_both(&c);
}

/* ---- split ---- */

typedef struct split_args {
    int dim;
    int64_t sizes[3];
    int use; /* which outputs make the result, see run_split */
} split_args;

enum { USE_LAST_ONLY, USE_FIRST_TIMES_LAST, USE_ALL_REORDERED };

static filo_status run_split(void *ctx, filo_var *const *in, filo_var **out)
{
    const split_args *a = ctx;
    filo_var *parts[3] = {0};
    filo_status s = filo_ag_split(in[0], a->dim, a->sizes, 3, parts);
    if (s != FILO_OK)
        return s;
    if (a->use == USE_LAST_ONLY) {
        *out = filo_var_retain(parts[2]);
    } else if (a->use == USE_FIRST_TIMES_LAST) {
        s = filo_ag_mul(parts[0], parts[2], out);
    } else {
        filo_var *order[3] = {parts[2], parts[0], parts[1]};
        s = filo_ag_concat(order, 3, a->dim, out);
    }
    for (int i = 0; i < 3; i++)
        filo_var_free(parts[i]);
    return s;
}

Test(ag_layout, split)
{
    split_args a[] = {
        {.dim = -2, .sizes = {2, 1, 3}, .use = USE_LAST_ONLY},        /* two outputs nobody uses */
        {.dim = 1, .sizes = {2, 2, 2}, .use = USE_FIRST_TIMES_LAST},  /* the middle one unused */
        {.dim = 1, .sizes = {1, 0, 5}, .use = USE_ALL_REORDERED},     /* an empty part */
        {.dim = 0, .sizes = {1, 0, 1}, .use = USE_ALL_REORDERED},
        {.dim = -1, .sizes = {1, 1, 1}, .use = USE_FIRST_TIMES_LAST}, /* the last dim */
    };
    for (size_t k = 0; k < sizeof a / sizeof *a; k++) {
        gradcheck_case c = {.name = "split", .n_inputs = 1, .fn = run_split, .ctx = &a[k]};
        c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {2, 6, 3}, .lo = -2, .hi = 2};
        check_both(&c);
    }
}

/* ---- pad ---- */

typedef struct pad_args {
    int npairs;
    int64_t pads[6];
    double value;
} pad_args;

static filo_status run_pad(void *ctx, filo_var *const *in, filo_var **out)
{
    const pad_args *a = ctx;
    return filo_ag_pad(in[0], a->npairs, a->pads, a->value, out);
}

Test(ag_layout, pad)
{
    pad_args a[] = {
        {.npairs = 1, .pads = {1, 2}},
        {.npairs = 2, .pads = {-1, 1, 2, -1}, .value = 2.5}, /* each dim padded on one side, cropped on the other */
        {.npairs = 3, .pads = {0, 0, -1, -1, 1, 0}, .value = -1},
        {.npairs = 2, .pads = {-2, -2, 0, 0}}, /* only cropping */
    };
    for (size_t k = 0; k < sizeof a / sizeof *a; k++) {
        gradcheck_case c = {.name = "pad", .n_inputs = 1, .fn = run_pad, .ctx = &a[k]};
        c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {3, 4, 5}, .lo = -2, .hi = 2};
        check_both(&c);
    }
}

Test(ag_layout, bad_arguments)
{
    int64_t shape[2] = {2, 3}, sizes[2] = {1, 2}, pads[2] = {1, 1};
    filo_tensor *t;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, shape, &t));
    filo_var *x, *y = NULL, *parts[2] = {0};
    FILO_CHECK(filo_var_new(t, 1, &x));
    filo_var *with_null[2] = {x, NULL};
    FILO_CHECK_FAILS(filo_ag_cast(NULL, FILO_F64, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_concat(with_null, 2, 0, &y), FILO_ERR_INVALID_ARG, "xs[1] is NULL");
    FILO_CHECK_FAILS(filo_ag_concat(with_null, 0, 0, &y), FILO_ERR_INVALID_ARG, "at least one");
    FILO_CHECK_FAILS(filo_ag_split(x, 0, NULL, 2, parts), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_pad(NULL, 1, pads, 0.0, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    /* The kernels' own checks come through, and nothing is recorded or returned. */
    int64_t live = filo_autograd_live_nodes();
    FILO_CHECK_FAILS(filo_ag_split(x, 0, sizes, 2, parts), FILO_ERR_SHAPE, "");
    cr_assert(!parts[0] && !parts[1]);
    FILO_CHECK_FAILS(filo_ag_pad(x, 3, (int64_t[]){0, 0, 0, 0, 0, 0}, 0.0, &y), FILO_ERR_INVALID_ARG, "npairs");
    cr_assert_eq(y, NULL);
    cr_assert_eq(filo_autograd_live_nodes(), live);
    filo_var_free(x);
    filo_tensor_free(t);
}
