/* CPU fused attention in float64, the reference the f32 path (kernels/cpu/attention.c) and the
 * finite-difference checks are held to; oneDNN has no f64 GEMM, so this one is loops.
 *
 * Per (b, h): K and V (the valid keys only) are loaded row-major and transposed ([D][Lk]),
 * O(Lk * D) memory. Queries go in blocks of QB rows and keys in blocks of KB: a query block walks
 * the key blocks with FlashAttention's online softmax (running max m, running sum l, output
 * accumulator rescaled when m grows), so the Lq x Lk matrix is never stored. Scores are computed a
 * vector of keys at a time against K^T, O += P V a vector of D at a time.
 *
 * Backward (FlashAttention-2's): P is recomputed from the saved lse, delta_i = rowsum(dout * out),
 *   dV += Pd^T dO, dPd = dO V^T, dS = P .* (dPd .* M / (1 - p) - delta), dQ = scale * dS K,
 *   dK = scale * dS^T Q, with Pd = P .* M / (1 - p) the dropped probabilities.
 * Sums run in a fixed order (keys ascending for dq, queries ascending for dk/dv).
 *
 * The (b, h) pairs are spread over the CPU pool (runtime/parallel.h), each with its own buffers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention_cpu.h"
#include "element.h"
#include "error.h"
#include "parallel.h"

enum { QB = 16, KB = 64, VL = 4 };

/* 32-byte vectors (GNU vector extension): GCC's -O2 does not vectorize loops of runtime length. Every
 * lane runs the same operations in the same order in every build (no FMA contraction in ISO C), so
 * the bits do not depend on the CPU. Reduced alignment: rows are addressed at any element. */
typedef double vec_t __attribute__((vector_size(32), aligned(sizeof(double))));

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

static const double *row_ptr(const filo_attention_operand *o, int64_t b, int64_t h, int64_t l)
{
    return (const double *)o->data + o->sb * b + o->sh * h + o->sl * l;
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

static void load_row(double *dst, const void *src, int n) { memcpy(dst, src, sizeof(double) * (size_t)n); }

static void store_row(void *dst, const double *src, double mul, int n)
{
    for (int i = 0; i < n; i++)
        ((double *)dst)[i] = src[i] * mul;
}

/* K and V rows [0, n) of (b, h) in the compute type: kr/vr row-major [n][D], kt/vt [D][np]
 * (transposed, np = n rounded up to the vector length, zero-padded). */
static void load_kv(const filo_attention_desc *d, int64_t b, int64_t h, int64_t n, int64_t np, double *kr,
                             double *kt, double *vr, double *vt)
{
    int D = d->D;
    for (int64_t j = 0; j < n; j++) {
        load_row(kr + j * D, row_ptr(&d->k, b, h, j), D);
        load_row(vr + j * D, row_ptr(&d->v, b, h, j), D);
    }
    for (int c = 0; c < D; c++) {
        for (int64_t j = 0; j < np; j++)
            kt[c * np + j] = j < n ? kr[j * D + c] : 0;
        if (vt)
            for (int64_t j = 0; j < np; j++)
                vt[c * np + j] = j < n ? vr[j * D + c] : 0;
    }
}

/* s[0, mp) = q . k[j0 + jj] for a key block (mp a multiple of VL; kt is [D][np] and j0 + mp <= np).
 * Four vectors of s at a time stay in registers while c runs over D. */
ATTN_HOT void scores(double *restrict s, const double *restrict q, const double *restrict kt, int64_t np, int64_t j0, int mp,
                            int D)
{
    int jj = 0;
    for (; jj + 4 * VL <= mp; jj += 4 * VL) {
        vec_t a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        const double *kc = kt + j0 + jj;
        for (int c = 0; c < D; c++, kc += np) {
            double qc = q[c];
            a0 += qc * *(const vec_t *)kc;
            a1 += qc * *(const vec_t *)(kc + VL);
            a2 += qc * *(const vec_t *)(kc + 2 * VL);
            a3 += qc * *(const vec_t *)(kc + 3 * VL);
        }
        *(vec_t *)(s + jj) = a0;
        *(vec_t *)(s + jj + VL) = a1;
        *(vec_t *)(s + jj + 2 * VL) = a2;
        *(vec_t *)(s + jj + 3 * VL) = a3;
    }
    for (; jj < mp; jj += VL) {
        vec_t a0 = {0};
        const double *kc = kt + j0 + jj;
        for (int c = 0; c < D; c++, kc += np)
            a0 += q[c] * *(const vec_t *)kc;
        *(vec_t *)(s + jj) = a0;
    }
}

/* o[0, D) = o * alpha + sum_{jj < m} w[jj] * rows[jj][0, D): rows are D apart. */
ATTN_HOT void gemv_t(double *restrict o, double alpha, const double *restrict w, const double *restrict rows, int m, int D)
{
    for (int c = 0; c < D; c += 2 * VL) {
        vec_t a0 = *(vec_t *)(o + c) * alpha, a1 = *(vec_t *)(o + c + VL) * alpha;
        const double *r = rows + c;
        for (int jj = 0; jj < m; jj++, r += D) {
            a0 += w[jj] * *(const vec_t *)r;
            a1 += w[jj] * *(const vec_t *)(r + VL);
        }
        *(vec_t *)(o + c) = a0;
        *(vec_t *)(o + c + VL) = a1;
    }
}

/* y[0, D) += a * x[0, D) */
ATTN_HOT void axpy(double *restrict y, double a, const double *restrict x, int D)
{
    for (int c = 0; c < D; c += VL)
        *(vec_t *)(y + c) += a * *(const vec_t *)(x + c);
}

static int64_t round_up(int64_t n) { return (n + VL - 1) / VL * VL; }

ATTN_CLONES static void attn_forward_range(void *ctx, int chunk, int64_t bh0, int64_t bh1)
{
    (void)chunk;
    attn_job *job = ctx;
    const filo_attention_desc *d = job->d;
    const int D = d->D;
    const int64_t H = d->H, Lq = d->Lq, Lk = d->Lk, Lkp = round_up(Lk);
    const double scale = d->scale;
    const int dropout = d->dropout_p > 0;
    const double keep_scale = d->dropout_p < 1 ? (1.0 / (1.0 - d->dropout_p)) : 0;
    /* kr, vr: 2 * Lk * D; kt: Lkp * D; q block, accumulators: 2 * QB * D; scores: KB; m, l: 2 * QB. */
    double *buf = malloc(sizeof(double) * ((size_t)((2 * Lk + Lkp) * D) + (size_t)(2 * QB * D) + KB + 2 * QB));
    if (!buf) {
        job->failed = 1;
        return;
    }
    double *kr = buf, *vr = kr + Lk * D, *kt = vr + Lk * D, *qb = kt + Lkp * D, *ob = qb + QB * D, *s = ob + QB * D;
    double *mrow = s + KB, *lrow = mrow + QB;
    drop_row dr = {.seed = d->seed, .offset = d->offset, .threshold = filo_dropout_threshold(d->dropout_p),
                   .block = UINT64_MAX};

    for (int64_t bh = bh0; bh < bh1; bh++) {
        int64_t b = bh / H, h = bh % H;
        int64_t n = filo_cpu_attention_key_length(d, b), np = round_up(n);
        {
            load_kv(d, b, h, n, np, kr, kt, vr, NULL);
            for (int64_t i0 = 0; i0 < Lq; i0 += QB) {
                int rows = (int)(Lq - i0 < QB ? Lq - i0 : QB);
                for (int r = 0; r < rows; r++) {
                    double *qr = qb + r * D;
                    load_row(qr, row_ptr(&d->q, b, h, i0 + r), D);
                    for (int c = 0; c < D; c++)
                        qr[c] *= scale;
                    mrow[r] = -INFINITY;
                    lrow[r] = 0;
                }
                memset(ob, 0, sizeof(double) * (size_t)(rows * D));
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
                        scores(s, qb + r * D, kt, np, j0, (int)round_up(m), D);
                        double mx = mrow[r];
                        for (int jj = 0; jj < m; jj++)
                            mx = s[jj] > mx ? s[jj] : mx;
                        double alpha = exp(mrow[r] - mx), sum = 0;
                        for (int jj = 0; jj < m; jj++) {
                            s[jj] = exp(s[jj] - mx);
                            sum += s[jj];
                        }
                        mrow[r] = mx;
                        lrow[r] = lrow[r] * alpha + sum;
                        if (dropout) {
                            dr.base = (uint64_t)((bh * Lq + i) * Lk);
                            for (int jj = 0; jj < m; jj++)
                                s[jj] = drop_keep(&dr, j0 + jj) ? s[jj] * keep_scale : 0;
                        }
                        gemv_t(ob + r * D, alpha, s, vr + j0 * D, m, D);
                    }
                }
                for (int r = 0; r < rows; r++) {
                    int64_t row = bh * Lq + i0 + r;
                    int empty = !(lrow[r] > 0);
                    store_row((double *)d->out + row * D, ob + r * D,
                                       empty ? 0 : 1 / lrow[r], D);
                    double lse = empty ? -INFINITY : mrow[r] + log(lrow[r]);
                    ((double *)d->lse)[row] = lse;
                }
            }
        }
    }
    free(buf);
}

ATTN_CLONES static void attn_backward_range(void *ctx, int chunk, int64_t bh0, int64_t bh1)
{
    (void)chunk;
    attn_job *job = ctx;
    const filo_attention_desc *d = job->d;
    const int D = d->D;
    const int64_t H = d->H, Lq = d->Lq, Lk = d->Lk, Lkp = round_up(Lk);
    const double scale = d->scale;
    const int dropout = d->dropout_p > 0;
    const double keep_scale = d->dropout_p < 1 ? (1.0 / (1.0 - d->dropout_p)) : 0;
    /* kr, vr, dk, dv: 4 * Lk * D; kt, vt: 2 * Lkp * D; q, scaled q, dout, dq rows: 4 * QB * D;
     * 3 score rows of KB; lse and delta: 2 * QB. */
    size_t count = (size_t)((4 * Lk + 2 * Lkp) * D) + (size_t)(4 * QB * D) + 3 * KB + 2 * QB;
    double *buf = malloc(sizeof(double) * count);
    if (!buf) {
        job->failed = 1;
        return;
    }
    double *kr = buf, *vr = kr + Lk * D, *dkb = vr + Lk * D, *dvb = dkb + Lk * D, *kt = dvb + Lk * D, *vt = kt + Lkp * D;
    double *qb = vt + Lkp * D, *qsb = qb + QB * D, *gb = qsb + QB * D, *dqb = gb + QB * D, *p = dqb + QB * D, *dp = p + KB;
    double *pd = dp + KB, *lse = pd + KB, *delta = lse + QB;
    double *orow = dqb; /* out rows are read into dq's rows before dq is accumulated there */
    drop_row dr = {.seed = d->seed, .offset = d->offset, .threshold = filo_dropout_threshold(d->dropout_p),
                   .block = UINT64_MAX};

    for (int64_t bh = bh0; bh < bh1; bh++) {
        int64_t b = bh / H, h = bh % H;
        int64_t n = filo_cpu_attention_key_length(d, b), np = round_up(n);
        {
            load_kv(d, b, h, n, np, kr, kt, vr, vt);
            memset(dkb, 0, sizeof(double) * (size_t)(n * D));
            memset(dvb, 0, sizeof(double) * (size_t)(n * D));
            for (int64_t i0 = 0; i0 < Lq; i0 += QB) {
                int rows = (int)(Lq - i0 < QB ? Lq - i0 : QB);
                for (int r = 0; r < rows; r++) {
                    int64_t row = bh * Lq + i0 + r;
                    double *qr = qb + r * D;
                    load_row(qr, row_ptr(&d->q, b, h, i0 + r), D);
                    for (int c = 0; c < D; c++)
                        qsb[r * D + c] = qr[c] * scale;
                    load_row(gb + r * D, row_ptr(&d->dout, b, h, i0 + r), D);
                    load_row(orow + r * D, (const double *)d->out + row * D, D);
                    double dl = 0;
                    for (int c = 0; c < D; c++)
                        dl += gb[r * D + c] * orow[r * D + c];
                    delta[r] = dl;
                    lse[r] = ((const double *)d->lse)[row];
                }
                memset(dqb, 0, sizeof(double) * (size_t)(rows * D));
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
                        int m = (int)(jend - j0), mp = (int)round_up(m);
                        const double *qr = qb + r * D, *gr = gb + r * D;
                        scores(p, qsb + r * D, kt, np, j0, mp, D);
                        scores(dp, gr, vt, np, j0, mp, D);
                        if (dropout)
                            dr.base = (uint64_t)((bh * Lq + i) * Lk);
                        for (int jj = 0; jj < m; jj++) {
                            double pj = exp(p[jj] - lse[r]);
                            double mk = dropout ? (drop_keep(&dr, j0 + jj) ? keep_scale : 0) : 1;
                            pd[jj] = pj * mk;
                            /* dS, pre-multiplied by the scale of S = scale * Q K^T */
                            p[jj] = pj * (dp[jj] * mk - delta[r]) * scale;
                        }
                        gemv_t(dqb + r * D, 1, p, kr + j0 * D, m, D);
                        for (int jj = 0; jj < m; jj++) {
                            int64_t j = j0 + jj;
                            axpy(dkb + j * D, p[jj], qr, D);
                            axpy(dvb + j * D, pd[jj], gr, D);
                        }
                    }
                }
                for (int r = 0; r < rows; r++)
                    store_row((double *)d->dq + (bh * Lq + i0 + r) * D, dqb + r * D,
                                       1, D);
            }
            for (int64_t j = 0; j < Lk; j++) {
                double *dk = (double *)d->dk + (bh * Lk + j) * D;
                double *dv = (double *)d->dv + (bh * Lk + j) * D;
                if (j < n) {
                    store_row(dk, dkb + j * D, 1, D);
                    store_row(dv, dvb + j * D, 1, D);
                } else {
                    memset(dk, 0, sizeof(double) * (size_t)D);
                    memset(dv, 0, sizeof(double) * (size_t)D);
                }
            }
        }
    }
    free(buf);
}

static filo_status attn_run(const filo_attention_desc *d, void (*range)(void *, int, int64_t, int64_t))
{
    attn_job job = {d, 0};
    filo_parallel_for(d->B * d->H, 1, range, &job);
    if (job.failed)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for K and V of %lld x %d", (long long)d->Lk, d->D);
    return FILO_OK;
}

filo_status filo_cpu_attention_forward_f64(const filo_attention_desc *d) { return attn_run(d, attn_forward_range); }

filo_status filo_cpu_attention_backward_f64(const filo_attention_desc *d) { return attn_run(d, attn_backward_range); }

