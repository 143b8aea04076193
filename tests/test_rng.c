/* Philox4x32-10: known-answer vectors, and identical draws on every backend. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "filo_test.h"

/* Random123's published known-answer vectors for philox4x32-10. */
Test(rng, philox_known_answers)
{
    uint32_t out[4];
    filo_philox4x32(0, 0, 0, out);
    cr_assert(out[0] == 0x6627e8d5 && out[1] == 0xe169c58d && out[2] == 0xbc57ac4c && out[3] == 0x9b00dbd8);
    filo_philox4x32(~0ull, ~0ull, ~0ull, out);
    cr_assert(out[0] == 0x408f276d && out[1] == 0x41c83b0e && out[2] == 0xa20bc7c6 && out[3] == 0x6d5451fd);
    filo_philox4x32(0x85a308d3243f6a88ull, 0x0370734413198a2eull, 0x299f31d0a4093822ull, out);
    cr_assert(out[0] == 0xd16cfe09 && out[1] == 0x94fdcceb && out[2] == 0x5001e420 && out[3] == 0x24126ea1);
}

Test(rng, generator_advances_past_each_draw)
{
    filo_generator g;
    filo_generator_init(&g, 7);
    cr_assert_eq(filo_generator_advance(&g, 5), 0);
    cr_assert_eq(filo_generator_advance(&g, 4), 2);
    cr_assert_eq(g.offset, 3);
}

static void draw_on(filo_device dev, filo_dtype dtype, int normal, int64_t n, void *out)
{
    filo_generator g;
    filo_generator_init(&g, 1234);
    g.offset = 17;
    filo_tensor *t;
    int64_t shape[1] = {n};
    FILO_CHECK(filo_tensor_empty(dev, dtype, 1, shape, &t));
    if (normal)
        FILO_CHECK(filo_tensor_normal(t, &g, 0.5, 2.0));
    else
        FILO_CHECK(filo_tensor_uniform(t, &g, -1.0, 3.0));
    FILO_CHECK(filo_tensor_to_host(t, out, (size_t)n * filo_dtype_size(dtype)));
    filo_tensor_free(t);
}

/* Uniform draws are bit-identical across backends; normal draws are computed in double, so
 * they agree to the last bit except where a libm ulp lands on a rounding boundary. */
Test(rng, same_numbers_on_every_backend)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const int64_t n = 1037;
    filo_dtype dtypes[] = {FILO_F32, FILO_F64, FILO_BF16};
    for (size_t k = 0; k < 3; k++) {
        size_t es = filo_dtype_size(dtypes[k]);
        char *ref_u = malloc((size_t)n * es), *ref_n = malloc((size_t)n * es);
        char *got = malloc((size_t)n * es);
        draw_on(devs[0], dtypes[k], 0, n, ref_u);
        draw_on(devs[0], dtypes[k], 1, n, ref_n);
        for (int b = 1; b < nb; b++) {
            cr_log_info("rng parity: %s vs cpu, %s", filo_test_backend_name(devs[b]), filo_dtype_name(dtypes[k]));
            draw_on(devs[b], dtypes[k], 0, n, got);
            cr_assert(memcmp(got, ref_u, (size_t)n * es) == 0, "uniform draws differ on %s",
                      filo_test_backend_name(devs[b]));
            draw_on(devs[b], dtypes[k], 1, n, got);
            double *a = malloc((size_t)n * sizeof(double)), *c = malloc((size_t)n * sizeof(double));
            FILO_CHECK(filo_convert(ref_n, dtypes[k], a, FILO_F64, (size_t)n));
            FILO_CHECK(filo_convert(got, dtypes[k], c, FILO_F64, (size_t)n));
            for (int64_t i = 0; i < n; i++)
                cr_assert(fabs(a[i] - c[i]) <= 1e-6 * fabs(a[i]) + 1e-12, "normal[%lld] %g vs %g", (long long)i, a[i], c[i]);
            free(a);
            free(c);
        }
        free(ref_u);
        free(ref_n);
        free(got);
    }
}

/* The draws have the moments they should. */
Test(rng, moments)
{
    const int64_t n = 200000;
    double *v = malloc(sizeof(double) * (size_t)n);
    draw_on(filo_cpu(), FILO_F64, 1, n, v);
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; i++)
        mean += v[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++)
        var += (v[i] - mean) * (v[i] - mean);
    var /= (double)n;
    cr_assert(fabs(mean - 0.5) < 0.02, "normal mean %g", mean);
    cr_assert(fabs(sqrt(var) - 2.0) < 0.02, "normal std %g", sqrt(var));
    draw_on(filo_cpu(), FILO_F64, 0, n, v);
    double lo = 1e9, hi = -1e9;
    mean = 0;
    for (int64_t i = 0; i < n; i++) {
        lo = fmin(lo, v[i]);
        hi = fmax(hi, v[i]);
        mean += v[i];
    }
    cr_assert(lo >= -1.0 && hi < 3.0 && fabs(mean / (double)n - 1.0) < 0.02, "uniform [%g, %g] mean %g", lo, hi, mean / (double)n);
    free(v);
}

Test(rng, bad_arguments)
{
    filo_generator g;
    filo_generator_init(&g, 1);
    filo_tensor *t;
    int64_t shape[1] = {4};
    FILO_CHECK(filo_tensor_empty(filo_cpu(), FILO_I32, 1, shape, &t));
    FILO_CHECK_FAILS(filo_tensor_uniform(t, &g, 0, 1), FILO_ERR_DTYPE, "need a float tensor");
    filo_tensor_free(t);
    FILO_CHECK(filo_tensor_empty(filo_cpu(), FILO_F32, 1, shape, &t));
    FILO_CHECK_FAILS(filo_tensor_uniform(t, &g, 2, 1), FILO_ERR_INVALID_ARG, "invalid");
    FILO_CHECK_FAILS(filo_tensor_normal(t, &g, 0, -1), FILO_ERR_INVALID_ARG, "invalid");
    FILO_CHECK_FAILS(filo_tensor_normal(t, NULL, 0, 1), FILO_ERR_INVALID_ARG, "generator is NULL");
    filo_tensor_free(t);
}
