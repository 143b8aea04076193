/* filo_matmul (include/filo/matmul.h): parity on every backend against a float64 reference
 * written here, for 2-D and batched GEMMs, every transpose combination, transposed views read in
 * place, odd sizes (1, 7, 33, 129), a 2-D b shared by the batch, the bias and bias+GELU
 * epilogues (gelu_input included), every dtype; and each bad-input error. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "filo/matmul.h"
#include "parity.h"

typedef struct mm_ctx {
    int trans_a, trans_b;
    filo_matmul_epilogue ep;
} mm_ctx;

static filo_status run_mm(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const mm_ctx *c = ctx;
    const filo_tensor *bias = c->ep == FILO_MATMUL_EPILOGUE_NONE ? NULL : in[2];
    filo_tensor *y = NULL, *pre = NULL;
    filo_status s = filo_matmul(in[0], in[1], c->trans_a, c->trans_b, bias, c->ep, &y,
                                c->ep == FILO_MATMUL_EPILOGUE_BIAS_GELU ? &pre : NULL);
    if (s != FILO_OK)
        return s;
    out[0] = y;
    if (pre)
        out[1] = pre;
    return FILO_OK;
}

static double gelu(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

/* Inputs are the logical (pre-op) shapes in row-major order. */
static void reference_mm(void *ctx, double *const *in, const parity_input *shapes, double **want)
{
    const mm_ctx *c = ctx;
    const parity_input *sa = &shapes[0], *sb = &shapes[1];
    int64_t batch = sa->ndim == 3 ? sa->shape[0] : 1;
    int64_t ar = sa->shape[sa->ndim - 2], ac = sa->shape[sa->ndim - 1];
    int64_t br = sb->shape[sb->ndim - 2], bc = sb->shape[sb->ndim - 1];
    int64_t m = c->trans_a ? ac : ar, k = c->trans_a ? ar : ac, n = c->trans_b ? br : bc;
    int b_batched = sb->ndim == 3;
    for (int64_t p = 0; p < batch; p++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                const double *a = in[0] + p * ar * ac, *b = in[1] + (b_batched ? p * br * bc : 0);
                double s = 0;
                for (int64_t l = 0; l < k; l++)
                    s += (c->trans_a ? a[l * ac + i] : a[i * ac + l]) * (c->trans_b ? b[j * bc + l] : b[l * bc + j]);
                if (c->ep != FILO_MATMUL_EPILOGUE_NONE)
                    s += in[2][j];
                int64_t o = (p * m + i) * n + j;
                if (c->ep == FILO_MATMUL_EPILOGUE_BIAS_GELU) {
                    want[0][o] = gelu(s);
                    want[1][o] = s;
                } else {
                    want[0][o] = s;
                }
            }
}

static void set_tol(parity_case *pc, filo_dtype t)
{
    switch (t) {
    case FILO_F64: pc->rtol = 1e-12; pc->atol = 1e-12; pc->norm_tol = 1e-13; break;
    /* GEMM sums round in a different order than the reference: loose per element, tight in norm. */
    case FILO_F32: pc->rtol = 1e-4; pc->atol = 1e-5; pc->norm_tol = 1e-5; break;
    case FILO_BF16: pc->rtol = 1e-2; pc->atol = 1e-2; pc->norm_tol = 1e-2; break;
    default: pc->rtol = 2e-3; pc->atol = 2e-3; pc->norm_tol = 2e-3; break;
    }
}

/* One parity case: batch 0 means 2-D; b_shared gives b as a 2-D [K,N] with a 3-D a;
 * view_a/view_b pass column-major views (parity's transpose_last). */
static void check_mm(filo_dtype t, int64_t batch, int b_shared, int64_t m, int64_t k, int64_t n, int trans_a,
                     int trans_b, filo_matmul_epilogue ep, int view_a, int view_b)
{
    mm_ctx ctx = {trans_a, trans_b, ep};
    parity_case pc;
    memset(&pc, 0, sizeof pc);
    char name[160];
    snprintf(name, sizeof name, "matmul %s batch=%lld%s m=%lld k=%lld n=%lld ta=%d tb=%d ep=%d views=%d%d",
             filo_dtype_name(t), (long long)batch, b_shared ? " (b shared)" : "", (long long)m, (long long)k,
             (long long)n, trans_a, trans_b, (int)ep, view_a, view_b);
    pc.name = name;
    parity_input *a = &pc.inputs[0], *b = &pc.inputs[1];
    int ao = batch ? 1 : 0, bo = batch && !b_shared ? 1 : 0;
    *a = (parity_input){.dtype = t, .ndim = 2 + ao, .lo = -1, .hi = 1, .transpose_last = view_a};
    *b = (parity_input){.dtype = t, .ndim = 2 + bo, .lo = -1, .hi = 1, .transpose_last = view_b};
    a->shape[0] = b->shape[0] = batch;
    a->shape[ao] = trans_a ? k : m;
    a->shape[ao + 1] = trans_a ? m : k;
    b->shape[bo] = trans_b ? n : k;
    b->shape[bo + 1] = trans_b ? k : n;
    pc.n_inputs = 2;
    if (ep != FILO_MATMUL_EPILOGUE_NONE) {
        pc.inputs[2] = (parity_input){.dtype = t, .ndim = 1, .shape = {n}, .lo = -1, .hi = 1};
        pc.n_inputs = 3;
    }
    pc.run = run_mm;
    pc.n_outputs = ep == FILO_MATMUL_EPILOGUE_BIAS_GELU ? 2 : 1;
    pc.reference = reference_mm;
    pc.ctx = &ctx;
    pc.seed = (uint64_t)(m * 131 + k * 17 + n + batch * 7 + trans_a * 3 + trans_b * 5 + view_a + 2 * view_b + (int)ep * 11);
    set_tol(&pc, t);
    parity_run(&pc);
}

static const int64_t shapes[][3] = {{1, 1, 1}, {7, 33, 129}, {129, 7, 33}, {33, 129, 1}, {1, 129, 7}, {129, 129, 129}};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

Test(matmul, f32_2d_all_transposes_odd_shapes)
{
    for (int s = 0; s < N_SHAPES; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                check_mm(FILO_F32, 0, 0, shapes[s][0], shapes[s][1], shapes[s][2], ta, tb, FILO_MATMUL_EPILOGUE_NONE,
                         0, 0);
}

Test(matmul, f32_transposed_views_read_in_place)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_mm(FILO_F32, 0, 0, 7, 33, 129, ta, tb, FILO_MATMUL_EPILOGUE_NONE, 1, 0);
            check_mm(FILO_F32, 0, 0, 33, 7, 1, ta, tb, FILO_MATMUL_EPILOGUE_NONE, 0, 1);
            check_mm(FILO_F32, 3, 0, 33, 129, 7, ta, tb, FILO_MATMUL_EPILOGUE_NONE, 1, 1);
        }
}

Test(matmul, batched_and_shared_b)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_mm(FILO_F32, 3, 0, 7, 33, 129, ta, tb, FILO_MATMUL_EPILOGUE_NONE, 0, 0);
            check_mm(FILO_F32, 4, 1, 33, 7, 129, ta, tb, FILO_MATMUL_EPILOGUE_NONE, 0, 0);
            check_mm(FILO_F32, 2, 1, 129, 33, 7, ta, tb, FILO_MATMUL_EPILOGUE_BIAS, 0, 1);
        }
    check_mm(FILO_F32, 1, 0, 1, 1, 1, 0, 0, FILO_MATMUL_EPILOGUE_NONE, 0, 0);
}

Test(matmul, epilogues)
{
    const filo_dtype dts[] = {FILO_F32, FILO_BF16, FILO_F16, FILO_F64};
    for (int d = 0; d < 4; d++)
        for (int ep = FILO_MATMUL_EPILOGUE_BIAS; ep <= FILO_MATMUL_EPILOGUE_BIAS_GELU; ep++) {
            check_mm(dts[d], 0, 0, 33, 129, 7, 0, 1, (filo_matmul_epilogue)ep, 0, 0);
            check_mm(dts[d], 3, 0, 7, 33, 129, 1, 0, (filo_matmul_epilogue)ep, 0, 0);
            check_mm(dts[d], 2, 1, 129, 7, 33, 0, 0, (filo_matmul_epilogue)ep, 1, 0);
        }
}

Test(matmul, half_and_double_dtypes)
{
    const filo_dtype dts[] = {FILO_BF16, FILO_F16, FILO_F64};
    for (int d = 0; d < 3; d++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                check_mm(dts[d], 0, 0, 129, 33, 7, ta, tb, FILO_MATMUL_EPILOGUE_NONE, 0, 0);
                check_mm(dts[d], 3, 0, 7, 129, 33, ta, tb, FILO_MATMUL_EPILOGUE_NONE, ta, tb);
                check_mm(dts[d], 2, 1, 1, 7, 129, ta, tb, FILO_MATMUL_EPILOGUE_NONE, 0, 0);
            }
}

/* A strided view that is neither row- nor column-major is copied first. */
Test(matmul, strided_view_is_copied)
{
    double av[7 * 10], bv[5 * 3];
    for (int i = 0; i < 70; i++)
        av[i] = (double)(i % 11) - 5.0;
    for (int i = 0; i < 15; i++)
        bv[i] = (double)(i % 4) - 1.5;
    filo_tensor *a = NULL, *as = NULL, *b = NULL, *c = NULL;
    FILO_CHECK(filo_tensor_from_host(filo_cpu(), FILO_F64, 2, (int64_t[]){7, 10}, av, &a));
    FILO_CHECK(filo_tensor_slice(a, 1, 0, 10, 2, &as)); /* [7,5], strides (10, 2) */
    FILO_CHECK(filo_tensor_from_host(filo_cpu(), FILO_F64, 2, (int64_t[]){5, 3}, bv, &b));
    FILO_CHECK(filo_matmul(as, b, 0, 0, NULL, FILO_MATMUL_EPILOGUE_NONE, &c, NULL));
    double got[21];
    FILO_CHECK(filo_tensor_to_host(c, got, sizeof got));
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 3; j++) {
            double s = 0;
            for (int l = 0; l < 5; l++)
                s += av[i * 10 + 2 * l] * bv[l * 3 + j];
            cr_assert_eq(got[i * 3 + j], s, "c[%d,%d] = %g, want %g", i, j, got[i * 3 + j], s);
        }
    filo_tensor_free(a);
    filo_tensor_free(as);
    filo_tensor_free(b);
    filo_tensor_free(c);
}

static filo_tensor *make(filo_device dev, filo_dtype t, int ndim, const int64_t *shape)
{
    filo_tensor *x = NULL;
    FILO_CHECK(filo_tensor_zeros(dev, t, ndim, shape, &x));
    return x;
}

Test(matmul, bad_inputs)
{
    filo_device cpu = filo_cpu();
    filo_tensor *a = make(cpu, FILO_F32, 2, (int64_t[]){4, 5});
    filo_tensor *b = make(cpu, FILO_F32, 2, (int64_t[]){6, 3});
    filo_tensor *b_ok = make(cpu, FILO_F32, 2, (int64_t[]){5, 3});
    filo_tensor *b3 = make(cpu, FILO_F32, 3, (int64_t[]){2, 5, 3});
    filo_tensor *b64 = make(cpu, FILO_F64, 2, (int64_t[]){5, 3});
    filo_tensor *bias4 = make(cpu, FILO_F32, 1, (int64_t[]){4});
    filo_tensor *out = NULL, *pre = NULL;
    FILO_CHECK_FAILS(filo_matmul(a, b, 0, 0, NULL, FILO_MATMUL_EPILOGUE_NONE, &out, NULL), FILO_ERR_SHAPE,
                     "filo_matmul: K mismatch");
    FILO_CHECK_FAILS(filo_matmul(a, b, 0, 0, NULL, FILO_MATMUL_EPILOGUE_NONE, &out, NULL), FILO_ERR_SHAPE, "[6, 3]");
    FILO_CHECK_FAILS(filo_matmul(a, b3, 0, 0, NULL, FILO_MATMUL_EPILOGUE_NONE, &out, NULL), FILO_ERR_SHAPE,
                     "filo_matmul: ranks do not fit");
    FILO_CHECK_FAILS(filo_matmul(a, b64, 0, 0, NULL, FILO_MATMUL_EPILOGUE_NONE, &out, NULL), FILO_ERR_DTYPE,
                     "filo_matmul");
    FILO_CHECK_FAILS(filo_matmul(a, b_ok, 0, 0, bias4, FILO_MATMUL_EPILOGUE_BIAS, &out, NULL), FILO_ERR_SHAPE,
                     "must have shape [3]");
    FILO_CHECK_FAILS(filo_matmul(a, b_ok, 0, 0, NULL, FILO_MATMUL_EPILOGUE_BIAS, &out, NULL), FILO_ERR_INVALID_ARG,
                     "bias is required");
    FILO_CHECK_FAILS(filo_matmul(a, b_ok, 0, 0, bias4, FILO_MATMUL_EPILOGUE_BIAS_GELU, &out, NULL),
                     FILO_ERR_INVALID_ARG, "gelu_input");
    FILO_CHECK_FAILS(filo_matmul(a, b_ok, 0, 0, NULL, FILO_MATMUL_EPILOGUE_NONE, &out, &pre), FILO_ERR_INVALID_ARG,
                     "gelu_input");
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    if (filo_test_backends(devs) > 1) {
        filo_tensor *bg = make(devs[1], FILO_F32, 2, (int64_t[]){5, 3});
        FILO_CHECK_FAILS(filo_matmul(a, bg, 0, 0, NULL, FILO_MATMUL_EPILOGUE_NONE, &out, NULL), FILO_ERR_DEVICE,
                         "filo_matmul: a f32");
        filo_tensor_free(bg);
    }
    cr_assert_null(out);
    filo_tensor_free(a);
    filo_tensor_free(b);
    filo_tensor_free(b_ok);
    filo_tensor_free(b3);
    filo_tensor_free(b64);
    filo_tensor_free(bias4);
}
