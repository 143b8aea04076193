/* Tensors: creation, views, contiguous copies, cross-device and cross-dtype copies, fills, and
 * the errors bad arguments get. Every data test runs on every backend of the build. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "filo_test.h"

static filo_tensor *make(filo_device dev, filo_dtype dtype, int ndim, const int64_t *shape, double *ref)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    filo_test_fill_random(ref, n, (uint64_t)n + 3, -4.0, 4.0);
    for (int64_t i = 0; i < n && dtype != FILO_F64 && dtype != FILO_F32; i++)
        ref[i] = round(ref[i] * 8) / 8; /* exact in every dtype we use here */
    if (dtype == FILO_U8 || dtype == FILO_I32 || dtype == FILO_I64)
        for (int64_t i = 0; i < n; i++)
            ref[i] = fabs(round(ref[i]));
    void *host = malloc((size_t)n * filo_dtype_size(dtype) + 1);
    FILO_CHECK(filo_convert(ref, FILO_F64, host, dtype, (size_t)n));
    filo_tensor *t;
    FILO_CHECK(filo_tensor_from_host(dev, dtype, ndim, shape, host, &t));
    free(host);
    return t;
}

static double *read_f64(const filo_tensor *t)
{
    int64_t n = filo_tensor_numel(t);
    double *v = malloc(sizeof(double) * (size_t)(n + 1));
    for (int64_t i = 0; i <= n; i++)
        v[i] = -777.0; /* poison: any element not written shows up */
    FILO_CHECK(filo_tensor_to_host_as(t, FILO_F64, v, sizeof(double) * (size_t)n));
    cr_assert_eq(v[n], -777.0, "read past the end");
    return v;
}

Test(tensor, transpose_permute_slice_expand_on_every_backend)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        cr_log_info("tensor views on %s", filo_test_backend_name(devs[b]));
        int64_t shape[3] = {3, 7, 5};
        double ref[105];
        filo_tensor *t = make(devs[b], FILO_F32, 3, shape, ref);
        cr_assert(filo_tensor_is_contiguous(t));

        /* permute (2, 0, 1): out[k][i][j] = t[i][j][k] */
        int perm[3] = {2, 0, 1};
        filo_tensor *p;
        FILO_CHECK(filo_tensor_permute(t, perm, &p));
        cr_assert(!filo_tensor_is_contiguous(p));
        cr_assert_eq(p->storage, t->storage, "a view shares storage");
        double *v = read_f64(p);
        for (int k = 0; k < 5; k++)
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 7; j++)
                    cr_assert_eq(v[(k * 3 + i) * 7 + j], (double)(float)ref[(i * 7 + j) * 5 + k]);
        free(v);

        /* slice dim 2 [1:7:3] of the permuted view, then contiguous() */
        filo_tensor *s, *c;
        FILO_CHECK(filo_tensor_slice(p, 2, 1, 7, 3, &s));
        cr_assert_eq(s->shape[2], 2);
        FILO_CHECK(filo_tensor_contiguous(s, &c));
        cr_assert(filo_tensor_is_contiguous(c));
        v = read_f64(c);
        for (int k = 0; k < 5; k++)
            for (int i = 0; i < 3; i++)
                for (int jj = 0; jj < 2; jj++)
                    cr_assert_eq(v[(k * 3 + i) * 2 + jj], (double)(float)ref[(i * 7 + 1 + 3 * jj) * 5 + k]);
        free(v);

        /* expand a [7, 1] column to [2, 7, 4] */
        filo_tensor *col, *e;
        FILO_CHECK(filo_tensor_slice(t, 2, 2, 3, 1, &col));
        filo_tensor *col2;
        FILO_CHECK(filo_tensor_slice(col, 0, 1, 2, 1, &col2)); /* [1, 7, 1] */
        filo_tensor *sq;
        FILO_CHECK(filo_tensor_squeeze(col2, 0, &sq)); /* [7, 1] */
        int64_t big[3] = {2, 7, 4};
        FILO_CHECK(filo_tensor_expand(sq, 3, big, &e));
        cr_assert_eq(e->strides[0], 0);
        v = read_f64(e);
        for (int a = 0; a < 2; a++)
            for (int j = 0; j < 7; j++)
                for (int q = 0; q < 4; q++)
                    cr_assert_eq(v[(a * 7 + j) * 4 + q], (double)(float)ref[(1 * 7 + j) * 5 + 2]);
        free(v);

        filo_tensor *vals[] = {t, p, s, c, col, col2, sq, e};
        for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
            filo_tensor_free(vals[i]);
    }
}

Test(tensor, view_and_reshape)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        int64_t shape[2] = {6, 4};
        double ref[24];
        filo_tensor *t = make(devs[b], FILO_F64, 2, shape, ref);
        int64_t s3[3] = {2, -1, 4};
        filo_tensor *v3, *tr, *bad, *re, *u;
        FILO_CHECK(filo_tensor_view(t, 3, s3, &v3));
        cr_assert_eq(v3->shape[1], 3);
        FILO_CHECK(filo_tensor_transpose(t, 0, 1, &tr)); /* [4, 6] non-contiguous */
        int64_t flat[1] = {24};
        FILO_CHECK_FAILS(filo_tensor_view(tr, 1, flat, &bad), FILO_ERR_SHAPE, "without a copy");
        FILO_CHECK(filo_tensor_reshape(tr, 1, flat, &re));
        double *v = read_f64(re);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 6; j++)
                cr_assert_eq(v[i * 6 + j], ref[j * 4 + i]);
        free(v);
        /* a view that splits a dim of a transposed tensor is possible without copying */
        int64_t split[3] = {2, 2, 6};
        filo_tensor *sv;
        FILO_CHECK(filo_tensor_view(tr, 3, split, &sv));
        cr_assert_eq(sv->storage, t->storage);
        v = read_f64(sv);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 6; j++)
                cr_assert_eq(v[i * 6 + j], ref[j * 4 + i]);
        free(v);
        FILO_CHECK(filo_tensor_unsqueeze(t, -1, &u));
        cr_assert_eq(u->ndim, 3);
        cr_assert_eq(u->shape[2], 1);
        int64_t wrong[2] = {5, 5};
        FILO_CHECK_FAILS(filo_tensor_view(t, 2, wrong, &bad), FILO_ERR_SHAPE, "does not fit");
        filo_tensor *vals[] = {t, v3, tr, re, sv, u};
        for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
            filo_tensor_free(vals[i]);
    }
}

/* Copies between every pair of backends and several dtypes, into strided destinations. */
Test(tensor, copy_across_devices_and_dtypes)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    filo_dtype dtypes[] = {FILO_F32, FILO_BF16, FILO_F16, FILO_F64, FILO_I32, FILO_U8, FILO_I64};
    int64_t shape[2] = {5, 33};
    for (int a = 0; a < nb; a++)
        for (int b = 0; b < nb; b++)
            for (size_t k = 0; k < sizeof dtypes / sizeof dtypes[0]; k++) {
                double ref[165];
                filo_tensor *src = make(devs[a], dtypes[k], 2, shape, ref);
                int64_t tshape[2] = {33, 5};
                filo_tensor *dst_base, *dst;
                FILO_CHECK(filo_tensor_full(devs[b], FILO_F32, 2, tshape, -9.0, &dst_base));
                FILO_CHECK(filo_tensor_transpose(dst_base, 0, 1, &dst));
                FILO_CHECK(filo_tensor_copy(dst, src));
                double *v = read_f64(dst_base);
                for (int i = 0; i < 5; i++)
                    for (int j = 0; j < 33; j++)
                        cr_assert_eq(v[j * 5 + i], (double)(float)ref[i * 33 + j], "%s -> %s, %s at (%d,%d)",
                                     filo_test_backend_name(devs[a]), filo_test_backend_name(devs[b]),
                                     filo_dtype_name(dtypes[k]), i, j);
                free(v);
                filo_tensor_free(src);
                filo_tensor_free(dst);
                filo_tensor_free(dst_base);
            }
}

Test(tensor, fill_a_strided_view)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        int64_t shape[2] = {7, 9};
        filo_tensor *t, *col;
        FILO_CHECK(filo_tensor_full(devs[b], FILO_BF16, 2, shape, 2.5, &t));
        FILO_CHECK(filo_tensor_slice(t, 1, 1, 9, 4, &col)); /* columns 1 and 5 */
        FILO_CHECK(filo_tensor_fill(col, -1.0));
        double *v = read_f64(t);
        for (int i = 0; i < 7; i++)
            for (int j = 0; j < 9; j++)
                cr_assert_eq(v[i * 9 + j], (j == 1 || j == 5) ? -1.0 : 2.5);
        free(v);
        filo_tensor_free(col);
        filo_tensor_free(t);
    }
}

Test(tensor, zero_size_and_scalar)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        int64_t shape[2] = {0, 5};
        filo_tensor *z, *s, *zz;
        FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 2, shape, &z));
        cr_assert_eq(filo_tensor_numel(z), 0);
        FILO_CHECK(filo_tensor_to_host(z, NULL, 0));
        FILO_CHECK(filo_tensor_contiguous(z, &zz));
        FILO_CHECK(filo_tensor_full(devs[b], FILO_F64, 0, NULL, 4.25, &s));
        double x = 0;
        FILO_CHECK(filo_tensor_to_host(s, &x, sizeof x));
        cr_assert_eq(x, 4.25);
        filo_tensor_free(z);
        filo_tensor_free(zz);
        filo_tensor_free(s);
    }
}

Test(tensor, bad_arguments_give_clear_errors)
{
    filo_tensor *t = NULL, *v;
    int64_t neg[2] = {3, -1};
    FILO_CHECK_FAILS(filo_tensor_empty(filo_cpu(), FILO_F32, 2, neg, &t), FILO_ERR_SHAPE, "negative size");
    int64_t shape[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    FILO_CHECK_FAILS(filo_tensor_empty(filo_cpu(), FILO_F32, 9, shape, &t), FILO_ERR_SHAPE, "ndim 9");
    int64_t huge[2] = {1 << 30, 1 << 30};
    FILO_CHECK_FAILS(filo_tensor_empty(filo_cpu(), FILO_F32, 2, huge, &t), FILO_ERR_OOM, "absurdly large");
    FILO_CHECK_FAILS(filo_tensor_empty(filo_cpu(), (filo_dtype)17, 1, shape, &t), FILO_ERR_DTYPE, "invalid dtype");
    FILO_CHECK_FAILS(filo_tensor_empty(filo_cuda(63), FILO_F32, 1, shape, &t), FILO_ERR_DEVICE, "cuda:63 does not exist");

    int64_t s2[2] = {4, 5};
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, s2, &t));
    FILO_CHECK_FAILS(filo_tensor_transpose(t, 0, 2, &v), FILO_ERR_SHAPE, "dim 2 out of range for f32[4, 5] cpu");
    FILO_CHECK_FAILS(filo_tensor_slice(t, 1, 2, 9, 1, &v), FILO_ERR_SHAPE, "slice [2:9] out of range");
    FILO_CHECK_FAILS(filo_tensor_slice(t, 1, 0, 2, 0, &v), FILO_ERR_SHAPE, "step must be >= 1");
    int dup[2] = {0, 0};
    FILO_CHECK_FAILS(filo_tensor_permute(t, dup, &v), FILO_ERR_SHAPE, "not a permutation");
    int64_t bshape[2] = {4, 6};
    FILO_CHECK_FAILS(filo_tensor_expand(t, 2, bshape, &v), FILO_ERR_SHAPE, "cannot broadcast f32[4, 5] cpu to [4, 6]");
    FILO_CHECK_FAILS(filo_tensor_squeeze(t, 0, &v), FILO_ERR_SHAPE, "cannot squeeze dim 0 of size 4");
    float small[3];
    FILO_CHECK_FAILS(filo_tensor_to_host(t, small, sizeof small), FILO_ERR_INVALID_ARG, "too small");
    filo_tensor *other;
    int64_t s3[2] = {5, 4};
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, s3, &other));
    FILO_CHECK_FAILS(filo_tensor_copy(t, other), FILO_ERR_SHAPE, "copy source must have shape [4, 5]");
    FILO_CHECK_FAILS(filo_tensor_fill(NULL, 1.0), FILO_ERR_INVALID_ARG, "tensor is NULL");
    filo_tensor *it;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_I32, 2, s3, &it));
    FILO_CHECK_FAILS(filo_tensor_fill(it, 0.5), FILO_ERR_INVALID_ARG, "cannot fill i32[5, 4] cpu with 0.5");
    filo_tensor_free(it);
    filo_tensor_free(other);
    filo_tensor_free(t);
}

/* Memory returns to the allocator when the last view of a storage goes. */
Test(tensor, views_keep_storage_alive)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        filo_alloc_stats before, during, after;
        FILO_CHECK(filo_alloc_stats_get(devs[b], &before));
        int64_t shape[2] = {64, 64};
        filo_tensor *t, *v;
        FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 2, shape, &t));
        FILO_CHECK(filo_tensor_transpose(t, 0, 1, &v));
        filo_tensor_free(t);
        FILO_CHECK(filo_alloc_stats_get(devs[b], &during));
        cr_assert(during.allocated_bytes >= before.allocated_bytes + 64 * 64 * 4);
        filo_tensor_free(v);
        FILO_CHECK(filo_alloc_stats_get(devs[b], &after));
        cr_assert_eq(after.allocated_bytes, before.allocated_bytes);
    }
}
