/* CPU max and average pooling, forward and backward: the reference for kernels/cuda/pool.cu.
 * Each output (forward) or each dx element (backward) is computed on its own, in the same order
 * as the CUDA kernels: windows row-major, and in the backward the covering windows by ascending
 * kernel offset (kh, then kw). bf16/f16/f32 accumulate in f32, f64 in double, so both backends
 * give the same values. The max backward first checks that every saved index is a position of
 * its own window (or -1, "none"), since the CUDA kernel can only ignore a bad one. */
#include <math.h>
#include <stdint.h>

#include "element.h"
#include "error.h"
#include "pool_backend.h"

static double load(const void *base, filo_dtype t, int64_t i)
{
    return filo_el_load_f((const char *)base + i * (int64_t)filo_el_size(t), t);
}

static void store(void *base, filo_dtype t, int64_t i, double v)
{
    filo_el_store_f((char *)base + i * (int64_t)filo_el_size(t), t, v);
}

/* a + b in the accumulation type: double for f64, float otherwise. */
static double acc_add(filo_dtype t, double a, double b) { return t == FILO_F64 ? a + b : (double)((float)a + (float)b); }

static double acc_div(filo_dtype t, double a, double b) { return t == FILO_F64 ? a / b : (double)((float)a / (float)b); }

filo_status filo_cpu_maxpool2d_forward(const filo_pool2d_desc *d)
{
    int64_t HW = d->H * d->W, OHW = d->OH * d->OW;
    for (int64_t p = 0; p < d->planes; p++)
        for (int64_t oh = 0; oh < d->OH; oh++)
            for (int64_t ow = 0; ow < d->OW; ow++) {
                double best = -INFINITY;
                int64_t arg = -1;
                for (int64_t i = 0; i < d->kh; i++) {
                    int64_t h = oh * d->sh - d->ph + i * d->dh;
                    if (h < 0 || h >= d->H)
                        continue;
                    for (int64_t j = 0; j < d->kw; j++) {
                        int64_t w = ow * d->sw - d->pw + j * d->dw;
                        if (w < 0 || w >= d->W)
                            continue;
                        double v = load(d->x, d->dtype, p * HW + h * d->W + w);
                        if (arg < 0 || v > best || isnan(v)) {
                            best = v;
                            arg = h * d->W + w;
                        }
                    }
                }
                int64_t o = p * OHW + oh * d->OW + ow;
                store(d->y, d->dtype, o, best);
                d->indices[o] = arg;
            }
    return FILO_OK;
}

/* Whether index `idx` is -1 or a position of window (oh, ow). */
static int index_in_window(const filo_pool2d_desc *d, int64_t oh, int64_t ow, int64_t idx)
{
    if (idx == -1)
        return 1;
    if (idx < 0 || idx >= d->H * d->W)
        return 0;
    int64_t rh = idx / d->W - (oh * d->sh - d->ph), rw = idx % d->W - (ow * d->sw - d->pw);
    return rh >= 0 && rw >= 0 && rh % d->dh == 0 && rw % d->dw == 0 && rh / d->dh < d->kh && rw / d->dw < d->kw;
}

filo_status filo_cpu_maxpool2d_backward(const filo_pool2d_desc *d)
{
    int64_t HW = d->H * d->W, OHW = d->OH * d->OW;
    for (int64_t p = 0; p < d->planes; p++)
        for (int64_t o = 0; o < OHW; o++) {
            int64_t idx = d->indices[p * OHW + o];
            if (!index_in_window(d, o / d->OW, o % d->OW, idx))
                return FILO_FAIL(FILO_ERR_INVALID_ARG,
                                 "index %lld at plane %lld, output (%lld, %lld) is not a position of its window "
                                 "in a %lldx%lld input",
                                 (long long)idx, (long long)p, (long long)(o / d->OW), (long long)(o % d->OW),
                                 (long long)d->H, (long long)d->W);
        }
    for (int64_t p = 0; p < d->planes; p++)
        for (int64_t h = 0; h < d->H; h++)
            for (int64_t w = 0; w < d->W; w++) {
                double acc = 0.0;
                int64_t pos = h * d->W + w;
                for (int64_t i = 0; i < d->kh; i++) {
                    int64_t th = h + d->ph - i * d->dh;
                    if (th < 0)
                        break;
                    if (th % d->sh != 0 || th / d->sh >= d->OH)
                        continue;
                    int64_t oh = th / d->sh;
                    for (int64_t j = 0; j < d->kw; j++) {
                        int64_t tw = w + d->pw - j * d->dw;
                        if (tw < 0)
                            break;
                        if (tw % d->sw != 0 || tw / d->sw >= d->OW)
                            continue;
                        int64_t o = p * OHW + oh * d->OW + tw / d->sw;
                        if (d->indices[o] == pos)
                            acc = acc_add(d->dtype, acc, load(d->dy, d->dtype, o));
                    }
                }
                store(d->dx, d->dtype, p * HW + pos, acc);
            }
    return FILO_OK;
}

/* The divisor of window (oh, ow), PyTorch's avg_pool2d rule. */
static int64_t avg_divisor(const filo_pool2d_desc *d, int64_t oh, int64_t ow)
{
    int64_t hs = oh * d->sh - d->ph, ws = ow * d->sw - d->pw;
    int64_t he = hs + d->kh < d->H + d->ph ? hs + d->kh : d->H + d->ph;
    int64_t we = ws + d->kw < d->W + d->pw ? ws + d->kw : d->W + d->pw;
    if (d->count_include_pad)
        return (he - hs) * (we - ws);
    hs = hs > 0 ? hs : 0;
    ws = ws > 0 ? ws : 0;
    he = he < d->H ? he : d->H;
    we = we < d->W ? we : d->W;
    int64_t n = (he - hs) * (we - ws);
    return n > 0 ? n : 1;
}

filo_status filo_cpu_avgpool2d_forward(const filo_pool2d_desc *d)
{
    int64_t HW = d->H * d->W, OHW = d->OH * d->OW;
    for (int64_t p = 0; p < d->planes; p++)
        for (int64_t oh = 0; oh < d->OH; oh++)
            for (int64_t ow = 0; ow < d->OW; ow++) {
                double acc = 0.0;
                for (int64_t i = 0; i < d->kh; i++) {
                    int64_t h = oh * d->sh - d->ph + i;
                    if (h < 0 || h >= d->H)
                        continue;
                    for (int64_t j = 0; j < d->kw; j++) {
                        int64_t w = ow * d->sw - d->pw + j;
                        if (w >= 0 && w < d->W)
                            acc = acc_add(d->dtype, acc, load(d->x, d->dtype, p * HW + h * d->W + w));
                    }
                }
                store(d->y, d->dtype, p * OHW + oh * d->OW + ow, acc_div(d->dtype, acc, (double)avg_divisor(d, oh, ow)));
            }
    return FILO_OK;
}

filo_status filo_cpu_avgpool2d_backward(const filo_pool2d_desc *d)
{
    int64_t HW = d->H * d->W, OHW = d->OH * d->OW;
    for (int64_t p = 0; p < d->planes; p++)
        for (int64_t h = 0; h < d->H; h++)
            for (int64_t w = 0; w < d->W; w++) {
                double acc = 0.0;
                for (int64_t i = 0; i < d->kh; i++) {
                    int64_t th = h + d->ph - i;
                    if (th < 0)
                        break;
                    if (th % d->sh != 0 || th / d->sh >= d->OH)
                        continue;
                    int64_t oh = th / d->sh;
                    for (int64_t j = 0; j < d->kw; j++) {
                        int64_t tw = w + d->pw - j;
                        if (tw < 0)
                            break;
                        if (tw % d->sw != 0 || tw / d->sw >= d->OW)
                            continue;
                        int64_t ow = tw / d->sw;
                        double g = acc_div(d->dtype, load(d->dy, d->dtype, p * OHW + oh * d->OW + ow),
                                           (double)avg_divisor(d, oh, ow));
                        acc = acc_add(d->dtype, acc, g);
                    }
                }
                store(d->dx, d->dtype, p * HW + h * d->W + w, acc);
            }
    return FILO_OK;
}
