/* Differentiable indexing ops (filo/ag.h): index_select, gather, scatter_add, embedding and
 * masked_fill. Finite differences in float64 on the CPU and f32 parity on every backend, with
 * i64 and i32 indices, repeated indices (their gradients add up), negative dims, indices smaller
 * than the tensors they index, embedding with and without padding_idx, and broadcast masks; one
 * bad argument per op. */
#include <string.h>

#include "gradcheck.h"

static void check_both(const gradcheck_case *c)
{
    gradcheck_fd(c);
    gradcheck_parity(c, FILO_F32);
}

/* A plain tensor argument (index, ids or mask), created on the CPU and moved to the device of
 * the variables inside each run. */
typedef struct index_args {
    int dim;
    filo_tensor *index;
    int64_t padding_idx;
    double value;
} index_args;

static filo_tensor *make_index(filo_dtype dtype, int ndim, const int64_t *shape, const double *values)
{
    return filo_test_upload(filo_cpu(), dtype, ndim, shape, values);
}

static filo_status index_on_device(const index_args *a, const filo_var *like, filo_tensor **out)
{
    return filo_tensor_to(a->index, filo_var_value(like)->device, out);
}

static const filo_dtype index_dtypes[2] = {FILO_I64, FILO_I32};

/* ---- index_select ---- */

static filo_status run_index_select(void *ctx, filo_var *const *in, filo_var **out)
{
    const index_args *a = ctx;
    filo_tensor *index;
    filo_status s = index_on_device(a, in[0], &index);
    if (s != FILO_OK)
        return s;
    s = filo_ag_index_select(in[0], a->dim, index, out);
    filo_tensor_free(index);
    return s;
}

Test(ag_indexing, index_select)
{
    const double rows[6] = {3, 0, 3, 1, 2, 3}, cols[4] = {4, 4, 0, 2};
    for (int t = 0; t < 2; t++) {
        index_args a[2] = {{.dim = 0, .index = make_index(index_dtypes[t], 1, (int64_t[]){6}, rows)},
                           {.dim = -1, .index = make_index(index_dtypes[t], 1, (int64_t[]){4}, cols)}};
        for (int k = 0; k < 2; k++) {
            gradcheck_case c = {.name = "index_select", .n_inputs = 1, .fn = run_index_select, .ctx = &a[k]};
            c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {4, 5}, .lo = -2, .hi = 2};
            check_both(&c);
            filo_tensor_free(a[k].index);
        }
    }
}

/* ---- gather ---- */

static filo_status run_gather(void *ctx, filo_var *const *in, filo_var **out)
{
    const index_args *a = ctx;
    filo_tensor *index;
    filo_status s = index_on_device(a, in[0], &index);
    if (s != FILO_OK)
        return s;
    s = filo_ag_gather(in[0], a->dim, index, out);
    filo_tensor_free(index);
    return s;
}

Test(ag_indexing, gather)
{
    /* dim 1 of x [3, 5]: index [3, 4] with repeats; index [2, 3] also skips x's last row. */
    const double full[12] = {4, 0, 4, 4, 1, 1, 2, 3, 0, 3, 3, 2}, part[6] = {2, 2, 0, 4, 1, 4};
    /* dim -2 of x [4, 3]: an index longer than the dim, over 2 of its 3 columns. */
    const double tall[12] = {3, 0, 3, 1, 2, 2, 0, 0, 3, 1, 1, 0};
    for (int t = 0; t < 2; t++) {
        struct {
            index_args a;
            int64_t x_shape[2];
        } cases[3] = {
            {{.dim = 1, .index = make_index(index_dtypes[t], 2, (int64_t[]){3, 4}, full)}, {3, 5}},
            {{.dim = 1, .index = make_index(index_dtypes[t], 2, (int64_t[]){2, 3}, part)}, {3, 5}},
            {{.dim = -2, .index = make_index(index_dtypes[t], 2, (int64_t[]){6, 2}, tall)}, {4, 3}},
        };
        for (int k = 0; k < 3; k++) {
            gradcheck_case c = {.name = "gather", .n_inputs = 1, .fn = run_gather, .ctx = &cases[k].a};
            c.inputs[0] = (gradcheck_input){.ndim = 2, .lo = -2, .hi = 2};
            memcpy(c.inputs[0].shape, cases[k].x_shape, sizeof cases[k].x_shape);
            check_both(&c);
            filo_tensor_free(cases[k].a.index);
        }
    }
}

/* ---- scatter_add ---- */

static filo_status run_scatter_add(void *ctx, filo_var *const *in, filo_var **out)
{
    const index_args *a = ctx;
    filo_tensor *index;
    filo_status s = index_on_device(a, in[0], &index);
    if (s != FILO_OK)
        return s;
    s = filo_ag_scatter_add(in[0], a->dim, index, in[1], out);
    filo_tensor_free(index);
    return s;
}

Test(ag_indexing, scatter_add)
{
    /* self [3, 5] along dim 1 from src [4, 6] through index [3, 4]: src's last row and last two
     * columns are never read and get a zero gradient. */
    const double wide[12] = {4, 0, 4, 4, 1, 1, 2, 3, 0, 3, 3, 2};
    /* self [4, 3] along dim -2 from src [5, 3] through index [5, 2]. */
    const double tall[10] = {3, 0, 3, 1, 2, 2, 0, 0, 3, 1};
    for (int t = 0; t < 2; t++) {
        struct {
            index_args a;
            int64_t self_shape[2], src_shape[2];
        } cases[2] = {
            {{.dim = 1, .index = make_index(index_dtypes[t], 2, (int64_t[]){3, 4}, wide)}, {3, 5}, {4, 6}},
            {{.dim = -2, .index = make_index(index_dtypes[t], 2, (int64_t[]){5, 2}, tall)}, {4, 3}, {5, 3}},
        };
        for (int k = 0; k < 2; k++) {
            gradcheck_case c = {.name = "scatter_add", .n_inputs = 2, .fn = run_scatter_add, .ctx = &cases[k].a};
            c.inputs[0] = (gradcheck_input){.ndim = 2, .lo = -2, .hi = 2};
            c.inputs[1] = (gradcheck_input){.ndim = 2, .lo = -2, .hi = 2};
            memcpy(c.inputs[0].shape, cases[k].self_shape, sizeof cases[k].self_shape);
            memcpy(c.inputs[1].shape, cases[k].src_shape, sizeof cases[k].src_shape);
            check_both(&c);
            c.inputs[0].no_grad = 1; /* only src */
            gradcheck_fd(&c);
            c.inputs[0].no_grad = 0;
            c.inputs[1].no_grad = 1; /* only self */
            gradcheck_fd(&c);
            filo_tensor_free(cases[k].a.index);
        }
    }
}

/* ---- embedding ---- */

static filo_status run_embedding(void *ctx, filo_var *const *in, filo_var **out)
{
    const index_args *a = ctx;
    filo_tensor *ids;
    filo_status s = index_on_device(a, in[0], &ids);
    if (s != FILO_OK)
        return s;
    s = filo_ag_embedding(in[0], ids, a->padding_idx, out);
    filo_tensor_free(ids);
    return s;
}

Test(ag_indexing, embedding)
{
    /* ids [2, 4] over 6 rows: 2 three times, 1 three times, 3 and 4 never. padding_idx 2 makes
     * the gradient differ from the derivative on purpose (nn.Embedding's rule), so that variant is
     * checked by parity here and with exact values in embedding_padding_row_is_zero. */
    const double ids[8] = {1, 2, 2, 5, 0, 2, 1, 1};
    const int64_t paddings[3] = {-1, 2, 3};
    for (int t = 0; t < 2; t++) {
        for (int p = 0; p < 3; p++) {
            index_args a = {.index = make_index(index_dtypes[t], 2, (int64_t[]){2, 4}, ids), .padding_idx = paddings[p]};
            gradcheck_case c = {.name = "embedding", .n_inputs = 1, .fn = run_embedding, .ctx = &a};
            c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {6, 3}, .lo = -2, .hi = 2};
            if (paddings[p] != 2)
                gradcheck_fd(&c);
            gradcheck_parity(&c, FILO_F32);
            filo_tensor_free(a.index);
        }
    }
}

/* The padding row gets an exact zero gradient, the others the sum of their rows of g. */
Test(ag_indexing, embedding_padding_row_is_zero)
{
    int64_t wshape[2] = {4, 2}, ishape = 5;
    double w[8] = {1, 2, 3, 4, 5, 6, 7, 8}, idv[5] = {1, 3, 1, 1, 0};
    filo_tensor *wt = filo_test_upload(filo_cpu(), FILO_F32, 2, wshape, w);
    filo_tensor *ids = make_index(FILO_I64, 1, &ishape, idv);
    filo_var *weight, *y, *l;
    FILO_CHECK(filo_var_new(wt, 1, &weight));
    FILO_CHECK(filo_ag_embedding(weight, ids, 1, &y));
    FILO_CHECK(filo_ag_sum(y, FILO_ALL_DIMS, 0, &l));
    FILO_CHECK(filo_backward(l, NULL, 0));
    double *g = filo_test_download(filo_var_grad(weight));
    const double want[8] = {1, 1, 0, 0, 0, 0, 1, 1};
    for (int i = 0; i < 8; i++)
        cr_assert_eq(g[i], want[i], "dweight[%d] = %g, want %g", i, g[i], want[i]);
    free(g);
    filo_var_free(l);
    filo_var_free(y);
    filo_var_free(weight);
    filo_tensor_free(ids);
    filo_tensor_free(wt);
}

/* ---- masked_fill ---- */

static filo_status run_masked_fill(void *ctx, filo_var *const *in, filo_var **out)
{
    const index_args *a = ctx;
    filo_tensor *mask;
    filo_status s = index_on_device(a, in[0], &mask);
    if (s != FILO_OK)
        return s;
    s = filo_ag_masked_fill(in[0], mask, a->value, out);
    filo_tensor_free(mask);
    return s;
}

Test(ag_indexing, masked_fill)
{
    const double column[4] = {1, 0, 0, 1}, last[5] = {0, 1, 1, 0, 1};
    double full[60];
    for (int i = 0; i < 60; i++)
        full[i] = (i * 7) % 3 == 0;
    index_args a[3] = {
        {.index = make_index(FILO_U8, 2, (int64_t[]){4, 1}, column), .value = 7}, /* broadcast over dims 0 and 2 */
        {.index = make_index(FILO_U8, 1, (int64_t[]){5}, last), .value = -1.5},
        {.index = make_index(FILO_U8, 3, (int64_t[]){3, 4, 5}, full), .value = 0},
    };
    for (int k = 0; k < 3; k++) {
        gradcheck_case c = {.name = "masked_fill", .n_inputs = 1, .fn = run_masked_fill, .ctx = &a[k]};
        c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {3, 4, 5}, .lo = -2, .hi = 2};
        check_both(&c);
        filo_tensor_free(a[k].index);
    }
}

Test(ag_indexing, bad_arguments)
{
    int64_t shape[2] = {3, 2}, n = 2;
    filo_tensor *t, *index = make_index(FILO_I64, 1, &n, (double[]){0, 2});
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, shape, &t));
    filo_var *x, *y = NULL;
    FILO_CHECK(filo_var_new(t, 1, &x));
    FILO_CHECK_FAILS(filo_ag_index_select(x, 0, NULL, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_gather(NULL, 0, index, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_scatter_add(x, 0, index, NULL, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_embedding(x, index, -1, NULL), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_masked_fill(x, NULL, 0.0, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    /* A padding_idx outside the table fails in the forward, not later in the backward. */
    int64_t live = filo_autograd_live_nodes();
    FILO_CHECK_FAILS(filo_ag_embedding(x, index, 3, &y), FILO_ERR_INVALID_ARG, "padding_idx 3");
    FILO_CHECK_FAILS(filo_ag_embedding(x, index, -2, &y), FILO_ERR_INVALID_ARG, "padding_idx -2");
    /* The kernels' checks come through: index 2 is out of range for dim 1. */
    FILO_CHECK_FAILS(filo_ag_index_select(x, 1, index, &y), FILO_ERR_INVALID_ARG, "2");
    cr_assert_eq(y, NULL);
    cr_assert_eq(filo_autograd_live_nodes(), live);
    filo_var_free(x);
    filo_tensor_free(t);
    filo_tensor_free(index);
}
