/* Differentiable fused attention (filo/ag.h): finite differences in float64 on the CPU and f32
 * parity on every backend, without a mask, causal, with key lengths (i32 and i64, an empty row),
 * both, and with dropout (the generator re-seeded identically in every forward, so each draws
 * the same mask); D = 32, 64 and 128; constant operands; strided q/k/v views; a bad argument. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"

typedef struct attn_args {
    const char *name;
    int64_t B, H, Lq, Lk, D;
    int causal;
    filo_tensor *lens; /* NULL or [B] on the CPU */
    double p;          /* dropout */
    uint64_t seed;
} attn_args;

static filo_status run_attn(void *ctx, filo_var *const *in, filo_var **out)
{
    const attn_args *a = ctx;
    filo_device dev = filo_var_value(in[0])->device;
    filo_tensor *lens = NULL;
    if (a->lens) {
        filo_status s = filo_tensor_to(a->lens, dev, &lens);
        if (s != FILO_OK)
            return s;
    }
    filo_attention_mask mask = {.key_lengths = lens, .causal = a->causal};
    filo_generator gen;
    filo_generator_init(&gen, a->seed);
    filo_status s = filo_ag_attention(in[0], in[1], in[2], a->lens || a->causal ? &mask : NULL,
                                      1.0 / sqrt((double)a->D), a->p, &gen, out);
    /* The node keeps its own handle on the lengths. */
    filo_tensor_free(lens);
    return s;
}

static gradcheck_case attn_case(attn_args *a)
{
    gradcheck_case c = {.name = a->name, .n_inputs = 3, .fn = run_attn, .ctx = a};
    c.inputs[0] = (gradcheck_input){.ndim = 4, .shape = {a->B, a->H, a->Lq, a->D}, .lo = -1.0, .hi = 1.0};
    c.inputs[1] = (gradcheck_input){.ndim = 4, .shape = {a->B, a->H, a->Lk, a->D}, .lo = -1.0, .hi = 1.0};
    c.inputs[2] = c.inputs[1];
    return c;
}

static filo_tensor *lengths(filo_dtype dtype, int64_t b, const double *v)
{
    return filo_test_upload(filo_cpu(), dtype, 1, &b, v);
}

#define N_MASKS 6

/* The mask and dropout variants on one shape; lens[] are the key lengths of B = 2. */
static void mask_variants(attn_args *out, int64_t Lq, int64_t Lk, int64_t D, const double *lens, filo_dtype lens_dtype)
{
    attn_args base = {.B = 1, .H = 1, .Lq = Lq, .Lk = Lk, .D = D, .seed = 99};
    out[0] = base;
    out[0].name = "attention";
    out[1] = base;
    out[1].name = "attention causal";
    out[1].causal = 1;
    out[2] = base;
    out[2].name = "attention key_lengths";
    out[2].B = 2;
    out[2].lens = lengths(lens_dtype, 2, lens);
    out[3] = out[2];
    out[3].name = "attention causal key_lengths";
    out[3].causal = 1;
    out[3].lens = lengths(lens_dtype, 2, lens);
    out[4] = base;
    out[4].name = "attention dropout";
    out[4].p = 0.3;
    out[5] = out[4];
    out[5].name = "attention causal dropout";
    out[5].causal = 1;
}

static void free_variants(attn_args *v, int n)
{
    for (int i = 0; i < n; i++)
        filo_tensor_free(v[i].lens);
}

Test(ag_attention, finite_differences)
{
    attn_args v[N_MASKS];
    const double lens[2] = {3, 1};
    mask_variants(v, 3, 4, 32, lens, FILO_I64);
    for (int i = 0; i < N_MASKS; i++) {
        gradcheck_case c = attn_case(&v[i]);
        gradcheck_fd(&c);
    }
    free_variants(v, N_MASKS);
}

/* Each operand alone needs a gradient. */
Test(ag_attention, constant_inputs)
{
    attn_args v[N_MASKS];
    const double lens[2] = {2, 3};
    mask_variants(v, 4, 3, 32, lens, FILO_I32);
    for (int i = 0; i < N_MASKS; i += 3) {
        gradcheck_case c = attn_case(&v[i]);
        for (int only = 0; only < 3; only++) {
            for (int k = 0; k < 3; k++)
                c.inputs[k].no_grad = k != only;
            gradcheck_fd(&c);
            gradcheck_parity(&c, FILO_F32);
        }
    }
    free_variants(v, N_MASKS);
}

Test(ag_attention, parity)
{
    const double lens[2] = {7, 0}; /* the second batch has no valid key: zero gradients */
    for (int l = 0; l < 2; l++) {
        attn_args v[N_MASKS];
        mask_variants(v, 5, 7, 64, lens, l ? FILO_I32 : FILO_I64);
        for (int i = 0; i < N_MASKS; i++) {
            v[i].H = 2;
            gradcheck_case c = attn_case(&v[i]);
            gradcheck_parity(&c, FILO_F32);
        }
        free_variants(v, N_MASKS);
    }
}

Test(ag_attention, head_dims)
{
    const int64_t dims[3] = {32, 64, 128};
    for (int d = 0; d < 3; d++) {
        attn_args a = {.name = "attention", .B = 2, .H = 1, .Lq = 4, .Lk = 6, .D = dims[d], .causal = 1, .p = 0.2,
                       .seed = 5};
        gradcheck_case c = attn_case(&a);
        gradcheck_parity(&c, FILO_F32);
    }
}

/* q, k and v as the permuted views of one [B, L, 3, H, D] projection (BERT's layout) give the
 * gradients of contiguous copies of the same values. */
Test(ag_attention, strided_views)
{
    enum { B = 2, L = 5, H = 2, D = 32 };
    const int64_t shape[5] = {B, L, 3, H, D}, out_shape[4] = {B, H, L, D};
    const int64_t n = B * L * 3 * H * D, n_out = B * H * L * D;
    double *vals = malloc(sizeof *vals * (size_t)n), *w = malloc(sizeof *w * (size_t)n_out);
    filo_test_fill_random(vals, n, 11, -1.0, 1.0);
    filo_test_fill_random(w, n_out, 12, -1.0, 1.0);
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int b = 0; b < nd; b++) {
        filo_tensor *buf = filo_test_upload(devs[b], FILO_F32, 5, shape, vals);
        filo_tensor *tw = filo_test_upload(devs[b], FILO_F32, 4, out_shape, w);
        double *grads[2][3];
        for (int contiguous = 0; contiguous < 2; contiguous++) {
            filo_var *in[3], *out;
            for (int i = 0; i < 3; i++) {
                const int perm[4] = {0, 2, 1, 3};
                filo_tensor *s, *sq, *view, *t;
                FILO_CHECK(filo_tensor_slice(buf, 2, i, i + 1, 1, &s));
                FILO_CHECK(filo_tensor_squeeze(s, 2, &sq));
                FILO_CHECK(filo_tensor_permute(sq, perm, &view));
                cr_assert(contiguous || !filo_tensor_is_contiguous(view));
                if (contiguous)
                    FILO_CHECK(filo_tensor_contiguous(view, &t));
                else
                    FILO_CHECK(filo_tensor_alias(view, &t));
                FILO_CHECK(filo_var_new(t, 1, &in[i]));
                filo_tensor_free(s);
                filo_tensor_free(sq);
                filo_tensor_free(view);
                filo_tensor_free(t);
            }
            filo_attention_mask mask = {.causal = 1};
            FILO_CHECK(filo_ag_attention(in[0], in[1], in[2], &mask, 1.0 / sqrt((double)D), 0.0, NULL, &out));
            FILO_CHECK(filo_backward(out, tw, 0));
            for (int i = 0; i < 3; i++) {
                grads[contiguous][i] = filo_test_download(filo_var_grad(in[i]));
                filo_var_free(in[i]);
            }
            filo_var_free(out);
        }
        for (int i = 0; i < 3; i++) {
            for (int64_t k = 0; k < n_out; k++)
                cr_assert(fabs(grads[0][i][k] - grads[1][i][k]) <= 1e-5 + 1e-5 * fabs(grads[1][i][k]),
                          "on %s: input %d [%lld]: view %g, contiguous %g", filo_test_backend_name(devs[b]), i,
                          (long long)k, grads[0][i][k], grads[1][i][k]);
            free(grads[0][i]);
            free(grads[1][i]);
        }
        filo_tensor_free(buf);
        filo_tensor_free(tw);
    }
    free(vals);
    free(w);
}

Test(ag_attention, bad_arguments)
{
    const int64_t shape[4] = {1, 1, 2, 32};
    filo_tensor *t;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 4, shape, &t));
    filo_var *q, *y = NULL;
    FILO_CHECK(filo_var_new(t, 1, &q));
    FILO_CHECK_FAILS(filo_ag_attention(q, NULL, q, NULL, 1.0, 0.0, NULL, &y), FILO_ERR_INVALID_ARG,
                     "must not be NULL");
    cr_assert(!y);
    filo_var_free(q);
    filo_tensor_free(t);
}
