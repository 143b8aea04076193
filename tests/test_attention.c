/* Fused attention (include/filo/attention.h): forward and backward parity on every backend
 * against float64 references written here (plain softmax over the full Lq x Lk matrix, the
 * masks and the dropout rule spelled out), strided Q/K/V views as BERT makes them, a
 * finite-difference gradient check in f64, the bitwise reproducibility of the CUDA backward,
 * empty shapes and every bad-input error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/attention.h"
#include "parity.h"

#define SEED 1234

typedef struct attn_ctx {
    int64_t B, H, Lq, Lk, D;
    int causal;
    const int64_t *lens; /* NULL or [B] */
    filo_dtype lens_dtype;
    double p;            /* dropout */
    int strided;         /* pass q, k, v (and dout) as permuted views of [B, L, 3, H, D] buffers */
    int shared_kv;       /* pass k and v as head 0 expanded over the heads (stride 0) */
} attn_ctx;

/* The (b, h) pair whose K and V rows head h of batch row b reads. */
static int64_t kv_pair(const attn_ctx *c, int64_t b, int64_t h) { return b * c->H + (c->shared_kv ? 0 : h); }

static double scale_of(const attn_ctx *c) { return 1.0 / sqrt((double)c->D); }

/* ---- the f64 reference ---- */

static uint32_t threshold_of(double p)
{
    double t = p * 4294967296.0 + 0.5;
    return t >= 4294967295.0 ? 4294967295u : (uint32_t)t;
}

/* The dropout factor of element idx: runtime/element.h's rule, through the public Philox. */
static double drop_factor(const attn_ctx *c, uint64_t offset, uint64_t idx)
{
    if (c->p == 0)
        return 1.0;
    uint32_t r[4];
    filo_philox4x32(offset + idx / 4u, 0, SEED, r);
    return r[idx & 3u] >= threshold_of(c->p) && c->p < 1 ? 1.0 / (1.0 - c->p) : 0.0;
}

/* The offset a fresh generator seeded with SEED hands to the first dropout. */
static uint64_t first_offset(void)
{
    filo_generator g;
    filo_generator_init(&g, SEED);
    return filo_generator_advance(&g, 1);
}

static int valid(const attn_ctx *c, int64_t b, int64_t i, int64_t j)
{
    int64_t n = c->lens ? c->lens[b] : c->Lk;
    return j < n && (!c->causal || j <= i);
}

/* Row (b, h, i): P (undropped softmax) and the dropout factors into p[Lk], mk[Lk]; returns lse. */
static double ref_row(const attn_ctx *c, const double *q, const double *k, int64_t b, int64_t h, int64_t i,
                      double *p, double *mk)
{
    int64_t D = c->D, Lk = c->Lk, bh = b * c->H + h, kh = kv_pair(c, b, h);
    const double *qi = q + (bh * c->Lq + i) * D;
    double mx = -INFINITY;
    for (int64_t j = 0; j < Lk; j++) {
        p[j] = -INFINITY;
        if (valid(c, b, i, j)) {
            double s = 0;
            for (int64_t d = 0; d < D; d++)
                s += qi[d] * k[(kh * Lk + j) * D + d];
            p[j] = s * scale_of(c);
        }
        mx = p[j] > mx ? p[j] : mx;
    }
    double sum = 0;
    for (int64_t j = 0; j < Lk; j++) {
        p[j] = p[j] == -INFINITY ? 0.0 : exp(p[j] - mx);
        sum += p[j];
    }
    for (int64_t j = 0; j < Lk; j++) {
        p[j] = sum > 0 ? p[j] / sum : 0.0;
        mk[j] = drop_factor(c, first_offset(), (uint64_t)((bh * c->Lq + i) * Lk + j));
    }
    return sum > 0 ? mx + log(sum) : -INFINITY;
}

static void reference_forward(void *ctx, double *const *in, const parity_input *shapes, double **want)
{
    (void)shapes;
    const attn_ctx *c = ctx;
    int64_t D = c->D, Lk = c->Lk;
    double *p = malloc(sizeof(double) * (size_t)(2 * Lk + 2)), *mk = p + Lk + 1;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < c->H; h++)
            for (int64_t i = 0; i < c->Lq; i++) {
                int64_t bh = b * c->H + h, row = bh * c->Lq + i;
                want[1][row] = ref_row(c, in[0], in[1], b, h, i, p, mk);
                for (int64_t d = 0; d < D; d++) {
                    double o = 0;
                    for (int64_t j = 0; j < Lk; j++)
                        o += p[j] * mk[j] * in[2][(kv_pair(c, b, h) * Lk + j) * D + d];
                    want[0][row * D + d] = o;
                }
            }
    free(p);
}

/* in: dout, q, k, v; want: dq, dk, dv. */
static void reference_backward(void *ctx, double *const *in, const parity_input *shapes, double **want)
{
    (void)shapes;
    const attn_ctx *c = ctx;
    int64_t D = c->D, Lk = c->Lk, Lq = c->Lq;
    const double *g = in[0], *q = in[1], *k = in[2], *v = in[3];
    double *dq = want[0], *dk = want[1], *dv = want[2], scale = scale_of(c);
    memset(dk, 0, sizeof(double) * (size_t)(c->B * c->H * Lk * D));
    memset(dv, 0, sizeof(double) * (size_t)(c->B * c->H * Lk * D));
    double *p = malloc(sizeof(double) * (size_t)(3 * Lk + 3)), *mk = p + Lk + 1, *dp = mk + Lk + 1;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < c->H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                int64_t bh = b * c->H + h, row = bh * Lq + i, kh = kv_pair(c, b, h);
                ref_row(c, q, k, b, h, i, p, mk);
                const double *gi = g + row * D, *qi = q + row * D;
                double delta = 0;
                for (int64_t j = 0; j < Lk; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < D; d++)
                        s += gi[d] * v[(kh * Lk + j) * D + d];
                    dp[j] = s * mk[j];
                    delta += p[j] * dp[j];
                }
                for (int64_t d = 0; d < D; d++)
                    dq[row * D + d] = 0;
                for (int64_t j = 0; j < Lk; j++) {
                    double ds = p[j] * (dp[j] - delta) * scale, pd = p[j] * mk[j];
                    for (int64_t d = 0; d < D; d++) {
                        dq[row * D + d] += ds * k[(kh * Lk + j) * D + d];
                        dk[(bh * Lk + j) * D + d] += ds * qi[d];
                        dv[(bh * Lk + j) * D + d] += pd * gi[d];
                    }
                }
            }
    free(p);
}

/* ---- running the op ---- */

/* A [B, H, L, D] view with t's values whose B, H and L strides are those of a slice of a
 * [B, L, 3, H, D] buffer (BERT's fused QKV projection), unit stride in D. */
static filo_tensor *qkv_view(const filo_tensor *t, int which)
{
    int64_t shape[5] = {t->shape[0], t->shape[2], 3, t->shape[1], t->shape[3]};
    filo_tensor *buf, *slice, *sq, *view;
    FILO_CHECK(filo_tensor_empty(t->device, t->dtype, 5, shape, &buf));
    FILO_CHECK(filo_tensor_slice(buf, 2, which, which + 1, 1, &slice));
    FILO_CHECK(filo_tensor_squeeze(slice, 2, &sq));
    FILO_CHECK(filo_tensor_transpose(sq, 1, 2, &view));
    FILO_CHECK(filo_tensor_copy(view, t));
    cr_assert(!filo_tensor_is_contiguous(view) && view->strides[3] == 1);
    filo_tensor_free(buf);
    filo_tensor_free(slice);
    filo_tensor_free(sq);
    return view;
}

static filo_tensor *lens_tensor(const attn_ctx *c, filo_device dev)
{
    if (!c->lens)
        return NULL;
    double v[16];
    for (int64_t b = 0; b < c->B; b++)
        v[b] = (double)c->lens[b];
    return filo_test_upload(dev, c->lens_dtype, 1, &c->B, v);
}

/* Head 0 of a [B, H, L, D] tensor expanded over the H heads: a view with head stride 0. */
static filo_tensor *head0_expanded(const filo_tensor *t)
{
    filo_tensor *slice, *view;
    FILO_CHECK(filo_tensor_slice(t, 1, 0, 1, 1, &slice));
    FILO_CHECK(filo_tensor_expand(slice, 4, t->shape, &view));
    cr_assert(view->strides[1] == 0);
    filo_tensor_free(slice);
    return view;
}

/* Operands as the case wants them: the parity inputs themselves, strided copies or head 0 of k
 * and v shared by all heads. */
static void operands(const attn_ctx *c, filo_tensor *const *in, int n, filo_tensor **ops)
{
    for (int i = 0; i < n; i++) {
        if (c->shared_kv && i > 0)
            ops[i] = head0_expanded(in[i]);
        else if (c->strided)
            ops[i] = qkv_view(in[i], i % 3);
        else
            FILO_CHECK(filo_tensor_alias(in[i], &ops[i]));
    }
}

static filo_status run_forward(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const attn_ctx *c = ctx;
    filo_tensor *ops[3];
    operands(c, in, 3, ops);
    filo_tensor *lens = lens_tensor(c, in[0]->device);
    filo_attention_mask mask = {lens, c->causal};
    filo_generator gen;
    filo_generator_init(&gen, SEED);
    filo_attention_dropout state;
    filo_status s = filo_attention_forward(ops[0], ops[1], ops[2], &mask, scale_of(c), c->p, &gen, &out[0], &out[1],
                                           &state);
    if (s == FILO_OK) {
        cr_assert_eq(state.p, c->p);
        cr_assert_eq(state.seed, c->p > 0 ? (uint64_t)SEED : 0u);
    }
    for (int i = 0; i < 3; i++)
        filo_tensor_free(ops[i]);
    filo_tensor_free(lens);
    return s;
}

/* in: dout, q, k, v. Runs the forward on the same backend, then the backward. */
static filo_status run_backward(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const attn_ctx *c = ctx;
    filo_tensor *ops[4];
    operands(c, in + 1, 3, ops + 1);
    if (c->strided)
        ops[0] = qkv_view(in[0], 1);
    else
        FILO_CHECK(filo_tensor_alias(in[0], &ops[0]));
    filo_tensor *lens = lens_tensor(c, in[0]->device), *o = NULL, *lse = NULL;
    filo_attention_mask mask = {lens, c->causal};
    filo_generator gen;
    filo_generator_init(&gen, SEED);
    filo_attention_dropout state;
    filo_status s = filo_attention_forward(ops[1], ops[2], ops[3], &mask, scale_of(c), c->p, &gen, &o, &lse, &state);
    if (s == FILO_OK)
        s = filo_attention_backward(ops[0], ops[1], ops[2], ops[3], o, lse, &mask, scale_of(c), &state, &out[0],
                                    &out[1], &out[2]);
    for (int i = 0; i < 4; i++)
        filo_tensor_free(ops[i]);
    filo_tensor_free(lens);
    filo_tensor_free(o);
    filo_tensor_free(lse);
    return s;
}

static parity_input input4(filo_dtype t, int64_t B, int64_t H, int64_t L, int64_t D, double lo, double hi)
{
    parity_input p = {.dtype = t, .ndim = 4, .shape = {B, H, L, D}, .lo = lo, .hi = hi};
    return p;
}

static void set_tol(parity_case *pc, filo_dtype t)
{
    pc->rtol = parity_default_rtol(t);
    pc->atol = pc->rtol;
    pc->norm_tol = pc->rtol;
}

static void case_name(char *name, size_t size, const char *what, const attn_ctx *c, filo_dtype t)
{
    snprintf(name, size, "attention %s %s B=%lld H=%lld Lq=%lld Lk=%lld D=%lld%s%s p=%g%s%s", what, filo_dtype_name(t),
             (long long)c->B, (long long)c->H, (long long)c->Lq, (long long)c->Lk, (long long)c->D,
             c->causal ? " causal" : "", c->lens ? " ragged" : "", c->p, c->strided ? " strided" : "",
             c->shared_kv ? " shared kv" : "");
}

static void forward_case(attn_ctx c, filo_dtype t)
{
    char name[200];
    case_name(name, sizeof name, "forward", &c, t);
    parity_case pc = {.name = name, .run = run_forward, .reference = reference_forward, .ctx = &c, .seed = 7};
    pc.inputs[pc.n_inputs++] = input4(t, c.B, c.H, c.Lq, c.D, -1.5, 1.5);
    pc.inputs[pc.n_inputs++] = input4(t, c.B, c.H, c.Lk, c.D, -1.5, 1.5);
    pc.inputs[pc.n_inputs++] = input4(t, c.B, c.H, c.Lk, c.D, -1.0, 1.0);
    pc.n_outputs = 2;
    set_tol(&pc, t);
    parity_run(&pc);
}

static void backward_case(attn_ctx c, filo_dtype t)
{
    char name[200];
    case_name(name, sizeof name, "backward", &c, t);
    parity_case pc = {.name = name, .run = run_backward, .reference = reference_backward, .ctx = &c, .seed = 11};
    pc.inputs[pc.n_inputs++] = input4(t, c.B, c.H, c.Lq, c.D, -1.0, 1.0);
    pc.inputs[pc.n_inputs++] = input4(t, c.B, c.H, c.Lq, c.D, -1.5, 1.5);
    pc.inputs[pc.n_inputs++] = input4(t, c.B, c.H, c.Lk, c.D, -1.5, 1.5);
    pc.inputs[pc.n_inputs++] = input4(t, c.B, c.H, c.Lk, c.D, -1.0, 1.0);
    pc.n_outputs = 3;
    set_tol(&pc, t);
    parity_run(&pc);
}

static const int64_t head_dims[] = {32, 64, 128};
static const int64_t lens_3_129[3] = {0, 129, 50};
static const int64_t lens_3_33[3] = {33, 0, 17};

/* The shapes every dtype and head dim goes through: Lq != Lk both ways, odd lengths, ragged key
 * lengths with an empty and a full sequence, causal on and off. */
static int shape_cases(int64_t D, attn_ctx *out)
{
    int n = 0;
    out[n++] = (attn_ctx){.B = 1, .H = 1, .Lq = 1, .Lk = 1, .D = D};
    out[n++] = (attn_ctx){.B = 2, .H = 2, .Lq = 7, .Lk = 33, .D = D};
    out[n++] = (attn_ctx){.B = 3, .H = 1, .Lq = 33, .Lk = 129, .D = D, .causal = 1, .lens = lens_3_129,
                          .lens_dtype = FILO_I64};
    out[n++] = (attn_ctx){.B = 1, .H = 2, .Lq = 129, .Lk = 7, .D = D, .causal = 1};
    out[n++] = (attn_ctx){.B = 3, .H = 1, .Lq = 7, .Lk = 33, .D = D, .lens = lens_3_33, .lens_dtype = FILO_I32};
    return n;
}

static void forward_sweep(filo_dtype t)
{
    for (int di = 0; di < 3; di++) {
        attn_ctx cs[8];
        int n = shape_cases(head_dims[di], cs);
        for (int i = 0; i < n; i++)
            forward_case(cs[i], t);
    }
}

Test(attention, forward_f32) { forward_sweep(FILO_F32); }
Test(attention, forward_bf16) { forward_sweep(FILO_BF16); }
Test(attention, forward_f16) { forward_sweep(FILO_F16); }

Test(attention, forward_f64_cpu)
{
    /* f64 runs on the CPU only: check it against the reference directly. */
    attn_ctx c = {.B = 3, .H = 1, .Lq = 7, .Lk = 33, .D = 32, .causal = 1, .lens = lens_3_33, .lens_dtype = FILO_I32,
                  .p = 0.2};
    int64_t nq = c.B * c.H * c.Lq * c.D, nk = c.B * c.H * c.Lk * c.D;
    double *v[3] = {malloc(8 * (size_t)nq), malloc(8 * (size_t)nk), malloc(8 * (size_t)nk)};
    for (int i = 0; i < 3; i++)
        filo_test_fill_random(v[i], i ? nk : nq, 50 + (uint64_t)i, -1.5, 1.5);
    filo_tensor *in[3];
    in[0] = filo_test_upload(filo_cpu(), FILO_F64, 4, (int64_t[]){c.B, c.H, c.Lq, c.D}, v[0]);
    in[1] = filo_test_upload(filo_cpu(), FILO_F64, 4, (int64_t[]){c.B, c.H, c.Lk, c.D}, v[1]);
    in[2] = filo_test_upload(filo_cpu(), FILO_F64, 4, (int64_t[]){c.B, c.H, c.Lk, c.D}, v[2]);
    filo_tensor *out[2];
    FILO_CHECK(run_forward(&c, in, out));
    cr_assert_eq(out[1]->dtype, FILO_F64);
    double *want[2] = {malloc(8 * (size_t)nq), malloc(8 * (size_t)(c.B * c.H * c.Lq))};
    reference_forward(&c, v, NULL, want);
    for (int o = 0; o < 2; o++) {
        double *got = filo_test_download(out[o]);
        int64_t n = filo_tensor_numel(out[o]);
        for (int64_t i = 0; i < n; i++)
            cr_assert(got[i] == want[o][i] || fabs(got[i] - want[o][i]) <= 1e-12 * (1 + fabs(want[o][i])),
                      "output %d element %lld: %.17g, want %.17g", o, (long long)i, got[i], want[o][i]);
        free(got);
        free(want[o]);
        filo_tensor_free(out[o]);
    }
    for (int i = 0; i < 3; i++) {
        filo_tensor_free(in[i]);
        free(v[i]);
    }
}

Test(attention, forward_dropout)
{
    /* CPU and CUDA drop the same elements: parity_run compares them, and both with the reference
     * that applies the rule itself. */
    for (int di = 0; di < 3; di++) {
        attn_ctx c = {.B = 3, .H = 1, .Lq = 33, .Lk = 33, .D = head_dims[di], .causal = di == 1, .lens = lens_3_33,
                      .lens_dtype = FILO_I64, .p = 0.3};
        forward_case(c, FILO_F32);
    }
    attn_ctx c = {.B = 2, .H = 2, .Lq = 7, .Lk = 129, .D = 64, .p = 0.1};
    forward_case(c, FILO_BF16);
    c.p = 1.0; /* everything dropped: out = 0 */
    forward_case(c, FILO_F32);
}

Test(attention, forward_strided_views)
{
    for (int di = 0; di < 3; di++) {
        attn_ctx c = {.B = 2, .H = 2, .Lq = 33, .Lk = 33, .D = head_dims[di], .causal = 1, .strided = 1};
        forward_case(c, FILO_F32);
        if (di == 1)
            forward_case(c, FILO_BF16);
    }
}

Test(attention, forward_non_unit_d_stride)
{
    /* Q, K, V stored transposed in their last two dims: copied to unit D stride first. */
    attn_ctx c = {.B = 1, .H = 2, .Lq = 7, .Lk = 33, .D = 32};
    char name[200];
    case_name(name, sizeof name, "forward transposed", &c, FILO_F32);
    parity_case pc = {.name = name, .run = run_forward, .reference = reference_forward, .ctx = &c, .seed = 3};
    for (int i = 0; i < 3; i++) {
        pc.inputs[pc.n_inputs] = input4(FILO_F32, c.B, c.H, i ? c.Lk : c.Lq, c.D, -1, 1);
        pc.inputs[pc.n_inputs++].transpose_last = 1;
    }
    pc.n_outputs = 2;
    set_tol(&pc, FILO_F32);
    parity_run(&pc);
}

/* ---- backward ---- */

Test(attention, backward_f32)
{
    for (int di = 0; di < 3; di++) {
        attn_ctx cs[8];
        int n = shape_cases(head_dims[di], cs);
        for (int i = 0; i < n; i++)
            backward_case(cs[i], FILO_F32);
    }
}

Test(attention, backward_half)
{
    for (int di = 0; di < 3; di++) {
        attn_ctx c = {.B = 3, .H = 1, .Lq = 33, .Lk = 129, .D = head_dims[di], .causal = 1, .lens = lens_3_129,
                      .lens_dtype = FILO_I64};
        backward_case(c, FILO_BF16);
    }
    attn_ctx c = {.B = 2, .H = 2, .Lq = 7, .Lk = 33, .D = 64};
    backward_case(c, FILO_F16);
}

Test(attention, backward_dropout_and_strided)
{
    for (int di = 0; di < 3; di++) {
        attn_ctx c = {.B = 3, .H = 1, .Lq = 33, .Lk = 33, .D = head_dims[di], .causal = di != 1, .lens = lens_3_33,
                      .lens_dtype = FILO_I32, .p = 0.25};
        backward_case(c, FILO_F32);
        attn_ctx s = {.B = 2, .H = 2, .Lq = 33, .Lk = 33, .D = head_dims[di], .causal = di == 0, .strided = 1};
        backward_case(s, FILO_F32);
    }
}

Test(attention, shared_kv_heads)
{
    /* k and v of one head read by every head (multi-query attention), through a head stride of 0:
     * the CPU GEMMs take it in place. dk and dv are per head (the gradients of the view). */
    attn_ctx c = {.B = 2, .H = 3, .Lq = 33, .Lk = 65, .D = 64, .causal = 1, .p = 0.1, .shared_kv = 1};
    forward_case(c, FILO_F32);
    backward_case(c, FILO_F32);
    forward_case(c, FILO_BF16);
}

Test(attention, backward_everything_dropped)
{
    /* p = 1: out = 0, so delta = 0 and every gradient is 0. */
    attn_ctx c = {.B = 2, .H = 2, .Lq = 7, .Lk = 33, .D = 64, .causal = 1, .p = 1.0};
    backward_case(c, FILO_F32);
}

/* ---- shapes the CPU path cuts into several tiles ---- */

Test(attention, long_sequences_in_tiles)
{
    /* kernels/cpu/attention.c computes the scores in tiles of 256 KiB: a group of batch rows or of
     * heads times a block of query rows. These take several query blocks with a short last one
     * (causal: each block sees more keys than the one before; Lk >> Lq: blocks of 32 rows), and
     * groups of heads or of batch rows with a short last group, ragged key lengths among them. */
    static const int64_t lens[3] = {600, 0, 411};
    const attn_ctx cs[] = {
        {.B = 1, .H = 1, .Lq = 600, .Lk = 600, .D = 64, .causal = 1, .p = 0.1},
        {.B = 3, .H = 1, .Lq = 300, .Lk = 600, .D = 32, .lens = lens, .lens_dtype = FILO_I64},
        {.B = 1, .H = 1, .Lq = 40, .Lk = 2000, .D = 32},
        {.B = 1, .H = 5, .Lq = 150, .Lk = 150, .D = 32, .causal = 1},
        {.B = 3, .H = 3, .Lq = 100, .Lk = 100, .D = 128, .lens = lens_3_33, .lens_dtype = FILO_I32, .p = 0.2},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        forward_case(cs[i], FILO_F32);
        backward_case(cs[i], FILO_F32);
    }
    forward_case(cs[0], FILO_BF16);
    backward_case(cs[4], FILO_BF16);
}

/* ---- finite differences (f64, CPU) ---- */

/* sum(out * w) for the current values of q, k, v. */
static double fd_loss(const attn_ctx *c, double *const *v, const double *w)
{
    int64_t sq[4] = {c->B, c->H, c->Lq, c->D}, sk[4] = {c->B, c->H, c->Lk, c->D};
    filo_tensor *in[3] = {filo_test_upload(filo_cpu(), FILO_F64, 4, sq, v[0]),
                          filo_test_upload(filo_cpu(), FILO_F64, 4, sk, v[1]),
                          filo_test_upload(filo_cpu(), FILO_F64, 4, sk, v[2])};
    filo_tensor *out[2];
    FILO_CHECK(run_forward((void *)c, in, out));
    double *o = filo_test_download(out[0]), l = 0;
    for (int64_t i = 0; i < filo_tensor_numel(out[0]); i++)
        l += o[i] * w[i];
    free(o);
    for (int i = 0; i < 3; i++)
        filo_tensor_free(in[i]);
    filo_tensor_free(out[0]);
    filo_tensor_free(out[1]);
    return l;
}

static void gradient_check(attn_ctx c)
{
    int64_t nq = c.B * c.H * c.Lq * c.D, nk = c.B * c.H * c.Lk * c.D, len[3] = {nq, nk, nk};
    double *v[3], *w = malloc(sizeof(double) * (size_t)nq);
    for (int i = 0; i < 3; i++) {
        v[i] = malloc(sizeof(double) * (size_t)len[i]);
        filo_test_fill_random(v[i], len[i], 70 + (uint64_t)i, -1.5, 1.5);
    }
    filo_test_fill_random(w, nq, 69, -1, 1);
    int64_t sq[4] = {c.B, c.H, c.Lq, c.D};
    filo_tensor *in[4] = {filo_test_upload(filo_cpu(), FILO_F64, 4, sq, w)};
    for (int i = 0; i < 3; i++) {
        int64_t s[4] = {c.B, c.H, i ? c.Lk : c.Lq, c.D};
        in[i + 1] = filo_test_upload(filo_cpu(), FILO_F64, 4, s, v[i]);
    }
    filo_tensor *g[3];
    FILO_CHECK(run_backward(&c, in, g));
    const double step = 1e-6;
    for (int t = 0; t < 3; t++) {
        double *a = filo_test_download(g[t]);
        for (int64_t i = 0; i < len[t]; i++) {
            double keep = v[t][i];
            v[t][i] = keep + step;
            double lp = fd_loss(&c, v, w);
            v[t][i] = keep - step;
            double lm = fd_loss(&c, v, w);
            v[t][i] = keep;
            double numeric = (lp - lm) / (2 * step);
            cr_assert(fabs(numeric - a[i]) <= 1e-6 + 1e-6 * fabs(a[i]),
                      "d/d%s[%lld]: analytic %.10g, finite difference %.10g (causal %d, p %g)",
                      (const char *[]){"q", "k", "v"}[t], (long long)i, a[i], numeric, c.causal, c.p);
        }
        free(a);
        filo_tensor_free(g[t]);
    }
    for (int i = 0; i < 4; i++)
        filo_tensor_free(in[i]);
    for (int i = 0; i < 3; i++)
        free(v[i]);
    free(w);
}

Test(attention, finite_difference_gradients)
{
    static const int64_t lens[2] = {4, 0};
    gradient_check((attn_ctx){.B = 1, .H = 2, .Lq = 5, .Lk = 4, .D = 32});
    gradient_check((attn_ctx){.B = 2, .H = 1, .Lq = 3, .Lk = 6, .D = 32, .causal = 1, .lens = lens,
                              .lens_dtype = FILO_I64, .p = 0.25});
}

/* ---- determinism of the CUDA backward ---- */

Test(attention, backward_bitwise_deterministic)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs), ran = 0;
    attn_ctx c = {.B = 2, .H = 2, .Lq = 65, .Lk = 97, .D = 64, .causal = 1, .p = 0.2};
    int64_t sq[4] = {c.B, c.H, c.Lq, c.D}, sk[4] = {c.B, c.H, c.Lk, c.D};
    int64_t nq = c.B * c.H * c.Lq * c.D, nk = c.B * c.H * c.Lk * c.D;
    double *vals[4];
    for (int i = 0; i < 4; i++) {
        int64_t n = i >= 2 ? nk : nq;
        vals[i] = malloc(sizeof(double) * (size_t)n);
        filo_test_fill_random(vals[i], n, 90 + (uint64_t)i, -1.5, 1.5);
    }
    for (int b = 0; b < nb; b++) {
        if (devs[b].type != FILO_DEVICE_CUDA)
            continue;
        ran++;
        filo_tensor *in[4];
        for (int i = 0; i < 4; i++)
            in[i] = filo_test_upload(devs[b], FILO_F32, 4, i >= 2 ? sk : sq, vals[i]);
        float *first[3], *again[3];
        for (int run = 0; run < 2; run++) {
            filo_tensor *g[3];
            FILO_CHECK(run_backward(&c, in, g));
            for (int t = 0; t < 3; t++) {
                size_t bytes = filo_tensor_nbytes(g[t]);
                float *dst = malloc(bytes);
                FILO_CHECK(filo_tensor_to_host(g[t], dst, bytes));
                (run == 0 ? first : again)[t] = dst;
                filo_tensor_free(g[t]);
            }
        }
        for (int t = 0; t < 3; t++) {
            cr_assert(memcmp(first[t], again[t], sizeof(float) * (size_t)(t ? nk : nq)) == 0,
                      "attention backward on %s: d%s differs between runs", filo_test_backend_name(devs[b]),
                      (const char *[]){"q", "k", "v"}[t]);
            free(first[t]);
            free(again[t]);
        }
        for (int i = 0; i < 4; i++)
            filo_tensor_free(in[i]);
    }
    cr_log_info("determinism checked on %d cuda backend(s)", ran);
    for (int i = 0; i < 4; i++)
        free(vals[i]);
}

/* ---- empty shapes ---- */

Test(attention, empty_shapes)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        /* Lk = 0: every row has no key (out 0, lse -inf, gradients 0); Lq = 0: nothing. */
        int64_t shapes[2][2] = {{3, 0}, {0, 3}};
        for (int s = 0; s < 2; s++) {
            int64_t sq[4] = {1, 2, shapes[s][0], 32}, sk[4] = {1, 2, shapes[s][1], 32};
            filo_tensor *q, *k, *o, *lse, *dq, *dk, *dv;
            FILO_CHECK(filo_tensor_full(devs[b], FILO_F32, 4, sq, 0.5, &q));
            FILO_CHECK(filo_tensor_full(devs[b], FILO_F32, 4, sk, 0.5, &k));
            FILO_CHECK(filo_attention_forward(q, k, k, NULL, 0.1, 0.0, NULL, &o, &lse, NULL));
            FILO_CHECK(filo_attention_backward(q, q, k, k, o, lse, NULL, 0.1, NULL, &dq, &dk, &dv));
            double *ov = filo_test_download(o), *lv = filo_test_download(lse), *gv = filo_test_download(dq);
            for (int64_t i = 0; i < filo_tensor_numel(o); i++)
                cr_assert_eq(ov[i], 0.0);
            for (int64_t i = 0; i < filo_tensor_numel(lse); i++)
                cr_assert(isinf(lv[i]) && lv[i] < 0, "lse[%lld] = %g on %s", (long long)i, lv[i],
                          filo_test_backend_name(devs[b]));
            for (int64_t i = 0; i < filo_tensor_numel(dq); i++)
                cr_assert_eq(gv[i], 0.0);
            cr_assert_eq(filo_tensor_numel(dk), sk[2] * 64);
            free(ov);
            free(lv);
            free(gv);
            filo_tensor *all[] = {q, k, o, lse, dq, dk, dv};
            for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
                filo_tensor_free(all[i]);
        }
    }
}

/* ---- key lengths out of range on CUDA: clamped (no host sync to check them) ---- */

Test(attention, cuda_clamps_key_lengths)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t sq[4] = {2, 1, 7, 32}, sk[4] = {2, 1, 9, 32}, two = 2;
    double qv[2 * 7 * 32], kv[2 * 9 * 32], bad[2] = {-3, 99}, clamped[2] = {0, 9};
    filo_test_fill_random(qv, 2 * 7 * 32, 5, -1, 1);
    filo_test_fill_random(kv, 2 * 9 * 32, 6, -1, 1);
    double *want = NULL;
    for (int b = 0; b < nb; b++) {
        int cuda = devs[b].type == FILO_DEVICE_CUDA;
        filo_tensor *q = filo_test_upload(devs[b], FILO_F32, 4, sq, qv), *k = filo_test_upload(devs[b], FILO_F32, 4, sk, kv);
        filo_tensor *lens = filo_test_upload(devs[b], FILO_I32, 1, &two, cuda ? bad : clamped), *o, *lse;
        filo_attention_mask mask = {lens, 0};
        FILO_CHECK(filo_attention_forward(q, k, k, &mask, 0.2, 0.0, NULL, &o, &lse, NULL));
        double *got = filo_test_download(o);
        if (!want) {
            want = got;
        } else {
            for (int64_t i = 0; i < 2 * 7 * 32; i++)
                cr_assert(fabs(got[i] - want[i]) <= 1e-5 * (1 + fabs(want[i])), "%s: out[%lld] = %g, want %g",
                          filo_test_backend_name(devs[b]), (long long)i, got[i], want[i]);
            free(got);
        }
        filo_tensor_free(q);
        filo_tensor_free(k);
        filo_tensor_free(lens);
        filo_tensor_free(o);
        filo_tensor_free(lse);
    }
    free(want);
}

/* ---- bad inputs ---- */

static filo_tensor *cpu_tensor(filo_dtype t, int ndim, const int64_t *shape)
{
    filo_tensor *r;
    FILO_CHECK(filo_tensor_full(filo_cpu(), t, ndim, shape, 1.0, &r));
    return r;
}

Test(attention, bad_inputs)
{
    int64_t s32[4] = {2, 3, 5, 32}, s48[4] = {2, 3, 5, 48}, sk[4] = {2, 3, 7, 32}, sk64[4] = {2, 3, 7, 64};
    int64_t sh[4] = {2, 4, 7, 32}, sb[4] = {1, 3, 7, 32}, s3[3] = {2, 3, 5}, s2[1] = {2}, s3b[1] = {3};
    int64_t sv[4] = {2, 3, 8, 32};
    filo_tensor *q = cpu_tensor(FILO_F32, 4, s32), *k = cpu_tensor(FILO_F32, 4, sk), *q48 = cpu_tensor(FILO_F32, 4, s48);
    filo_tensor *k64 = cpu_tensor(FILO_F32, 4, sk64), *kh = cpu_tensor(FILO_F32, 4, sh), *kb = cpu_tensor(FILO_F32, 4, sb);
    filo_tensor *kbf = cpu_tensor(FILO_BF16, 4, sk), *qi = cpu_tensor(FILO_I32, 4, s32), *v8 = cpu_tensor(FILO_F32, 4, sv);
    filo_tensor *q3 = cpu_tensor(FILO_F32, 3, s3), *lse = cpu_tensor(FILO_F32, 3, s3), *lse64 = cpu_tensor(FILO_F64, 3, s3);
    filo_tensor *lens_f = cpu_tensor(FILO_F32, 1, s2), *lens3 = cpu_tensor(FILO_I64, 1, s3b);
    double big[2] = {7, 8}, neg[2] = {-1, 3}, ok[2] = {0, 7};
    filo_tensor *lens_big = filo_test_upload(filo_cpu(), FILO_I32, 1, s2, big);
    filo_tensor *lens_neg = filo_test_upload(filo_cpu(), FILO_I64, 1, s2, neg);
    filo_tensor *lens_ok = filo_test_upload(filo_cpu(), FILO_I64, 1, s2, ok);
    filo_tensor *o, *l, *dq, *dk, *dv;
    filo_generator gen;
    filo_generator_init(&gen, 1);
    filo_attention_mask m_f = {lens_f, 0}, m_3 = {lens3, 0}, m_big = {lens_big, 1}, m_neg = {lens_neg, 0};
    filo_attention_mask m_ok = {lens_ok, 1};

    FILO_CHECK_FAILS(filo_attention_forward(NULL, k, k, NULL, 1, 0, NULL, &o, &l, NULL), FILO_ERR_INVALID_ARG,
                     "filo_attention_forward: q is NULL");
    FILO_CHECK_FAILS(filo_attention_forward(q48, k, k, NULL, 1, 0, NULL, &o, &l, NULL), FILO_ERR_SHAPE,
                     "filo_attention_forward: head dim D = 48 is not supported (32, 64 or 128): q f32[2, 3, 5, 48]");
    FILO_CHECK_FAILS(filo_attention_forward(q3, k, k, NULL, 1, 0, NULL, &o, &l, NULL), FILO_ERR_SHAPE,
                     "q must be [B, H, Lq, D], got f32[2, 3, 5]");
    FILO_CHECK_FAILS(filo_attention_forward(q, k64, k64, NULL, 1, 0, NULL, &o, &l, NULL), FILO_ERR_SHAPE,
                     "k f32[2, 3, 7, 64] cpu must be [B, H, Lk, D] with the B, H, D of q f32[2, 3, 5, 32]");
    FILO_CHECK_FAILS(filo_attention_forward(q, kh, kh, NULL, 1, 0, NULL, &o, &l, NULL), FILO_ERR_SHAPE, "k f32[2, 4, 7, 32]");
    FILO_CHECK_FAILS(filo_attention_forward(q, kb, kb, NULL, 1, 0, NULL, &o, &l, NULL), FILO_ERR_SHAPE, "k f32[1, 3, 7, 32]");
    FILO_CHECK_FAILS(filo_attention_forward(q, k, v8, NULL, 1, 0, NULL, &o, &l, NULL), FILO_ERR_SHAPE,
                     "v f32[2, 3, 8, 32] cpu must have the shape of k");
    FILO_CHECK_FAILS(filo_attention_forward(q, k, kbf, NULL, 1, 0, NULL, &o, &l, NULL), FILO_ERR_DTYPE,
                     "v bf16[2, 3, 7, 32] cpu must have the dtype of q");
    FILO_CHECK_FAILS(filo_attention_forward(qi, k, k, NULL, 1, 0, NULL, &o, &l, NULL), FILO_ERR_DTYPE,
                     "q must be f32, f64, bf16 or f16, got i32");
    FILO_CHECK_FAILS(filo_attention_forward(q, k, k, &m_f, 1, 0, NULL, &o, &l, NULL), FILO_ERR_DTYPE,
                     "key_lengths f32[2] cpu must be i32 or i64");
    FILO_CHECK_FAILS(filo_attention_forward(q, k, k, &m_3, 1, 0, NULL, &o, &l, NULL), FILO_ERR_SHAPE,
                     "key_lengths i64[3] cpu must be [B]");
    FILO_CHECK_FAILS(filo_attention_forward(q, k, k, &m_big, 1, 0, NULL, &o, &l, NULL), FILO_ERR_INVALID_ARG,
                     "key_lengths[1] = 8 is outside [0, Lk = 7]");
    FILO_CHECK_FAILS(filo_attention_forward(q, k, k, &m_neg, 1, 0, NULL, &o, &l, NULL), FILO_ERR_INVALID_ARG,
                     "key_lengths[0] = -1");
    FILO_CHECK_FAILS(filo_attention_forward(q, k, k, NULL, 1, -0.1, &gen, &o, &l, NULL), FILO_ERR_INVALID_ARG,
                     "dropout p must be in [0, 1], got -0.1");
    FILO_CHECK_FAILS(filo_attention_forward(q, k, k, NULL, 1, 1.5, &gen, &o, &l, NULL), FILO_ERR_INVALID_ARG,
                     "dropout p must be in [0, 1], got 1.5");
    FILO_CHECK_FAILS(filo_attention_forward(q, k, k, NULL, 1, NAN, &gen, &o, &l, NULL), FILO_ERR_INVALID_ARG,
                     "dropout p");
    FILO_CHECK_FAILS(filo_attention_forward(q, k, k, NULL, 1, 0.5, NULL, &o, &l, NULL), FILO_ERR_INVALID_ARG,
                     "needs a generator");
    FILO_CHECK_FAILS(filo_attention_forward(q, k, k, NULL, INFINITY, 0, NULL, &o, &l, NULL), FILO_ERR_INVALID_ARG,
                     "scale must be finite");
    FILO_CHECK_FAILS(filo_attention_forward(q, k, k, NULL, 1, 0, NULL, NULL, &l, NULL), FILO_ERR_INVALID_ARG,
                     "output pointer");

    FILO_CHECK(filo_attention_forward(q, k, k, &m_ok, 1, 0, NULL, &o, &l, NULL));
    filo_attention_dropout bad_p = {2.0, 1, 0};
    FILO_CHECK_FAILS(filo_attention_backward(q, q, k, k, o, lse64, &m_ok, 1, NULL, &dq, &dk, &dv), FILO_ERR_DTYPE,
                     "filo_attention_backward: lse f64[2, 3, 5] cpu must be f32");
    FILO_CHECK_FAILS(filo_attention_backward(q, q, k, k, o, q, &m_ok, 1, NULL, &dq, &dk, &dv), FILO_ERR_SHAPE,
                     "lse f32[2, 3, 5, 32] cpu must be [B, H, Lq]");
    FILO_CHECK_FAILS(filo_attention_backward(k, q, k, k, o, l, &m_ok, 1, NULL, &dq, &dk, &dv), FILO_ERR_SHAPE,
                     "dout f32[2, 3, 7, 32] cpu must be [B, H, Lq, D]");
    FILO_CHECK_FAILS(filo_attention_backward(q, q, k, k, NULL, l, &m_ok, 1, NULL, &dq, &dk, &dv), FILO_ERR_INVALID_ARG,
                     "out is NULL");
    FILO_CHECK_FAILS(filo_attention_backward(q, q, k, k, o, l, &m_big, 1, NULL, &dq, &dk, &dv), FILO_ERR_INVALID_ARG,
                     "filo_attention_backward: key_lengths[1] = 8");
    FILO_CHECK_FAILS(filo_attention_backward(q, q, k, k, o, l, &m_ok, 1, &bad_p, &dq, &dk, &dv), FILO_ERR_INVALID_ARG,
                     "dropout p must be in [0, 1], got 2");
    FILO_CHECK_FAILS(filo_attention_backward(q, q, k, k, o, l, &m_ok, 1, NULL, &dq, NULL, &dv), FILO_ERR_INVALID_ARG,
                     "output pointer");
    FILO_CHECK_FAILS(filo_attention_backward(q, q, k64, k64, o, l, &m_ok, 1, NULL, &dq, &dk, &dv), FILO_ERR_SHAPE,
                     "k f32[2, 3, 7, 64]");
    filo_tensor_free(o);
    filo_tensor_free(l);

    if (filo_cuda_device_count() > 0) {
        filo_tensor *kc, *q64, *q64c;
        FILO_CHECK(filo_tensor_to(k, filo_cuda(0), &kc));
        FILO_CHECK_FAILS(filo_attention_forward(q, kc, kc, NULL, 1, 0, NULL, &o, &l, NULL), FILO_ERR_DEVICE,
                         "k f32[2, 3, 7, 32] cuda:0 is not on the device of q f32[2, 3, 5, 32] cpu");
        FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_F64, 4, s32, 1.0, &q64));
        FILO_CHECK(filo_tensor_to(q64, filo_cuda(0), &q64c));
        FILO_CHECK_FAILS(filo_attention_forward(q64c, q64c, q64c, NULL, 1, 0, NULL, &o, &l, NULL), FILO_ERR_DTYPE,
                         "f64 attention runs on the CPU only");
        filo_tensor_free(kc);
        filo_tensor_free(q64);
        filo_tensor_free(q64c);
    }

    filo_tensor *all[] = {q, k, q48, k64, kh, kb, kbf, qi, v8, q3, lse, lse64, lens_f, lens3, lens_big, lens_neg, lens_ok};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}
