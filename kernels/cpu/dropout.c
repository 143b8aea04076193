/* CPU dropout transform (kernels/dropout_backend.h); the CUDA version: kernels/cuda/dropout.cu.
 *   y[i] = residual[i] + mask(i) * scale * (x[i] + bias[i % cols])
 * in f32 (double for f64) with the operations in the kernel's order, so the two backends agree
 * bitwise. mask(i) is the Philox rule of runtime/element.h, one block per 4 elements, here drawn
 * 16 blocks at a time (kernels/cpu/vec_math.h) for f32/bf16/f16, whose arithmetic runs on
 * 16-lane vectors; f64 goes element by element. Blocks of elements are spread over the CPU pool. */
#include "dropout_backend.h"
#include "element.h"
#include "parallel.h"
#include "vec_math.h"

static double load(const void *base, filo_dtype t, int64_t i)
{
    return filo_el_load_f((const char *)base + i * (int64_t)filo_el_size(t), t);
}

static void store(void *base, filo_dtype t, int64_t i, double v)
{
    filo_el_store_f((char *)base + i * (int64_t)filo_el_size(t), t, v);
}

/* 16 bias values from column c on, wrapping at cols. */
FILO_SIMD_INLINE filo_v16f bias_lanes(const filo_dropout_desc *d, int64_t c)
{
    if (c + FILO_V16 <= d->cols)
        return filo_v16_load_n((const char *)d->bias + (size_t)c * filo_el_size(d->bias_dtype), d->bias_dtype, FILO_V16);
    float v[FILO_V16];
    for (int k = 0; k < FILO_V16; k++, c = c + 1 == d->cols ? 0 : c + 1)
        v[k] = (float)load(d->bias, d->bias_dtype, c);
    return filo_v16_load(v);
}

/* Elements [begin, end) of f32/bf16/f16, begin a multiple of 4: 64 elements (16 Philox blocks) a
 * draw, 16 a vector, the lanes past end unused. */
FILO_SIMD_CLONES static void apply_range_vec(const filo_dropout_desc *d, int64_t begin, int64_t end)
{
    size_t es = filo_el_size(d->dtype);
    float scale = (float)d->scale;
    int64_t c = d->bias ? begin % d->cols : 0;
    filo_v16u bits[4] = {{0}};
    for (int64_t i0 = begin; i0 < end; i0 += 64) {
        if (d->mode == FILO_DROPOUT_MASK)
            filo_v16_philox_elements(d->offset + (uint64_t)i0 / 4u, 0, d->seed, bits);
        for (int k = 0; k < 4; k++) {
            int64_t i = i0 + FILO_V16 * k;
            if (i >= end)
                break;
            int n = end - i < FILO_V16 ? (int)(end - i) : FILO_V16;
            filo_v16i keep = (filo_v16i){0} - (d->mode == FILO_DROPOUT_KEEP_ALL);
            if (d->mode == FILO_DROPOUT_MASK)
                keep = filo_v16_dropout_keep(bits[k], d->threshold);
            filo_v16f h = filo_v16_load_n((const char *)d->x + (size_t)i * es, d->dtype, n);
            if (d->bias) {
                h = h + bias_lanes(d, c);
                c += FILO_V16;
                while (c >= d->cols)
                    c -= d->cols;
            }
            filo_v16f m = (filo_v16f)((filo_v16i)(h * scale) & keep);
            if (d->residual)
                m = m + filo_v16_load_n((const char *)d->residual + (size_t)i * es, d->dtype, n);
            filo_v16_store_n((char *)d->y + (size_t)i * es, d->dtype, m, n);
        }
    }
}

/* Elements [begin, end); begin is a multiple of 4, so Philox blocks are not split. */
static void apply_range(void *ctx, int chunk, int64_t begin, int64_t end)
{
    (void)chunk;
    const filo_dropout_desc *d = ctx;
    if (d->dtype != FILO_F64) {
        apply_range_vec(d, begin, end);
        return;
    }
    uint32_t r[4] = {0, 0, 0, 0};
    int64_t c = d->cols > 0 ? begin % d->cols : 0;
    for (int64_t i = begin; i < end; i++) {
        int keep = d->mode == FILO_DROPOUT_KEEP_ALL;
        if (d->mode == FILO_DROPOUT_MASK) {
            if ((i & 3) == 0)
                filo_philox_block(d->offset + (uint64_t)i / 4u, 0, d->seed, r);
            keep = filo_dropout_keep_bits(r[i & 3], d->threshold);
        }
        double h = d->bias ? load(d->x, d->dtype, i) + load(d->bias, d->bias_dtype, c) : load(d->x, d->dtype, i);
        double m = keep ? h * d->scale : 0.0;
        store(d->y, d->dtype, i, d->residual ? m + load(d->residual, d->dtype, i) : m);
        if (++c == d->cols)
            c = 0;
    }
}

/* The pool's chunks are cut in units of 4 elements so each chunk starts on a Philox block. */
typedef struct apply_job {
    const filo_dropout_desc *d;
} apply_job;

static void apply_blocks(void *ctx, int chunk, int64_t b0, int64_t b1)
{
    const filo_dropout_desc *d = ((const apply_job *)ctx)->d;
    int64_t end = b1 * 4 < d->n ? b1 * 4 : d->n;
    apply_range((void *)d, chunk, b0 * 4, end);
}

filo_status filo_cpu_dropout_apply(const filo_dropout_desc *d)
{
    apply_job job = {d};
    filo_parallel_for((d->n + 3) / 4, 8192, apply_blocks, &job);
    return FILO_OK;
}
