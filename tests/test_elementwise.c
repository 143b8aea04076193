/* Elementwise ops: parity of every op and dtype on every backend (odd shapes, broadcasting,
 * non-contiguous views), formula references for gelu, exact comparisons and where, arange
 * lengths, one_hot, and every bad-input error. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "filo/elementwise.h"
#include "parity.h"

static const filo_dtype float_dtypes[] = {FILO_F32, FILO_F64, FILO_BF16, FILO_F16};
static const filo_dtype all_dtypes[] = {FILO_F32, FILO_F64, FILO_BF16, FILO_F16, FILO_I64, FILO_I32, FILO_U8};
#define N_FLOAT 4
#define N_ALL 7

static parity_input input(filo_dtype dtype, int ndim, const int64_t *shape, double lo, double hi, int transpose)
{
    parity_input in;
    memset(&in, 0, sizeof in);
    in.dtype = dtype;
    in.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        in.shape[i] = shape[i];
    in.lo = lo;
    in.hi = hi;
    in.transpose_last = transpose;
    return in;
}

/* Functions near a cancellation (gelu and sigmoid tails) lose relative precision in f32 exactly
 * as PyTorch's do: an absolute floor of 1e-6 covers that. */
static double atol_for(filo_dtype dtype) { return fmax(parity_default_rtol(dtype) * 1e-3, 1e-6); }

/* ---- unary ---- */

typedef struct {
    int op; /* a filo_unary_op, or -1 for pow */
    double p;
} unary_ctx;

static filo_status run_unary(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const unary_ctx *u = ctx;
    if (u->op < 0)
        return filo_pow_scalar(in[0], u->p, out);
    return filo_unary((filo_unary_op)u->op, in[0], out);
}

static double gelu_ref(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

static double gelu_tanh_ref(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
}

static void ref_gelu(void *ctx, double *const *in, const parity_input *shapes, double **want)
{
    const unary_ctx *u = ctx;
    int64_t n = 1;
    for (int i = 0; i < shapes[0].ndim; i++)
        n *= shapes[0].shape[i];
    for (int64_t i = 0; i < n; i++)
        want[0][i] = u->op == FILO_UNARY_GELU ? gelu_ref(in[0][i]) : gelu_tanh_ref(in[0][i]);
}

static void unary_parity(unary_ctx u, const char *name, double lo, double hi)
{
    static const int64_t shapes[][3] = {{7, 33, 0}, {129, 0, 0}, {1, 0, 0}, {3, 5, 7}};
    static const int ndims[] = {2, 1, 1, 3};
    for (int d = 0; d < N_FLOAT; d++) {
        for (int s = 0; s < 4; s++) {
            char cname[128];
            snprintf(cname, sizeof cname, "%s %s shape#%d", name, filo_dtype_name(float_dtypes[d]), s);
            parity_case c;
            memset(&c, 0, sizeof c);
            c.name = cname;
            c.n_inputs = 1;
            c.inputs[0] = input(float_dtypes[d], ndims[s], shapes[s], lo, hi, ndims[s] >= 2);
            c.run = run_unary;
            c.n_outputs = 1;
            c.ctx = &u;
            c.atol = atol_for(float_dtypes[d]);
            if (u.op == FILO_UNARY_GELU || u.op == FILO_UNARY_GELU_TANH)
                c.reference = ref_gelu;
            c.seed = 17u * (uint64_t)(d + 1) + (uint64_t)s;
            parity_run(&c);
        }
    }
}

Test(elementwise, unary_parity)
{
    static const struct {
        filo_unary_op op;
        double lo, hi;
    } ops[] = {
        {FILO_UNARY_NEG, -3, 3},      {FILO_UNARY_ABS, -3, 3},        {FILO_UNARY_EXP, -4, 4},
        /* log, sqrt and rsqrt on their domain, from just above 0 */
        {FILO_UNARY_LOG, 0.01, 8},    {FILO_UNARY_SQRT, 0.001, 9},    {FILO_UNARY_RSQRT, 0.01, 9},
        {FILO_UNARY_TANH, -3, 3},     {FILO_UNARY_SIGMOID, -8, 8},    {FILO_UNARY_RELU, -3, 3},
        {FILO_UNARY_GELU, -3.5, 3.5}, {FILO_UNARY_GELU_TANH, -3.5, 3.5},  {FILO_UNARY_SILU, -6, 6},
        /* Both sides of softplus's threshold of 20. The ranges stop where f16 results turn
         * subnormal (there a single element's relative error is meaningless); the formula test
         * covers the far tails. */
        {FILO_UNARY_SOFTPLUS, -8, 30},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        unary_ctx u = {(int)ops[i].op, 0};
        unary_parity(u, filo_unary_op_name(ops[i].op), ops[i].lo, ops[i].hi);
    }
}

Test(elementwise, pow_parity)
{
    unary_ctx cases[] = {{-1, 2.0}, {-1, 3.0}, {-1, 0.5}, {-1, -1.5}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        unary_parity(cases[i], "pow", 0.2, 3);
    /* Integer exponents are defined for negative bases. */
    unary_parity((unary_ctx){-1, 3.0}, "pow neg base", -2, 2);
}

/* Values straight from the formulas, on every backend. */
static void check_values(filo_device dev, filo_dtype dtype, const double *x, int n, filo_status (*op)(const filo_tensor *, filo_tensor **),
                         const double *want, double tol, const char *what)
{
    int64_t shape[1] = {n};
    filo_tensor *t, *r;
    FILO_CHECK(filo_tensor_from_host(filo_cpu(), FILO_F64, 1, shape, x, &t));
    filo_tensor *td;
    FILO_CHECK(filo_tensor_empty(dev, dtype, 1, shape, &td));
    FILO_CHECK(filo_tensor_copy(td, t));
    FILO_CHECK(op(td, &r));
    double got[16];
    FILO_CHECK(filo_tensor_to_host_as(r, FILO_F64, got, sizeof got));
    for (int i = 0; i < n; i++) {
        if (isnan(want[i]))
            cr_assert(isnan(got[i]), "%s on %s: element %d is %g, want NaN", what, filo_test_backend_name(dev), i, got[i]);
        else if (isinf(want[i]))
            cr_assert_eq(got[i], want[i], "%s on %s: element %d is %g, want %g", what, filo_test_backend_name(dev), i,
                         got[i], want[i]);
        else
            cr_assert(fabs(got[i] - want[i]) <= tol * fmax(1.0, fabs(want[i])), "%s on %s: element %d (x=%g) is %.17g, want %.17g",
                      what, filo_test_backend_name(dev), i, x[i], got[i], want[i]);
    }
    filo_tensor_free(t);
    filo_tensor_free(td);
    filo_tensor_free(r);
}

static filo_status op_gelu(const filo_tensor *x, filo_tensor **out) { return filo_unary(FILO_UNARY_GELU, x, out); }
static filo_status op_gelu_tanh(const filo_tensor *x, filo_tensor **out) { return filo_unary(FILO_UNARY_GELU_TANH, x, out); }
static filo_status op_softplus(const filo_tensor *x, filo_tensor **out) { return filo_unary(FILO_UNARY_SOFTPLUS, x, out); }
static filo_status op_relu(const filo_tensor *x, filo_tensor **out) { return filo_unary(FILO_UNARY_RELU, x, out); }
static filo_status op_log(const filo_tensor *x, filo_tensor **out) { return filo_unary(FILO_UNARY_LOG, x, out); }
static filo_status op_sqrt(const filo_tensor *x, filo_tensor **out) { return filo_unary(FILO_UNARY_SQRT, x, out); }

Test(elementwise, formulas_and_edges)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const double x[] = {-6, -3, -1, -0.5, 0, 0.25, 1, 2.5, 7};
    double g[9], gt[9];
    for (int i = 0; i < 9; i++) {
        g[i] = gelu_ref(x[i]);
        gt[i] = gelu_tanh_ref(x[i]);
    }
    /* softplus: x itself above 20, log1p(exp(x)) up to it (inclusive, as torch's x * beta > threshold). */
    const double sx[] = {-40, -1, 0, 19.5, 20, 20.5, 60};
    double sp[7];
    for (int i = 0; i < 7; i++)
        sp[i] = sx[i] > 20 ? sx[i] : log1p(exp(sx[i]));
    /* log and sqrt at their domain edges: log(0) = -inf, log(-1) and sqrt(-1) NaN, sqrt(0) = 0. */
    const double ex[] = {0, -1, 1, 4};
    const double lw[] = {-INFINITY, NAN, 0, log(4.0)};
    const double sw[] = {0, NAN, 1, 2};
    const double rx[] = {NAN, -2, 0, 3};
    const double rw[] = {NAN, 0, 0, 3};
    for (int b = 0; b < nb; b++) {
        check_values(devs[b], FILO_F64, x, 9, op_gelu, g, 1e-15, "gelu f64");
        check_values(devs[b], FILO_F64, x, 9, op_gelu_tanh, gt, 1e-15, "gelu_tanh f64");
        check_values(devs[b], FILO_F32, x, 9, op_gelu, g, 1e-6, "gelu f32");
        check_values(devs[b], FILO_F32, x, 9, op_gelu_tanh, gt, 1e-6, "gelu_tanh f32");
        check_values(devs[b], FILO_F64, sx, 7, op_softplus, sp, 1e-15, "softplus f64");
        check_values(devs[b], FILO_F32, sx, 7, op_softplus, sp, 1e-6, "softplus f32");
        check_values(devs[b], FILO_F32, ex, 4, op_log, lw, 1e-6, "log edges");
        check_values(devs[b], FILO_F32, ex, 4, op_sqrt, sw, 1e-6, "sqrt edges");
        check_values(devs[b], FILO_BF16, rx, 4, op_relu, rw, 0, "relu NaN");
    }
}

/* ---- binary, scalar, where ---- */

typedef struct {
    filo_binary_op op;
    double s;
    int reversed;
} binary_ctx;

static filo_status run_binary(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const binary_ctx *b = ctx;
    return filo_binary(b->op, in[0], in[1], out);
}

static filo_status run_scalar(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const binary_ctx *b = ctx;
    return filo_binary_scalar(b->op, in[0], b->s, b->reversed, out);
}

static filo_status run_where(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    (void)ctx;
    return filo_where(in[0], in[1], in[2], out);
}

typedef struct {
    int nda, ndb;
    int64_t a[3], b[3];
    int transpose_a, transpose_b;
} bcast_shape;

static const bcast_shape bcast_shapes[] = {
    {3, 2, {7, 1, 33}, {5, 1}, 0, 0},  /* -> [7, 5, 33] */
    {1, 2, {129}, {1, 129}, 0, 0},     /* -> [1, 129] */
    {1, 2, {1}, {7, 33}, 0, 1},        /* a scalar-shaped [1] against a transposed view */
    {0, 1, {0}, {33}, 0, 0},           /* a 0-d tensor */
    {2, 2, {7, 33}, {7, 33}, 1, 0},    /* same shapes, a transposed */
    {2, 1, {33, 7}, {7}, 1, 0},        /* row broadcast over a transposed view */
    {0, 0, {0}, {0}, 0, 0},            /* 0-d with 0-d */
};
#define N_BCAST (sizeof bcast_shapes / sizeof bcast_shapes[0])

Test(elementwise, binary_parity)
{
    for (int op = FILO_BINARY_ADD; op <= FILO_BINARY_MIN; op++) {
        for (int d = 0; d < N_FLOAT; d++) {
            for (size_t s = 0; s < N_BCAST; s++) {
                const bcast_shape *sh = &bcast_shapes[s];
                binary_ctx ctx = {(filo_binary_op)op, 0, 0};
                char cname[128];
                snprintf(cname, sizeof cname, "%s %s shape#%zu", filo_binary_op_name((filo_binary_op)op),
                         filo_dtype_name(float_dtypes[d]), s);
                parity_case c;
                memset(&c, 0, sizeof c);
                c.name = cname;
                c.n_inputs = 2;
                c.inputs[0] = input(float_dtypes[d], sh->nda, sh->a, -3, 3, sh->transpose_a);
                /* Divisors away from zero keep div's results moderate. */
                c.inputs[1] = op == FILO_BINARY_DIV ? input(float_dtypes[d], sh->ndb, sh->b, 0.25, 3, sh->transpose_b)
                                                    : input(float_dtypes[d], sh->ndb, sh->b, -3, 3, sh->transpose_b);
                c.run = run_binary;
                c.n_outputs = 1;
                c.ctx = &ctx;
                c.seed = 31u * (uint64_t)op + 7u * (uint64_t)d + (uint64_t)s;
                parity_run(&c);
            }
        }
    }
}

Test(elementwise, compare_parity)
{
    for (int op = FILO_BINARY_EQ; op < FILO_BINARY_OP_COUNT; op++) {
        for (int d = 0; d < N_ALL; d++) {
            for (size_t s = 0; s < 3; s++) {
                const bcast_shape *sh = &bcast_shapes[s];
                binary_ctx ctx = {(filo_binary_op)op, 0, 0};
                char cname[128];
                snprintf(cname, sizeof cname, "%s %s shape#%zu", filo_binary_op_name((filo_binary_op)op),
                         filo_dtype_name(all_dtypes[d]), s);
                /* Narrow ranges so that ties happen: integers 0..3, bf16/f16 in coarse steps. */
                int is_int = all_dtypes[d] == FILO_I64 || all_dtypes[d] == FILO_I32 || all_dtypes[d] == FILO_U8;
                double lo = is_int ? 0 : 1, hi = is_int ? 4 : 1.03;
                parity_case c;
                memset(&c, 0, sizeof c);
                c.name = cname;
                c.n_inputs = 2;
                c.inputs[0] = input(all_dtypes[d], sh->nda, sh->a, lo, hi, sh->transpose_a);
                c.inputs[1] = input(all_dtypes[d], sh->ndb, sh->b, lo, hi, sh->transpose_b);
                c.run = run_binary;
                c.n_outputs = 1;
                c.ctx = &ctx;
                c.rtol = 1e-15;
                c.seed = 13u * (uint64_t)op + 5u * (uint64_t)d + (uint64_t)s;
                parity_run(&c);
            }
        }
    }
}

Test(elementwise, scalar_parity)
{
    for (int op = FILO_BINARY_ADD; op <= FILO_BINARY_MIN; op++) {
        for (int reversed = 0; reversed <= 1; reversed++) {
            for (int d = 0; d < N_FLOAT; d++) {
                binary_ctx ctx = {(filo_binary_op)op, 1.75, reversed};
                char cname[128];
                snprintf(cname, sizeof cname, "scalar %s%s %s", filo_binary_op_name((filo_binary_op)op),
                         reversed ? " reversed" : "", filo_dtype_name(float_dtypes[d]));
                int64_t shape[2] = {7, 33};
                parity_case c;
                memset(&c, 0, sizeof c);
                c.name = cname;
                c.n_inputs = 1;
                c.inputs[0] = input(float_dtypes[d], 2, shape, op == FILO_BINARY_DIV && reversed ? 0.25 : -3, 3, d % 2);
                c.run = run_scalar;
                c.n_outputs = 1;
                c.ctx = &ctx;
                c.seed = 3u * (uint64_t)op + (uint64_t)d;
                parity_run(&c);
            }
        }
    }
}

Test(elementwise, where_parity)
{
    /* cond [7, 1, 33], a [5, 1] and a transposed b [5, 33] broadcast to [7, 5, 33]. */
    const int64_t cond_shape[3] = {7, 1, 33}, a_shape[2] = {5, 1}, b_shape[2] = {5, 33};
    for (int d = 0; d < N_ALL; d++) {
        char cname[64];
        snprintf(cname, sizeof cname, "where %s", filo_dtype_name(all_dtypes[d]));
        parity_case c;
        memset(&c, 0, sizeof c);
        c.name = cname;
        c.n_inputs = 3;
        c.inputs[0] = input(FILO_U8, 3, cond_shape, 0, 2, 0);
        c.inputs[1] = input(all_dtypes[d], 2, a_shape, 1, 100, 0);
        c.inputs[2] = input(all_dtypes[d], 2, b_shape, 1, 100, 1);
        c.run = run_where;
        c.n_outputs = 1;
        c.rtol = 1e-15;
        c.seed = 99u + (uint64_t)d;
        parity_run(&c);
    }
}

Test(elementwise, comparisons_exact)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const double a[] = {1, 2, NAN, -0.0, 3, 5};
    const double b[] = {1, 3, NAN, 0.0, 2, NAN};
    const uint8_t want[6][6] = {
        {1, 0, 0, 1, 0, 0}, /* eq */
        {0, 1, 1, 0, 1, 1}, /* ne */
        {0, 1, 0, 0, 0, 0}, /* lt */
        {1, 1, 0, 1, 0, 0}, /* le */
        {0, 0, 0, 0, 1, 0}, /* gt */
        {1, 0, 0, 1, 1, 0}, /* ge */
    };
    int64_t shape[1] = {6};
    for (int bk = 0; bk < nb; bk++) {
        for (int d = 0; d < N_FLOAT; d++) {
            filo_tensor *ha, *hb, *ta, *tb;
            FILO_CHECK(filo_tensor_from_host(filo_cpu(), FILO_F64, 1, shape, a, &ha));
            FILO_CHECK(filo_tensor_from_host(filo_cpu(), FILO_F64, 1, shape, b, &hb));
            FILO_CHECK(filo_tensor_empty(devs[bk], float_dtypes[d], 1, shape, &ta));
            FILO_CHECK(filo_tensor_empty(devs[bk], float_dtypes[d], 1, shape, &tb));
            FILO_CHECK(filo_tensor_copy(ta, ha));
            FILO_CHECK(filo_tensor_copy(tb, hb));
            for (int op = FILO_BINARY_EQ; op < FILO_BINARY_OP_COUNT; op++) {
                filo_tensor *r;
                FILO_CHECK(filo_binary((filo_binary_op)op, ta, tb, &r));
                cr_assert_eq(r->dtype, FILO_U8);
                uint8_t got[6];
                FILO_CHECK(filo_tensor_to_host(r, got, sizeof got));
                for (int i = 0; i < 6; i++)
                    cr_assert_eq(got[i], want[op - FILO_BINARY_EQ][i], "%s %s on %s: element %d is %d",
                                 filo_binary_op_name((filo_binary_op)op), filo_dtype_name(float_dtypes[d]),
                                 filo_test_backend_name(devs[bk]), i, got[i]);
                filo_tensor_free(r);
            }
            /* maximum and minimum propagate NaN from either side. */
            filo_tensor *mx;
            FILO_CHECK(filo_binary(FILO_BINARY_MAX, ta, tb, &mx));
            double m[6];
            FILO_CHECK(filo_tensor_to_host_as(mx, FILO_F64, m, sizeof m));
            cr_assert(m[0] == 1 && m[1] == 3 && isnan(m[2]) && m[4] == 3 && isnan(m[5]));
            filo_tensor_free(mx);
            filo_tensor_free(ha);
            filo_tensor_free(hb);
            filo_tensor_free(ta);
            filo_tensor_free(tb);
        }
    }
}

/* ---- arange and one_hot ---- */

Test(elementwise, arange)
{
    static const struct {
        double start, end, step;
        int64_t len;
    } cases[] = {
        {0, 10, 1, 10}, {0, 1, 0.1, 10}, {1, 2.5, 0.5, 3}, {0, -3, -0.7, 5},
        {5, 5, 1, 0},   {0, 10, 3, 4},   {-1, 1, 0.3, 7},  {2, 2.05, 0.1, 1},
    };
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            for (int d = 0; d < N_FLOAT; d++) {
                filo_tensor *t;
                FILO_CHECK(filo_arange(devs[b], float_dtypes[d], cases[i].start, cases[i].end, cases[i].step, &t));
                cr_assert_eq(t->ndim, 1);
                cr_assert_eq(t->shape[0], cases[i].len, "arange(%g, %g, %g) has %lld elements, want %lld",
                             cases[i].start, cases[i].end, cases[i].step, (long long)t->shape[0], (long long)cases[i].len);
                double v[16];
                FILO_CHECK(filo_tensor_to_host_as(t, FILO_F64, v, sizeof v));
                for (int64_t k = 0; k < cases[i].len; k++) {
                    double want = cases[i].start + (double)k * cases[i].step;
                    cr_assert(fabs(v[k] - want) <= parity_default_rtol(float_dtypes[d]) * fmax(1, fabs(want)),
                              "arange element %lld is %g, want %g", (long long)k, v[k], want);
                }
                filo_tensor_free(t);
            }
        }
        /* Integer dtypes truncate start + i * step, as torch does. */
        filo_tensor *t;
        FILO_CHECK(filo_arange(devs[b], FILO_I64, 0, 5, 1.5, &t));
        cr_assert_eq(t->shape[0], 4);
        int64_t iv[4];
        FILO_CHECK(filo_tensor_to_host(t, iv, sizeof iv));
        cr_assert(iv[0] == 0 && iv[1] == 1 && iv[2] == 3 && iv[3] == 4);
        filo_tensor_free(t);
        FILO_CHECK(filo_arange(devs[b], FILO_F32, 0, 1000, 1, &t));
        float big[1000];
        FILO_CHECK(filo_tensor_to_host(t, big, sizeof big));
        for (int k = 0; k < 1000; k++)
            cr_assert_eq(big[k], (float)k);
        filo_tensor_free(t);
    }
}

Test(elementwise, one_hot)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const int64_t idx[6] = {2, 0, 3, 3, 1, 0};
    int64_t shape[2] = {2, 3};
    for (int b = 0; b < nb; b++) {
        filo_tensor *i64, *r;
        FILO_CHECK(filo_tensor_from_host(devs[b], FILO_I64, 2, shape, idx, &i64));
        FILO_CHECK(filo_one_hot(i64, 4, FILO_F32, &r));
        cr_assert(r->ndim == 3 && r->shape[0] == 2 && r->shape[1] == 3 && r->shape[2] == 4);
        float v[24];
        FILO_CHECK(filo_tensor_to_host(r, v, sizeof v));
        for (int k = 0; k < 24; k++)
            cr_assert_eq(v[k], (float)(idx[k / 4] == k % 4), "one_hot element %d on %s", k, filo_test_backend_name(devs[b]));
        filo_tensor_free(r);

        /* i32 indices through a transposed view, u8 output. */
        int32_t idx32[6];
        for (int k = 0; k < 6; k++)
            idx32[k] = (int32_t)idx[k];
        filo_tensor *i32, *i32t;
        FILO_CHECK(filo_tensor_from_host(devs[b], FILO_I32, 2, shape, idx32, &i32));
        FILO_CHECK(filo_tensor_transpose(i32, 0, 1, &i32t));
        FILO_CHECK(filo_one_hot(i32t, 5, FILO_U8, &r));
        uint8_t u[30];
        FILO_CHECK(filo_tensor_to_host(r, u, sizeof u));
        for (int row = 0; row < 6; row++) {
            int64_t want = idx[(row % 2) * 3 + row / 2];
            for (int c = 0; c < 5; c++)
                cr_assert_eq(u[row * 5 + c], c == want, "one_hot transposed row %d class %d", row, c);
        }
        filo_tensor_free(r);

        /* Out of range: rejected on the CPU; on CUDA the row is all zeros (documented). */
        const int64_t bad[6] = {0, 1, 2, 3, 1, 7};
        filo_tensor *tb;
        FILO_CHECK(filo_tensor_from_host(devs[b], FILO_I64, 2, shape, bad, &tb));
        if (devs[b].type == FILO_DEVICE_CPU) {
            FILO_CHECK_FAILS(filo_one_hot(tb, 4, FILO_F32, &r), FILO_ERR_INVALID_ARG, "index 7 at position [1, 2]");
        } else {
            FILO_CHECK(filo_one_hot(tb, 4, FILO_F32, &r));
            float w[24];
            FILO_CHECK(filo_tensor_to_host(r, w, sizeof w));
            for (int c = 0; c < 4; c++)
                cr_assert_eq(w[20 + c], 0.0f);
            filo_tensor_free(r);
        }
        filo_tensor_free(tb);
        filo_tensor_free(i64);
        filo_tensor_free(i32);
        filo_tensor_free(i32t);
    }
}

/* ---- bad input ---- */

Test(elementwise, errors)
{
    int64_t s3[1] = {3}, s4[1] = {4}, s23[2] = {2, 3};
    filo_tensor *f32, *f64, *f32b, *i64, *u8, *r = NULL;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 1, s3, &f32));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F64, 1, s3, &f64));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, s23, &f32b));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_I64, 1, s3, &i64));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_U8, 1, s4, &u8));

    FILO_CHECK_FAILS(filo_binary(FILO_BINARY_ADD, f32, f64, &r), FILO_ERR_DTYPE, "f32[3] cpu and f64[3] cpu");
    FILO_CHECK_FAILS(filo_binary(FILO_BINARY_LT, f32, f64, &r), FILO_ERR_DTYPE, "lt");
    FILO_CHECK_FAILS(filo_binary(FILO_BINARY_MUL, i64, i64, &r), FILO_ERR_DTYPE, "needs a float tensor");
    int64_t s2[1] = {2};
    filo_tensor *f32_2;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 1, s2, &f32_2));
    FILO_CHECK_FAILS(filo_binary(FILO_BINARY_SUB, f32b, f32_2, &r), FILO_ERR_SHAPE,
                     "sub: cannot broadcast f32[2, 3] cpu with f32[2] cpu");
    FILO_CHECK_FAILS(filo_binary(FILO_BINARY_ADD, NULL, f32, &r), FILO_ERR_INVALID_ARG, "a is NULL");
    FILO_CHECK_FAILS(filo_binary(FILO_BINARY_ADD, f32, f32, NULL), FILO_ERR_INVALID_ARG, "out is NULL");
    FILO_CHECK_FAILS(filo_binary((filo_binary_op)99, f32, f32, &r), FILO_ERR_INVALID_ARG, "unknown binary op 99");

    FILO_CHECK_FAILS(filo_unary(FILO_UNARY_EXP, i64, &r), FILO_ERR_DTYPE, "exp needs a float tensor");
    FILO_CHECK_FAILS(filo_unary((filo_unary_op)-1, f32, &r), FILO_ERR_INVALID_ARG, "unknown unary op");
    FILO_CHECK_FAILS(filo_unary(FILO_UNARY_TANH, NULL, &r), FILO_ERR_INVALID_ARG, "x is NULL");
    FILO_CHECK_FAILS(filo_pow_scalar(u8, 2.0, &r), FILO_ERR_DTYPE, "pow needs a float tensor");

    FILO_CHECK_FAILS(filo_binary_scalar(FILO_BINARY_EQ, f32, 1.0, 0, &r), FILO_ERR_INVALID_ARG, "no scalar form");
    FILO_CHECK_FAILS(filo_binary_scalar(FILO_BINARY_ADD, i64, 1.0, 0, &r), FILO_ERR_DTYPE, "add needs a float tensor");

    FILO_CHECK_FAILS(filo_where(f32, f32, f32, &r), FILO_ERR_DTYPE, "cond must be u8");
    FILO_CHECK_FAILS(filo_where(u8, f32, f64, &r), FILO_ERR_DTYPE, "f32[3] cpu and f64[3] cpu");
    FILO_CHECK_FAILS(filo_where(u8, f32, f32, &r), FILO_ERR_SHAPE, "u8[4] cpu with f32[3] cpu with f32[3] cpu");

    FILO_CHECK_FAILS(filo_arange(filo_cpu(), FILO_F32, 0, 1, 0, &r), FILO_ERR_INVALID_ARG, "step must be non-zero");
    FILO_CHECK_FAILS(filo_arange(filo_cpu(), FILO_F32, 0, 5, -1, &r), FILO_ERR_INVALID_ARG, "points away");
    FILO_CHECK_FAILS(filo_arange(filo_cpu(), FILO_F32, 5, 0, 1, &r), FILO_ERR_INVALID_ARG, "points away");
    FILO_CHECK_FAILS(filo_arange(filo_cpu(), FILO_F32, 0, NAN, 1, &r), FILO_ERR_INVALID_ARG, "finite");

    FILO_CHECK_FAILS(filo_one_hot(f32, 3, FILO_F32, &r), FILO_ERR_DTYPE, "indices must be i64 or i32");
    FILO_CHECK_FAILS(filo_one_hot(i64, 0, FILO_F32, &r), FILO_ERR_INVALID_ARG, "num_classes must be >= 1");
    const int64_t neg[3] = {0, -1, 2};
    filo_tensor *tn;
    FILO_CHECK(filo_tensor_from_host(filo_cpu(), FILO_I64, 1, s3, neg, &tn));
    FILO_CHECK_FAILS(filo_one_hot(tn, 3, FILO_F32, &r), FILO_ERR_INVALID_ARG, "index -1 at position [1]");

    /* Inputs on different devices, when this build has a CUDA device. */
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    if (nb > 1) {
        filo_tensor *g;
        FILO_CHECK(filo_tensor_zeros(devs[1], FILO_F32, 1, s3, &g));
        FILO_CHECK_FAILS(filo_binary(FILO_BINARY_ADD, f32, g, &r), FILO_ERR_DEVICE, "different devices");
        FILO_CHECK_FAILS(filo_where(u8, f32, g, &r), FILO_ERR_DEVICE, "different devices");
        filo_tensor_free(g);
    }
    cr_assert_null(r);
    filo_tensor_free(tn);
    filo_tensor_free(f32_2);
    filo_tensor_free(f32);
    filo_tensor_free(f64);
    filo_tensor_free(f32b);
    filo_tensor_free(i64);
    filo_tensor_free(u8);
}
