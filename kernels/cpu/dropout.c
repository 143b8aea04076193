/* CPU dropout transform (kernels/dropout_backend.h): the reference for kernels/cuda/dropout.cu.
 *   y[i] = residual[i] + mask(i) * scale * (x[i] + bias[i % cols])
 * in f32 (double for f64) with the operations in the kernel's order, so the two backends agree
 * bitwise. mask(i) is the Philox rule of runtime/element.h, one block per 4 elements. Blocks of
 * elements are spread over the CPU pool. */
#include "dropout_backend.h"
#include "element.h"
#include "parallel.h"

static double load(const void *base, filo_dtype t, int64_t i)
{
    return filo_el_load_f((const char *)base + i * (int64_t)filo_el_size(t), t);
}

static void store(void *base, filo_dtype t, int64_t i, double v)
{
    filo_el_store_f((char *)base + i * (int64_t)filo_el_size(t), t, v);
}

/* apply_range for f32 tensors and bias: the same float operations in the same order, on typed
 * pointers instead of the dtype switch of every load and store (a training step's dropouts are
 * f32 on the CPU). */
static void apply_range_f32(const filo_dropout_desc *d, int64_t begin, int64_t end)
{
    const float *x = d->x, *bias = d->bias, *res = d->residual;
    float *y = d->y;
    float scale = (float)d->scale;
    uint32_t r[4] = {0, 0, 0, 0};
    int64_t c = d->cols > 0 ? begin % d->cols : 0;
    for (int64_t i = begin; i < end; i++) {
        int keep = d->mode == FILO_DROPOUT_KEEP_ALL;
        if (d->mode == FILO_DROPOUT_MASK) {
            if ((i & 3) == 0)
                filo_philox_block(d->offset + (uint64_t)i / 4u, 0, d->seed, r);
            keep = filo_dropout_keep_bits(r[i & 3], d->threshold);
        }
        float h = bias ? x[i] + bias[c] : x[i];
        float m = keep ? h * scale : 0.0f;
        y[i] = res ? m + res[i] : m;
        if (++c == d->cols)
            c = 0;
    }
}

/* Elements [begin, end); begin is a multiple of 4, so Philox blocks are not split. */
static void apply_range(void *ctx, int chunk, int64_t begin, int64_t end)
{
    (void)chunk;
    const filo_dropout_desc *d = ctx;
    if (d->dtype == FILO_F32 && (!d->bias || d->bias_dtype == FILO_F32)) {
        apply_range_f32(d, begin, end);
        return;
    }
    int f64 = d->dtype == FILO_F64;
    float scale_f = (float)d->scale;
    uint32_t r[4] = {0, 0, 0, 0};
    int64_t c = d->cols > 0 ? begin % d->cols : 0;
    for (int64_t i = begin; i < end; i++) {
        int keep = d->mode == FILO_DROPOUT_KEEP_ALL;
        if (d->mode == FILO_DROPOUT_MASK) {
            if ((i & 3) == 0)
                filo_philox_block(d->offset + (uint64_t)i / 4u, 0, d->seed, r);
            keep = filo_dropout_keep_bits(r[i & 3], d->threshold);
        }
        double xv = load(d->x, d->dtype, i);
        double bv = d->bias ? load(d->bias, d->bias_dtype, c) : 0.0;
        double rv = d->residual ? load(d->residual, d->dtype, i) : 0.0;
        double v;
        if (f64) {
            double h = d->bias ? xv + bv : xv;
            double m = keep ? h * d->scale : 0.0;
            v = d->residual ? m + rv : m;
        } else {
            float h = d->bias ? (float)xv + (float)bv : (float)xv;
            float m = keep ? h * scale_f : 0.0f;
            v = d->residual ? (float)(m + (float)rv) : m;
        }
        store(d->y, d->dtype, i, v);
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
