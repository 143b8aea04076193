/* Indexing ops (include/filo/indexing.h): index_select/index_add, gather/scatter_add,
 * embedding and its backward, masked_fill. Parity on every backend against float64 references
 * written here (odd shapes, non-contiguous inputs, every dtype, i64 and i32 indices with
 * duplicates), adjoint checks of every backward in f64, bitwise determinism (run to run and CPU
 * against CUDA), padding_idx, out-of-range indices, empty tensors and every bad-input error. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/indexing.h"
#include "parity.h"

static const filo_dtype float_dtypes[] = {FILO_F32, FILO_F64, FILO_BF16, FILO_F16};
static const filo_dtype all_dtypes[] = {FILO_F32, FILO_F64, FILO_BF16, FILO_F16, FILO_I64, FILO_I32, FILO_U8};

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

static void outer_inner(const parity_input *s, int dim, int64_t *outer, int64_t *inner)
{
    *outer = numel(dim, s->shape);
    *inner = numel(s->ndim - dim - 1, s->shape + dim + 1);
}

/* Accumulating outputs are rounded sums of O(1) positive values: relative to the dtype. */
static void sum_tol(parity_case *pc, filo_dtype t)
{
    pc->rtol = parity_default_rtol(t) * 2;
    pc->atol = pc->rtol;
}

/* ---- index_select / index_add ---- */

typedef struct sel_ctx {
    int dim;
    int64_t size; /* index_add: the size of dim in dx */
} sel_ctx;

static filo_status run_index_select(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    return filo_index_select(in[0], ((sel_ctx *)ctx)->dim, in[1], &out[0]);
}

static void ref_index_select(void *ctx, double *const *in, const parity_input *s, double **want)
{
    int d = ((sel_ctx *)ctx)->dim;
    int64_t outer, inner, N = s[0].shape[d], K = s[1].shape[0];
    outer_inner(&s[0], d, &outer, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t i = 0; i < inner; i++)
                want[0][(o * K + k) * inner + i] = in[0][(o * N + (int64_t)in[1][k]) * inner + i];
}

static filo_status run_index_add(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const sel_ctx *c = ctx;
    return filo_index_add(in[0], c->dim, in[1], c->size, &out[0]);
}

static void ref_index_add(void *ctx, double *const *in, const parity_input *s, double **want)
{
    const sel_ctx *c = ctx;
    int d = c->dim;
    int64_t outer, inner, K = s[0].shape[d], N = c->size;
    outer_inner(&s[0], d, &outer, &inner);
    memset(want[0], 0, sizeof(double) * (size_t)(outer * N * inner));
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t i = 0; i < inner; i++)
                want[0][(o * N + (int64_t)in[1][k]) * inner + i] += in[0][(o * K + k) * inner + i];
}

Test(indexing, index_select_and_add_parity)
{
    const int64_t shape[3] = {3, 7, 33};
    for (int t = 0; t < 7; t++)
        for (int d = 0; d < 3; d++) {
            sel_ctx ctx = {d, shape[d]};
            char name[96];
            filo_dtype it = (t + d) % 2 ? FILO_I32 : FILO_I64;
            int64_t K = d == 2 ? 129 : 9; /* more picks than rows: duplicates */
            snprintf(name, sizeof name, "index_select %s dim %d %s", filo_dtype_name(all_dtypes[t]), d, filo_dtype_name(it));
            parity_case pc = {.name = name, .run = run_index_select, .reference = ref_index_select, .ctx = &ctx,
                              .n_outputs = 1, .seed = 31u + (uint64_t)(t * 3 + d), .rtol = 1e-15};
            pc.inputs[pc.n_inputs++] = input(all_dtypes[t], 3, shape, 1, 100, (t + d) % 2);
            pc.inputs[pc.n_inputs++] = input(it, 1, &K, 0, (double)shape[d], 0);
            parity_run(&pc);
            if (t >= 4)
                continue;
            int64_t dshape[3] = {shape[0], shape[1], shape[2]};
            dshape[d] = K;
            snprintf(name, sizeof name, "index_add %s dim %d %s", filo_dtype_name(all_dtypes[t]), d, filo_dtype_name(it));
            parity_case pa = {.name = name, .run = run_index_add, .reference = ref_index_add, .ctx = &ctx,
                              .n_outputs = 1, .seed = 41u + (uint64_t)(t * 3 + d)};
            sum_tol(&pa, all_dtypes[t]);
            pa.inputs[pa.n_inputs++] = input(all_dtypes[t], 3, dshape, 0.5, 2, (t + d + 1) % 2);
            pa.inputs[pa.n_inputs++] = input(it, 1, &K, 0, (double)shape[d], 0);
            parity_run(&pa);
        }
}

/* ---- gather / scatter_add ---- */

typedef struct gather_ctx {
    int dim;
} gather_ctx;

static filo_status run_gather(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    return filo_gather(in[0], ((gather_ctx *)ctx)->dim, in[1], &out[0]);
}

/* Walks index positions in row-major order: pos -> coordinates -> offsets. */
static int64_t offset_of(int nd, const int64_t *coord, const int64_t *shape)
{
    int64_t off = 0;
    for (int k = 0; k < nd; k++)
        off = off * shape[k] + coord[k];
    return off;
}

static void unravel(int64_t p, int nd, const int64_t *shape, int64_t *coord)
{
    for (int k = nd - 1; k >= 0; k--) {
        coord[k] = p % shape[k];
        p /= shape[k];
    }
}

static void ref_gather(void *ctx, double *const *in, const parity_input *s, double **want)
{
    int d = ((gather_ctx *)ctx)->dim, nd = s[0].ndim;
    int64_t n = numel(nd, s[1].shape), c[8];
    for (int64_t p = 0; p < n; p++) {
        unravel(p, nd, s[1].shape, c);
        c[d] = (int64_t)in[1][p];
        want[0][p] = in[0][offset_of(nd, c, s[0].shape)];
    }
}

/* inputs: self, index, src */
static filo_status run_scatter_add(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    return filo_scatter_add(in[0], ((gather_ctx *)ctx)->dim, in[1], in[2], &out[0]);
}

static void ref_scatter_add(void *ctx, double *const *in, const parity_input *s, double **want)
{
    int d = ((gather_ctx *)ctx)->dim, nd = s[0].ndim;
    memcpy(want[0], in[0], sizeof(double) * (size_t)numel(nd, s[0].shape));
    int64_t n = numel(nd, s[1].shape), c[8];
    for (int64_t p = 0; p < n; p++) {
        unravel(p, nd, s[1].shape, c);
        double v = in[2][offset_of(nd, c, s[2].shape)];
        c[d] = (int64_t)in[1][p];
        want[0][offset_of(nd, c, s[0].shape)] += v;
    }
}

Test(indexing, gather_and_scatter_add_parity)
{
    const int64_t xshape[3] = {3, 7, 33};
    for (int t = 0; t < 7; t++)
        for (int d = 0; d < 3; d++) {
            gather_ctx ctx = {d};
            filo_dtype it = (t + d) % 2 ? FILO_I64 : FILO_I32;
            /* index: smaller than x off dim, longer than x along dim (duplicates). */
            int64_t ishape[3] = {2, 5, 17};
            ishape[d] = 2 * xshape[d] + 1;
            char name[96];
            snprintf(name, sizeof name, "gather %s dim %d %s", filo_dtype_name(all_dtypes[t]), d, filo_dtype_name(it));
            parity_case pc = {.name = name, .run = run_gather, .reference = ref_gather, .ctx = &ctx, .n_outputs = 1,
                              .seed = 51u + (uint64_t)(t * 3 + d), .rtol = 1e-15};
            pc.inputs[pc.n_inputs++] = input(all_dtypes[t], 3, xshape, 1, 100, t % 2);
            pc.inputs[pc.n_inputs++] = input(it, 3, ishape, 0, (double)xshape[d], d % 2);
            parity_run(&pc);
            if (t >= 4)
                continue;
            int64_t sshape[3] = {ishape[0] + 1, ishape[1], ishape[2] + 2}; /* src larger than index */
            snprintf(name, sizeof name, "scatter_add %s dim %d %s", filo_dtype_name(all_dtypes[t]), d, filo_dtype_name(it));
            parity_case ps = {.name = name, .run = run_scatter_add, .reference = ref_scatter_add, .ctx = &ctx,
                              .n_outputs = 1, .seed = 61u + (uint64_t)(t * 3 + d)};
            sum_tol(&ps, all_dtypes[t]);
            ps.inputs[ps.n_inputs++] = input(all_dtypes[t], 3, xshape, 0.5, 2, (t + 1) % 2);
            ps.inputs[ps.n_inputs++] = input(it, 3, ishape, 0, (double)xshape[d], d % 2);
            ps.inputs[ps.n_inputs++] = input(all_dtypes[t], 3, sshape, 0.5, 2, t % 2);
            parity_run(&ps);
        }
}

/* ---- embedding ---- */

typedef struct emb_ctx {
    int64_t V;
    int64_t padding_idx;
} emb_ctx;

static filo_status run_embedding(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    (void)ctx;
    return filo_embedding(in[0], in[1], &out[0]);
}

static void ref_embedding(void *ctx, double *const *in, const parity_input *s, double **want)
{
    (void)ctx;
    int64_t D = s[0].shape[1], K = numel(s[1].ndim, s[1].shape);
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < D; j++)
            want[0][k * D + j] = in[0][(int64_t)in[1][k] * D + j];
}

/* inputs: dy [ids..., D], ids */
static filo_status run_embedding_backward(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const emb_ctx *c = ctx;
    return filo_embedding_backward(in[0], in[1], c->V, c->padding_idx, &out[0]);
}

static void ref_embedding_backward(void *ctx, double *const *in, const parity_input *s, double **want)
{
    const emb_ctx *c = ctx;
    int64_t D = s[0].shape[s[0].ndim - 1], K = numel(s[1].ndim, s[1].shape);
    memset(want[0], 0, sizeof(double) * (size_t)(c->V * D));
    for (int64_t k = 0; k < K; k++) {
        int64_t id = (int64_t)in[1][k];
        if (id == c->padding_idx)
            continue;
        for (int64_t j = 0; j < D; j++)
            want[0][id * D + j] += in[0][k * D + j];
    }
}

Test(indexing, embedding_parity)
{
    for (int t = 0; t < 4; t++)
        for (int variant = 0; variant < 3; variant++) {
            /* ids [5, 7] over V = 33 (duplicates), [129] over 7, [2, 3, 7] over 1. */
            static const int64_t V[3] = {33, 7, 1}, D[3] = {33, 7, 129};
            static const int nd[3] = {2, 1, 3};
            static const int64_t ishapes[3][3] = {{5, 7}, {129}, {2, 3, 7}};
            emb_ctx ctx = {V[variant], variant == 0 ? 3 : (variant == 1 ? -1 : 0)};
            filo_dtype it = (t + variant) % 2 ? FILO_I32 : FILO_I64;
            char name[96];
            snprintf(name, sizeof name, "embedding %s V=%lld D=%lld %s", filo_dtype_name(float_dtypes[t]),
                     (long long)V[variant], (long long)D[variant], filo_dtype_name(it));
            int64_t wshape[2] = {V[variant], D[variant]};
            parity_case pc = {.name = name, .run = run_embedding, .reference = ref_embedding, .ctx = &ctx,
                              .n_outputs = 1, .seed = 71u + (uint64_t)(t * 3 + variant), .rtol = 1e-15};
            pc.inputs[pc.n_inputs++] = input(float_dtypes[t], 2, wshape, -1, 1, variant == 0);
            pc.inputs[pc.n_inputs++] = input(it, nd[variant], ishapes[variant], 0, (double)V[variant], variant == 2);
            parity_run(&pc);

            int64_t dshape[4];
            memcpy(dshape, ishapes[variant], sizeof(int64_t) * 3);
            dshape[nd[variant]] = D[variant];
            snprintf(name, sizeof name, "embedding_backward %s V=%lld D=%lld pad=%lld %s", filo_dtype_name(float_dtypes[t]),
                     (long long)V[variant], (long long)D[variant], (long long)ctx.padding_idx, filo_dtype_name(it));
            parity_case pb = {.name = name, .run = run_embedding_backward, .reference = ref_embedding_backward,
                              .ctx = &ctx, .n_outputs = 1, .seed = 81u + (uint64_t)(t * 3 + variant)};
            sum_tol(&pb, float_dtypes[t]);
            pb.inputs[pb.n_inputs++] = input(float_dtypes[t], nd[variant] + 1, dshape, 0.5, 2, variant == 1);
            pb.inputs[pb.n_inputs++] = input(it, nd[variant], ishapes[variant], 0, (double)V[variant], 0);
            parity_run(&pb);
        }
}

/* More ids than one sort tile (1024 keys): the global bitonic stages run; ids skewed so that a
 * few rows collect hundreds of contributions. Bitwise: run to run, and CPU against CUDA. */
static void many_ids(filo_dtype dt, int64_t K, int64_t V, int64_t D, int64_t padding_idx)
{
    double *ids = malloc(sizeof(double) * (size_t)K), *dy = malloc(sizeof(double) * (size_t)(K * D));
    filo_test_fill_random(ids, K, 5, 0, 1);
    for (int64_t k = 0; k < K; k++)
        ids[k] = k % 3 == 0 ? (double)(k % 4) : floor(ids[k] * ids[k] * (double)V); /* skewed to small ids */
    filo_test_fill_random(dy, K * D, 6, -1, 1);
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    size_t bytes = (size_t)(V * D) * 8;
    unsigned char *first = NULL;
    setenv("FILO_TENSOR_POISON", "1", 1); /* rows left unwritten show */
    for (int b = 0; b < nb; b++) {
        filo_tensor *idt = filo_test_upload(devs[b], FILO_I64, 1, &K, ids);
        filo_tensor *d64 = filo_test_upload(devs[b], FILO_F64, 2, (int64_t[]){K, D}, dy), *dyt;
        FILO_CHECK(filo_tensor_empty(devs[b], dt, 2, (int64_t[]){K, D}, &dyt));
        FILO_CHECK(filo_tensor_copy(dyt, d64));
        for (int run = 0; run < 2; run++) {
            filo_tensor *dw;
            FILO_CHECK(filo_embedding_backward(dyt, idt, V, padding_idx, &dw));
            unsigned char *got = calloc(bytes, 1);
            FILO_CHECK(filo_tensor_to_host(dw, got, filo_tensor_nbytes(dw)));
            if (!first) {
                first = got;
                /* Check the CPU run against the f64 sums once. */
                double *want = calloc((size_t)(V * D), sizeof(double)), *g = filo_test_download(dw);
                for (int64_t k = 0; k < K; k++)
                    if ((int64_t)ids[k] != padding_idx)
                        for (int64_t j = 0; j < D; j++)
                            want[(int64_t)ids[k] * D + j] += dy[k * D + j];
                double tol = parity_default_rtol(dt) * 4;
                for (int64_t i = 0; i < V * D; i++)
                    cr_assert(fabs(g[i] - want[i]) <= tol * (1 + fabs(want[i])), "dweight[%lld] = %.9g, want %.9g",
                              (long long)i, g[i], want[i]);
                free(want);
                free(g);
            } else {
                cr_assert(memcmp(first, got, filo_tensor_nbytes(dw)) == 0,
                          "embedding_backward %s K=%lld differs bitwise on %s run %d from the first CPU run",
                          filo_dtype_name(dt), (long long)K, filo_test_backend_name(devs[b]), run);
                free(got);
            }
            filo_tensor_free(dw);
        }
        filo_tensor_free(idt);
        filo_tensor_free(d64);
        filo_tensor_free(dyt);
    }
    unsetenv("FILO_TENSOR_POISON");
    free(first);
    free(ids);
    free(dy);
}

Test(indexing, embedding_backward_many_ids_bitwise)
{
    many_ids(FILO_F32, 2500, 301, 40, 2);
    /* D = 83: the CPU's f32 rows in 64-, 16- and 1-column pieces */
    many_ids(FILO_F32, 1500, 97, 83, -1);
    /* over 8 MiB of output: the CPU zeroes the unused rows with non-temporal stores, rows of 257
     * floats starting at every 16-byte alignment */
    many_ids(FILO_F32, 600, 8209, 257, 5);
    many_ids(FILO_BF16, 1025, 64, 33, -1);
    many_ids(FILO_F64, 4096, 1000, 3, 0);
}

Test(indexing, scatter_and_index_add_bitwise)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const int64_t K = 300, N = 7, C = 33;
    double idx[300], v[300 * 33];
    filo_test_fill_random(idx, K, 3, 0, (double)N);
    for (int64_t k = 0; k < K; k++)
        idx[k] = floor(idx[k]);
    filo_test_fill_random(v, K * C, 4, -1, 1);
    float first_ia[7 * 33], first_sa[7 * 33], first_t[33 * 7];
    for (int b = 0; b < nb; b++) {
        filo_tensor *it = filo_test_upload(devs[b], FILO_I32, 1, &K, idx);
        filo_tensor *dy = filo_test_upload(devs[b], FILO_F32, 2, (int64_t[]){K, C}, v);
        /* scatter along dim 0 with a [K, C] index: the column's index repeated. */
        double *idx2 = malloc(sizeof(double) * (size_t)(K * C));
        for (int64_t i = 0; i < K * C; i++)
            idx2[i] = idx[i / C];
        filo_tensor *it2 = filo_test_upload(devs[b], FILO_I64, 2, (int64_t[]){K, C}, idx2), *self;
        free(idx2);
        FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 2, (int64_t[]){N, C}, &self));
        for (int run = 0; run < 2; run++) {
            filo_tensor *ia, *sa;
            FILO_CHECK(filo_index_add(dy, 0, it, N, &ia));
            FILO_CHECK(filo_scatter_add(self, 0, it2, dy, &sa));
            float got_ia[7 * 33], got_sa[7 * 33];
            FILO_CHECK(filo_tensor_to_host(ia, got_ia, sizeof got_ia));
            FILO_CHECK(filo_tensor_to_host(sa, got_sa, sizeof got_sa));
            /* Along dim 1 of the transposed dy: outer = 33 rows, inner = 1. */
            filo_tensor *dyT, *ta;
            float got_t[33 * 7];
            FILO_CHECK(filo_tensor_transpose(dy, 0, 1, &dyT));
            FILO_CHECK(filo_index_add(dyT, 1, it, N, &ta));
            FILO_CHECK(filo_tensor_to_host(ta, got_t, sizeof got_t));
            filo_tensor_free(dyT);
            filo_tensor_free(ta);
            if (b == 0 && run == 0) {
                memcpy(first_ia, got_ia, sizeof got_ia);
                memcpy(first_sa, got_sa, sizeof got_sa);
                memcpy(first_t, got_t, sizeof got_t);
            }
            cr_assert(memcmp(first_t, got_t, sizeof got_t) == 0, "index_add along dim 1 differs bitwise on %s run %d",
                      filo_test_backend_name(devs[b]), run);
            for (int i = 0; i < 33 * 7; i++)
                cr_assert_eq(got_t[i], got_ia[(i % 7) * 33 + i / 7], "index_add of dy and of its transpose differ");
            cr_assert(memcmp(first_ia, got_ia, sizeof got_ia) == 0, "index_add differs bitwise on %s run %d",
                      filo_test_backend_name(devs[b]), run);
            cr_assert(memcmp(first_sa, got_sa, sizeof got_sa) == 0, "scatter_add differs bitwise on %s run %d",
                      filo_test_backend_name(devs[b]), run);
            /* The same sums (index_add adds in chunks of 32 sorted positions, scatter_add in one run). */
            for (int i = 0; i < 7 * 33; i++)
                cr_assert(fabsf(got_ia[i] - got_sa[i]) <= 1e-5f * (1 + fabsf(got_sa[i])), "index_add and scatter_add differ on %s",
                          filo_test_backend_name(devs[b]));
            filo_tensor_free(ia);
            filo_tensor_free(sa);
        }
        filo_tensor_free(it);
        filo_tensor_free(it2);
        filo_tensor_free(dy);
        filo_tensor_free(self);
    }
}

/* <fwd(x), dy> == <x, bwd(dy)> in f64: each backward is its forward's exact gradient. */
static double dot(const filo_tensor *a, const double *b)
{
    double *av = filo_test_download(a), s = 0;
    int64_t n = filo_tensor_numel(a);
    for (int64_t i = 0; i < n; i++)
        s += av[i] * b[i];
    free(av);
    return s;
}

Test(indexing, backward_is_the_adjoint)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const int64_t xs[3] = {4, 9, 5}, K = 13;
    double xv[180], iv[13], dyv[4 * 13 * 5], gi[4 * 13 * 5];
    filo_test_fill_random(xv, 180, 1, -1, 1);
    filo_test_fill_random(iv, K, 2, 0, 9);
    for (int k = 0; k < K; k++)
        iv[k] = floor(iv[k]);
    filo_test_fill_random(dyv, 4 * 13 * 5, 3, -1, 1);
    filo_test_fill_random(gi, 4 * 13 * 5, 4, 0, 9);
    for (int k = 0; k < 4 * 13 * 5; k++)
        gi[k] = floor(gi[k]);
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F64, 3, xs, xv), *zero;
        filo_tensor *idx = filo_test_upload(devs[b], FILO_I64, 1, &K, iv);
        filo_tensor *dy = filo_test_upload(devs[b], FILO_F64, 3, (int64_t[]){4, K, 5}, dyv);
        filo_tensor *gidx = filo_test_upload(devs[b], FILO_I32, 3, (int64_t[]){4, K, 5}, gi);
        FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F64, 3, xs, &zero));
        filo_tensor *y, *dx;
        /* index_select / index_add along dim 1 */
        FILO_CHECK(filo_index_select(x, 1, idx, &y));
        FILO_CHECK(filo_index_add(dy, 1, idx, 9, &dx));
        double l = dot(y, dyv), r = dot(dx, xv);
        cr_assert(fabs(l - r) < 1e-12 * (1 + fabs(l)), "index_add adjoint %.17g vs %.17g", l, r);
        filo_tensor_free(y);
        filo_tensor_free(dx);
        /* gather / scatter_add along dim 1 */
        FILO_CHECK(filo_gather(x, 1, gidx, &y));
        FILO_CHECK(filo_scatter_add(zero, 1, gidx, dy, &dx));
        l = dot(y, dyv);
        r = dot(dx, xv);
        cr_assert(fabs(l - r) < 1e-12 * (1 + fabs(l)), "scatter_add adjoint %.17g vs %.17g", l, r);
        filo_tensor_free(y);
        filo_tensor_free(dx);
        /* embedding: weight [9, 20] (x viewed), ids [13] */
        filo_tensor *w;
        FILO_CHECK(filo_tensor_view(x, 2, (int64_t[]){9, 20}, &w));
        filo_tensor *dye = filo_test_upload(devs[b], FILO_F64, 2, (int64_t[]){K, 20}, dyv);
        FILO_CHECK(filo_embedding(w, idx, &y));
        FILO_CHECK(filo_embedding_backward(dye, idx, 9, -1, &dx));
        l = dot(y, dyv);
        r = dot(dx, xv);
        cr_assert(fabs(l - r) < 1e-12 * (1 + fabs(l)), "embedding adjoint %.17g vs %.17g", l, r);
        filo_tensor_free(y);
        filo_tensor_free(dx);
        /* masked_fill with 0 is its own adjoint */
        filo_tensor *m;
        double mv[5] = {1, 0, 0, 1, 0};
        m = filo_test_upload(devs[b], FILO_U8, 2, (int64_t[]){1, 5}, mv);
        FILO_CHECK(filo_masked_fill(x, m, 0.0, &y));
        filo_tensor *dyx = filo_test_upload(devs[b], FILO_F64, 3, xs, dyv);
        FILO_CHECK(filo_masked_fill(dyx, m, 0.0, &dx));
        l = dot(y, dyv);
        r = dot(dx, xv);
        cr_assert(fabs(l - r) < 1e-12 * (1 + fabs(l)), "masked_fill adjoint %.17g vs %.17g", l, r);
        filo_tensor *all[] = {x, zero, idx, dy, gidx, w, dye, y, dx, m, dyx};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            filo_tensor_free(all[i]);
    }
}

/* ---- masked_fill ---- */

typedef struct mf_ctx {
    double value;
} mf_ctx;

static filo_status run_masked_fill(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    return filo_masked_fill(in[0], in[1], ((mf_ctx *)ctx)->value, &out[0]);
}

static void ref_masked_fill(void *ctx, double *const *in, const parity_input *s, double **want)
{
    double value = ((mf_ctx *)ctx)->value;
    int nd = s[0].ndim, md = s[1].ndim;
    int64_t n = numel(nd, s[0].shape), c[8], mc[8];
    for (int64_t p = 0; p < n; p++) {
        unravel(p, nd, s[0].shape, c);
        for (int k = 0; k < md; k++)
            mc[k] = s[1].shape[k] == 1 ? 0 : c[nd - md + k];
        want[0][p] = in[1][offset_of(md, mc, s[1].shape)] != 0 ? value : in[0][p];
    }
}

Test(indexing, masked_fill_parity)
{
    const int64_t xshape[3] = {3, 7, 33};
    const int64_t mshapes[3][3] = {{3, 7, 33}, {7, 1}, {1, 1, 33}};
    const int mnd[3] = {3, 2, 3};
    for (int t = 0; t < 7; t++)
        for (int m = 0; m < 3; m++) {
            mf_ctx ctx = {t == 6 ? 9.0 : -2.0};
            char name[96];
            snprintf(name, sizeof name, "masked_fill %s mask %d", filo_dtype_name(all_dtypes[t]), m);
            parity_case pc = {.name = name, .run = run_masked_fill, .reference = ref_masked_fill, .ctx = &ctx,
                              .n_outputs = 1, .seed = 91u + (uint64_t)(t * 3 + m), .rtol = 1e-15};
            pc.inputs[pc.n_inputs++] = input(all_dtypes[t], 3, xshape, 1, 100, (t + m) % 2);
            pc.inputs[pc.n_inputs++] = input(FILO_U8, mnd[m], mshapes[m], 0, 2, m == 0);
            parity_run(&pc);
        }
}

/* ---- out of range, empty, bad input ---- */

Test(indexing, out_of_range_indices)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    double xv[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, bad[3] = {1, 4, -1};
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 2, (int64_t[]){4, 3}, xv), *y = NULL;
        filo_tensor *idx = filo_test_upload(devs[b], FILO_I64, 1, (int64_t[]){3}, bad);
        filo_tensor *gidx = filo_test_upload(devs[b], FILO_I32, 2, (int64_t[]){1, 3}, bad);
        filo_tensor *dy = filo_test_upload(devs[b], FILO_F32, 2, (int64_t[]){3, 3}, xv);
        if (devs[b].type == FILO_DEVICE_CPU) {
            FILO_CHECK_FAILS(filo_index_select(x, 0, idx, &y), FILO_ERR_INVALID_ARG,
                             "filo_index_select: index 4 at position [1] of i64[3] cpu is outside [0, 4)");
            FILO_CHECK_FAILS(filo_embedding(x, idx, &y), FILO_ERR_INVALID_ARG, "filo_embedding: index 4 at position [1]");
            FILO_CHECK_FAILS(filo_embedding_backward(dy, idx, 4, -1, &y), FILO_ERR_INVALID_ARG,
                             "filo_embedding_backward: index 4 at position [1]");
            FILO_CHECK_FAILS(filo_index_add(dy, 0, idx, 5, &y), FILO_ERR_INVALID_ARG,
                             "filo_index_add: index -1 at position [2]");
            FILO_CHECK_FAILS(filo_gather(x, 1, gidx, &y), FILO_ERR_INVALID_ARG,
                             "filo_gather: index 4 at position [0, 1] of i32[1, 3] cpu is outside [0, 3)");
            FILO_CHECK_FAILS(filo_scatter_add(x, 1, gidx, x, &y), FILO_ERR_INVALID_ARG,
                             "filo_scatter_add: index 4 at position [0, 1]");
            filo_tensor_free(x);
            filo_tensor_free(idx);
            filo_tensor_free(gidx);
            filo_tensor_free(dy);
            continue;
        }
        /* CUDA: zeros for out-of-range picks, dropped contributions; never out of bounds. */
        FILO_CHECK(filo_index_select(x, 0, idx, &y));
        double *v = filo_test_download(y);
        double want[9] = {4, 5, 6, 0, 0, 0, 0, 0, 0};
        cr_assert(memcmp(v, want, sizeof want) == 0, "index_select with bad indices on %s", filo_test_backend_name(devs[b]));
        free(v);
        filo_tensor_free(y);
        /* Rows of 32 or more elements take the row kernel. */
        double wv[4 * 33];
        for (int i = 0; i < 4 * 33; i++)
            wv[i] = i + 1;
        filo_tensor *w = filo_test_upload(devs[b], FILO_F32, 2, (int64_t[]){4, 33}, wv);
        FILO_CHECK(filo_embedding(w, idx, &y));
        v = filo_test_download(y);
        for (int i = 0; i < 3 * 33; i++)
            cr_assert_eq(v[i], i < 33 ? wv[33 + i] : 0.0, "embedding with bad ids on %s: element %d",
                         filo_test_backend_name(devs[b]), i);
        free(v);
        filo_tensor_free(y);
        filo_tensor_free(w);
        FILO_CHECK(filo_embedding_backward(dy, idx, 4, -1, &y));
        v = filo_test_download(y);
        double wantb[12] = {0, 0, 0, 1, 2, 3, 0, 0, 0, 0, 0, 0};
        cr_assert(memcmp(v, wantb, sizeof wantb) == 0, "embedding_backward with bad ids on %s", filo_test_backend_name(devs[b]));
        free(v);
        filo_tensor_free(y);
        FILO_CHECK(filo_gather(x, 1, gidx, &y));
        v = filo_test_download(y);
        cr_assert(v[0] == 2 && v[1] == 0 && v[2] == 0, "gather with bad indices on %s", filo_test_backend_name(devs[b]));
        free(v);
        filo_tensor_free(y);
        FILO_CHECK(filo_scatter_add(x, 1, gidx, x, &y));
        v = filo_test_download(y);
        cr_assert(v[0] == 1 && v[1] == 3 && v[2] == 3 && v[3] == 4, "scatter_add with bad indices on %s",
                  filo_test_backend_name(devs[b]));
        free(v);
        filo_tensor_free(y);
        filo_tensor_free(x);
        filo_tensor_free(idx);
        filo_tensor_free(gidx);
        filo_tensor_free(dy);
    }
}

Test(indexing, empty_tensors)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        filo_tensor *x, *e_idx, *w, *ids2, *dy, *y;
        FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 2, (int64_t[]){4, 3}, &x));
        FILO_CHECK(filo_tensor_zeros(devs[b], FILO_I64, 1, (int64_t[]){0}, &e_idx));
        FILO_CHECK(filo_index_select(x, 0, e_idx, &y));
        cr_assert(y->shape[0] == 0 && y->shape[1] == 3);
        filo_tensor_free(y);
        FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 2, (int64_t[]){0, 3}, &dy));
        FILO_CHECK(filo_index_add(dy, 0, e_idx, 5, &y));
        double *v = filo_test_download(y);
        for (int i = 0; i < 15; i++)
            cr_assert_eq(v[i], 0.0, "index_add of nothing must be zeros");
        free(v);
        filo_tensor_free(y);
        FILO_CHECK(filo_embedding(x, e_idx, &y));
        cr_assert(y->ndim == 2 && y->shape[0] == 0 && y->shape[1] == 3);
        filo_tensor_free(y);
        FILO_CHECK(filo_embedding_backward(dy, e_idx, 4, 1, &y));
        cr_assert(y->shape[0] == 4 && y->shape[1] == 3);
        v = filo_test_download(y);
        for (int i = 0; i < 12; i++)
            cr_assert_eq(v[i], 0.0);
        free(v);
        filo_tensor_free(y);
        FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 2, (int64_t[]){0, 3}, &w));
        FILO_CHECK(filo_tensor_zeros(devs[b], FILO_I32, 2, (int64_t[]){0, 3}, &ids2));
        FILO_CHECK(filo_gather(x, 0, ids2, &y));
        cr_assert(y->shape[0] == 0);
        filo_tensor_free(y);
        FILO_CHECK(filo_scatter_add(x, 0, ids2, w, &y));
        v = filo_test_download(y);
        for (int i = 0; i < 12; i++)
            cr_assert_eq(v[i], 0.0);
        free(v);
        filo_tensor_free(y);
        filo_tensor *m;
        FILO_CHECK(filo_tensor_zeros(devs[b], FILO_U8, 1, (int64_t[]){3}, &m));
        FILO_CHECK(filo_masked_fill(w, m, 1.0, &y));
        cr_assert(y->shape[0] == 0);
        filo_tensor_free(y);
        filo_tensor *all[] = {x, e_idx, w, ids2, dy, m};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            filo_tensor_free(all[i]);
    }
}

Test(indexing, bad_inputs)
{
    filo_tensor *x, *x64, *xi, *idx, *idx2, *fidx, *m, *m8, *y;
    filo_device cpu = filo_cpu();
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 2, (int64_t[]){4, 7}, &x));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F64, 2, (int64_t[]){4, 7}, &x64));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_I32, 2, (int64_t[]){4, 7}, &xi));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_I64, 1, (int64_t[]){4}, &idx));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_I64, 2, (int64_t[]){5, 7}, &idx2));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 1, (int64_t[]){4}, &fidx));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 2, (int64_t[]){4, 7}, &m));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_U8, 2, (int64_t[]){2, 7}, &m8));

    FILO_CHECK_FAILS(filo_index_select(NULL, 0, idx, &y), FILO_ERR_INVALID_ARG, "filo_index_select: x is NULL");
    FILO_CHECK_FAILS(filo_index_select(x, 2, idx, &y), FILO_ERR_INVALID_ARG, "dim 2 is out of range for f32[4, 7] cpu");
    FILO_CHECK_FAILS(filo_index_select(x, 0, fidx, &y), FILO_ERR_DTYPE, "index must be i64 or i32, got f32[4] cpu");
    FILO_CHECK_FAILS(filo_index_select(x, 0, idx2, &y), FILO_ERR_SHAPE, "index must be 1-D, got i64[5, 7]");
    FILO_CHECK_FAILS(filo_index_select(x, 0, NULL, &y), FILO_ERR_INVALID_ARG, "index is NULL");
    FILO_CHECK_FAILS(filo_index_select(x, 0, idx, NULL), FILO_ERR_INVALID_ARG, "out is NULL");

    FILO_CHECK_FAILS(filo_index_add(xi, 0, idx, 4, &y), FILO_ERR_DTYPE, "filo_index_add: dy must be f32, f64, bf16 or f16");
    FILO_CHECK_FAILS(filo_index_add(x, 1, idx, 4, &y), FILO_ERR_SHAPE,
                     "index i64[4] cpu must be 1-D with the size of dim 1 of dy f32[4, 7] cpu");
    FILO_CHECK_FAILS(filo_index_add(x, 0, idx, -1, &y), FILO_ERR_INVALID_ARG, "size must be >= 0");
    FILO_CHECK_FAILS(filo_index_add(x, 0, idx, 4, NULL), FILO_ERR_INVALID_ARG, "dx is NULL");

    FILO_CHECK_FAILS(filo_gather(x, 0, idx, &y), FILO_ERR_SHAPE, "index i64[4] cpu must have the dims of x f32[4, 7] cpu");
    FILO_CHECK_FAILS(filo_gather(x, 1, idx2, &y), FILO_ERR_SHAPE, "none larger except dim 1");
    FILO_CHECK_FAILS(filo_gather(x, -3, idx2, &y), FILO_ERR_INVALID_ARG, "filo_gather: dim -3");

    FILO_CHECK_FAILS(filo_scatter_add(x, 0, idx2, x64, &y), FILO_ERR_DTYPE, "src f64[4, 7] cpu must have the dtype of self");
    FILO_CHECK_FAILS(filo_scatter_add(x, 0, idx2, x, &y), FILO_ERR_SHAPE, "none larger than src's");
    FILO_CHECK_FAILS(filo_scatter_add(xi, 0, idx2, xi, &y), FILO_ERR_DTYPE, "self must be f32, f64, bf16 or f16");
    FILO_CHECK_FAILS(filo_scatter_add(x, 0, fidx, x, &y), FILO_ERR_DTYPE, "index must be i64 or i32");
    FILO_CHECK_FAILS(filo_scatter_add(x, 0, idx2, NULL, &y), FILO_ERR_INVALID_ARG, "src is NULL");

    FILO_CHECK_FAILS(filo_embedding(idx, idx, &y), FILO_ERR_SHAPE, "filo_embedding: weight must be [V, D], got i64[4]");
    FILO_CHECK_FAILS(filo_embedding(x, fidx, &y), FILO_ERR_DTYPE, "ids must be i64 or i32");
    FILO_CHECK_FAILS(filo_embedding_backward(x, idx2, 4, -1, &y), FILO_ERR_SHAPE,
                     "dy f32[4, 7] cpu must have the shape of ids i64[5, 7] cpu plus a last dim D");
    FILO_CHECK_FAILS(filo_embedding_backward(x, idx, 4, 4, &y), FILO_ERR_INVALID_ARG, "padding_idx 4 must be -1 or in [0, 4)");
    FILO_CHECK_FAILS(filo_embedding_backward(x, idx, 4, -2, &y), FILO_ERR_INVALID_ARG, "padding_idx -2");
    FILO_CHECK_FAILS(filo_embedding_backward(x, idx, -1, -1, &y), FILO_ERR_INVALID_ARG, "num_weights must be >= 0");
    FILO_CHECK_FAILS(filo_embedding_backward(xi, idx, 4, -1, &y), FILO_ERR_DTYPE, "dy must be f32");

    FILO_CHECK_FAILS(filo_masked_fill(x, m, 0, &y), FILO_ERR_DTYPE, "mask must be u8, got f32[4, 7] cpu");
    FILO_CHECK_FAILS(filo_masked_fill(x, m8, 0, &y), FILO_ERR_SHAPE, "mask u8[2, 7] cpu does not broadcast to x f32[4, 7] cpu");
    FILO_CHECK_FAILS(filo_masked_fill(x, NULL, 0, &y), FILO_ERR_INVALID_ARG, "mask is NULL");
    filo_tensor *m17;
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_U8, 1, (int64_t[]){7}, &m17));
    FILO_CHECK_FAILS(filo_masked_fill(xi, m17, NAN, &y), FILO_ERR_INVALID_ARG, "value nan does not fit in i32");
    FILO_CHECK_FAILS(filo_masked_fill(m8, m17, 300, &y), FILO_ERR_INVALID_ARG, "filo_masked_fill: value 300 does not fit in u8");
    filo_tensor_free(m17);

    if (filo_cuda_device_count() > 0) {
        filo_tensor *ic;
        FILO_CHECK(filo_tensor_to(idx, filo_cuda(0), &ic));
        FILO_CHECK_FAILS(filo_index_select(x, 0, ic, &y), FILO_ERR_DEVICE, "index i64[4] cuda:0 is not on the device of f32[4, 7] cpu");
        FILO_CHECK_FAILS(filo_embedding_backward(x, ic, 4, -1, &y), FILO_ERR_DEVICE, "ids i64[4] cuda:0");
        filo_tensor_free(ic);
    }
    filo_tensor *all[] = {x, x64, xi, idx, idx2, fidx, m, m8};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}
