/* Reductions (sum, mean, max, min, argmax, var) and softmax / log-softmax: parity with float64
 * references on every backend for every dtype, axis and odd shape, plus the numerics (stability
 * at ±80, rows summing to 1, argmax ties and NaN, two-pass variance), empty reductions,
 * determinism of the two-stage GPU path and every bad-input error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/reduce.h"
#include "parity.h"

static const filo_dtype float_dtypes[] = {FILO_F32, FILO_F64, FILO_BF16, FILO_F16};

/* ---- reductions ---- */

typedef enum { K_SUM, K_MEAN, K_MAX, K_MIN, K_ARGMAX, K_VAR0, K_VAR1 } kind;
static const char *kind_names[] = {"sum", "mean", "max", "min", "argmax", "var(correction 0)", "var(correction 1)"};

typedef struct red_ctx {
    kind k;
    int dim;
    int keepdim;
} red_ctx;

static filo_status red_call(kind k, const filo_tensor *x, int dim, int keepdim, filo_tensor **out)
{
    switch (k) {
    case K_SUM: return filo_reduce(FILO_REDUCE_SUM, x, dim, keepdim, out);
    case K_MEAN: return filo_reduce(FILO_REDUCE_MEAN, x, dim, keepdim, out);
    case K_MAX: return filo_reduce(FILO_REDUCE_MAX, x, dim, keepdim, out);
    case K_MIN: return filo_reduce(FILO_REDUCE_MIN, x, dim, keepdim, out);
    case K_ARGMAX: return filo_argmax(x, dim, keepdim, out);
    case K_VAR0: return filo_variance(x, dim, 0, keepdim, out);
    case K_VAR1: return filo_variance(x, dim, 1, keepdim, out);
    }
    return FILO_ERR_INTERNAL;
}

static filo_status red_run(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const red_ctx *c = ctx;
    return red_call(c->k, in[0], c->dim, c->keepdim, out);
}

/* Splits a row-major shape into [outer, extent, inner] around the reduced dim. */
static void split(const parity_input *s, int dim, int64_t *outer, int64_t *extent, int64_t *inner)
{
    *outer = *extent = *inner = 1;
    int n = s->ndim > 0 ? s->ndim : 1;
    int d = dim == FILO_ALL_DIMS ? -1 : (dim < 0 ? dim + n : dim);
    for (int i = 0; i < s->ndim; i++) {
        if (d < 0 || i == d)
            *extent *= s->shape[i];
        else if (i < d)
            *outer *= s->shape[i];
        else
            *inner *= s->shape[i];
    }
}

/* Float64 references written from the definitions (variance: the two-pass formula). */
static void red_reference(void *ctx, double *const *inputs, const parity_input *shapes, double **want)
{
    const red_ctx *c = ctx;
    int64_t outer, n, inner;
    split(&shapes[0], c->dim, &outer, &n, &inner);
    const double *x = inputs[0];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const double *p = x + o * n * inner + i;
            double sum = 0, best = p[0], r = 0;
            int64_t arg = 0;
            for (int64_t j = 0; j < n; j++) {
                double v = p[j * inner];
                sum += v;
                if (c->k == K_MIN ? v < best : v > best) {
                    best = v;
                    arg = j;
                }
            }
            double mean = sum / (double)n, m2 = 0;
            for (int64_t j = 0; j < n; j++)
                m2 += (p[j * inner] - mean) * (p[j * inner] - mean);
            switch (c->k) {
            case K_SUM: r = sum; break;
            case K_MEAN: r = mean; break;
            case K_MAX: case K_MIN: r = best; break;
            case K_ARGMAX: r = (double)arg; break;
            case K_VAR0: r = m2 / (double)n; break;
            case K_VAR1: r = m2 / (double)(n - 1); break;
            }
            want[0][o * inner + i] = r;
        }
}

typedef struct shape_case {
    int ndim;
    int64_t shape[3];
    int dim;
    int transpose_last;
} shape_case;

#define ALL FILO_ALL_DIMS
static const shape_case red_shapes[] = {
    {3, {7, 33, 5}, 0, 0},   {3, {7, 33, 5}, 1, 0},   {3, {7, 33, 5}, 2, 0},   {3, {7, 33, 5}, -1, 0},
    {3, {7, 33, 5}, -3, 0},  {3, {7, 33, 5}, ALL, 0}, {3, {7, 33, 5}, 1, 1},   {3, {7, 33, 5}, 2, 1},
    {3, {7, 33, 5}, ALL, 1}, {2, {1, 129}, 1, 0},     {2, {1, 129}, 0, 0},     {1, {129}, 0, 0},
    {1, {129}, ALL, 0},      {3, {3, 1, 7}, 1, 0},    {3, {3, 1, 7}, 2, 0},    {3, {3, 1, 7}, -2, 1},
    {0, {0}, 0, 0},          {0, {0}, -1, 0},         {0, {0}, ALL, 0},        {2, {3, 4099}, -1, 0},
    {2, {1027, 3}, 0, 0},    {1, {41000}, ALL, 0},
    /* 300 rows of 37 columns: the CPU's 16-column vector sums with their pairwise recursion, and a tail */
    {3, {3, 300, 37}, 1, 0},
};

static void red_parity(kind k)
{
    for (size_t s = 0; s < sizeof red_shapes / sizeof red_shapes[0]; s++)
        for (int di = 0; di < 4; di++)
            for (int keepdim = 0; keepdim < 2; keepdim++) {
                const shape_case *sc = &red_shapes[s];
                filo_dtype dt = float_dtypes[di];
                /* The 41000-element case checks the multi-block path: one dtype and keepdim do. */
                if (sc->shape[0] == 41000 && (keepdim || (dt != FILO_F32 && dt != FILO_BF16)))
                    continue;
                red_ctx ctx = {k, sc->dim, keepdim};
                char name[160];
                snprintf(name, sizeof name, "%s %s shape#%zu dim %d keepdim %d%s", kind_names[k],
                         filo_dtype_name(dt), s, sc->dim, keepdim, sc->transpose_last ? " transposed" : "");
                /* Sums stay away from cancellation so relative tolerances mean something. */
                int positive = k == K_SUM || k == K_MEAN;
                parity_case c = {
                    .name = name,
                    .n_inputs = 1,
                    .inputs = {{dt, sc->ndim, {sc->shape[0], sc->shape[1], sc->shape[2]}, positive ? 0.5 : -2.0,
                                positive ? 2.0 : 3.0, sc->transpose_last}},
                    .run = red_run,
                    .n_outputs = 1,
                    .reference = red_reference,
                    .ctx = &ctx,
                    .seed = 17 + s,
                };
                /* A 1-element unbiased variance is NaN, which compare() checks exactly. */
                parity_run(&c);
            }
}

Test(reduce, sum_parity) { red_parity(K_SUM); }
Test(reduce, mean_parity) { red_parity(K_MEAN); }
Test(reduce, max_parity) { red_parity(K_MAX); }
Test(reduce, min_parity) { red_parity(K_MIN); }
Test(reduce, argmax_parity) { red_parity(K_ARGMAX); }
Test(reduce, var_population_parity) { red_parity(K_VAR0); }
Test(reduce, var_unbiased_parity) { red_parity(K_VAR1); }

/* ---- helpers for the direct tests ---- */

static void check_shape(const filo_tensor *t, int ndim, const int64_t *shape)
{
    cr_assert_eq(t->ndim, ndim, "ndim %d, want %d", t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        cr_assert_eq(t->shape[i], shape[i], "dim %d is %lld, want %lld", i, (long long)t->shape[i], (long long)shape[i]);
}

Test(reduce, output_shapes_with_and_without_keepdim)
{
    int64_t shape[3] = {7, 33, 5};
    double v[7 * 33 * 5];
    filo_test_fill_random(v, 7 * 33 * 5, 3, -1, 1);
    filo_tensor *x = filo_test_upload(filo_cpu(), FILO_F32, 3, shape, v), *y;
    FILO_CHECK(filo_reduce(FILO_REDUCE_SUM, x, 1, 0, &y));
    check_shape(y, 2, (int64_t[]){7, 5});
    filo_tensor_free(y);
    FILO_CHECK(filo_reduce(FILO_REDUCE_SUM, x, -2, 1, &y));
    check_shape(y, 3, (int64_t[]){7, 1, 5});
    filo_tensor_free(y);
    FILO_CHECK(filo_argmax(x, ALL, 0, &y));
    check_shape(y, 0, NULL);
    cr_assert_eq(y->dtype, FILO_I64);
    filo_tensor_free(y);
    FILO_CHECK(filo_variance(x, ALL, 1, 1, &y));
    check_shape(y, 3, (int64_t[]){1, 1, 1});
    filo_tensor_free(y);
    filo_tensor_free(x);
}

/* ---- softmax ---- */

typedef struct sm_ctx {
    int log;
} sm_ctx;

static filo_status sm_run(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const sm_ctx *c = ctx;
    return c->log ? filo_log_softmax(in[0], out) : filo_softmax(in[0], out);
}

/* softmax in double; log-softmax as log(softmax) in double. */
static void sm_reference(void *ctx, double *const *inputs, const parity_input *shapes, double **want)
{
    const sm_ctx *c = ctx;
    const parity_input *s = &shapes[0];
    int64_t cols = s->ndim > 0 ? s->shape[s->ndim - 1] : 1, rows = 1;
    for (int i = 0; i + 1 < s->ndim; i++)
        rows *= s->shape[i];
    for (int64_t r = 0; r < rows; r++) {
        const double *x = inputs[0] + r * cols;
        double m = -INFINITY, sum = 0;
        for (int64_t i = 0; i < cols; i++)
            m = fmax(m, x[i]);
        for (int64_t i = 0; i < cols; i++)
            sum += exp(x[i] - m);
        for (int64_t i = 0; i < cols; i++) {
            double p = exp(x[i] - m) / sum;
            want[0][r * cols + i] = c->log ? log(p) : p;
        }
    }
}

static const shape_case sm_shapes[] = {
    {3, {7, 33, 5}, 0, 0}, {3, {7, 33, 5}, 0, 1}, {2, {1, 129}, 0, 0}, {1, {129}, 0, 0},   {3, {3, 1, 7}, 0, 0},
    {0, {0}, 0, 0},        {2, {3, 1000}, 0, 0},  {2, {2, 4099}, 0, 0}, {2, {5, 9000}, 0, 0}, {2, {4099, 3}, 0, 1},
};

static void sm_parity(int log, double lo, double hi)
{
    for (size_t s = 0; s < sizeof sm_shapes / sizeof sm_shapes[0]; s++)
        for (int di = 0; di < 4; di++) {
            const shape_case *sc = &sm_shapes[s];
            filo_dtype dt = float_dtypes[di];
            sm_ctx ctx = {log};
            char name[160];
            snprintf(name, sizeof name, "%s %s shape#%zu range [%g, %g]%s", log ? "log_softmax" : "softmax",
                     filo_dtype_name(dt), s, lo, hi, sc->transpose_last ? " transposed" : "");
            parity_case c = {
                .name = name,
                .n_inputs = 1,
                .inputs = {{dt, sc->ndim, {sc->shape[0], sc->shape[1], sc->shape[2]}, lo, hi, sc->transpose_last}},
                .run = sm_run,
                .n_outputs = 1,
                .reference = sm_reference,
                .ctx = &ctx,
                .seed = 5 + s,
            };
            /* Absolute floors: log-softmax crosses zero for a dominant entry; f16 probabilities
             * of long rows are subnormal (spacing 6e-8). */
            if (log)
                c.atol = dt == FILO_F64 ? 1e-12 : dt == FILO_F32 ? 1e-6 : 2e-2;
            else if (dt == FILO_F16)
                c.atol = 1e-7;
            parity_run(&c);
        }
}

Test(reduce, softmax_parity) { sm_parity(0, -3, 3); }
Test(reduce, log_softmax_parity) { sm_parity(1, -3, 3); }
Test(reduce, softmax_stable_at_80) { sm_parity(0, -80, 80); }
Test(reduce, log_softmax_stable_at_80) { sm_parity(1, -80, 80); }

Test(reduce, softmax_rows_sum_to_one)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t shape[2] = {6, 4099};
    int64_t n = shape[0] * shape[1];
    double *v = malloc(sizeof(double) * (size_t)n);
    filo_test_fill_random(v, n, 9, -80, 80);
    for (int b = 0; b < nb; b++)
        for (int di = 0; di < 2; di++) {
            filo_tensor *x = filo_test_upload(devs[b], float_dtypes[di], 2, shape, v), *y;
            FILO_CHECK(filo_softmax(x, &y));
            double *p = filo_test_download(y);
            for (int64_t r = 0; r < shape[0]; r++) {
                double s = 0;
                for (int64_t i = 0; i < shape[1]; i++) {
                    cr_assert(p[r * shape[1] + i] >= 0 && isfinite(p[r * shape[1] + i]));
                    s += p[r * shape[1] + i];
                }
                cr_assert(fabs(s - 1) < 1e-5, "%s %s row %lld sums to %.9g", filo_test_backend_name(devs[b]),
                          filo_dtype_name(float_dtypes[di]), (long long)r, s);
            }
            free(p);
            filo_tensor_free(x);
            filo_tensor_free(y);
        }
    free(v);
}

Test(reduce, softmax_infinite_entries_like_pytorch)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    /* Row 0: all -inf (NaN, as PyTorch); row 1: two -inf entries (probability 0, log -inf). */
    int64_t shape[2] = {2, 4};
    double v[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, 0.0, -INFINITY, log(3.0), -INFINITY};
    for (int b = 0; b < nb; b++)
        for (int di = 0; di < 4; di++) {
            for (int log_out = 0; log_out < 2; log_out++) {
                filo_tensor *x = filo_test_upload(devs[b], float_dtypes[di], 2, shape, v), *y;
                FILO_CHECK(log_out ? filo_log_softmax(x, &y) : filo_softmax(x, &y));
                double *p = filo_test_download(y);
                for (int i = 0; i < 4; i++)
                    cr_assert(isnan(p[i]), "%s: all -inf row gives %g", filo_test_backend_name(devs[b]), p[i]);
                double want[4] = {0.25, 0, 0.75, 0};
                for (int i = 0; i < 4; i++) {
                    double w = log_out ? log(want[i]) : want[i];
                    if (isinf(w))
                        cr_assert_eq(p[4 + i], w);
                    else
                        cr_assert(fabs(p[4 + i] - w) < parity_default_rtol(float_dtypes[di]) * fabs(w) + 1e-6, "%s %s: %g, want %g",
                                  filo_test_backend_name(devs[b]), filo_dtype_name(float_dtypes[di]), p[4 + i], w);
                }
                free(p);
                filo_tensor_free(x);
                filo_tensor_free(y);
            }
        }
}

/* ---- argmax ties, NaN, the two-stage path ---- */

static int64_t argmax_of(filo_device dev, filo_dtype dt, int64_t n, const double *v)
{
    filo_tensor *x = filo_test_upload(dev, dt, 1, (int64_t[]){n}, v), *y;
    FILO_CHECK(filo_argmax(x, 0, 0, &y));
    int64_t r = -1;
    FILO_CHECK(filo_tensor_to_host(y, &r, sizeof r));
    filo_tensor_free(x);
    filo_tensor_free(y);
    return r;
}

Test(reduce, argmax_first_of_ties_and_nan)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t n = 5000;
    double *v = malloc(sizeof(double) * (size_t)n);
    for (int b = 0; b < nb; b++)
        for (int di = 0; di < 4; di++) {
            filo_dtype dt = float_dtypes[di];
            const char *where = filo_test_backend_name(devs[b]);
            cr_assert_eq(argmax_of(devs[b], dt, 5, (double[]){1, 3, 3, 2, 3}), 1, "%s ties", where);
            cr_assert_eq(argmax_of(devs[b], dt, 4, (double[]){2, 2, 2, 2}), 0, "%s all equal", where);
            cr_assert_eq(argmax_of(devs[b], dt, 3, (double[]){-INFINITY, -INFINITY, -INFINITY}), 0, "%s -inf", where);
            cr_assert_eq(argmax_of(devs[b], dt, 5, (double[]){1, 9, NAN, 4, NAN}), 2, "%s NaN", where);
            /* Long: the maximum three times, across the two-stage path's chunks. */
            for (int64_t i = 0; i < n; i++)
                v[i] = (double)(i % 50) / 50.0;
            v[4000] = v[1234] = v[4999] = 7;
            cr_assert_eq(argmax_of(devs[b], dt, n, v), 1234, "%s long ties", where);
            v[3000] = NAN;
            cr_assert_eq(argmax_of(devs[b], dt, n, v), 3000, "%s long NaN", where);
        }
    free(v);
}

Test(reduce, max_min_propagate_nan)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 2, (int64_t[]){2, 3}, (double[]){1, NAN, 3, 4, 5, 6}), *y;
        for (int op = FILO_REDUCE_MAX; op <= FILO_REDUCE_MIN; op++) {
            FILO_CHECK(filo_reduce((filo_reduce_op)op, x, 1, 0, &y));
            double *p = filo_test_download(y);
            cr_assert(isnan(p[0]) && p[1] == (op == FILO_REDUCE_MAX ? 6 : 4), "%s: %g %g",
                      filo_test_backend_name(devs[b]), p[0], p[1]);
            free(p);
            filo_tensor_free(y);
        }
        filo_tensor_free(x);
    }
}

/* ---- variance numerics ---- */

Test(reduce, var_is_two_pass_stable)
{
    /* A large offset: E[x^2] - E[x]^2 in f32 would lose every digit here. */
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t n = 3001;
    double *v = malloc(sizeof(double) * (size_t)n);
    filo_test_fill_random(v, n, 11, -1, 1);
    for (int64_t i = 0; i < n; i++)
        v[i] = (double)(float)(1e4 + v[i]);
    double mean = 0, m2 = 0;
    for (int64_t i = 0; i < n; i++)
        mean += v[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++)
        m2 += (v[i] - mean) * (v[i] - mean);
    for (int b = 0; b < nb; b++)
        for (int corr = 0; corr < 2; corr++)
            for (int dim = 0; dim < 2; dim++) {
                int d = dim ? 0 : ALL;
                filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 1, &n, v), *y;
                FILO_CHECK(filo_variance(x, d, corr, 0, &y));
                double got;
                FILO_CHECK(filo_tensor_to_host_as(y, FILO_F64, &got, sizeof got));
                double want = m2 / (double)(n - corr);
                cr_assert(fabs(got - want) < 1e-4 * want, "%s correction %d: %.9g, want %.9g",
                          filo_test_backend_name(devs[b]), corr, got, want);
                filo_tensor_free(x);
                filo_tensor_free(y);
            }
    free(v);
}

Test(reduce, all_axes_reduction_is_deterministic)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t n = 100003;
    double *v = malloc(sizeof(double) * (size_t)n);
    filo_test_fill_random(v, n, 21, -1, 1);
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 1, &n, v);
        float first = 0;
        for (int rep = 0; rep < 3; rep++) {
            filo_tensor *y;
            FILO_CHECK(filo_reduce(FILO_REDUCE_SUM, x, ALL, 0, &y));
            float got;
            FILO_CHECK(filo_tensor_to_host(y, &got, sizeof got));
            if (rep == 0)
                first = got;
            cr_assert(memcmp(&got, &first, sizeof got) == 0, "%s: run %d gives %.9g, first %.9g",
                      filo_test_backend_name(devs[b]), rep, got, first);
            filo_tensor_free(y);
        }
        filo_tensor_free(x);
    }
    free(v);
}

/* ---- empty reductions ---- */

Test(reduce, empty_reductions)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        filo_tensor *x, *y;
        FILO_CHECK(filo_tensor_empty(devs[b], FILO_F32, 2, (int64_t[]){3, 0}, &x));
        FILO_CHECK(filo_reduce(FILO_REDUCE_SUM, x, 1, 0, &y));
        double *p = filo_test_download(y);
        cr_assert(p[0] == 0 && p[1] == 0 && p[2] == 0, "empty sum is 0");
        free(p);
        filo_tensor_free(y);
        FILO_CHECK(filo_reduce(FILO_REDUCE_MEAN, x, 1, 1, &y));
        check_shape(y, 2, (int64_t[]){3, 1});
        p = filo_test_download(y);
        cr_assert(isnan(p[0]) && isnan(p[2]), "empty mean is NaN");
        free(p);
        filo_tensor_free(y);
        FILO_CHECK(filo_variance(x, ALL, 0, 0, &y));
        p = filo_test_download(y);
        cr_assert(isnan(p[0]), "empty var is NaN");
        free(p);
        filo_tensor_free(y);
        FILO_CHECK(filo_reduce(FILO_REDUCE_SUM, x, ALL, 0, &y));
        p = filo_test_download(y);
        cr_assert(p[0] == 0, "empty sum over all axes is 0");
        free(p);
        filo_tensor_free(y);
        /* Reducing the non-empty dim leaves an empty output, which is fine for max. */
        FILO_CHECK(filo_reduce(FILO_REDUCE_MAX, x, 0, 0, &y));
        check_shape(y, 1, (int64_t[]){0});
        filo_tensor_free(y);
        FILO_CHECK(filo_softmax(x, &y));
        check_shape(y, 2, (int64_t[]){3, 0});
        filo_tensor_free(y);
        FILO_CHECK_FAILS(filo_reduce(FILO_REDUCE_MAX, x, 1, 0, &y), FILO_ERR_SHAPE, "dim 1 of size 0 of f32[3, 0]");
        FILO_CHECK_FAILS(filo_reduce(FILO_REDUCE_MIN, x, -1, 0, &y), FILO_ERR_SHAPE, "min over dim -1");
        FILO_CHECK_FAILS(filo_argmax(x, 1, 1, &y), FILO_ERR_SHAPE, "argmax over dim 1");
        FILO_CHECK_FAILS(filo_argmax(x, ALL, 0, &y), FILO_ERR_SHAPE, "empty tensor f32[3, 0]");
        filo_tensor_free(x);
        /* One element, unbiased: 0 / 0. */
        x = filo_test_upload(devs[b], FILO_F32, 1, (int64_t[]){1}, (double[]){2});
        FILO_CHECK(filo_variance(x, 0, 1, 0, &y));
        p = filo_test_download(y);
        cr_assert(isnan(p[0]), "var of one element with correction 1 is NaN");
        free(p);
        filo_tensor_free(y);
        filo_tensor_free(x);
    }
}

/* ---- bad input ---- */

Test(reduce, bad_input_errors)
{
    filo_tensor *x = filo_test_upload(filo_cpu(), FILO_F32, 3, (int64_t[]){7, 33, 5}, (double[7 * 33 * 5]){0}), *y = NULL;
    FILO_CHECK_FAILS(filo_reduce(FILO_REDUCE_SUM, x, 3, 0, &y), FILO_ERR_SHAPE, "dim 3 out of range for f32[7, 33, 5]");
    FILO_CHECK_FAILS(filo_reduce(FILO_REDUCE_MEAN, x, -4, 1, &y), FILO_ERR_SHAPE, "mean: dim -4 out of range");
    FILO_CHECK_FAILS(filo_argmax(x, 5, 0, &y), FILO_ERR_SHAPE, "argmax: dim 5 out of range for f32[7, 33, 5]");
    FILO_CHECK_FAILS(filo_variance(x, -9, 1, 0, &y), FILO_ERR_SHAPE, "var: dim -9 out of range for f32[7, 33, 5]");
    FILO_CHECK_FAILS(filo_variance(x, 0, -1, 0, &y), FILO_ERR_INVALID_ARG, "correction -1 is negative");
    FILO_CHECK_FAILS(filo_reduce((filo_reduce_op)42, x, 0, 0, &y), FILO_ERR_INVALID_ARG, "unknown reduce op 42");
    FILO_CHECK_FAILS(filo_reduce(FILO_REDUCE_SUM, NULL, 0, 0, &y), FILO_ERR_INVALID_ARG, "x is NULL");
    FILO_CHECK_FAILS(filo_reduce(FILO_REDUCE_SUM, x, 0, 0, NULL), FILO_ERR_INVALID_ARG, "out is NULL");
    FILO_CHECK_FAILS(filo_softmax(NULL, &y), FILO_ERR_INVALID_ARG, "softmax: x is NULL");
    FILO_CHECK_FAILS(filo_log_softmax(x, NULL), FILO_ERR_INVALID_ARG, "log_softmax: out is NULL");
    cr_assert_null(y, "no output on failure");
    filo_tensor_free(x);

    filo_tensor *s = filo_test_upload(filo_cpu(), FILO_F32, 0, NULL, (double[]){1});
    FILO_CHECK_FAILS(filo_reduce(FILO_REDUCE_SUM, s, 1, 0, &y), FILO_ERR_SHAPE, "dim 1 out of range for f32[] cpu");
    filo_tensor_free(s);

    filo_tensor *i = filo_test_upload(filo_cpu(), FILO_I64, 2, (int64_t[]){2, 3}, (double[]){1, 2, 3, 4, 5, 6});
    FILO_CHECK_FAILS(filo_reduce(FILO_REDUCE_SUM, i, 0, 0, &y), FILO_ERR_DTYPE, "sum needs a floating-point tensor");
    FILO_CHECK_FAILS(filo_argmax(i, 0, 0, &y), FILO_ERR_DTYPE, "got i64[2, 3] cpu");
    FILO_CHECK_FAILS(filo_variance(i, 0, 0, 0, &y), FILO_ERR_DTYPE, "var needs");
    FILO_CHECK_FAILS(filo_softmax(i, &y), FILO_ERR_DTYPE, "softmax needs a floating-point tensor");
    filo_tensor_free(i);
}
