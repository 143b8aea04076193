/* CPU fused attention, forward and backward, in f32 (bf16 and f16 converted to f32 tile by tile;
 * f64 goes to the loops of kernels/cpu/attention_f64.c). The reference of
 * kernels/cuda/attention.cu: the same masks and the same dropout mask, element for element.
 *
 * Work goes in tiles: a group of (b, h) pairs (batch rows of all H heads, or some heads of one
 * batch row) times a block of query rows, sized so that the tile's scores fill at most
 * TILE_BYTES (long sequences take more, smaller tiles). Per tile:
 *   forward:  S = Q K^T (GEMM), then row by row P = softmax(scale * S) under the masks, with
 *             lse = log(rowsum) kept and the dropout factors applied, then O = P V (GEMM).
 *   backward: S = Q K^T and dP = dO V^T (GEMMs); row by row P = exp(scale * S - lse), the dropout
 *             factors M (0 or 1 / (1 - p)), Pd = P .* M and dS = scale * P .* (dP .* M - delta)
 *             with delta = rowsum(Pd .* dP) (= rowsum(dO .* O)); then dV += Pd^T dO, dK += dS^T Q,
 *             dQ = dS K (GEMMs).
 * The GEMMs are oneDNN matmuls batched over the tile's pairs; f32 Q, K, V and dO are read in place
 * through their strides (BERT's heads are strided views of one projection) and f32 outputs are
 * written in place. Under the causal mask or key lengths a tile's GEMMs stop at the last key any
 * of its rows sees; keys no row sees get dK = dV = 0.
 *
 * Threads: one filo_parallel_for per call, each tile on one pool thread with its GEMMs
 * single-threaded inside it (oneDNN runs serially inside a parallel region), so a tile's scores
 * stay in that core's L2 cache from the GEMM that writes them through the row pass to the GEMMs
 * that read them, and the threads meet once per call. GEMMs on both threads with the row pass
 * between them took five parallel regions per tile: on the 2-core test machine, busy with other
 * builds, that ran a BERT-mini layer's bf16 forward in 80 ms against 6-15 ms this way (each region
 * waits for a descheduled thread).
 *
 * Memory per thread: the tile's scores (twice in the backward), plus f32 copies of the tile's
 * operands and outputs for bf16/f16. */
#include <dnnl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention_cpu.h"
#include "dnnl_context.h"
#include "element.h"
#include "error.h"
#include "parallel.h"
#include "vec_math.h"

/* Bytes of scores of one tile: BERT-mini's 4 heads of 128 x 128 of one sequence. The scores stay
 * in the core's L2 cache between the GEMM that writes them, the row pass and the GEMM that reads
 * them. */
#define TILE_BYTES ((int64_t)256 << 10)

/* The row passes run in builds for AVX-512, AVX2 and the x86-64 baseline, picked when the library
 * loads (FILO_SIMD_CLONES); the helpers below inline into each. */
#define ATTN_HOT static inline __attribute__((always_inline))

enum { VW = FILO_V16 };

ATTN_HOT filo_v16f vmax(filo_v16f a, filo_v16f b) { return filo_v16_select(a > b, a, b); }

ATTN_HOT float hmax(filo_v16f v)
{
    float m = v[0];
    for (int i = 1; i < VW; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}

ATTN_HOT float hsum(filo_v16f v)
{
    float s = 0;
    for (int i = 0; i < VW; i++)
        s += v[i];
    return s;
}

/* x[0, n) = exp(scale * x[0, n) - shift); returns their sum. */
ATTN_HOT float exp_row(float *x, int n, float scale, float shift)
{
    filo_v16f acc = {0};
    int j = 0;
    for (; j + FILO_V16 <= n; j += FILO_V16) {
        filo_v16f e = filo_v16_exp(filo_v16_load(x + j) * scale - shift);
        filo_v16_store(x + j, e);
        acc += e;
    }
    if (j < n) {
        float t[FILO_V16] = {0};
        memcpy(t, x + j, sizeof(float) * (size_t)(n - j));
        filo_v16f e = filo_v16_exp(filo_v16_load(t) * scale - shift);
        filo_v16_store(t, e);
        memcpy(x + j, t, sizeof(float) * (size_t)(n - j));
        for (int k = 0; k < n - j; k++)
            acc[k] += t[k];
    }
    return hsum(acc);
}

/* mk[j] = the dropout factor (0 or keep_scale) of element index base + j, j in [0, n): Philox
 * block offset + i / 4, word i % 4, the rule of runtime/element.h, 16 blocks (64 elements) at a
 * time from the block that holds element base. */
ATTN_HOT void dropout_row(float *mk, uint64_t seed, uint64_t offset, uint64_t base, int n, uint32_t threshold,
                          float keep_scale)
{
    const filo_v16f ks = filo_v16_splat(keep_scale), zero = {0};
    uint64_t block = offset + base / 4u;
    for (int j = -(int)(base & 3u); j < n; j += 4 * FILO_V16, block += FILO_V16) {
        filo_v16u bits[4];
        float t[4 * FILO_V16];
        filo_v16_philox_elements(block, 0, seed, bits);
        for (int l = 0; l < 4; l++)
            filo_v16_store(t + l * FILO_V16, filo_v16_select(filo_v16_dropout_keep(bits[l], threshold), ks, zero));
        int lo = j < 0 ? -j : 0, hi = n - j < 4 * FILO_V16 ? n - j : 4 * FILO_V16;
        memcpy(mk + j + lo, t + lo, sizeof(float) * (size_t)(hi - lo));
    }
}

/* ---- f32 views of operands and GEMMs ---- */

/* A [gb, gh, rows, cols] f32 matrix batch: element (g0, g1, r, c) at p[g0 * st[0] + g1 * st[1] +
 * r * st[2] + c * st[3]]. */
typedef struct fview {
    float *p;
    int64_t st[4];
} fview;

static fview view_t(fview v) { return (fview){v.p, {v.st[0], v.st[1], v.st[3], v.st[2]}}; }

/* Contiguous [gb, gh, rows, cols] at p. */
static fview view_packed(float *p, int64_t gh, int64_t rows, int64_t cols)
{
    return (fview){p, {gh * rows * cols, rows * cols, cols, 1}};
}

/* Rows [l0, ...) of pairs (b0 + ., h0 + .) of a [B, H, L, D] operand, read in place (f32 only). */
static fview view_operand(const filo_attention_operand *o, int64_t b0, int64_t h0, int64_t l0)
{
    return (fview){(float *)o->data + b0 * o->sb + h0 * o->sh + l0 * o->sl, {o->sb, o->sh, o->sl, 1}};
}

/* Rows [l0, ...) of pairs (b0 + ., h0 + .) of a contiguous [B, H, L, D] f32 output. */
static fview view_output(void *data, int64_t H, int64_t L, int64_t D, int64_t b0, int64_t h0, int64_t l0)
{
    return (fview){(float *)data + ((b0 * H + h0) * L + l0) * D, {H * L * D, L * D, D, 1}};
}

/* oneDNN matmul primitives, cached per thread: a primitive is created and run on the same thread
 * (oneDNN's shared scratchpad allows no other use), and creating one, even from oneDNN's own
 * cache, costs more than running one of these small GEMMs. Keyed by shapes and strides; the data
 * pointers are set on each run. */
enum { GEMM_CACHE = 16 };

typedef struct gemm_key {
    int64_t dims[3][4], st[3][4];
    int64_t accumulate;
} gemm_key;

typedef struct gemm_entry {
    gemm_key key;
    dnnl_primitive_t prim;
    dnnl_memory_t mem[3];
    uint64_t used; /* 0: empty */
} gemm_entry;

static _Thread_local gemm_entry gemm_cache[GEMM_CACHE];
static _Thread_local uint64_t gemm_clock;

static void gemm_entry_free(gemm_entry *e)
{
    for (int i = 0; i < 3; i++)
        if (e->mem[i])
            dnnl_memory_destroy(e->mem[i]);
    if (e->prim)
        dnnl_primitive_destroy(e->prim);
    memset(e, 0, sizeof *e);
}

typedef struct gemm_temps {
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t post_ops;
    dnnl_primitive_desc_t pd;
} gemm_temps;

static filo_status gemm_entry_build(gemm_entry *e, gemm_temps *t)
{
    dnnl_memory_desc_t md[3];
    for (int i = 0; i < 3; i++)
        DNNL_TRY(dnnl_memory_desc_init_by_strides(&md[i], 4, e->key.dims[i], dnnl_f32, e->key.st[i]));
    dnnl_matmul_desc_t op;
    DNNL_TRY(dnnl_matmul_desc_init(&op, &md[0], &md[1], NULL, &md[2]));
    if (e->key.accumulate) {
        DNNL_TRY(dnnl_primitive_attr_create(&t->attr));
        DNNL_TRY(dnnl_post_ops_create(&t->post_ops));
        DNNL_TRY(dnnl_post_ops_append_sum(t->post_ops, 1.0f));
        DNNL_TRY(dnnl_primitive_attr_set_post_ops(t->attr, t->post_ops));
    }
    DNNL_TRY(dnnl_primitive_desc_create(&t->pd, &op, t->attr, filo_dnnl_engine(), NULL));
    DNNL_TRY(dnnl_primitive_create(&e->prim, t->pd));
    for (int i = 0; i < 3; i++)
        DNNL_TRY(dnnl_memory_create(&e->mem[i], &md[i], filo_dnnl_engine(), DNNL_MEMORY_NONE));
    return FILO_OK;
}

static filo_status gemm_entry_init(gemm_entry *e, const gemm_key *key)
{
    e->key = *key;
    gemm_temps t = {0};
    filo_status s = gemm_entry_build(e, &t);
    if (t.pd)
        dnnl_primitive_desc_destroy(t.pd);
    if (t.post_ops)
        dnnl_post_ops_destroy(t.post_ops);
    if (t.attr)
        dnnl_primitive_attr_destroy(t.attr);
    if (s != FILO_OK)
        gemm_entry_free(e);
    return s;
}

/* c (+)= a b for each of the gb x gh pairs: a is m x k, b is k x n, c is m x n. Single-threaded
 * inside a pool chunk, on all of libgomp's threads outside one. */
static filo_status gemm(int64_t gb, int64_t gh, int64_t m, int64_t k, int64_t n, fview a, fview b, fview c,
                        int accumulate)
{
    FILO_TRY(filo_dnnl_ready());
    gemm_key key;
    memset(&key, 0, sizeof key);
    const int64_t shape[3][4] = {{gb, gh, m, k}, {gb, gh, k, n}, {gb, gh, m, n}};
    const fview *v[3] = {&a, &b, &c};
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 4; j++) {
            key.dims[i][j] = shape[i][j];
            key.st[i][j] = v[i]->st[j];
        }
        /* A batch dim of extent 1 has no stride of its own: give it one past the rest. */
        for (int j = 1; j >= 0; j--)
            if (shape[i][j] == 1) {
                key.st[i][j] = 1;
                for (int l = j + 1; l < 4; l++)
                    if (key.st[i][l] * shape[i][l] > key.st[i][j])
                        key.st[i][j] = key.st[i][l] * shape[i][l];
            }
    }
    key.accumulate = accumulate;
    gemm_entry *e = NULL, *victim = &gemm_cache[0];
    for (int i = 0; i < GEMM_CACHE && !e; i++) {
        if (gemm_cache[i].used && memcmp(&gemm_cache[i].key, &key, sizeof key) == 0)
            e = &gemm_cache[i];
        else if (gemm_cache[i].used < victim->used)
            victim = &gemm_cache[i];
    }
    if (!e) {
        e = victim;
        if (e->used)
            gemm_entry_free(e);
        FILO_TRY(gemm_entry_init(e, &key));
    }
    e->used = ++gemm_clock;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->mem[0]}, {DNNL_ARG_WEIGHTS, e->mem[1]}, {DNNL_ARG_DST, e->mem[2]}};
    for (int i = 0; i < 3; i++)
        DNNL_TRY(dnnl_memory_set_data_handle(e->mem[i], v[i]->p));
    DNNL_TRY(dnnl_primitive_execute(e->prim, filo_dnnl_stream(), 3, args));
    DNNL_TRY(dnnl_stream_wait(filo_dnnl_stream()));
    return FILO_OK;
}

/* ---- tiles ---- */

/* Pairs b in [b0, b0 + gb) x h in [h0, h0 + gh) (gb == 1 or h0 == 0 and gh == H), query rows
 * [i0, i0 + rows), keys [0, kn). Row r of the tile's scores is pair r / rows, query i0 + r % rows. */
typedef struct attn_tile {
    const filo_attention_desc *d;
    int64_t b0, gb, h0, gh, i0, rows, kn;
    float *s, *dp;      /* [gb * gh * rows][kn] scores, then P (forward) or Pd (backward); dP, then dS */
} attn_tile;

static int64_t tile_pair(const attn_tile *t, int64_t r, int64_t *b, int64_t *h)
{
    int64_t g = r / t->rows;
    *b = t->b0 + g / t->gh;
    *h = t->h0 + g % t->gh;
    return *b * t->d->H + *h;
}

/* The keys row i of batch row b sees: [0, jend). */
static int64_t row_end(const filo_attention_desc *d, int64_t b, int64_t i)
{
    int64_t n = filo_cpu_attention_key_length(d, b);
    return d->causal && n > i + 1 ? i + 1 : n;
}

/* One row of scores into probabilities: s[0, kn) = softmax(scale * s) over [0, jend), 0 past it,
 * times the dropout factors of element indices base + j (mk: room for jend of them); returns the
 * row's lse. */
ATTN_HOT float softmax_row(const filo_attention_desc *d, float *s, float *mk, int64_t kn, int64_t jend, uint64_t base)
{
    if (jend <= 0) {
        memset(s, 0, sizeof(float) * (size_t)kn);
        return -INFINITY;
    }
    const float scale = (float)d->scale;
    int64_t j = 0;
    filo_v16f vm = filo_v16_splat(-INFINITY);
    for (; j + VW <= jend; j += VW)
        vm = vmax(vm, filo_v16_load(s + j) * scale);
    float mx = hmax(vm);
    for (; j < jend; j++)
        mx = s[j] * scale > mx ? s[j] * scale : mx;
    const float sum = exp_row(s, (int)jend, scale, mx), inv = 1.0f / sum;
    if (d->dropout_p > 0) {
        dropout_row(mk, d->seed, d->offset, base, (int)jend, filo_dropout_threshold(d->dropout_p),
                    d->dropout_p < 1 ? (float)(1.0 / (1.0 - d->dropout_p)) : 0.0f);
        for (j = 0; j + VW <= jend; j += VW)
            filo_v16_store(s + j, filo_v16_load(s + j) * filo_v16_load(mk + j) * inv);
        for (; j < jend; j++)
            s[j] *= mk[j] * inv;
    } else {
        for (j = 0; j + VW <= jend; j += VW)
            filo_v16_store(s + j, filo_v16_load(s + j) * inv);
        for (; j < jend; j++)
            s[j] *= inv;
    }
    memset(s + jend, 0, sizeof(float) * (size_t)(kn - jend));
    return (float)((double)mx + log((double)sum));
}

FILO_SIMD_CLONES static void forward_rows(const attn_tile *t, float *mk)
{
    const filo_attention_desc *d = t->d;
    for (int64_t r = 0; r < t->gb * t->gh * t->rows; r++) {
        int64_t b, h, bh = tile_pair(t, r, &b, &h), i = t->i0 + r % t->rows, row = bh * d->Lq + i;
        ((float *)d->lse)[row] = softmax_row(d, t->s + r * t->kn, mk, t->kn, row_end(d, b, i), (uint64_t)(row * d->Lk));
    }
}

/* One row of the backward: s[0, kn) = Pd, dp[0, kn) = dS (see the top of the file), mk[0, kn) the
 * dropout factors. delta is taken as rowsum(Pd .* dP), which equals rowsum(dO .* O) (O = Pd V)
 * and makes the row's dS sum to 0 up to rounding: the row of a single key gets dS = 0, as the
 * CUDA kernel gives it. */
ATTN_HOT void backward_row(const filo_attention_desc *d, float *s, float *dp, float *mk, int64_t kn, int64_t jend,
                           float lse, uint64_t base)
{
    if (jend <= 0 || lse == -INFINITY)
        jend = 0;
    const float scale = (float)d->scale;
    const int dropout = d->dropout_p > 0;
    int64_t j;
    if (jend > 0) {
        exp_row(s, (int)jend, scale, lse);
        if (dropout)
            dropout_row(mk, d->seed, d->offset, base, (int)jend, filo_dropout_threshold(d->dropout_p),
                        d->dropout_p < 1 ? (float)(1.0 / (1.0 - d->dropout_p)) : 0.0f);
        else
            for (j = 0; j < jend; j++)
                mk[j] = 1.0f;
    }
    filo_v16f vd = {0};
    for (j = 0; j + VW <= jend; j += VW)
        vd += filo_v16_load(s + j) * filo_v16_load(mk + j) * filo_v16_load(dp + j);
    float delta = hsum(vd);
    for (; j < jend; j++)
        delta += s[j] * mk[j] * dp[j];
    for (j = 0; j + VW <= jend; j += VW) {
        filo_v16f p = filo_v16_load(s + j), m = filo_v16_load(mk + j);
        filo_v16_store(dp + j, p * (filo_v16_load(dp + j) * m - delta) * scale);
        filo_v16_store(s + j, p * m);
    }
    for (; j < jend; j++) {
        float p = s[j];
        dp[j] = p * (dp[j] * mk[j] - delta) * scale;
        s[j] = p * mk[j];
    }
    memset(s + jend, 0, sizeof(float) * (size_t)(kn - jend));
    memset(dp + jend, 0, sizeof(float) * (size_t)(kn - jend));
}

FILO_SIMD_CLONES static void backward_rows(const attn_tile *t, float *mk)
{
    const filo_attention_desc *d = t->d;
    for (int64_t r = 0; r < t->gb * t->gh * t->rows; r++) {
        int64_t b, h, bh = tile_pair(t, r, &b, &h), i = t->i0 + r % t->rows, row = bh * d->Lq + i;
        backward_row(d, t->s + r * t->kn, t->dp + r * t->kn, mk, t->kn, row_end(d, b, i), ((const float *)d->lse)[row],
                     (uint64_t)(row * d->Lk));
    }
}

/* ---- conversions for bf16 and f16 ---- */

/* Copies rows [l0, l0 + nl) of the gb x gh pairs of an operand into f32, packed [gb, gh, nl, D]. */
FILO_SIMD_CLONES static fview pack(const filo_attention_operand *o, filo_dtype t, int64_t b0, int64_t gb, int64_t h0,
                              int64_t gh, int64_t l0, int64_t nl, int64_t D, float *dst)
{
    for (int64_t r = 0; r < gb * gh * nl; r++) {
        int64_t g = r / nl, b = b0 + g / gh, h = h0 + g % gh, l = l0 + r % nl;
        const uint16_t *src = (const uint16_t *)o->data + b * o->sb + h * o->sh + l * o->sl;
        float *row = dst + r * D;
        if (t == FILO_BF16)
            for (int64_t c = 0; c < D; c += FILO_V16) /* D is a multiple of 16 */
                filo_v16_store(row + c, filo_v16_load_bf16(src + c));
        else
            for (int64_t c = 0; c < D; c++)
                row[c] = filo_el_f16_to_f32(src[c]);
    }
    return view_packed(dst, gh, nl, D);
}

/* Stores packed f32 rows [gb, gh, nl, D] to rows [l0, l0 + nl) of a contiguous [B, H, L, D] output. */
FILO_SIMD_CLONES static void unpack(void *dst, filo_dtype t, int64_t H, int64_t L, int64_t b0, int64_t gb, int64_t h0,
                               int64_t gh, int64_t l0, int64_t nl, int64_t D, const float *src)
{
    for (int64_t r = 0; r < gb * gh * nl; r++) {
        int64_t g = r / nl, b = b0 + g / gh, h = h0 + g % gh, l = l0 + r % nl;
        uint16_t *row = (uint16_t *)dst + ((b * H + h) * L + l) * D;
        const float *from = src + r * D;
        if (t == FILO_BF16)
            for (int64_t c = 0; c < D; c += FILO_V16)
                filo_v16_store_bf16(row + c, filo_v16_load(from + c));
        else
            for (int64_t c = 0; c < D; c++)
                row[c] = filo_el_f32_to_f16(from[c]);
    }
}

/* Zeroes rows [l0, l1) of each pair of a [gb, gh, ., cols] view with unit column stride. */
static void zero_rows(fview v, int64_t gb, int64_t gh, int64_t l0, int64_t l1, int64_t cols)
{
    for (int64_t g = 0; g < gb * gh; g++)
        for (int64_t l = l0; l < l1; l++)
            memset(v.p + (g / gh) * v.st[0] + (g % gh) * v.st[1] + l * v.st[2], 0, sizeof(float) * (size_t)cols);
}


/* ---- the tiling ---- */

/* A group is gb batch rows of all H heads, or gh heads of one batch row; its query rows go in
 * blocks of qb. A group's block of scores holds at most TILE_BYTES. */
typedef struct attn_plan {
    int64_t gb, gh, qb;
    int64_t groups_h; /* groups per batch row run: ceil(H / gh) */
    int64_t groups;   /* all groups */
    int64_t blocks;   /* query blocks: ceil(Lq / qb) */
} attn_plan;

static attn_plan plan_of(const filo_attention_desc *d)
{
    int64_t cap = TILE_BYTES / (int64_t)sizeof(float) / d->Lk; /* score rows */
    attn_plan p = {1, 1, d->Lq, 0, 0, 0};
    if (cap >= d->Lq * d->H) {
        p.gh = d->H;
        p.gb = cap / (d->Lq * d->H) < d->B ? cap / (d->Lq * d->H) : d->B;
    } else if (cap >= d->Lq) {
        p.gh = cap / d->Lq;
    } else {
        p.qb = cap < 1 ? 1 : cap;
    }
    p.groups_h = (d->H + p.gh - 1) / p.gh;
    p.groups = (d->B + p.gb - 1) / p.gb * p.groups_h;
    p.blocks = (d->Lq + p.qb - 1) / p.qb;
    return p;
}

/* The last key any row of the query block [i0, i0 + rows) of batch rows [b0, b0 + gb) sees. */
static int64_t tile_keys(const filo_attention_desc *d, int64_t b0, int64_t gb, int64_t i0, int64_t rows)
{
    int64_t kn = 0;
    for (int64_t b = b0; b < b0 + gb; b++) {
        int64_t n = filo_cpu_attention_key_length(d, b);
        kn = n > kn ? n : kn;
    }
    return d->causal && kn > i0 + rows ? i0 + rows : kn;
}

static int half(filo_dtype t) { return t != FILO_F32; }

/* The work of one filo_parallel_for: forward units are (group, query block), backward units are
 * groups (a pair's query blocks add to its dK and dV in turn). Each unit runs on one pool thread
 * with its GEMMs single-threaded, so the scores stay in that core's cache between the GEMMs and
 * the row pass, and the threads meet once per call. */
typedef struct attn_job {
    const filo_attention_desc *d;
    attn_plan p;
    atomic_int failed;
    filo_status status;
    char msg[256];
} attn_job;

static void job_fail(attn_job *j, filo_status s)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&j->failed, &expected, 1)) {
        j->status = s;
        snprintf(j->msg, sizeof j->msg, "%s", filo_last_error());
    }
}

static filo_status job_run(attn_job *j, int64_t units, void (*range)(void *, int, int64_t, int64_t))
{
    filo_parallel_for(units, 1, range, j);
    if (atomic_load(&j->failed))
        return FILO_FAIL(j->status, "%s", j->msg);
    return FILO_OK;
}

/* Group g as a tile without its query block. */
static attn_tile group_tile(const attn_job *j, int64_t g)
{
    const filo_attention_desc *d = j->d;
    attn_tile t = {.d = d};
    t.b0 = g / j->p.groups_h * j->p.gb;
    t.h0 = g % j->p.groups_h * j->p.gh;
    t.gb = d->B - t.b0 < j->p.gb ? d->B - t.b0 : j->p.gb;
    t.gh = d->H - t.h0 < j->p.gh ? d->H - t.h0 : j->p.gh;
    return t;
}

static void tile_block(const attn_job *j, attn_tile *t, int64_t block)
{
    t->i0 = block * j->p.qb;
    t->rows = j->d->Lq - t->i0 < j->p.qb ? j->d->Lq - t->i0 : j->p.qb;
    t->kn = tile_keys(j->d, t->b0, t->gb, t->i0, t->rows);
}

/* ---- forward ---- */

static filo_status forward_unit(attn_tile *t, float *s, float *mk, float *qb, float *kb, float *vb, float *ob)
{
    const filo_attention_desc *d = t->d;
    const int64_t D = d->D, gb = t->gb, gh = t->gh, rows = t->rows, kn = t->kn;
    fview q, k, v, o;
    if (half(d->dtype)) {
        q = pack(&d->q, d->dtype, t->b0, gb, t->h0, gh, t->i0, rows, D, qb);
        k = pack(&d->k, d->dtype, t->b0, gb, t->h0, gh, 0, kn, D, kb);
        v = pack(&d->v, d->dtype, t->b0, gb, t->h0, gh, 0, kn, D, vb);
        o = view_packed(ob, gh, rows, D);
    } else {
        q = view_operand(&d->q, t->b0, t->h0, t->i0);
        k = view_operand(&d->k, t->b0, t->h0, 0);
        v = view_operand(&d->v, t->b0, t->h0, 0);
        o = view_output(d->out, d->H, d->Lq, D, t->b0, t->h0, t->i0);
    }
    t->s = s;
    if (kn > 0)
        FILO_TRY(gemm(gb, gh, rows, D, kn, q, view_t(k), view_packed(s, gh, rows, kn), 0));
    forward_rows(t, mk);
    if (kn > 0)
        FILO_TRY(gemm(gb, gh, rows, kn, D, view_packed(s, gh, rows, kn), v, o, 0));
    else
        zero_rows(o, gb, gh, 0, rows, D);
    if (half(d->dtype))
        unpack(d->out, d->dtype, d->H, d->Lq, t->b0, gb, t->h0, gh, t->i0, rows, D, ob);
    return FILO_OK;
}

static void forward_range(void *ctx, int chunk, int64_t u0, int64_t u1)
{
    (void)chunk;
    attn_job *j = ctx;
    const attn_plan *p = &j->p;
    const int64_t G = p->gb * p->gh, D = j->d->D, Lk = j->d->Lk;
    /* scores and a row of dropout factors; for bf16/f16 also f32 Q rows, K, V and out rows */
    size_t n = (size_t)(G * p->qb * Lk + Lk) + (half(j->d->dtype) ? (size_t)(G * (2 * p->qb + 2 * Lk) * D) : 0);
    float *s = malloc(sizeof(float) * n);
    if (!s) {
        job_fail(j, FILO_FAIL(FILO_ERR_OOM, "out of host memory for %zu bytes of attention scores", sizeof(float) * n));
        return;
    }
    float *mk = s + G * p->qb * Lk, *qb = mk + Lk, *kb = qb + G * p->qb * D, *vb = kb + G * Lk * D, *ob = vb + G * Lk * D;
    for (int64_t u = u0; u < u1 && !atomic_load(&j->failed); u++) {
        attn_tile t = group_tile(j, u / p->blocks);
        tile_block(j, &t, u % p->blocks);
        filo_status st = forward_unit(&t, s, mk, qb, kb, vb, ob);
        if (st != FILO_OK)
            job_fail(j, st);
    }
    free(s);
}

filo_status filo_cpu_attention_forward(const filo_attention_desc *d)
{
    if (d->dtype == FILO_F64)
        return filo_cpu_attention_forward_f64(d);
    const int64_t rows = d->B * d->H * d->Lq;
    if (rows == 0)
        return FILO_OK;
    if (d->Lk == 0) {
        memset(d->out, 0, (size_t)(rows * d->D) * filo_el_size(d->dtype));
        for (int64_t i = 0; i < rows; i++)
            ((float *)d->lse)[i] = -INFINITY;
        return FILO_OK;
    }
    attn_job j = {.d = d, .p = plan_of(d)};
    return job_run(&j, j.p.groups * j.p.blocks, forward_range);
}

/* ---- backward ---- */

typedef struct backward_bufs {
    float *s, *dp, *mk, *q, *dout, *dq, *k, *v, *dk, *dv;
} backward_bufs;

/* One query block of a group. dK and dV of the group hold keys [0, *written) so far: the block's
 * GEMMs write keys [0, kn) fresh on the first block and add to them after (keys new to this block
 * zeroed first). */
static filo_status backward_block(attn_tile *t, const backward_bufs *bb, const fview *k, const fview *v,
                                  const fview *dk, const fview *dv, int64_t *written)
{
    const filo_attention_desc *d = t->d;
    const int64_t D = d->D, kn = t->kn, gb = t->gb, gh = t->gh, rows = t->rows;
    fview q, dout, dq;
    if (half(d->dtype)) {
        q = pack(&d->q, d->dtype, t->b0, gb, t->h0, gh, t->i0, rows, D, bb->q);
        dout = pack(&d->dout, d->dtype, t->b0, gb, t->h0, gh, t->i0, rows, D, bb->dout);
        dq = view_packed(bb->dq, gh, rows, D);
    } else {
        q = view_operand(&d->q, t->b0, t->h0, t->i0);
        dout = view_operand(&d->dout, t->b0, t->h0, t->i0);
        dq = view_output(d->dq, d->H, d->Lq, D, t->b0, t->h0, t->i0);
    }
    if (kn > 0) {
        fview s = view_packed(bb->s, gh, rows, kn), dp = view_packed(bb->dp, gh, rows, kn);
        t->s = bb->s;
        t->dp = bb->dp;
        FILO_TRY(gemm(gb, gh, rows, D, kn, q, view_t(*k), s, 0));
        FILO_TRY(gemm(gb, gh, rows, D, kn, dout, view_t(*v), dp, 0));
        backward_rows(t, bb->mk);
        int add = *written > 0;
        if (add && kn > *written) {
            zero_rows(*dk, gb, gh, *written, kn, D);
            zero_rows(*dv, gb, gh, *written, kn, D);
        }
        *written = kn > *written ? kn : *written;
        FILO_TRY(gemm(gb, gh, kn, rows, D, view_t(s), dout, *dv, add));
        FILO_TRY(gemm(gb, gh, kn, rows, D, view_t(dp), q, *dk, add));
        FILO_TRY(gemm(gb, gh, rows, kn, D, dp, *k, dq, 0));
    } else {
        zero_rows(dq, gb, gh, 0, rows, D);
    }
    if (half(d->dtype))
        unpack(d->dq, d->dtype, d->H, d->Lq, t->b0, gb, t->h0, gh, t->i0, rows, D, bb->dq);
    return FILO_OK;
}

static filo_status backward_group(const attn_job *j, int64_t g, const backward_bufs *bb)
{
    const filo_attention_desc *d = j->d;
    const int64_t H = d->H, Lk = d->Lk, D = d->D;
    attn_tile t = group_tile(j, g);
    const int64_t b0 = t.b0, gb = t.gb, h0 = t.h0, gh = t.gh;
    int64_t kmax = tile_keys(d, b0, gb, d->Lq, 0), written = 0;
    fview k, v, dk, dv;
    if (half(d->dtype)) {
        k = pack(&d->k, d->dtype, b0, gb, h0, gh, 0, kmax, D, bb->k);
        v = pack(&d->v, d->dtype, b0, gb, h0, gh, 0, kmax, D, bb->v);
        dk = view_packed(bb->dk, gh, Lk, D);
        dv = view_packed(bb->dv, gh, Lk, D);
    } else {
        k = view_operand(&d->k, b0, h0, 0);
        v = view_operand(&d->v, b0, h0, 0);
        dk = view_output(d->dk, H, Lk, D, b0, h0, 0);
        dv = view_output(d->dv, H, Lk, D, b0, h0, 0);
    }
    for (int64_t block = 0; block < j->p.blocks; block++) {
        tile_block(j, &t, block);
        FILO_TRY(backward_block(&t, bb, &k, &v, &dk, &dv, &written));
    }
    zero_rows(dk, gb, gh, written, Lk, D);
    zero_rows(dv, gb, gh, written, Lk, D);
    if (half(d->dtype)) {
        unpack(d->dk, d->dtype, H, Lk, b0, gb, h0, gh, 0, Lk, D, bb->dk);
        unpack(d->dv, d->dtype, H, Lk, b0, gb, h0, gh, 0, Lk, D, bb->dv);
    }
    return FILO_OK;
}

static void backward_range(void *ctx, int chunk, int64_t g0, int64_t g1)
{
    (void)chunk;
    attn_job *j = ctx;
    const attn_plan *p = &j->p;
    const int64_t G = p->gb * p->gh, D = j->d->D, Lk = j->d->Lk, tile = G * p->qb * Lk;
    /* scores, dP and a row of dropout factors; for bf16/f16 also f32 Q, dO and dQ rows, K, V, dK
     * and dV */
    size_t n = (size_t)(2 * tile + Lk) + (half(j->d->dtype) ? (size_t)(G * (3 * p->qb + 4 * Lk) * D) : 0);
    float *buf = malloc(sizeof(float) * n);
    if (!buf) {
        job_fail(j, FILO_FAIL(FILO_ERR_OOM, "out of host memory for %zu bytes of attention scores", sizeof(float) * n));
        return;
    }
    backward_bufs bb = {.s = buf, .dp = buf + tile};
    bb.mk = bb.dp + tile;
    bb.q = bb.mk + Lk;
    bb.dout = bb.q + G * p->qb * D;
    bb.dq = bb.dout + G * p->qb * D;
    bb.k = bb.dq + G * p->qb * D;
    bb.v = bb.k + G * Lk * D;
    bb.dk = bb.v + G * Lk * D;
    bb.dv = bb.dk + G * Lk * D;
    for (int64_t g = g0; g < g1 && !atomic_load(&j->failed); g++) {
        filo_status st = backward_group(j, g, &bb);
        if (st != FILO_OK)
            job_fail(j, st);
    }
    free(buf);
}

filo_status filo_cpu_attention_backward(const filo_attention_desc *d)
{
    if (d->dtype == FILO_F64)
        return filo_cpu_attention_backward_f64(d);
    const size_t es = filo_el_size(d->dtype);
    const int64_t q_el = d->B * d->H * d->Lq * d->D, k_el = d->B * d->H * d->Lk * d->D;
    if (q_el == 0 || k_el == 0) {
        /* no query rows or no keys: every gradient is 0 */
        memset(d->dq, 0, (size_t)q_el * es);
        memset(d->dk, 0, (size_t)k_el * es);
        memset(d->dv, 0, (size_t)k_el * es);
        return FILO_OK;
    }
    attn_job j = {.d = d, .p = plan_of(d)};
    return job_run(&j, j.p.groups, backward_range);
}
