/* Differentiable matmul (filo/ag.h): finite differences in float64 on the CPU and f32 parity on
 * every backend for each transpose combination, 2-D, batched and shared-b layouts, and the
 * NONE, BIAS and BIAS_GELU epilogues; constant operands; empty outputs; a bad argument. */
#include <string.h>

#include "gradcheck.h"

enum { LAYOUT_2D, LAYOUT_BATCHED, LAYOUT_SHARED_B, LAYOUT_COUNT };

typedef struct mm_args {
    int ta, tb;
    filo_matmul_epilogue ep;
} mm_args;

static const char *ep_name(filo_matmul_epilogue ep)
{
    if (ep == FILO_MATMUL_EPILOGUE_NONE)
        return "matmul";
    return ep == FILO_MATMUL_EPILOGUE_BIAS ? "matmul+bias" : "matmul+bias+gelu";
}

static filo_status run_mm(void *ctx, filo_var *const *in, filo_var **out)
{
    const mm_args *a = ctx;
    return filo_ag_matmul(in[0], in[1], a->ta, a->tb, a->ep == FILO_MATMUL_EPILOGUE_NONE ? NULL : in[2], a->ep, out);
}

/* A [M,K] / [K,M] (transposed) operand shape, with a leading batch dim when batch > 0. */
static gradcheck_input operand(int64_t batch, int64_t rows, int64_t cols, int trans)
{
    gradcheck_input in = {.lo = -1.0, .hi = 1.0};
    if (batch > 0)
        in.shape[in.ndim++] = batch;
    in.shape[in.ndim++] = trans ? cols : rows;
    in.shape[in.ndim++] = trans ? rows : cols;
    return in;
}

static gradcheck_case mm_case(mm_args *a, int layout, int64_t B, int64_t M, int64_t K, int64_t N)
{
    gradcheck_case c = {.name = ep_name(a->ep), .fn = run_mm, .ctx = a};
    c.inputs[c.n_inputs++] = operand(layout == LAYOUT_2D ? 0 : B, M, K, a->ta);
    c.inputs[c.n_inputs++] = operand(layout == LAYOUT_BATCHED ? B : 0, K, N, a->tb);
    if (a->ep != FILO_MATMUL_EPILOGUE_NONE)
        c.inputs[c.n_inputs++] = (gradcheck_input){.ndim = 1, .shape = {N}, .lo = -0.5, .hi = 0.5};
    return c;
}

/* Every epilogue x transpose combination x layout, in the order (ep, ta, tb, layout). */
#define N_VARIANTS (3 * 4 * LAYOUT_COUNT)

static void variant(int i, mm_args *a, int *layout)
{
    *layout = i % LAYOUT_COUNT;
    i /= LAYOUT_COUNT;
    a->tb = i % 2;
    a->ta = (i / 2) % 2;
    a->ep = (filo_matmul_epilogue)(i / 4);
}

Test(ag_matmul, finite_differences)
{
    for (int i = 0; i < N_VARIANTS; i++) {
        mm_args a;
        int layout;
        variant(i, &a, &layout);
        gradcheck_case c = mm_case(&a, layout, 2, 3, 4, 5);
        gradcheck_fd(&c);
    }
}

Test(ag_matmul, parity)
{
    for (int i = 0; i < N_VARIANTS; i++) {
        mm_args a;
        int layout;
        variant(i, &a, &layout);
        gradcheck_case c = mm_case(&a, layout, 3, 7, 9, 13);
        gradcheck_parity(&c, FILO_F32);
    }
}

/* One operand (or the bias) at a time needs a gradient; the others are constants. */
Test(ag_matmul, constant_inputs)
{
    for (int i = 0; i < N_VARIANTS; i++) {
        mm_args a;
        int layout;
        variant(i, &a, &layout);
        gradcheck_case c = mm_case(&a, layout, 2, 3, 2, 3);
        for (int only = 0; only < c.n_inputs; only++) {
            for (int k = 0; k < c.n_inputs; k++)
                c.inputs[k].no_grad = k != only;
            gradcheck_fd(&c);
            if (only == 1)
                gradcheck_parity(&c, FILO_F32);
        }
    }
}

/* An empty output (M = 0, N = 0 or B = 0) gives zero gradients. */
Test(ag_matmul, empty_output)
{
    const int64_t dims[3][4] = {{2, 0, 3, 4}, {2, 3, 4, 0}, {0, 3, 4, 2}};
    for (int d = 0; d < 3; d++)
        for (int layout = 0; layout < LAYOUT_COUNT; layout++) {
            mm_args a = {1, 0, FILO_MATMUL_EPILOGUE_BIAS};
            gradcheck_case c = mm_case(&a, layout, dims[d][0], dims[d][1], dims[d][2], dims[d][3]);
            gradcheck_fd(&c);
            gradcheck_parity(&c, FILO_F32);
        }
}

Test(ag_matmul, bad_arguments)
{
    const int64_t shape[2] = {2, 2};
    filo_tensor *t;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, shape, &t));
    filo_var *a, *y = NULL;
    FILO_CHECK(filo_var_new(t, 1, &a));
    FILO_CHECK_FAILS(filo_ag_matmul(a, NULL, 0, 0, NULL, FILO_MATMUL_EPILOGUE_NONE, &y), FILO_ERR_INVALID_ARG,
                     "must not be NULL");
    cr_assert(!y);
    filo_var_free(a);
    filo_tensor_free(t);
}
