/* The parameter store (include/filo/params.h) on every backend (filo_test_backends): creation,
 * names, roles, traversal, counting, freezing by prefix, and the initializers' statistics
 * against PyTorch's torch.nn.init formulas; the same seed gives the same values on every device. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "filo/params.h"
#include "filo_test.h"

static void moments(const filo_tensor *t, double *mean, double *std, double *lo, double *hi)
{
    double *v = filo_test_download(t);
    int64_t n = filo_tensor_numel(t);
    double s = 0, s2 = 0;
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        s += v[i];
        s2 += v[i] * v[i];
        *lo = fmin(*lo, v[i]);
        *hi = fmax(*hi, v[i]);
    }
    *mean = s / (double)n;
    *std = sqrt(s2 / (double)n - *mean * *mean);
    free(v);
}

Test(params, store_traversal_freeze)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_params *ps;
        FILO_CHECK(filo_params_new(devs[d], 7, &ps));
        filo_var *w, *b, *g, *dup;
        char name[64];
        FILO_CHECK(filo_params_create(ps, filo_param_name_join(name, sizeof name, "enc.l0", "weight"), 2,
                                      (int64_t[]){3, 5}, (filo_init){FILO_INIT_ONES, 0, 0}, FILO_PARAM_WEIGHT, &w));
        FILO_CHECK(filo_params_create(ps, "enc.l0.bias", 1, (int64_t[]){3}, (filo_init){FILO_INIT_ZEROS, 0, 0},
                                      FILO_PARAM_BIAS, &b));
        FILO_CHECK(filo_params_create(ps, "enc.l00.gamma", 1, (int64_t[]){4},
                                      (filo_init){FILO_INIT_CONSTANT, 2.5, 0}, FILO_PARAM_NORM, &g));
        FILO_CHECK_FAILS(filo_params_create(ps, "enc.l0.bias", 1, (int64_t[]){3}, (filo_init){FILO_INIT_ZEROS, 0, 0},
                                            FILO_PARAM_BIAS, &dup),
                         FILO_ERR_INVALID_ARG, "already exists");
        cr_assert_null(dup);
        cr_assert_eq(filo_params_count(ps), 3);
        cr_assert_str_eq(filo_params_name_at(ps, 0), "enc.l0.weight");
        cr_assert_str_eq(filo_var_name(w), "enc.l0.weight");
        cr_assert_eq(filo_params_role_at(ps, 2), FILO_PARAM_NORM);
        cr_assert_eq(filo_params_find(ps, "enc.l0.bias"), b);
        cr_assert_null(filo_params_find(ps, "enc.l0"));
        cr_assert_eq(filo_params_numel(ps, 0), 22);
        cr_assert(filo_device_equal(filo_var_value(g)->device, devs[d]));
        double *gv = filo_test_download(filo_var_value(g));
        cr_assert_eq(gv[3], 2.5);
        free(gv);

        /* "enc.l0" matches enc.l0.* but not enc.l00.* */
        int changed;
        FILO_CHECK(filo_params_freeze(ps, "enc.l0", 1, &changed));
        cr_assert_eq(changed, 2);
        cr_assert_eq(filo_params_numel(ps, 1), 4);
        filo_var *train[4];
        int nt;
        FILO_CHECK(filo_params_trainable(ps, 4, train, &nt));
        cr_assert_eq(nt, 1);
        cr_assert_eq(train[0], g);
        FILO_CHECK(filo_params_freeze(ps, "", 0, &changed));
        cr_assert_eq(changed, 2);
        cr_assert_eq(filo_params_numel(ps, 1), 22);
        FILO_CHECK(filo_params_init(ps, "enc.l0.weight", (filo_init){FILO_INIT_ZEROS, 0, 0}));
        double *wv = filo_test_download(filo_var_value(w));
        cr_assert_eq(wv[14], 0.0);
        free(wv);
        filo_params_free(ps);
    }
}

/* The bounds and standard deviations of torch.nn.init on a [256, 128, 3, 3] tensor:
 * fan_in = 1152, fan_out = 2304. */
Test(params, initializer_statistics)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    const double fan_in = 128 * 9, fan_out = 256 * 9;
    for (int d = 0; d < nd; d++) {
        filo_tensor *t;
        FILO_CHECK(filo_tensor_empty(devs[d], FILO_F32, 4, (int64_t[]){256, 128, 3, 3}, &t));
        filo_generator gen;
        filo_generator_init(&gen, 11);
        double mean, std, lo, hi;

        FILO_CHECK(filo_init_tensor(t, (filo_init){FILO_INIT_KAIMING_UNIFORM, sqrt(5.0), 0}, &gen));
        double bound = sqrt(6.0 / (1 + 5.0) / fan_in); /* nn.Linear/Conv default: 1/sqrt(fan_in) */
        moments(t, &mean, &std, &lo, &hi);
        cr_assert(lo >= -bound && hi <= bound && hi > 0.99 * bound, "kaiming_uniform [%g, %g] vs %g", lo, hi, bound);
        cr_assert_float_eq(std, bound / sqrt(3.0), 0.01 * bound);

        FILO_CHECK(filo_init_tensor(t, (filo_init){FILO_INIT_KAIMING_NORMAL, 0, 0}, &gen));
        moments(t, &mean, &std, &lo, &hi);
        cr_assert_float_eq(std, sqrt(2.0 / fan_in), 0.01 * sqrt(2.0 / fan_in));
        cr_assert(fabs(mean) < 0.002);

        FILO_CHECK(filo_init_tensor(t, (filo_init){FILO_INIT_XAVIER_UNIFORM, 2.0, 0}, &gen));
        bound = 2.0 * sqrt(6.0 / (fan_in + fan_out));
        moments(t, &mean, &std, &lo, &hi);
        cr_assert(lo >= -bound && hi <= bound && hi > 0.99 * bound);

        FILO_CHECK(filo_init_tensor(t, (filo_init){FILO_INIT_XAVIER_NORMAL, 0, 0}, &gen));
        moments(t, &mean, &std, &lo, &hi);
        cr_assert_float_eq(std, sqrt(2.0 / (fan_in + fan_out)), 0.01 * sqrt(2.0 / (fan_in + fan_out)));

        /* trunc_normal(0.3, 0.02): inside [mean - 2 std, mean + 2 std]; the std of a normal cut at
         * +-2 sigma is 0.8796 sigma. */
        FILO_CHECK(filo_init_tensor(t, (filo_init){FILO_INIT_TRUNC_NORMAL, 0.3, 0.02}, &gen));
        moments(t, &mean, &std, &lo, &hi);
        cr_assert(lo >= 0.26 - 1e-7 && hi <= 0.34 + 1e-7, "trunc_normal range [%g, %g]", lo, hi);
        cr_assert_float_eq(mean, 0.3, 2e-4);
        cr_assert_float_eq(std, 0.8796 * 0.02, 0.01 * 0.02);

        FILO_CHECK(filo_init_tensor(t, (filo_init){FILO_INIT_NORMAL, 1.0, 0.5}, &gen));
        moments(t, &mean, &std, &lo, &hi);
        cr_assert_float_eq(mean, 1.0, 0.005);
        cr_assert_float_eq(std, 0.5, 0.005);

        FILO_CHECK_FAILS(filo_init_tensor(t, (filo_init){FILO_INIT_NORMAL, 0, 1}, NULL), FILO_ERR_INVALID_ARG,
                         "generator");
        filo_tensor_free(t);
    }
}

/* The same seed draws the same initial values on every device. */
Test(params, same_seed_same_values_everywhere)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    double *first = NULL;
    for (int d = 0; d < nd; d++) {
        filo_params *ps;
        FILO_CHECK(filo_params_new(devs[d], 1234, &ps));
        filo_var *a, *b;
        FILO_CHECK(filo_params_create(ps, "a", 2, (int64_t[]){33, 7}, (filo_init){FILO_INIT_KAIMING_UNIFORM, 0, 0},
                                      FILO_PARAM_WEIGHT, &a));
        FILO_CHECK(filo_params_create(ps, "b", 1, (int64_t[]){33}, (filo_init){FILO_INIT_NORMAL, 0, 0.02},
                                      FILO_PARAM_BIAS, &b));
        double *v = filo_test_download(filo_var_value(b));
        if (!first)
            first = v;
        else {
            cr_assert_arr_eq(first, v, sizeof *v * 33, "%s draws other values", filo_test_backend_name(devs[d]));
            free(v);
        }
        filo_params_free(ps);
    }
    free(first);
}
