/* Fused attention: argument checks, unit-D-stride inputs, output allocation and the dispatch to
 * kernels/cpu/attention.c or kernels/cuda/attention.cu by the inputs' device. */
#include "filo/attention.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "attention_backend.h"
#include "backend.h"
#include "error.h"

#define DESC_LEN 200
#define N_IN 6

static filo_dtype lse_dtype(filo_dtype t) { return t == FILO_F64 ? FILO_F64 : FILO_F32; }

static int is_float(filo_dtype t) { return t == FILO_F32 || t == FILO_F64 || t == FILO_BF16 || t == FILO_F16; }

/* q: a 4-D float tensor [B, H, Lq, D] with D in {32, 64, 128}. */
static filo_status check_q(const char *op, const filo_tensor *q)
{
    char desc[DESC_LEN];
    if (!q)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "q is NULL");
    if (!is_float(q->dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "q must be f32, f64, bf16 or f16, got %s",
                              filo_tensor_describe(q, desc, sizeof desc));
    if (q->ndim != 4)
        return filo_error_set(FILO_ERR_SHAPE, op, "q must be [B, H, Lq, D], got %s",
                              filo_tensor_describe(q, desc, sizeof desc));
    int64_t D = q->shape[3];
    if (D != 32 && D != 64 && D != 128)
        return filo_error_set(FILO_ERR_SHAPE, op, "head dim D = %lld is not supported (32, 64 or 128): q %s",
                              (long long)D, filo_tensor_describe(q, desc, sizeof desc));
    /* The kernels index rows and (b, h) pairs with 32-bit ints. */
    if (q->shape[2] > INT32_MAX || q->shape[0] * q->shape[1] > INT32_MAX)
        return filo_error_set(FILO_ERR_SHAPE, op, "q %s: Lq and B * H must be below 2^31",
                              filo_tensor_describe(q, desc, sizeof desc));
    if (q->device.type == FILO_DEVICE_CUDA && q->dtype == FILO_F64)
        return filo_error_set(FILO_ERR_DTYPE, op, "f64 attention runs on the CPU only, got q %s",
                              filo_tensor_describe(q, desc, sizeof desc));
    return FILO_OK;
}

/* t: 4-D [B, H, L, D] with q's B, H, D, dtype and device; L = q's Lq when same_l. */
static filo_status check_operand(const char *op, const char *what, const filo_tensor *t, const filo_tensor *q,
                                 int same_l)
{
    char a[DESC_LEN], b[DESC_LEN];
    if (!t)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", what);
    if (t->ndim != 4 || t->shape[0] != q->shape[0] || t->shape[1] != q->shape[1] || t->shape[3] != q->shape[3] ||
        (same_l && t->shape[2] != q->shape[2]))
        return filo_error_set(FILO_ERR_SHAPE, op, "%s %s must be [B, H, %s, D] with the B, H, D of q %s", what,
                              filo_tensor_describe(t, a, sizeof a), same_l ? "Lq" : "Lk",
                              filo_tensor_describe(q, b, sizeof b));
    if (t->shape[2] > INT32_MAX)
        return filo_error_set(FILO_ERR_SHAPE, op, "%s %s: L must be below 2^31", what,
                              filo_tensor_describe(t, a, sizeof a));
    if (t->dtype != q->dtype)
        return filo_error_set(FILO_ERR_DTYPE, op, "%s %s must have the dtype of q %s", what,
                              filo_tensor_describe(t, a, sizeof a), filo_tensor_describe(q, b, sizeof b));
    if (!filo_device_equal(t->device, q->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "%s %s is not on the device of q %s", what,
                              filo_tensor_describe(t, a, sizeof a), filo_tensor_describe(q, b, sizeof b));
    return FILO_OK;
}

/* key_lengths: i32/i64 [B] on q's device; on the CPU every value in [0, Lk]. */
static filo_status check_lengths(const char *op, const filo_tensor *len, const filo_tensor *q, int64_t Lk)
{
    char a[DESC_LEN], b[DESC_LEN];
    if (len->dtype != FILO_I32 && len->dtype != FILO_I64)
        return filo_error_set(FILO_ERR_DTYPE, op, "key_lengths %s must be i32 or i64",
                              filo_tensor_describe(len, a, sizeof a));
    if (len->ndim != 1 || len->shape[0] != q->shape[0])
        return filo_error_set(FILO_ERR_SHAPE, op, "key_lengths %s must be [B] for q %s",
                              filo_tensor_describe(len, a, sizeof a), filo_tensor_describe(q, b, sizeof b));
    if (!filo_device_equal(len->device, q->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "key_lengths %s is not on the device of q %s",
                              filo_tensor_describe(len, a, sizeof a), filo_tensor_describe(q, b, sizeof b));
    if (len->device.type == FILO_DEVICE_CPU) {
        const char *base = filo_tensor_data(len);
        size_t es = len->dtype == FILO_I64 ? 8 : 4;
        for (int64_t i = 0; i < len->shape[0]; i++) {
            const char *p = base + (ptrdiff_t)(i * len->strides[0]) * (ptrdiff_t)es;
            int64_t v;
            if (len->dtype == FILO_I64) {
                memcpy(&v, p, 8);
            } else {
                int32_t v32;
                memcpy(&v32, p, 4);
                v = v32;
            }
            if (v < 0 || v > Lk)
                return filo_error_set(FILO_ERR_INVALID_ARG, op, "key_lengths[%lld] = %lld is outside [0, Lk = %lld]",
                                      (long long)i, (long long)v, (long long)Lk);
        }
    }
    return FILO_OK;
}

static filo_status check_dropout_p(const char *op, double p)
{
    if (!(p >= 0.0 && p <= 1.0))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dropout p must be in [0, 1], got %g", p);
    return FILO_OK;
}

static filo_status check_common(const char *op, const filo_tensor *q, const filo_tensor *k, const filo_tensor *v,
                                const filo_attention_mask *mask, double scale)
{
    FILO_TRY(check_q(op, q));
    FILO_TRY(check_operand(op, "k", k, q, 0));
    FILO_TRY(check_operand(op, "v", v, q, 0));
    if (v->shape[2] != k->shape[2]) {
        char a[DESC_LEN], b[DESC_LEN];
        return filo_error_set(FILO_ERR_SHAPE, op, "v %s must have the shape of k %s",
                              filo_tensor_describe(v, a, sizeof a), filo_tensor_describe(k, b, sizeof b));
    }
    if (mask && mask->key_lengths)
        FILO_TRY(check_lengths(op, mask->key_lengths, q, k->shape[2]));
    if (!isfinite(scale))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "scale must be finite, got %g", scale);
    return FILO_OK;
}

/* Inputs with a unit D stride (aliases, or copies of views that lack one), released together. */
typedef struct in_set {
    filo_tensor *t[N_IN];
} in_set;

static void in_free(in_set *s)
{
    for (int i = 0; i < N_IN; i++) {
        filo_tensor_free(s->t[i]);
        s->t[i] = NULL;
    }
}

/* in[i] kept as a strided view when its last stride is 1 (or D == 1), made contiguous when
 * `contig` has bit i or the D stride is not 1. */
static filo_status in_make(in_set *s, const filo_tensor *const *in, int n, unsigned contig)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < n; i++) {
        if (!in[i])
            continue;
        const filo_tensor *t = in[i];
        int unit = t->ndim == 0 || t->strides[t->ndim - 1] == 1 || t->shape[t->ndim - 1] <= 1;
        filo_status st = ((contig >> i) & 1u) || !unit ? filo_tensor_contiguous(t, &s->t[i]) : filo_tensor_alias(t, &s->t[i]);
        if (st != FILO_OK) {
            in_free(s);
            return st;
        }
    }
    return FILO_OK;
}

static filo_attention_operand operand(const filo_tensor *t)
{
    filo_attention_operand o = {filo_tensor_data(t), t->strides[0], t->strides[1], t->strides[2]};
    return o;
}

static void fill_desc(filo_attention_desc *d, const in_set *c, const filo_attention_mask *mask, double scale)
{
    const filo_tensor *q = c->t[0], *k = c->t[1];
    memset(d, 0, sizeof *d);
    d->B = q->shape[0];
    d->H = q->shape[1];
    d->Lq = q->shape[2];
    d->Lk = k->shape[2];
    d->D = (int)q->shape[3];
    d->dtype = q->dtype;
    d->scale = scale;
    d->causal = mask && mask->causal;
    if (c->t[3]) {
        d->key_lengths = filo_tensor_data(c->t[3]);
        d->key_lengths_dtype = c->t[3]->dtype;
    }
    d->q = operand(q);
    d->k = operand(k);
    d->v = operand(c->t[2]);
}

filo_status filo_attention_forward(const filo_tensor *q, const filo_tensor *k, const filo_tensor *v,
                                   const filo_attention_mask *mask, double scale, double dropout_p,
                                   filo_generator *gen, filo_tensor **out, filo_tensor **lse,
                                   filo_attention_dropout *dropout_state)
{
    const char *op = __func__;
    FILO_TRY(check_common(op, q, k, v, mask, scale));
    FILO_TRY(check_dropout_p(op, dropout_p));
    if (dropout_p > 0 && !gen)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dropout p = %g needs a generator, got NULL", dropout_p);
    if (!out || !lse)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (out, lse) is NULL");

    filo_tensor *o = NULL, *l = NULL;
    filo_status st = filo_tensor_empty(q->device, q->dtype, 4, q->shape, &o);
    if (st == FILO_OK)
        st = filo_tensor_empty(q->device, lse_dtype(q->dtype), 3, q->shape, &l);
    if (st != FILO_OK) {
        filo_tensor_free(o);
        return filo_error_wrap(st, op);
    }
    const filo_tensor *in[4] = {q, k, v, mask ? mask->key_lengths : NULL};
    in_set c;
    st = in_make(&c, in, 4, 1u << 3);
    if (st == FILO_OK) {
        filo_attention_desc d;
        fill_desc(&d, &c, mask, scale);
        d.out = filo_tensor_data(o);
        d.lse = filo_tensor_data(l);
        if (dropout_p > 0) {
            d.dropout_p = dropout_p;
            d.seed = gen->seed;
            d.offset = filo_generator_advance(gen, (uint64_t)(d.B * d.H * d.Lq * d.Lk));
        }
        if (dropout_state) {
            dropout_state->p = d.dropout_p;
            dropout_state->seed = d.seed;
            dropout_state->offset = d.offset;
        }
        if (d.B * d.H * d.Lq == 0) {
            /* nothing to compute */
        } else if (d.Lk == 0) {
            st = filo_tensor_fill(o, 0.0);
            if (st == FILO_OK)
                st = filo_tensor_fill(l, -INFINITY);
        } else if (q->device.type == FILO_DEVICE_CPU) {
            st = filo_cpu_attention_forward(&d);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(q->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_attention_forward(&d, stream));
        }
        in_free(&c);
    }
    if (st != FILO_OK) {
        filo_tensor_free(o);
        filo_tensor_free(l);
        return filo_error_wrap(st, op);
    }
    *out = o;
    *lse = l;
    return FILO_OK;
}

filo_status filo_attention_backward(const filo_tensor *dout, const filo_tensor *q, const filo_tensor *k,
                                    const filo_tensor *v, const filo_tensor *out, const filo_tensor *lse,
                                    const filo_attention_mask *mask, double scale,
                                    const filo_attention_dropout *dropout, filo_tensor **dq, filo_tensor **dk,
                                    filo_tensor **dv)
{
    const char *op = __func__;
    char a[DESC_LEN], b[DESC_LEN];
    FILO_TRY(check_common(op, q, k, v, mask, scale));
    FILO_TRY(check_operand(op, "dout", dout, q, 1));
    FILO_TRY(check_operand(op, "out", out, q, 1));
    if (!lse)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "lse is NULL");
    if (lse->ndim != 3 || lse->shape[0] != q->shape[0] || lse->shape[1] != q->shape[1] || lse->shape[2] != q->shape[2])
        return filo_error_set(FILO_ERR_SHAPE, op, "lse %s must be [B, H, Lq] for q %s",
                              filo_tensor_describe(lse, a, sizeof a), filo_tensor_describe(q, b, sizeof b));
    if (lse->dtype != lse_dtype(q->dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "lse %s must be %s for q %s", filo_tensor_describe(lse, a, sizeof a),
                              filo_dtype_name(lse_dtype(q->dtype)), filo_tensor_describe(q, b, sizeof b));
    if (!filo_device_equal(lse->device, q->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "lse %s is not on the device of q %s",
                              filo_tensor_describe(lse, a, sizeof a), filo_tensor_describe(q, b, sizeof b));
    if (dropout)
        FILO_TRY(check_dropout_p(op, dropout->p));
    if (!dq || !dk || !dv)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (dq, dk, dv) is NULL");

    filo_tensor *g[3] = {NULL, NULL, NULL}, *delta = NULL;
    const filo_tensor *like[3] = {q, k, v};
    filo_status st = FILO_OK;
    for (int i = 0; i < 3 && st == FILO_OK; i++)
        st = filo_tensor_empty(q->device, q->dtype, 4, like[i]->shape, &g[i]);
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], Lk = k->shape[2];
    int empty = B * H * Lq == 0 || Lk == 0;
    if (st == FILO_OK && empty) {
        /* No query rows or no keys: every gradient is an empty sum. */
        for (int i = 0; i < 3 && st == FILO_OK; i++)
            st = filo_tensor_fill(g[i], 0.0);
    }
    if (st == FILO_OK && !empty && q->device.type == FILO_DEVICE_CUDA)
        st = filo_tensor_empty(q->device, FILO_F32, 3, q->shape, &delta);
    if (st != FILO_OK) {
        for (int i = 0; i < 3; i++)
            filo_tensor_free(g[i]);
        return filo_error_wrap(st, op);
    }
    if (!empty) {
        const filo_tensor *in[N_IN] = {q, k, v, mask ? mask->key_lengths : NULL, dout, out};
        in_set c;
        st = in_make(&c, in, N_IN, (1u << 3) | (1u << 5));
        if (st == FILO_OK) {
            filo_tensor *lc = NULL;
            st = filo_tensor_contiguous(lse, &lc);
            if (st == FILO_OK) {
                filo_attention_desc d;
                fill_desc(&d, &c, mask, scale);
                if (dropout && dropout->p > 0) {
                    d.dropout_p = dropout->p;
                    d.seed = dropout->seed;
                    d.offset = dropout->offset;
                }
                d.out = filo_tensor_data(c.t[5]);
                d.lse = filo_tensor_data(lc);
                d.dout = operand(c.t[4]);
                d.dq = filo_tensor_data(g[0]);
                d.dk = filo_tensor_data(g[1]);
                d.dv = filo_tensor_data(g[2]);
                d.delta = delta ? filo_tensor_data(delta) : NULL;
                if (q->device.type == FILO_DEVICE_CPU) {
                    st = filo_cpu_attention_backward(&d);
                } else {
                    void *stream = NULL;
                    st = filo_stream_current_native(q->device, &stream);
                    if (st == FILO_OK)
                        st = FILO_CUDA_CALL(filo_cuda_attention_backward(&d, stream));
                }
            }
            filo_tensor_free(lc);
            in_free(&c);
        }
    }
    /* The scratch goes back to the caching allocator: later work on this stream runs after the
     * kernels that read it. */
    filo_tensor_free(delta);
    if (st != FILO_OK) {
        for (int i = 0; i < 3; i++)
            filo_tensor_free(g[i]);
        return filo_error_wrap(st, op);
    }
    *dq = g[0];
    *dk = g[1];
    *dv = g[2];
    return FILO_OK;
}
