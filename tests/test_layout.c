/* Layout ops (include/filo/layout.h): cast, concat/split/chunk, constant pad and its backward.
 * Parity on every backend against float64 references written here, odd shapes, non-contiguous
 * inputs, every dtype, empty tensors, adjoint (gradient) checks of the backward functions in
 * f64, and every bad-input error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/layout.h"
#include "parity.h"

static const filo_dtype all_dtypes[] = {FILO_F32, FILO_F64, FILO_BF16, FILO_F16, FILO_I64, FILO_I32, FILO_U8};
#define N_ALL 7

static parity_input input(filo_dtype t, int ndim, const int64_t *shape, double lo, double hi, int transpose)
{
    parity_input p = {.dtype = t, .ndim = ndim, .lo = lo, .hi = hi, .transpose_last = transpose};
    memcpy(p.shape, shape, sizeof(int64_t) * (size_t)ndim);
    return p;
}

static int64_t numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int k = 0; k < ndim; k++)
        n *= shape[k];
    return n;
}

static double round_to(filo_dtype t, double v)
{
    uint64_t buf;
    double r;
    cr_assert_eq(filo_convert(&v, FILO_F64, &buf, t, 1), FILO_OK);
    cr_assert_eq(filo_convert(&buf, t, &r, FILO_F64, 1), FILO_OK);
    return r;
}

/* ---- cast ---- */

typedef struct cast_ctx {
    filo_dtype to;
} cast_ctx;

static filo_status run_cast(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    return filo_cast(in[0], ((cast_ctx *)ctx)->to, &out[0]);
}

static void ref_cast(void *ctx, double *const *in, const parity_input *s, double **want)
{
    int64_t n = numel(s[0].ndim, s[0].shape);
    for (int64_t i = 0; i < n; i++)
        want[0][i] = round_to(((cast_ctx *)ctx)->to, filo_dtype_is_float(((cast_ctx *)ctx)->to) ? in[0][i] : trunc(in[0][i]));
}

Test(layout, cast_parity)
{
    const int64_t shape[3] = {3, 7, 33};
    const filo_dtype floats[4] = {FILO_F32, FILO_F64, FILO_BF16, FILO_F16};
    for (int a = 0; a < N_ALL; a++)
        for (int b = 0; b < N_ALL; b++) {
            int fa = a < 4, fb = b < 4;
            if (!fa && !fb && a != b)
                continue;
            (void)floats;
            cast_ctx ctx = {all_dtypes[b]};
            char name[80];
            snprintf(name, sizeof name, "cast %s -> %s", filo_dtype_name(all_dtypes[a]), filo_dtype_name(all_dtypes[b]));
            parity_case pc = {.name = name, .run = run_cast, .reference = ref_cast, .ctx = &ctx, .n_outputs = 1,
                              .seed = 11u + (uint64_t)(a * 7 + b)};
            pc.inputs[pc.n_inputs++] = input(all_dtypes[a], 3, shape, fa && fb ? -100 : 0, 100, (a + b) % 2);
            double r = fmax(parity_default_rtol(all_dtypes[a]), parity_default_rtol(all_dtypes[b]));
            pc.rtol = r > 0 ? r : 1e-15;
            parity_run(&pc);
        }
}

/* ---- concat ---- */

typedef struct concat_ctx {
    int n, dim;
} concat_ctx;

static filo_status run_concat(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const concat_ctx *c = ctx;
    return filo_concat((const filo_tensor *const *)in, c->n, c->dim, &out[0]);
}

static void ref_concat(void *ctx, double *const *in, const parity_input *s, double **want)
{
    const concat_ctx *c = ctx;
    int nd = s[0].ndim, d = c->dim < 0 ? c->dim + nd : c->dim;
    int64_t outer = numel(d, s[0].shape), inner = numel(nd - d - 1, s[0].shape + d + 1), total = 0;
    for (int i = 0; i < c->n; i++)
        total += s[i].shape[d];
    int64_t off = 0;
    for (int i = 0; i < c->n; i++) {
        int64_t len = s[i].shape[d] * inner;
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < len; j++)
                want[0][o * total * inner + off * inner + j] = in[i][o * len + j];
        off += s[i].shape[d];
    }
}

Test(layout, concat_parity)
{
    const int64_t lens[3] = {1, 7, 33};
    const int dims[4] = {0, 1, -1, 2};
    for (int t = 0; t < N_ALL; t++)
        for (int di = 0; di < 4; di++) {
            concat_ctx ctx = {3, dims[di]};
            int d = dims[di] < 0 ? dims[di] + 3 : dims[di];
            char name[80];
            snprintf(name, sizeof name, "concat %s dim %d", filo_dtype_name(all_dtypes[t]), dims[di]);
            parity_case pc = {.name = name, .run = run_concat, .reference = ref_concat, .ctx = &ctx, .n_outputs = 1,
                              .seed = 5u + (uint64_t)(t * 4 + di), .rtol = 1e-15};
            for (int i = 0; i < 3; i++) {
                int64_t shape[3] = {3, 5, 4};
                shape[d] = lens[i];
                pc.inputs[pc.n_inputs++] = input(all_dtypes[t], 3, shape, 1, 100, (i + di) % 2);
            }
            parity_run(&pc);
        }
    /* One input, and an input empty along dim. */
    concat_ctx one = {1, 0};
    parity_case p1 = {.name = "concat one", .run = run_concat, .reference = ref_concat, .ctx = &one, .n_outputs = 1,
                      .seed = 3, .rtol = 1e-15};
    p1.inputs[p1.n_inputs++] = input(FILO_F32, 2, (int64_t[]){7, 129}, -1, 1, 1);
    parity_run(&p1);
    concat_ctx two = {2, 1};
    parity_case p2 = {.name = "concat empty part", .run = run_concat, .reference = ref_concat, .ctx = &two,
                      .n_outputs = 1, .seed = 4, .rtol = 1e-15};
    p2.inputs[p2.n_inputs++] = input(FILO_BF16, 2, (int64_t[]){7, 0}, -1, 1, 0);
    p2.inputs[p2.n_inputs++] = input(FILO_BF16, 2, (int64_t[]){7, 33}, -1, 1, 1);
    parity_run(&p2);
}

Test(layout, split_chunk_and_concat_roundtrip)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const int64_t shape[3] = {3, 13, 5}, n = 3 * 13 * 5;
    double v[3 * 13 * 5];
    filo_test_fill_random(v, n, 9, -5, 5);
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 3, shape, v);
        filo_tensor *parts[5], *back;
        const int64_t sizes[4] = {4, 0, 8, 1};
        FILO_CHECK(filo_split(x, -2, sizes, 4, parts));
        for (int i = 0; i < 4; i++) {
            cr_assert_eq(parts[i]->ndim, 3);
            cr_assert_eq(parts[i]->shape[1], sizes[i]);
            cr_assert_eq(parts[i]->storage, x->storage, "split must return views");
        }
        double *p2 = filo_test_download(parts[2]);
        for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < 8; j++)
                for (int64_t k = 0; k < 5; k++)
                    cr_assert_eq(p2[(i * 8 + j) * 5 + k], round_to(FILO_F32, v[(i * 13 + 4 + j) * 5 + k]));
        free(p2);
        /* Concat is split's backward and the reverse: the parts join back to x. */
        FILO_CHECK(filo_concat((const filo_tensor *const *)parts, 4, 1, &back));
        double *xb = filo_test_download(back), *xv = filo_test_download(x);
        cr_assert(memcmp(xb, xv, sizeof(double) * (size_t)n) == 0, "concat(split(x)) != x on %s",
                  filo_test_backend_name(devs[b]));
        free(xb);
        free(xv);
        filo_tensor_free(back);
        for (int i = 0; i < 4; i++)
            filo_tensor_free(parts[i]);
        int count;
        FILO_CHECK(filo_chunk(x, 1, 4, parts, &count));
        cr_assert_eq(count, 4);
        cr_assert(parts[0]->shape[1] == 4 && parts[3]->shape[1] == 1);
        for (int i = 0; i < count; i++)
            filo_tensor_free(parts[i]);
        FILO_CHECK(filo_chunk(x, 0, 5, parts, &count));
        cr_assert_eq(count, 3, "chunk of 3 rows in 5 gives 3 chunks");
        for (int i = 0; i < count; i++)
            filo_tensor_free(parts[i]);
        filo_tensor_free(x);
    }
}

/* ---- pad ---- */

typedef struct pad_ctx {
    int npairs;
    int64_t pads[8];
    double value;
    int backward;
} pad_ctx;

static filo_status run_pad(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const pad_ctx *c = ctx;
    return c->backward ? filo_pad_backward(in[0], c->npairs, c->pads, &out[0])
                       : filo_pad(in[0], c->npairs, c->pads, c->value, &out[0]);
}

/* out[o] = in[o - left] inside, value outside; the backward is the same with pads negated. */
static void ref_pad(void *ctx, double *const *in, const parity_input *s, double **want)
{
    const pad_ctx *c = ctx;
    int nd = s[0].ndim;
    int64_t left[8] = {0}, oshape[8];
    for (int k = 0; k < nd; k++)
        oshape[k] = s[0].shape[k];
    for (int p = 0; p < c->npairs; p++) {
        int k = nd - 1 - p;
        int64_t l = c->pads[2 * p], r = c->pads[2 * p + 1];
        if (c->backward) {
            l = -l;
            r = -r;
        }
        left[k] = l;
        oshape[k] += l + r;
    }
    double value = c->backward ? 0.0 : round_to(s[0].dtype, c->value);
    int64_t n = numel(nd, oshape);
    for (int64_t i = 0; i < n; i++) {
        int64_t rest = i, off = 0, stride = 1;
        int inside = 1;
        for (int k = nd - 1; k >= 0; k--) {
            int64_t cc = rest % oshape[k] - left[k];
            rest /= oshape[k];
            inside = inside && cc >= 0 && cc < s[0].shape[k];
            off += cc * stride;
            stride *= s[0].shape[k];
        }
        want[0][i] = inside ? in[0][off] : value;
    }
}

Test(layout, pad_parity)
{
    const pad_ctx cases[] = {
        {1, {2, 3}, 0.0, 0},
        {2, {1, 0, 0, 2}, 1.5, 0},
        {2, {-1, 2, 3, -2}, 7.0, 0},
        {3, {0, 0, 1, 1, -1, 1}, 2.0, 0},
        {1, {-3, -3}, 0.0, 0},
        {2, {1, 2, -1, 3}, 0.0, 1},
        {3, {2, -1, 0, 1, 1, 0}, 0.0, 1},
    };
    const int64_t shapes[3][3] = {{3, 7, 33}, {1, 5, 7}, {2, 3, 129}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (int t = 0; t < N_ALL; t++) {
            pad_ctx ctx = cases[ci];
            const int64_t *shape = shapes[(ci + (size_t)t) % 3];
            char name[96];
            snprintf(name, sizeof name, "pad%s case %zu %s", ctx.backward ? " backward" : "", ci,
                     filo_dtype_name(all_dtypes[t]));
            parity_case pc = {.name = name, .run = run_pad, .reference = ref_pad, .ctx = &ctx, .n_outputs = 1,
                              .seed = 21u + ci * 7u + (uint64_t)t, .rtol = 1e-15};
            pc.inputs[pc.n_inputs++] = input(all_dtypes[t], 3, shape, 1, 100, (int)(ci + (size_t)t) % 2);
            parity_run(&pc);
        }
}

/* <pad(x), dy> == <x, pad_backward(dy)>: pad_backward is pad's adjoint (its exact gradient). */
Test(layout, pad_backward_is_the_adjoint)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const int64_t shape[3] = {2, 7, 9}, pads[6] = {2, -3, -1, 4, 1, 0};
    double xv[126];
    filo_test_fill_random(xv, 126, 1, -1, 1);
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F64, 3, shape, xv), *y, *dx;
        FILO_CHECK(filo_pad(x, 3, pads, 3.0, &y));
        int64_t ny = filo_tensor_numel(y);
        cr_assert(y->shape[0] == 3 && y->shape[1] == 10 && y->shape[2] == 8);
        double *dyv = malloc(sizeof(double) * (size_t)ny);
        filo_test_fill_random(dyv, ny, 2, -1, 1);
        filo_tensor *dy = filo_test_upload(devs[b], FILO_F64, 3, y->shape, dyv);
        filo_tensor_free(y);
        FILO_CHECK(filo_pad(x, 3, pads, 0.0, &y));
        FILO_CHECK(filo_pad_backward(dy, 3, pads, &dx));
        cr_assert(dx->shape[0] == 2 && dx->shape[1] == 7 && dx->shape[2] == 9);
        double *yv = filo_test_download(y), *dxv = filo_test_download(dx);
        double lhs = 0, rhs = 0;
        for (int64_t i = 0; i < ny; i++)
            lhs += yv[i] * dyv[i];
        for (int64_t i = 0; i < 126; i++)
            rhs += xv[i] * dxv[i];
        cr_assert(fabs(lhs - rhs) <= 1e-12 * (1 + fabs(lhs)), "adjoint: %.17g vs %.17g on %s", lhs, rhs,
                  filo_test_backend_name(devs[b]));
        free(yv);
        free(dxv);
        free(dyv);
        filo_tensor_free(x);
        filo_tensor_free(y);
        filo_tensor_free(dy);
        filo_tensor_free(dx);
    }
}

Test(layout, empty_tensors)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        filo_tensor *e, *y, *parts[2];
        FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 2, (int64_t[]){0, 3}, &e));
        FILO_CHECK(filo_cast(e, FILO_BF16, &y));
        cr_assert_eq(filo_tensor_numel(y), 0);
        filo_tensor_free(y);
        const filo_tensor *two[2] = {e, e};
        FILO_CHECK(filo_concat(two, 2, 0, &y));
        cr_assert(y->shape[0] == 0 && y->shape[1] == 3);
        filo_tensor_free(y);
        FILO_CHECK(filo_concat(two, 2, 1, &y));
        cr_assert(y->shape[0] == 0 && y->shape[1] == 6);
        filo_tensor_free(y);
        FILO_CHECK(filo_split(e, 1, (int64_t[]){1, 2}, 2, parts));
        filo_tensor_free(parts[0]);
        filo_tensor_free(parts[1]);
        /* Padding an empty tensor gives all value; cropping to nothing gives empty. */
        FILO_CHECK(filo_pad(e, 2, (int64_t[]){0, 0, 1, 1}, 4.0, &y));
        cr_assert(y->shape[0] == 2 && y->shape[1] == 3);
        double *v = filo_test_download(y);
        for (int i = 0; i < 6; i++)
            cr_assert_eq(v[i], 4.0);
        free(v);
        filo_tensor *z;
        FILO_CHECK(filo_pad(y, 1, (int64_t[]){-2, -1}, 0.0, &z));
        cr_assert(z->shape[0] == 2 && z->shape[1] == 0);
        filo_tensor_free(z);
        filo_tensor_free(y);
        filo_tensor_free(e);
    }
}

Test(layout, bad_inputs)
{
    filo_tensor *x, *x2, *x64, *xi, *y, *parts[4];
    int count;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, (int64_t[]){4, 7}, &x));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, (int64_t[]){5, 6}, &x2));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F64, 2, (int64_t[]){4, 7}, &x64));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_I32, 1, (int64_t[]){4}, &xi));
    FILO_CHECK_FAILS(filo_cast(NULL, FILO_F32, &y), FILO_ERR_INVALID_ARG, "filo_cast: x is NULL");
    FILO_CHECK_FAILS(filo_cast(x, (filo_dtype)99, &y), FILO_ERR_DTYPE, "invalid target dtype");
    FILO_CHECK_FAILS(filo_cast(x, FILO_F32, NULL), FILO_ERR_INVALID_ARG, "out is NULL");

    const filo_tensor *xs[2] = {x, x2}, *xd[2] = {x, x64}, *xn[2] = {x, NULL}, *xr[2] = {x, xi};
    FILO_CHECK_FAILS(filo_concat(xs, 2, 0, &y), FILO_ERR_SHAPE, "xs[1] f32[5, 6] cpu and xs[0] f32[4, 7] cpu differ in dim 1");
    FILO_CHECK_FAILS(filo_concat(xd, 2, 0, &y), FILO_ERR_DTYPE, "different dtypes");
    FILO_CHECK_FAILS(filo_concat(xn, 2, 0, &y), FILO_ERR_INVALID_ARG, "xs[1] is NULL");
    FILO_CHECK_FAILS(filo_concat(xr, 2, 0, &y), FILO_ERR_SHAPE, "has 1 dims");
    FILO_CHECK_FAILS(filo_concat(xs, 0, 0, &y), FILO_ERR_INVALID_ARG, "at least one tensor");
    FILO_CHECK_FAILS(filo_concat(xs, 2, 2, &y), FILO_ERR_INVALID_ARG, "filo_concat: dim 2 is out of range for f32[4, 7]");
    FILO_CHECK_FAILS(filo_concat(xs, 2, -3, &y), FILO_ERR_INVALID_ARG, "dim -3");
    FILO_CHECK_FAILS(filo_concat(NULL, 2, 0, &y), FILO_ERR_INVALID_ARG, "xs is NULL");

    FILO_CHECK_FAILS(filo_split(x, 1, (int64_t[]){3, 3}, 2, parts), FILO_ERR_SHAPE, "sizes sum to 6 but dim 1 of f32[4, 7] cpu has size 7");
    FILO_CHECK_FAILS(filo_split(x, 1, (int64_t[]){8, -1}, 2, parts), FILO_ERR_INVALID_ARG, "sizes[1] = -1 is negative");
    FILO_CHECK_FAILS(filo_split(x, 5, (int64_t[]){7}, 1, parts), FILO_ERR_INVALID_ARG, "filo_split: dim 5");
    FILO_CHECK_FAILS(filo_split(x, 1, (int64_t[]){7}, 0, parts), FILO_ERR_INVALID_ARG, "at least one size");
    FILO_CHECK_FAILS(filo_chunk(x, 1, 0, parts, &count), FILO_ERR_INVALID_ARG, "chunks must be >= 1");

    FILO_CHECK_FAILS(filo_pad(x, 3, (int64_t[]){1, 1, 1, 1, 1, 1}, 0, &y), FILO_ERR_INVALID_ARG,
                     "npairs = 3 must be in [1, 2] for f32[4, 7] cpu");
    FILO_CHECK_FAILS(filo_pad(x, 1, (int64_t[]){-4, -4}, 0, &y), FILO_ERR_SHAPE,
                     "pads (-4, -4) on dim 1 of f32[4, 7] cpu give a negative size -1");
    FILO_CHECK_FAILS(filo_pad(x, 1, NULL, 0, &y), FILO_ERR_INVALID_ARG, "pads is NULL");
    FILO_CHECK_FAILS(filo_pad(xi, 1, (int64_t[]){1, 1}, NAN, &y), FILO_ERR_INVALID_ARG, "does not fit in i32");
    filo_tensor *xu;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_U8, 1, (int64_t[]){4}, &xu));
    FILO_CHECK_FAILS(filo_pad(xu, 1, (int64_t[]){1, 1}, 256, &y), FILO_ERR_INVALID_ARG, "filo_pad: value 256 does not fit in u8");
    FILO_CHECK_FAILS(filo_pad(xu, 1, (int64_t[]){1, 1}, -1, &y), FILO_ERR_INVALID_ARG, "value -1 does not fit in u8");
    filo_tensor_free(xu);
    FILO_CHECK_FAILS(filo_pad_backward(x, 1, (int64_t[]){4, 4}, &y), FILO_ERR_SHAPE, "filo_pad_backward: pads (4, 4)");
    FILO_CHECK_FAILS(filo_pad_backward(NULL, 1, (int64_t[]){4, 4}, &y), FILO_ERR_INVALID_ARG, "dy is NULL");

    filo_tensor_free(x);
    filo_tensor_free(x2);
    filo_tensor_free(x64);
    filo_tensor_free(xi);
}

/* filo_tensor_contiguous of permuted, sliced and expanded views, every element size: the CPU
 * strided copy's fast paths (memcpy runs, tiled transposes) against an index walk here. */
Test(layout, strided_copies_of_views)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const int64_t shape[4] = {3, 37, 5, 41}, n = 3 * 37 * 5 * 41;
    double *v = malloc(sizeof(double) * (size_t)n);
    filo_test_fill_random(v, n, 17, 1, 100);
    for (int i = 0; i < n; i++)
        v[i] = floor(v[i]);
    static const int perms[5][4] = {{0, 1, 2, 3}, {0, 1, 3, 2}, {3, 2, 1, 0}, {1, 3, 0, 2}, {2, 0, 3, 1}};
    const filo_dtype types[4] = {FILO_U8, FILO_F16, FILO_F32, FILO_F64};
    for (int b = 0; b < nb; b++)
        for (int t = 0; t < 4; t++)
            for (int p = 0; p < 5; p++)
                for (int sl = 0; sl < 2; sl++) {
                    filo_tensor *x = filo_test_upload(devs[b], types[t], 4, shape, v), *pv, *sv, *c;
                    FILO_CHECK(filo_tensor_permute(x, perms[p], &pv));
                    /* Optionally a step-2 slice of the new last dim and an offset start on dim 0. */
                    if (sl)
                        FILO_CHECK(filo_tensor_slice(pv, 3, 1, pv->shape[3], 2, &sv));
                    else
                        FILO_CHECK(filo_tensor_alias(pv, &sv));
                    FILO_CHECK(filo_tensor_contiguous(sv, &c));
                    double *got = filo_test_download(c);
                    int64_t m = filo_tensor_numel(sv), idx[4];
                    for (int64_t i = 0; i < m; i++) {
                        int64_t rest = i, off = 0;
                        for (int k = 3; k >= 0; k--) {
                            idx[k] = rest % sv->shape[k];
                            rest /= sv->shape[k];
                        }
                        int64_t src[4];
                        for (int k = 0; k < 4; k++)
                            src[perms[p][k]] = k == 3 && sl ? 1 + 2 * idx[k] : idx[k];
                        for (int k = 0; k < 4; k++)
                            off = off * shape[k] + src[k];
                        cr_assert_eq(got[i], v[off], "%s perm %d slice %d on %s: element %lld", filo_dtype_name(types[t]),
                                     p, sl, filo_test_backend_name(devs[b]), (long long)i);
                    }
                    free(got);
                    filo_tensor_free(x);
                    filo_tensor_free(pv);
                    filo_tensor_free(sv);
                    filo_tensor_free(c);
                }
    /* An expanded (stride 0) source and a strided destination. */
    filo_tensor *row, *ex, *dst, *dview;
    FILO_CHECK(filo_tensor_from_host(filo_cpu(), FILO_F32, 2, (int64_t[]){1, 5}, (float[]){1, 2, 3, 4, 5}, &row));
    FILO_CHECK(filo_tensor_expand(row, 2, (int64_t[]){7, 5}, &ex));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, (int64_t[]){5, 7}, &dst));
    FILO_CHECK(filo_tensor_transpose(dst, 0, 1, &dview));
    FILO_CHECK(filo_tensor_copy(dview, ex));
    float out[35];
    FILO_CHECK(filo_tensor_to_host(dst, out, sizeof out));
    for (int i = 0; i < 35; i++)
        cr_assert_eq(out[i], (float)(i / 7 + 1));
    filo_tensor_free(row);
    filo_tensor_free(ex);
    filo_tensor_free(dst);
    filo_tensor_free(dview);
    free(v);
}
