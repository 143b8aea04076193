/* CPU fused attention, forward and backward: the reference for kernels/cuda/attention.cu, and
 * fast enough to train BERT-mini on a small CPU.
 *
 * Per (b, h): K and V (the valid keys only) are converted once to the compute type, row-major and
 * transposed ([D][Lk]), O(Lk * D) memory. Queries go in blocks of QB rows and keys in blocks of
 * KB: a query block walks the key blocks with FlashAttention's online softmax (running max m,
 * running sum l, output accumulator rescaled when m grows), so memory stays O(QB * D) beyond K
 * and V and the Lq x Lk matrix is never stored. The key block stays in L1 while the block's rows
 * use it. The inner loops are written on 16-byte vectors (GNU vector extension: GCC's -O2 does not
 * vectorize loops of runtime length): scores are computed a vector of keys at a time against
 * K^T (accumulators in registers while d runs over D), O += P V a vector of D at a time with
 * the accumulators in registers while the keys run.
 *
 * Backward (FlashAttention-2's): P is recomputed from the saved lse, delta_i = rowsum(dout * out),
 *   dV += Pd^T dO, dPd = dO V^T, dS = P .* (dPd .* M / (1 - p) - delta), dQ = scale * dS K,
 *   dK = scale * dS^T Q, with Pd = P .* M / (1 - p) the dropped probabilities.
 * Sums run in a fixed order (keys ascending for dq, queries ascending for dk/dv).
 *
 * The (b, h) pairs are spread over the CPU pool (runtime/parallel.h), each with its own buffers.
 *
 * Compute type: float for f32/bf16/f16, double for f64 (this file instantiates its body twice by
 * including itself). Results are rounded once at the store. */
#ifndef ATTN_ACC

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention_backend.h"
#include "element.h"
#include "error.h"
#include "parallel.h"

enum { QB = 16, KB = 64 };

/* The range functions run in a build for the CPU at hand, picked when the library loads (GCC's
 * function multiversioning); the vector helpers are inlined into each build. */
#if defined(__x86_64__) && defined(__GNUC__)
#define ATTN_CLONES __attribute__((target_clones("avx2", "default")))
#define ATTN_HOT static inline __attribute__((always_inline))
#else
#define ATTN_CLONES
#define ATTN_HOT static inline
#endif

/* A range of (b, h) pairs on one pool thread: each pair is independent and writes its own rows
 * of every output, so any split gives the same bits. */
typedef struct attn_job {
    const filo_attention_desc *d;
    int failed; /* a thread could not allocate its buffers */
} attn_job;

static int64_t key_length(const filo_attention_desc *d, int64_t b)
{
    if (!d->key_lengths)
        return d->Lk;
    int64_t n = d->key_lengths_dtype == FILO_I64 ? ((const int64_t *)d->key_lengths)[b]
                                                 : ((const int32_t *)d->key_lengths)[b];
    return n < 0 ? 0 : (n > d->Lk ? d->Lk : n);
}

static const void *row_ptr(const filo_attention_operand *o, filo_dtype t, int64_t b, int64_t h, int64_t l)
{
    return (const char *)o->data + (o->sb * b + o->sh * h + o->sl * l) * (int64_t)filo_el_size(t);
}

/* Dropout keep decisions along one row, computing each Philox block once for 4 elements. */
typedef struct drop_row {
    uint64_t seed, offset, base; /* base: element index of column 0 */
    uint32_t threshold;
    uint64_t block;
    uint32_t r[4];
} drop_row;

static int drop_keep(drop_row *dr, int64_t j)
{
    uint64_t i = dr->base + (uint64_t)j, blk = dr->offset + i / 4u;
    if (blk != dr->block) {
        filo_philox_block(blk, 0, dr->seed, dr->r);
        dr->block = blk;
    }
    return filo_dropout_keep_bits(dr->r[i & 3u], dr->threshold);
}

#define ATTN_ACC float
#define ATTN_FN(name) name##_f32
#include "attention.c"
#undef ATTN_ACC
#undef ATTN_FN

#define ATTN_ACC double
#define ATTN_FN(name) name##_f64
#include "attention.c"
#undef ATTN_ACC
#undef ATTN_FN

filo_status filo_cpu_attention_forward(const filo_attention_desc *d)
{
    return d->dtype == FILO_F64 ? attn_forward_f64(d) : attn_forward_f32(d);
}

filo_status filo_cpu_attention_backward(const filo_attention_desc *d)
{
    return d->dtype == FILO_F64 ? attn_backward_f64(d) : attn_backward_f32(d);
}

#else /* the body, once per compute type */

typedef ATTN_ACC ATTN_FN(acc_t);
#define A ATTN_FN(acc_t)
/* 32-byte vectors (GNU vector extension, GCC and Clang): the loops over D and over a key block
 * are written on them because GCC's -O2 cost model does not vectorize loops of runtime length.
 * On the x86-64 baseline a 32-byte vector is two SSE instructions; the range functions below are
 * also built for AVX2 (ATTN_CLONES), where it is one. Every lane runs the same operations in the
 * same order in both builds (ISO C: no FMA contraction), so the bits do not depend on the CPU.
 * Reduced alignment: rows are addressed at any element. */
typedef A ATTN_FN(vec_t) __attribute__((vector_size(32), aligned(sizeof(A))));
#define V ATTN_FN(vec_t)
#define VL ((int)(sizeof(V) / sizeof(A)))

static void ATTN_FN(load_row)(A *dst, const void *src, filo_dtype t, int n)
{
    switch (t) {
    case FILO_F64:
        for (int i = 0; i < n; i++)
            dst[i] = (A)((const double *)src)[i];
        break;
    case FILO_F32:
        for (int i = 0; i < n; i++)
            dst[i] = (A)((const float *)src)[i];
        break;
    case FILO_BF16:
        for (int i = 0; i < n; i++)
            dst[i] = (A)filo_el_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    default:
        for (int i = 0; i < n; i++)
            dst[i] = (A)filo_el_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    }
}

static void ATTN_FN(store_row)(void *dst, filo_dtype t, const A *src, A mul, int n)
{
    switch (t) {
    case FILO_F64:
        for (int i = 0; i < n; i++)
            ((double *)dst)[i] = (double)(src[i] * mul);
        break;
    case FILO_F32:
        for (int i = 0; i < n; i++)
            ((float *)dst)[i] = (float)(src[i] * mul);
        break;
    case FILO_BF16:
        for (int i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = filo_el_f32_to_bf16((float)(src[i] * mul));
        break;
    default:
        for (int i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = filo_el_f32_to_f16((float)(src[i] * mul));
        break;
    }
}

/* K and V rows [0, n) of (b, h) in the compute type: kr/vr row-major [n][D], kt/vt [D][np]
 * (transposed, np = n rounded up to the vector length, zero-padded). */
static void ATTN_FN(load_kv)(const filo_attention_desc *d, int64_t b, int64_t h, int64_t n, int64_t np, A *kr,
                             A *kt, A *vr, A *vt)
{
    int D = d->D;
    for (int64_t j = 0; j < n; j++) {
        ATTN_FN(load_row)(kr + j * D, row_ptr(&d->k, d->dtype, b, h, j), d->dtype, D);
        ATTN_FN(load_row)(vr + j * D, row_ptr(&d->v, d->dtype, b, h, j), d->dtype, D);
    }
    for (int c = 0; c < D; c++) {
        for (int64_t j = 0; j < np; j++)
            kt[c * np + j] = j < n ? kr[j * D + c] : (A)0;
        if (vt)
            for (int64_t j = 0; j < np; j++)
                vt[c * np + j] = j < n ? vr[j * D + c] : (A)0;
    }
}

/* s[0, mp) = q . k[j0 + jj] for a key block (mp a multiple of VL; kt is [D][np] and j0 + mp <= np).
 * Four vectors of s at a time stay in registers while c runs over D. */
ATTN_HOT void ATTN_FN(scores)(A *restrict s, const A *restrict q, const A *restrict kt, int64_t np, int64_t j0, int mp,
                            int D)
{
    int jj = 0;
    for (; jj + 4 * VL <= mp; jj += 4 * VL) {
        V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        const A *kc = kt + j0 + jj;
        for (int c = 0; c < D; c++, kc += np) {
            A qc = q[c];
            a0 += qc * *(const V *)kc;
            a1 += qc * *(const V *)(kc + VL);
            a2 += qc * *(const V *)(kc + 2 * VL);
            a3 += qc * *(const V *)(kc + 3 * VL);
        }
        *(V *)(s + jj) = a0;
        *(V *)(s + jj + VL) = a1;
        *(V *)(s + jj + 2 * VL) = a2;
        *(V *)(s + jj + 3 * VL) = a3;
    }
    for (; jj < mp; jj += VL) {
        V a0 = {0};
        const A *kc = kt + j0 + jj;
        for (int c = 0; c < D; c++, kc += np)
            a0 += q[c] * *(const V *)kc;
        *(V *)(s + jj) = a0;
    }
}

/* o[0, D) = o * alpha + sum_{jj < m} w[jj] * rows[jj][0, D): rows are D apart. */
ATTN_HOT void ATTN_FN(gemv_t)(A *restrict o, A alpha, const A *restrict w, const A *restrict rows, int m, int D)
{
    for (int c = 0; c < D; c += 2 * VL) {
        V a0 = *(V *)(o + c) * alpha, a1 = *(V *)(o + c + VL) * alpha;
        const A *r = rows + c;
        for (int jj = 0; jj < m; jj++, r += D) {
            a0 += w[jj] * *(const V *)r;
            a1 += w[jj] * *(const V *)(r + VL);
        }
        *(V *)(o + c) = a0;
        *(V *)(o + c + VL) = a1;
    }
}

/* y[0, D) += a * x[0, D) */
ATTN_HOT void ATTN_FN(axpy)(A *restrict y, A a, const A *restrict x, int D)
{
    for (int c = 0; c < D; c += VL)
        *(V *)(y + c) += a * *(const V *)(x + c);
}

static A ATTN_FN(exp_)(A x) { return sizeof(A) == sizeof(double) ? (A)exp((double)x) : (A)expf((float)x); }

static int64_t ATTN_FN(round_up)(int64_t n) { return (n + VL - 1) / VL * VL; }

ATTN_CLONES static void ATTN_FN(attn_forward_range)(void *ctx, int chunk, int64_t bh0, int64_t bh1)
{
    (void)chunk;
    attn_job *job = ctx;
    const filo_attention_desc *d = job->d;
    const int D = d->D;
    const int64_t H = d->H, Lq = d->Lq, Lk = d->Lk, Lkp = ATTN_FN(round_up)(Lk);
    const A scale = (A)d->scale;
    const int dropout = d->dropout_p > 0;
    const A keep_scale = d->dropout_p < 1 ? (A)(1.0 / (1.0 - d->dropout_p)) : (A)0;
    filo_dtype lt = d->dtype == FILO_F64 ? FILO_F64 : FILO_F32;
    size_t es = filo_el_size(d->dtype);
    /* kr, vr: 2 * Lk * D; kt: Lkp * D; q block, accumulators: 2 * QB * D; scores: KB; m, l: 2 * QB. */
    A *buf = malloc(sizeof(A) * ((size_t)((2 * Lk + Lkp) * D) + (size_t)(2 * QB * D) + KB + 2 * QB));
    if (!buf) {
        job->failed = 1;
        return;
    }
    A *kr = buf, *vr = kr + Lk * D, *kt = vr + Lk * D, *qb = kt + Lkp * D, *ob = qb + QB * D, *s = ob + QB * D;
    A *mrow = s + KB, *lrow = mrow + QB;
    drop_row dr = {.seed = d->seed, .offset = d->offset, .threshold = filo_dropout_threshold(d->dropout_p),
                   .block = UINT64_MAX};

    for (int64_t bh = bh0; bh < bh1; bh++) {
        int64_t b = bh / H, h = bh % H;
        int64_t n = key_length(d, b), np = ATTN_FN(round_up)(n);
        {
            ATTN_FN(load_kv)(d, b, h, n, np, kr, kt, vr, NULL);
            for (int64_t i0 = 0; i0 < Lq; i0 += QB) {
                int rows = (int)(Lq - i0 < QB ? Lq - i0 : QB);
                for (int r = 0; r < rows; r++) {
                    A *qr = qb + r * D;
                    ATTN_FN(load_row)(qr, row_ptr(&d->q, d->dtype, b, h, i0 + r), d->dtype, D);
                    for (int c = 0; c < D; c++)
                        qr[c] *= scale;
                    mrow[r] = -INFINITY;
                    lrow[r] = 0;
                }
                memset(ob, 0, sizeof(A) * (size_t)(rows * D));
                int64_t kend = n;
                if (d->causal && kend > i0 + rows)
                    kend = i0 + rows;
                for (int64_t j0 = 0; j0 < kend; j0 += KB) {
                    for (int r = 0; r < rows; r++) {
                        int64_t i = i0 + r, jend = j0 + KB < kend ? j0 + KB : kend;
                        if (d->causal && jend > i + 1)
                            jend = i + 1;
                        if (jend <= j0)
                            continue;
                        int m = (int)(jend - j0);
                        ATTN_FN(scores)(s, qb + r * D, kt, np, j0, (int)ATTN_FN(round_up)(m), D);
                        A mx = mrow[r];
                        for (int jj = 0; jj < m; jj++)
                            mx = s[jj] > mx ? s[jj] : mx;
                        A alpha = ATTN_FN(exp_)(mrow[r] - mx), sum = 0;
                        for (int jj = 0; jj < m; jj++) {
                            s[jj] = ATTN_FN(exp_)(s[jj] - mx);
                            sum += s[jj];
                        }
                        mrow[r] = mx;
                        lrow[r] = lrow[r] * alpha + sum;
                        if (dropout) {
                            dr.base = (uint64_t)((bh * Lq + i) * Lk);
                            for (int jj = 0; jj < m; jj++)
                                s[jj] = drop_keep(&dr, j0 + jj) ? s[jj] * keep_scale : (A)0;
                        }
                        ATTN_FN(gemv_t)(ob + r * D, alpha, s, vr + j0 * D, m, D);
                    }
                }
                for (int r = 0; r < rows; r++) {
                    int64_t row = bh * Lq + i0 + r;
                    int empty = !(lrow[r] > 0);
                    ATTN_FN(store_row)((char *)d->out + row * D * (int64_t)es, d->dtype, ob + r * D,
                                       empty ? (A)0 : (A)1 / lrow[r], D);
                    double lse = empty ? -INFINITY : (double)mrow[r] + log((double)lrow[r]);
                    filo_el_store_f((char *)d->lse + row * (int64_t)filo_el_size(lt), lt, lse);
                }
            }
        }
    }
    free(buf);
}

ATTN_CLONES static void ATTN_FN(attn_backward_range)(void *ctx, int chunk, int64_t bh0, int64_t bh1)
{
    (void)chunk;
    attn_job *job = ctx;
    const filo_attention_desc *d = job->d;
    const int D = d->D;
    const int64_t H = d->H, Lq = d->Lq, Lk = d->Lk, Lkp = ATTN_FN(round_up)(Lk);
    const A scale = (A)d->scale;
    const int dropout = d->dropout_p > 0;
    const A keep_scale = d->dropout_p < 1 ? (A)(1.0 / (1.0 - d->dropout_p)) : (A)0;
    filo_dtype lt = d->dtype == FILO_F64 ? FILO_F64 : FILO_F32;
    size_t es = filo_el_size(d->dtype);
    /* kr, vr, dk, dv: 4 * Lk * D; kt, vt: 2 * Lkp * D; q, scaled q, dout, dq rows: 4 * QB * D;
     * 3 score rows of KB; lse and delta: 2 * QB. */
    size_t count = (size_t)((4 * Lk + 2 * Lkp) * D) + (size_t)(4 * QB * D) + 3 * KB + 2 * QB;
    A *buf = malloc(sizeof(A) * count);
    if (!buf) {
        job->failed = 1;
        return;
    }
    A *kr = buf, *vr = kr + Lk * D, *dkb = vr + Lk * D, *dvb = dkb + Lk * D, *kt = dvb + Lk * D, *vt = kt + Lkp * D;
    A *qb = vt + Lkp * D, *qsb = qb + QB * D, *gb = qsb + QB * D, *dqb = gb + QB * D, *p = dqb + QB * D, *dp = p + KB;
    A *pd = dp + KB, *lse = pd + KB, *delta = lse + QB;
    A *orow = dqb; /* out rows are read into dq's rows before dq is accumulated there */
    drop_row dr = {.seed = d->seed, .offset = d->offset, .threshold = filo_dropout_threshold(d->dropout_p),
                   .block = UINT64_MAX};

    for (int64_t bh = bh0; bh < bh1; bh++) {
        int64_t b = bh / H, h = bh % H;
        int64_t n = key_length(d, b), np = ATTN_FN(round_up)(n);
        {
            ATTN_FN(load_kv)(d, b, h, n, np, kr, kt, vr, vt);
            memset(dkb, 0, sizeof(A) * (size_t)(n * D));
            memset(dvb, 0, sizeof(A) * (size_t)(n * D));
            for (int64_t i0 = 0; i0 < Lq; i0 += QB) {
                int rows = (int)(Lq - i0 < QB ? Lq - i0 : QB);
                for (int r = 0; r < rows; r++) {
                    int64_t row = bh * Lq + i0 + r;
                    A *qr = qb + r * D;
                    ATTN_FN(load_row)(qr, row_ptr(&d->q, d->dtype, b, h, i0 + r), d->dtype, D);
                    for (int c = 0; c < D; c++)
                        qsb[r * D + c] = qr[c] * scale;
                    ATTN_FN(load_row)(gb + r * D, row_ptr(&d->dout, d->dtype, b, h, i0 + r), d->dtype, D);
                    ATTN_FN(load_row)(orow + r * D, (const char *)d->out + row * D * (int64_t)es, d->dtype, D);
                    A dl = 0;
                    for (int c = 0; c < D; c++)
                        dl += gb[r * D + c] * orow[r * D + c];
                    delta[r] = dl;
                    lse[r] = (A)filo_el_load_f((const char *)d->lse + row * (int64_t)filo_el_size(lt), lt);
                }
                memset(dqb, 0, sizeof(A) * (size_t)(rows * D));
                int64_t kend = n;
                if (d->causal && kend > i0 + rows)
                    kend = i0 + rows;
                for (int64_t j0 = 0; j0 < kend; j0 += KB) {
                    for (int r = 0; r < rows; r++) {
                        int64_t i = i0 + r, jend = j0 + KB < kend ? j0 + KB : kend;
                        if (d->causal && jend > i + 1)
                            jend = i + 1;
                        if (jend <= j0 || lse[r] == -INFINITY)
                            continue;
                        int m = (int)(jend - j0), mp = (int)ATTN_FN(round_up)(m);
                        const A *qr = qb + r * D, *gr = gb + r * D;
                        ATTN_FN(scores)(p, qsb + r * D, kt, np, j0, mp, D);
                        ATTN_FN(scores)(dp, gr, vt, np, j0, mp, D);
                        if (dropout)
                            dr.base = (uint64_t)((bh * Lq + i) * Lk);
                        for (int jj = 0; jj < m; jj++) {
                            A pj = ATTN_FN(exp_)(p[jj] - lse[r]);
                            A mk = dropout ? (drop_keep(&dr, j0 + jj) ? keep_scale : (A)0) : (A)1;
                            pd[jj] = pj * mk;
                            /* dS, pre-multiplied by the scale of S = scale * Q K^T */
                            p[jj] = pj * (dp[jj] * mk - delta[r]) * scale;
                        }
                        ATTN_FN(gemv_t)(dqb + r * D, (A)1, p, kr + j0 * D, m, D);
                        for (int jj = 0; jj < m; jj++) {
                            int64_t j = j0 + jj;
                            ATTN_FN(axpy)(dkb + j * D, p[jj], qr, D);
                            ATTN_FN(axpy)(dvb + j * D, pd[jj], gr, D);
                        }
                    }
                }
                for (int r = 0; r < rows; r++)
                    ATTN_FN(store_row)((char *)d->dq + (bh * Lq + i0 + r) * D * (int64_t)es, d->dtype, dqb + r * D,
                                       (A)1, D);
            }
            for (int64_t j = 0; j < Lk; j++) {
                char *dk = (char *)d->dk + (bh * Lk + j) * D * (int64_t)es;
                char *dv = (char *)d->dv + (bh * Lk + j) * D * (int64_t)es;
                if (j < n) {
                    ATTN_FN(store_row)(dk, d->dtype, dkb + j * D, (A)1, D);
                    ATTN_FN(store_row)(dv, d->dtype, dvb + j * D, (A)1, D);
                } else {
                    memset(dk, 0, (size_t)D * es);
                    memset(dv, 0, (size_t)D * es);
                }
            }
        }
    }
    free(buf);
}

static filo_status ATTN_FN(attn_run)(const filo_attention_desc *d, void (*range)(void *, int, int64_t, int64_t))
{
    attn_job job = {d, 0};
    filo_parallel_for(d->B * d->H, 1, range, &job);
    if (job.failed)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for K and V of %lld x %d", (long long)d->Lk, d->D);
    return FILO_OK;
}

static filo_status ATTN_FN(attn_forward)(const filo_attention_desc *d)
{
    return ATTN_FN(attn_run)(d, ATTN_FN(attn_forward_range));
}

static filo_status ATTN_FN(attn_backward)(const filo_attention_desc *d)
{
    return ATTN_FN(attn_run)(d, ATTN_FN(attn_backward_range));
}

#undef VL
#undef V
#undef A
#endif
