/* Fused attention forward and backward (FlashAttention-2 structure, CUDA-core FMAs).
 * Reference: kernels/cpu/attention.c (filo_cpu_attention_forward/_backward); the math and the
 * masks are written out in include/filo/attention.h.
 *
 * Every kernel: 128 threads as an 8 x 16 grid (ty, tx). A tile product C[R][N] gives thread
 * (ty, tx) rows ty + 8r and columns tx + 16c: two "inner product" helpers, mm_nt (C += A B^T over
 * shared rows, for S = Q K^T and dP = dO V^T) and mm_nn (C += A B, for O += P V, dK += dS^T Q,
 * dV += Pd^T dO, dQ += dS K), compute them with f32 FMAs on shared-memory tiles (rows padded to
 * D + 1 floats so the column walks of mm_nt hit distinct banks). They are the only place that
 * would change for a tensor-core (mma/wmma) path: the operands are already staged in shared
 * memory tile by tile, and the softmax/masking code works on the per-thread register fragments.
 * (The emulator has no tensor cores, hence this portable path.)
 *
 * attn_fwd_kernel<T, D, BQ, BK>: grid (B * H, ceil(Lq / BQ)). A block stages its BQ query rows in
 * shared memory, then walks the key tiles: K tile -> S = scale * Q K^T in registers, masked to
 * -inf (padding j >= len[b], causal j > i), online softmax (row max and sum across the 16
 * threads of a row by shuffles; running m and l and the O accumulator rescaled in registers),
 * dropout applied to P (the tile's keep decisions are filled into shared memory beside the
 * K load, one Philox block per element by runtime/element.h's rule), P to shared memory, then
 * the V tile into the same buffer and O += P V. Never materializes Lq x Lk. Writes
 * out = O / l (0 for a row with no valid key) and lse = m + log l (-inf). Causal and padding
 * limits skip whole key tiles.
 * FLOPs: 4 * B * H * Lq * Lk * D (two products), fewer with masks. Traffic: Q and out once,
 * K and V once per query tile.
 *
 * Backward, three kernels, no atomics (bitwise reproducible):
 *  attn_bwd_delta_kernel: delta[row] = sum_d dout * out, one warp per row.
 *  attn_bwd_dkdv_kernel<T, D, BQ, BK>: grid (B * H, ceil(Lk / BK)); a block owns BK keys, keeps
 *    dK and dV in registers and walks the query tiles in order: S^T = K Q^T, dPd^T = V dO^T,
 *    P = exp(scale S - lse), Pd = P .* M / (1 - p), dS = P .* (dPd .* M / (1 - p) - delta),
 *    dV += Pd^T dO, dK += scale dS^T Q.
 *  attn_bwd_dq_kernel<T, D, BQ, BK>: grid (B * H, ceil(Lq / BQ)); a block owns BQ queries and
 *    walks the key tiles in order: recomputes dS the same way and dQ += scale dS K.
 *  Recomputing S and dP in the dQ pass makes 7 tile products (14 * B * H * Lq * Lk * D FLOPs)
 *  instead of FlashAttention-2's 5 (10 * ...): the price of a deterministic dQ without atomics.
 *
 * Tiles (BQ x BK), picked per D so that no kernel spills for sm_80/sm_90 and shared memory
 * stays small (the D = 128 kernels opt in to more than 48 KiB):
 *   D     forward   dkdv (BQ x BK)  dq (BQ x BK)
 *   32    64 x 64   32 x 64         32 x 64
 *   64    64 x 32   32 x 32         32 x 32
 *   128   64 x 32   32 x 32         32 x 32
 * bf16/f16 are converted to f32 when staged and rounded once at the store; f32 accumulation
 * throughout. f64 is not built here (the dispatcher rejects it on CUDA).
 * Out-of-range key lengths (not checkable without a host sync) are clamped to [0, Lk]. */
#include "compat.cuh"
#include "typed_elements.cuh"

extern "C" {
#include "attention_backend.h"
#include "backend.h"
#include "element.h"
#include "error.h"
}

namespace {

const int THREADS = 128;
const int TY = 8, TX = 16;
const size_t SMEM_DEFAULT = 48 * 1024;

template <int D> struct tiles;
template <> struct tiles<32> {
    static const int FQ = 64, FK = 64, KVQ = 32, KVK = 64, DQQ = 32, DQK = 64;
};
template <> struct tiles<64> {
    static const int FQ = 64, FK = 32, KVQ = 32, KVK = 32, DQQ = 32, DQK = 32;
};
template <> struct tiles<128> {
    static const int FQ = 64, FK = 32, KVQ = 32, KVK = 32, DQQ = 32, DQK = 32;
};

/* Kernel arguments: element pointers already offset to (0, 0, 0, 0), strides in elements. */
template <class T> struct attn_args {
    const T *q, *k, *v, *dout;
    int64_t q_sb, q_sh, q_sl, k_sb, k_sh, k_sl, v_sb, v_sh, v_sl, g_sb, g_sh, g_sl;
    T *out;      /* forward output; backward input (contiguous) */
    float *lse;  /* forward output; backward input */
    float *delta;
    T *dq, *dk, *dv;
    const void *lens;
    int lens_i64;
    int H, Lq, Lk;
    float scale;
    int causal;
    int dropout;
    float keep_scale;
    uint32_t threshold;
    uint64_t seed, offset;
};

template <class T> __device__ __forceinline__ int key_len(const attn_args<T> &a, int b)
{
    if (!a.lens)
        return a.Lk;
    int64_t n = a.lens_i64 ? ((const int64_t *)a.lens)[b] : ((const int32_t *)a.lens)[b];
    return n < 0 ? 0 : (n > a.Lk ? a.Lk : (int)n);
}

/* dst[r][c] (pitch D + 1) = src row (row0 + r), column c, as f32; rows r >= valid are zero. */
template <class T, int D>
__device__ __forceinline__ void load_tile(float *dst, const T *src, int64_t sl, int row0, int valid, int rows)
{
    for (int e = threadIdx.x; e < rows * D; e += THREADS) {
        int r = e / D, c = e % D;
        dst[r * (D + 1) + c] = r < valid ? ld(src[(int64_t)(row0 + r) * sl + c]) : 0.0f;
    }
}

/* acc[r][c] += sum_{d < K} As[(ty + 8r) * pa + d] * Bs[(tx + 16c) * pb + d] */
template <int RM, int RN, int K>
__device__ __forceinline__ void mm_nt(float (&acc)[RM][RN], const float *As, int pa, const float *Bs, int pb, int ty,
                                      int tx)
{
#pragma unroll 4
    for (int d = 0; d < K; d++) {
        float a[RM], b[RN];
#pragma unroll
        for (int r = 0; r < RM; r++)
            a[r] = As[(ty + TY * r) * pa + d];
#pragma unroll
        for (int c = 0; c < RN; c++)
            b[c] = Bs[(tx + TX * c) * pb + d];
#pragma unroll
        for (int r = 0; r < RM; r++)
#pragma unroll
            for (int c = 0; c < RN; c++)
                acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
    }
}

/* acc[r][c] += sum_{j < K} Ps[(ty + 8r) * pp + j] * Bs[j * pb + tx + 16c] */
template <int RM, int RN, int K>
__device__ __forceinline__ void mm_nn(float (&acc)[RM][RN], const float *Ps, int pp, const float *Bs, int pb, int ty,
                                      int tx)
{
#pragma unroll 4
    for (int j = 0; j < K; j++) {
        float a[RM], b[RN];
#pragma unroll
        for (int r = 0; r < RM; r++)
            a[r] = Ps[(ty + TY * r) * pp + j];
#pragma unroll
        for (int c = 0; c < RN; c++)
            b[c] = Bs[j * pb + tx + TX * c];
#pragma unroll
        for (int r = 0; r < RM; r++)
#pragma unroll
            for (int c = 0; c < RN; c++)
                acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
    }
}

/* Reduction over the 16 threads (tx) that share a row: lanes differing in the low 4 bits. */
__device__ __forceinline__ float row_max(float v)
{
#pragma unroll
    for (int off = 8; off > 0; off >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

__device__ __forceinline__ float row_sum(float v)
{
#pragma unroll
    for (int off = 8; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* keep[e] = the dropout decision of element (bh, q0 + ii, k0 + jj) of a tile, e = ii * nk + jj
 * (query-major) or jj * nq + ii (KEY_MAJOR). Filled once per tile by a plain loop beside the tile
 * loads, so the Philox code is not unrolled into the register-blocked products. */
template <bool KEY_MAJOR, class T>
__device__ __forceinline__ void fill_keep(const attn_args<T> &a, unsigned char *keep, int bh, int q0, int k0, int nq,
                                          int nk)
{
#pragma unroll 1
    for (int e = threadIdx.x; e < nq * nk; e += THREADS) {
        const int ii = KEY_MAJOR ? e % nq : e / nk, jj = KEY_MAJOR ? e / nq : e % nk;
        const int i = q0 + ii, j = k0 + jj;
        const uint64_t idx = ((uint64_t)bh * (uint64_t)a.Lq + (uint64_t)i) * (uint64_t)a.Lk + (uint64_t)j;
        keep[e] = i < a.Lq && j < a.Lk && filo_dropout_keep(a.seed, a.offset, idx, a.threshold);
    }
}

template <class T, int D, int BQ, int BK>
__global__ void __launch_bounds__(THREADS) attn_fwd_kernel(attn_args<T> a)
{
    const int RM = BQ / TY, RN = BK / TX, RD = D / TX, PD = D + 1, PP = BK + 1;
    FILO_DYNAMIC_SHARED(float, smem);
    float *Qs = smem, *KVs = Qs + BQ * PD, *Ps = KVs + BK * PD;
    unsigned char *keep = (unsigned char *)(Ps + BQ * PP); /* [BQ][BK] dropout decisions */
    const int bh = blockIdx.x, b = bh / a.H, h = bh % a.H, q0 = blockIdx.y * BQ;
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX;
    const int n = key_len(a, b);
    int kend = n;
    if (a.causal && kend > q0 + BQ)
        kend = q0 + BQ;
    const T *qp = a.q + b * a.q_sb + h * a.q_sh;
    const T *kp = a.k + b * a.k_sb + h * a.k_sh;
    const T *vp = a.v + b * a.v_sb + h * a.v_sh;
    load_tile<T, D>(Qs, qp, a.q_sl, q0, min(BQ, a.Lq - q0), BQ);

    float o[RM][RD], m[RM], l[RM];
#pragma unroll
    for (int r = 0; r < RM; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < RD; c++)
            o[r][c] = 0.0f;
    }
    for (int j0 = 0; j0 < kend; j0 += BK) {
        const int kvalid = min(BK, kend - j0);
        __syncthreads(); /* the previous tile's P V is done with KVs and Ps */
        load_tile<T, D>(KVs, kp, a.k_sl, j0, kvalid, BK);
        if (a.dropout)
            fill_keep<false>(a, keep, bh, q0, j0, BQ, BK);
        __syncthreads();
        float s[RM][RN];
#pragma unroll
        for (int r = 0; r < RM; r++)
#pragma unroll
            for (int c = 0; c < RN; c++)
                s[r][c] = 0.0f;
        mm_nt<RM, RN, D>(s, Qs, PD, KVs, PD, ty, tx);
#pragma unroll
        for (int r = 0; r < RM; r++) {
            const int i = q0 + ty + TY * r;
            float mx = m[r];
#pragma unroll
            for (int c = 0; c < RN; c++) {
                const int j = j0 + tx + TX * c;
                const bool ok = j < kend && (!a.causal || j <= i);
                s[r][c] = ok ? s[r][c] * a.scale : -INFINITY;
                mx = fmaxf(mx, s[r][c]);
            }
            mx = row_max(mx);
            /* All keys so far masked: subtract 0 instead of -inf so that exp gives 0, not NaN. */
            const float mu = mx == -INFINITY ? 0.0f : mx;
            const float alpha = expf(m[r] - mu);
            float sum = 0.0f;
#pragma unroll
            for (int c = 0; c < RN; c++) {
                s[r][c] = expf(s[r][c] - mu);
                sum += s[r][c];
            }
            sum = row_sum(sum);
            l[r] = l[r] * alpha + sum;
            m[r] = mx;
#pragma unroll
            for (int c = 0; c < RD; c++)
                o[r][c] *= alpha;
#pragma unroll
            for (int c = 0; c < RN; c++) {
                float p = s[r][c];
                if (a.dropout)
                    p *= keep[(ty + TY * r) * BK + tx + TX * c] ? a.keep_scale : 0.0f;
                Ps[(ty + TY * r) * PP + tx + TX * c] = p;
            }
        }
        __syncthreads(); /* P written; everyone is done reading the K tile */
        load_tile<T, D>(KVs, vp, a.v_sl, j0, kvalid, BK);
        __syncthreads();
        mm_nn<RM, RD, BK>(o, Ps, PP, KVs, PD, ty, tx);
    }
#pragma unroll
    for (int r = 0; r < RM; r++) {
        const int i = q0 + ty + TY * r;
        if (i >= a.Lq)
            continue;
        const int64_t row = (int64_t)bh * a.Lq + i;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        T *orow = a.out + row * D;
#pragma unroll
        for (int c = 0; c < RD; c++)
            st(&orow[tx + TX * c], o[r][c] * inv);
        if (tx == 0)
            a.lse[row] = l[r] > 0.0f ? m[r] + logf(l[r]) : -INFINITY;
    }
}

/* delta[row] = sum_d dout[row][d] * out[row][d]: a warp per row, 4 rows a block. */
template <class T, int D> __global__ void __launch_bounds__(THREADS) attn_bwd_delta_kernel(attn_args<T> a, int64_t rows)
{
    const int lane = threadIdx.x % 32;
    const int64_t row = (int64_t)blockIdx.x * (THREADS / 32) + threadIdx.x / 32;
    if (row >= rows)
        return;
    const int i = (int)(row % a.Lq);
    const int64_t bh = row / a.Lq;
    const int b = (int)(bh / a.H), h = (int)(bh % a.H);
    const T *g = a.dout + b * a.g_sb + h * a.g_sh + i * a.g_sl;
    const T *o = a.out + row * D;
    float s = 0.0f;
#pragma unroll
    for (int c = lane; c < D; c += 32)
        s += ld(g[c]) * ld(o[c]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0)
        a.delta[row] = s;
}

template <class T, int D, int BQ, int BK>
__global__ void __launch_bounds__(THREADS) attn_bwd_dkdv_kernel(attn_args<T> a)
{
    const int RM = BK / TY, RN = BQ / TX, RD = D / TX, PD = D + 1, PT = BQ + 1;
    FILO_DYNAMIC_SHARED(float, smem);
    float *Ks = smem, *Vs = Ks + BK * PD, *Qs = Vs + BK * PD, *Gs = Qs + BQ * PD;
    float *Pt = Gs + BQ * PD, *St = Pt + BK * PT, *lse_s = St + BK * PT, *delta_s = lse_s + BQ;
    unsigned char *keep = (unsigned char *)(delta_s + BQ); /* [BK][BQ] dropout decisions */
    const int bh = blockIdx.x, b = bh / a.H, h = bh % a.H, k0 = blockIdx.y * BK;
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX;
    const int n = key_len(a, b);
    const int kvalid = min(BK, n - k0); /* may be <= 0: the whole tile is padding */
    const T *qp = a.q + b * a.q_sb + h * a.q_sh;
    const T *kp = a.k + b * a.k_sb + h * a.k_sh;
    const T *vp = a.v + b * a.v_sb + h * a.v_sh;
    const T *gp = a.dout + b * a.g_sb + h * a.g_sh;

    float dk[RM][RD], dv[RM][RD];
#pragma unroll
    for (int r = 0; r < RM; r++)
#pragma unroll
        for (int c = 0; c < RD; c++) {
            dk[r][c] = 0.0f;
            dv[r][c] = 0.0f;
        }
    if (kvalid > 0) {
        load_tile<T, D>(Ks, kp, a.k_sl, k0, kvalid, BK);
        load_tile<T, D>(Vs, vp, a.v_sl, k0, kvalid, BK);
        /* Causal: queries i < k0 see none of these keys. */
        const int qstart = a.causal ? k0 / BQ * BQ : 0;
        for (int q0 = qstart; q0 < a.Lq; q0 += BQ) {
            const int qvalid = min(BQ, a.Lq - q0);
            __syncthreads(); /* the previous tile's products are done with Qs, Gs, Pt, St */
            load_tile<T, D>(Qs, qp, a.q_sl, q0, qvalid, BQ);
            load_tile<T, D>(Gs, gp, a.g_sl, q0, qvalid, BQ);
            for (int r = threadIdx.x; r < BQ; r += THREADS) {
                const int64_t row = (int64_t)bh * a.Lq + q0 + r;
                lse_s[r] = r < qvalid ? a.lse[row] : -INFINITY;
                delta_s[r] = r < qvalid ? a.delta[row] : 0.0f;
            }
            if (a.dropout)
                fill_keep<true>(a, keep, bh, q0, k0, BQ, BK);
            __syncthreads();
            float s[RM][RN], dp[RM][RN];
#pragma unroll
            for (int r = 0; r < RM; r++)
#pragma unroll
                for (int c = 0; c < RN; c++) {
                    s[r][c] = 0.0f;
                    dp[r][c] = 0.0f;
                }
            mm_nt<RM, RN, D>(s, Ks, PD, Qs, PD, ty, tx);
            mm_nt<RM, RN, D>(dp, Vs, PD, Gs, PD, ty, tx);
#pragma unroll
            for (int r = 0; r < RM; r++) {
                const int jj = ty + TY * r, j = k0 + jj;
#pragma unroll
                for (int c = 0; c < RN; c++) {
                    const int ii = tx + TX * c, i = q0 + ii;
                    const float lse = lse_s[ii];
                    const bool ok = jj < kvalid && (!a.causal || j <= i) && lse != -INFINITY;
                    float p = 0.0f, pd = 0.0f, ds = 0.0f;
                    if (ok) {
                        p = expf(s[r][c] * a.scale - lse);
                        const float mk = a.dropout ? (keep[jj * BQ + ii] ? a.keep_scale : 0.0f) : 1.0f;
                        pd = p * mk;
                        ds = p * (dp[r][c] * mk - delta_s[ii]) * a.scale;
                    }
                    Pt[jj * PT + ii] = pd;
                    St[jj * PT + ii] = ds;
                }
            }
            __syncthreads();
            mm_nn<RM, RD, BQ>(dv, Pt, PT, Gs, PD, ty, tx);
            mm_nn<RM, RD, BQ>(dk, St, PT, Qs, PD, ty, tx);
        }
    }
#pragma unroll
    for (int r = 0; r < RM; r++) {
        const int j = k0 + ty + TY * r;
        if (j >= a.Lk)
            continue;
        const int64_t row = (int64_t)bh * a.Lk + j;
#pragma unroll
        for (int c = 0; c < RD; c++) {
            st(&a.dk[row * D + tx + TX * c], dk[r][c]);
            st(&a.dv[row * D + tx + TX * c], dv[r][c]);
        }
    }
}

template <class T, int D, int BQ, int BK>
__global__ void __launch_bounds__(THREADS) attn_bwd_dq_kernel(attn_args<T> a)
{
    const int RM = BQ / TY, RN = BK / TX, RD = D / TX, PD = D + 1, PS = BK + 1;
    FILO_DYNAMIC_SHARED(float, smem);
    float *Qs = smem, *Gs = Qs + BQ * PD, *Ks = Gs + BQ * PD, *Vs = Ks + BK * PD;
    float *Ss = Vs + BK * PD, *lse_s = Ss + BQ * PS, *delta_s = lse_s + BQ;
    unsigned char *keep = (unsigned char *)(delta_s + BQ); /* [BQ][BK] dropout decisions */
    const int bh = blockIdx.x, b = bh / a.H, h = bh % a.H, q0 = blockIdx.y * BQ;
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX;
    const int n = key_len(a, b);
    int kend = n;
    if (a.causal && kend > q0 + BQ)
        kend = q0 + BQ;
    const int qvalid = min(BQ, a.Lq - q0);
    const T *qp = a.q + b * a.q_sb + h * a.q_sh;
    const T *kp = a.k + b * a.k_sb + h * a.k_sh;
    const T *vp = a.v + b * a.v_sb + h * a.v_sh;
    const T *gp = a.dout + b * a.g_sb + h * a.g_sh;
    load_tile<T, D>(Qs, qp, a.q_sl, q0, qvalid, BQ);
    load_tile<T, D>(Gs, gp, a.g_sl, q0, qvalid, BQ);
    for (int r = threadIdx.x; r < BQ; r += THREADS) {
        const int64_t row = (int64_t)bh * a.Lq + q0 + r;
        lse_s[r] = r < qvalid ? a.lse[row] : -INFINITY;
        delta_s[r] = r < qvalid ? a.delta[row] : 0.0f;
    }

    float dq[RM][RD];
#pragma unroll
    for (int r = 0; r < RM; r++)
#pragma unroll
        for (int c = 0; c < RD; c++)
            dq[r][c] = 0.0f;
    for (int j0 = 0; j0 < kend; j0 += BK) {
        const int kvalid = min(BK, kend - j0);
        __syncthreads(); /* the previous tile's dS K is done with Ks and Ss */
        load_tile<T, D>(Ks, kp, a.k_sl, j0, kvalid, BK);
        load_tile<T, D>(Vs, vp, a.v_sl, j0, kvalid, BK);
        if (a.dropout)
            fill_keep<false>(a, keep, bh, q0, j0, BQ, BK);
        __syncthreads();
        float s[RM][RN], dp[RM][RN];
#pragma unroll
        for (int r = 0; r < RM; r++)
#pragma unroll
            for (int c = 0; c < RN; c++) {
                s[r][c] = 0.0f;
                dp[r][c] = 0.0f;
            }
        mm_nt<RM, RN, D>(s, Qs, PD, Ks, PD, ty, tx);
        mm_nt<RM, RN, D>(dp, Gs, PD, Vs, PD, ty, tx);
#pragma unroll
        for (int r = 0; r < RM; r++) {
            const int ii = ty + TY * r, i = q0 + ii;
            const float lse = lse_s[ii], delta = delta_s[ii];
#pragma unroll
            for (int c = 0; c < RN; c++) {
                const int jj = tx + TX * c, j = j0 + jj;
                const bool ok = jj < kvalid && (!a.causal || j <= i) && lse != -INFINITY;
                float ds = 0.0f;
                if (ok) {
                    const float p = expf(s[r][c] * a.scale - lse);
                    const float mk = a.dropout ? (keep[ii * BK + jj] ? a.keep_scale : 0.0f) : 1.0f;
                    ds = p * (dp[r][c] * mk - delta) * a.scale;
                }
                Ss[ii * PS + jj] = ds;
            }
        }
        __syncthreads();
        mm_nn<RM, RD, BK>(dq, Ss, PS, Ks, PD, ty, tx);
    }
#pragma unroll
    for (int r = 0; r < RM; r++) {
        const int i = q0 + ty + TY * r;
        if (i >= a.Lq)
            continue;
        T *drow = a.dq + ((int64_t)bh * a.Lq + i) * D;
#pragma unroll
        for (int c = 0; c < RD; c++)
            st(&drow[tx + TX * c], dq[r][c]);
    }
}

template <class T> attn_args<T> make_args(const filo_attention_desc *d)
{
    attn_args<T> a = {};
    a.q = (const T *)d->q.data;
    a.k = (const T *)d->k.data;
    a.v = (const T *)d->v.data;
    a.dout = (const T *)d->dout.data;
    a.q_sb = d->q.sb, a.q_sh = d->q.sh, a.q_sl = d->q.sl;
    a.k_sb = d->k.sb, a.k_sh = d->k.sh, a.k_sl = d->k.sl;
    a.v_sb = d->v.sb, a.v_sh = d->v.sh, a.v_sl = d->v.sl;
    a.g_sb = d->dout.sb, a.g_sh = d->dout.sh, a.g_sl = d->dout.sl;
    a.out = (T *)d->out;
    a.lse = (float *)d->lse;
    a.delta = (float *)d->delta;
    a.dq = (T *)d->dq;
    a.dk = (T *)d->dk;
    a.dv = (T *)d->dv;
    a.lens = d->key_lengths;
    a.lens_i64 = d->key_lengths_dtype == FILO_I64;
    a.H = (int)d->H;
    a.Lq = (int)d->Lq;
    a.Lk = (int)d->Lk;
    a.scale = (float)d->scale;
    a.causal = d->causal;
    a.dropout = d->dropout_p > 0;
    a.keep_scale = d->dropout_p < 1 ? (float)(1.0 / (1.0 - d->dropout_p)) : 0.0f;
    a.threshold = filo_dropout_threshold(d->dropout_p);
    a.seed = d->seed;
    a.offset = d->offset;
    return a;
}

/* Dynamic shared memory over the default 48 KiB needs the kernel's opt-in. */
template <class K> filo_status smem_opt_in(K kernel, size_t bytes)
{
    if (bytes <= SMEM_DEFAULT)
        return FILO_OK;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess)
        return filo_error_set(FILO_ERR_CUDA, "filo_cuda_attention", "cudaFuncSetAttribute(%zu bytes of shared memory): %s",
                              bytes, cudaGetErrorString(e));
    return FILO_OK;
}

filo_status check_grid(const char *where, int64_t tiles)
{
    if (tiles > 65535)
        return filo_error_set(FILO_ERR_SHAPE, where, "sequence too long for the grid (%lld tiles over 65535)",
                              (long long)tiles);
    return FILO_OK;
}

template <class T, int D> filo_status forward(const filo_attention_desc *d, cudaStream_t s)
{
    const int BQ = tiles<D>::FQ, BK = tiles<D>::FK;
    attn_args<T> a = make_args<T>(d);
    int64_t qt = (d->Lq + BQ - 1) / BQ;
    FILO_TRY(check_grid("filo_cuda_attention_forward", qt));
    size_t smem = sizeof(float) * ((size_t)(BQ + BK) * (D + 1) + (size_t)BQ * (BK + 1)) + (size_t)BQ * BK;
    FILO_TRY(smem_opt_in(attn_fwd_kernel<T, D, BQ, BK>, smem));
    FILO_LAUNCH((attn_fwd_kernel<T, D, BQ, BK>), dim3((unsigned)(d->B * d->H), (unsigned)qt), THREADS, smem, s)(a);
    return filo_cuda_check_launch("filo_cuda_attention_forward");
}

template <class T, int D> filo_status backward(const filo_attention_desc *d, cudaStream_t s)
{
    const char *where = "filo_cuda_attention_backward";
    attn_args<T> a = make_args<T>(d);
    unsigned bh = (unsigned)(d->B * d->H);
    int64_t rows = d->B * d->H * d->Lq;
    FILO_LAUNCH((attn_bwd_delta_kernel<T, D>), (unsigned)((rows + 3) / 4), THREADS, 0, s)(a, rows);
    FILO_TRY(filo_cuda_check_launch(where));

    const int KQ = tiles<D>::KVQ, KK = tiles<D>::KVK;
    int64_t kt = (d->Lk + KK - 1) / KK;
    FILO_TRY(check_grid(where, kt));
    size_t smem = sizeof(float) * ((size_t)(2 * KK + 2 * KQ) * (D + 1) + (size_t)2 * KK * (KQ + 1) + 2 * KQ) +
                  (size_t)KQ * KK;
    FILO_TRY(smem_opt_in(attn_bwd_dkdv_kernel<T, D, KQ, KK>, smem));
    FILO_LAUNCH((attn_bwd_dkdv_kernel<T, D, KQ, KK>), dim3(bh, (unsigned)kt), THREADS, smem, s)(a);
    FILO_TRY(filo_cuda_check_launch(where));

    const int QQ = tiles<D>::DQQ, QK = tiles<D>::DQK;
    int64_t qt = (d->Lq + QQ - 1) / QQ;
    FILO_TRY(check_grid(where, qt));
    smem = sizeof(float) * ((size_t)(2 * QQ + 2 * QK) * (D + 1) + (size_t)QQ * (QK + 1) + 2 * QQ) + (size_t)QQ * QK;
    FILO_TRY(smem_opt_in(attn_bwd_dq_kernel<T, D, QQ, QK>, smem));
    FILO_LAUNCH((attn_bwd_dq_kernel<T, D, QQ, QK>), dim3(bh, (unsigned)qt), THREADS, smem, s)(a);
    return filo_cuda_check_launch(where);
}

template <int D> filo_status dispatch_dtype(const filo_attention_desc *d, cudaStream_t s, int bwd)
{
    switch (d->dtype) {
    case FILO_F32: return bwd ? backward<float, D>(d, s) : forward<float, D>(d, s);
    case FILO_BF16: return bwd ? backward<bf16_el, D>(d, s) : forward<bf16_el, D>(d, s);
    case FILO_F16: return bwd ? backward<f16_el, D>(d, s) : forward<f16_el, D>(d, s);
    default:
        return filo_error_set(FILO_ERR_DTYPE, bwd ? "filo_cuda_attention_backward" : "filo_cuda_attention_forward",
                              "dtype %s is not supported on CUDA (f32, bf16, f16)", filo_dtype_name(d->dtype));
    }
}

filo_status dispatch(const filo_attention_desc *d, void *stream, int bwd)
{
    cudaStream_t s = (cudaStream_t)stream;
    switch (d->D) {
    case 32: return dispatch_dtype<32>(d, s, bwd);
    case 64: return dispatch_dtype<64>(d, s, bwd);
    case 128: return dispatch_dtype<128>(d, s, bwd);
    default:
        return filo_error_set(FILO_ERR_SHAPE, bwd ? "filo_cuda_attention_backward" : "filo_cuda_attention_forward",
                              "head dim D = %d is not supported (32, 64 or 128)", d->D);
    }
}

} // namespace

extern "C" filo_status filo_cuda_attention_forward(const filo_attention_desc *d, void *stream)
{
    if (d->B * d->H * d->Lq == 0 || d->Lk == 0)
        return FILO_OK;
    return dispatch(d, stream, 0);
}

extern "C" filo_status filo_cuda_attention_backward(const filo_attention_desc *d, void *stream)
{
    if (d->B * d->H * d->Lq == 0 || d->Lk == 0)
        return FILO_OK;
    return dispatch(d, stream, 1);
}
