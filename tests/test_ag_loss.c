/* Differentiable cross-entropy (filo/ag.h): finite differences in float64 on the CPU and f32
 * parity on every backend for each reduction, with class weights, ignored rows (the default and a
 * custom ignore_index), label smoothing and all of them at once; 1-D, 2-D and 3-D logits, i32 and
 * i64 targets, the default options, bf16 logits; a bad argument. */
#include <string.h>

#include "gradcheck.h"

#define C 5

typedef struct ce_args {
    const char *name;
    filo_tensor *target;  /* on the CPU */
    const double *weight; /* NULL or [C] */
    filo_cross_entropy_options opts;
    int defaults;         /* pass opts = NULL */
} ce_args;

static filo_status run_ce(void *ctx, filo_var *const *in, filo_var **out)
{
    const ce_args *a = ctx;
    const filo_tensor *x = filo_var_value(in[0]);
    filo_tensor *target = NULL, *weight = NULL;
    filo_status s = filo_tensor_to(a->target, x->device, &target);
    if (s == FILO_OK && a->weight) {
        int64_t c = C;
        weight = filo_test_upload(x->device, x->dtype == FILO_F64 ? FILO_F64 : FILO_F32, 1, &c, a->weight);
    }
    filo_cross_entropy_options o = a->opts;
    o.weight = weight;
    if (s == FILO_OK)
        s = filo_ag_cross_entropy(in[0], target, a->defaults ? NULL : &o, out);
    /* The node keeps its own handles on the target and the weights. */
    filo_tensor_free(target);
    filo_tensor_free(weight);
    return s;
}

static const double class_weight[C] = {0.5, 1.5, 1.0, 2.0, 0.25};

enum { PLAIN, WEIGHTED, IGNORE_DEFAULT, IGNORE_CUSTOM, SMOOTHING, ALL, N_OPTIONS };

static const char *const option_names[N_OPTIONS] = {"ce", "ce weight", "ce ignore -100", "ce ignore 2",
                                                    "ce smoothing", "ce weight+ignore+smoothing"};

/* 4 rows: targets fitting each option set (the ignored rows hold the ignore_index). */
static ce_args ce_variant(int option, filo_loss_reduction red, filo_dtype target_dtype)
{
    static const double targets[3][4] = {{1, 4, 3, 0}, {1, -100, 3, 0}, {2, 4, 2, 0}};
    ce_args a = {.name = option_names[option], .opts = filo_cross_entropy_defaults()};
    a.opts.reduction = red;
    int t = 0;
    if (option == WEIGHTED || option == ALL)
        a.weight = class_weight;
    if (option == IGNORE_DEFAULT)
        t = 1;
    if (option == IGNORE_CUSTOM || option == ALL) {
        a.opts.ignore_index = 2;
        t = 2;
    }
    if (option == SMOOTHING || option == ALL)
        a.opts.label_smoothing = 0.1;
    int64_t rows = 4;
    a.target = filo_test_upload(filo_cpu(), target_dtype, 1, &rows, targets[t]);
    return a;
}

static gradcheck_case ce_case(ce_args *a)
{
    gradcheck_case c = {.name = a->name, .n_inputs = 1, .fn = run_ce, .ctx = a};
    c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {4, C}, .lo = -2.0, .hi = 2.0};
    return c;
}

Test(ag_loss, options_and_reductions)
{
    for (int red = FILO_LOSS_NONE; red <= FILO_LOSS_MEAN; red++)
        for (int option = 0; option < N_OPTIONS; option++) {
            ce_args a = ce_variant(option, (filo_loss_reduction)red, option % 2 ? FILO_I32 : FILO_I64);
            gradcheck_case c = ce_case(&a);
            gradcheck_fd(&c);
            gradcheck_parity(&c, FILO_F32);
            filo_tensor_free(a.target);
        }
}

/* opts = NULL is F.cross_entropy's defaults: MEAN over the rows, -100 ignored. */
Test(ag_loss, default_options)
{
    ce_args a = ce_variant(IGNORE_DEFAULT, FILO_LOSS_MEAN, FILO_I64);
    a.defaults = 1;
    gradcheck_case c = ce_case(&a);
    gradcheck_fd(&c);
    gradcheck_parity(&c, FILO_F32);
    filo_tensor_free(a.target);
}

/* [2, 3, C] logits with [2, 3] targets (NONE keeps that shape), and one row [C] with a 0-dim
 * target. */
Test(ag_loss, shapes)
{
    const int64_t lead[2] = {2, 3};
    const double t6[6] = {0, 4, -100, 2, 1, 3}, t1 = 3;
    for (int red = FILO_LOSS_NONE; red <= FILO_LOSS_MEAN; red++) {
        ce_args a = ce_variant(ALL, (filo_loss_reduction)red, FILO_I64);
        filo_tensor_free(a.target);
        a.target = filo_test_upload(filo_cpu(), FILO_I64, 2, lead, t6);
        a.opts.ignore_index = FILO_CROSS_ENTROPY_IGNORE_INDEX;
        gradcheck_case c = ce_case(&a);
        c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {2, 3, C}, .lo = -2.0, .hi = 2.0};
        gradcheck_fd(&c);
        gradcheck_parity(&c, FILO_F32);
        filo_tensor_free(a.target);

        a.target = filo_test_upload(filo_cpu(), FILO_I32, 0, NULL, &t1);
        c.inputs[0] = (gradcheck_input){.ndim = 1, .shape = {C}, .lo = -2.0, .hi = 2.0};
        gradcheck_fd(&c);
        gradcheck_parity(&c, FILO_F32);
        filo_tensor_free(a.target);
    }
}

/* bf16 logits: the loss and its gradient input are f32, dlogits bf16. */
Test(ag_loss, bf16_logits)
{
    for (int red = FILO_LOSS_NONE; red <= FILO_LOSS_MEAN; red++) {
        ce_args a = ce_variant(ALL, (filo_loss_reduction)red, FILO_I64);
        gradcheck_case c = ce_case(&a);
        gradcheck_parity(&c, FILO_BF16);
        filo_tensor_free(a.target);
    }
}

Test(ag_loss, bad_arguments)
{
    const int64_t shape[2] = {2, C};
    filo_tensor *t;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, shape, &t));
    filo_var *x, *loss = NULL;
    FILO_CHECK(filo_var_new(t, 1, &x));
    FILO_CHECK_FAILS(filo_ag_cross_entropy(x, NULL, NULL, &loss), FILO_ERR_INVALID_ARG, "must not be NULL");
    cr_assert(!loss);
    filo_var_free(x);
    filo_tensor_free(t);
}
