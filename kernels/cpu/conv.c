/* CPU 2-D convolution, forward and backward. f32 runs oneDNN's convolution primitives
 * (forward, backward data, backward weights; direct algorithm) in the layouts oneDNN picks
 * (format "any": blocked layouts for its JIT kernels), reordered from and to filo's plain
 * NCHW/OIHW buffers when they differ, and
 * bf16/f16 are converted to f32 around the same calls (bf16 compute is slower than f32 on CPUs
 * without AMX, see shared/notes/cpu-blas.md). oneDNN keeps created primitives in its own
 * primitive cache (keyed by the descriptors), so a repeated shape does not JIT again. f64, which
 * oneDNN lacks, runs plain loops in double: the reference path, also used by the tests'
 * finite-difference checks. The bias gradient is a sum over N, OH, OW in double, rounded once.
 * This is also what the CUDA backend runs under the emulator. */
#include <dnnl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "conv_backend.h"
#include "element.h"
#include "error.h"

/* One CPU engine per process; a stream per thread (a oneDNN stream is not for concurrent use). */
static dnnl_engine_t cpu_engine;
static dnnl_status_t cpu_engine_status = dnnl_success;
static pthread_once_t cpu_engine_once = PTHREAD_ONCE_INIT;
static _Thread_local dnnl_stream_t cpu_stream;

static void create_engine(void) { cpu_engine_status = dnnl_engine_create(&cpu_engine, dnnl_cpu, 0); }

static filo_status dnnl_fail(dnnl_status_t s, const char *call, const char *where)
{
    return filo_error_set(FILO_ERR_INTERNAL, where, "%s failed with oneDNN status %d", call, (int)s);
}

#define DNNL_TRY(call)                                      \
    do {                                                    \
        dnnl_status_t dnnl_try_s_ = (call);                 \
        if (dnnl_try_s_ != dnnl_success)                    \
            return dnnl_fail(dnnl_try_s_, #call, __func__); \
    } while (0)

static filo_status engine_and_stream(void)
{
    pthread_once(&cpu_engine_once, create_engine);
    if (cpu_engine_status != dnnl_success)
        return dnnl_fail(cpu_engine_status, "dnnl_engine_create", __func__);
    if (!cpu_stream)
        DNNL_TRY(dnnl_stream_create(&cpu_stream, cpu_engine, dnnl_stream_default_flags));
    return FILO_OK;
}

/* The memory descriptors of a convolution: the caller's plain layouts (NCHW, OIHW or GOIHW, x
 * for the bias) and the same shapes with format "any", which let oneDNN pick the blocked
 * layouts its JIT kernels run fastest on (the data is reordered to and from them). */
typedef struct conv_mds {
    dnnl_memory_desc_t src, wei, bias, dst;             /* plain */
    dnnl_memory_desc_t any_src, any_wei, any_dst;
    dnnl_dims_t strides, dilates, pad_l, pad_r;
} conv_mds;

static filo_status make_mds(const filo_conv2d_desc *d, conv_mds *m)
{
    dnnl_dims_t src = {d->N, d->C, d->H, d->W}, dst = {d->N, d->K, d->OH, d->OW}, bias = {d->K};
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->src, 4, src, dnnl_f32, dnnl_nchw));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->dst, 4, dst, dnnl_f32, dnnl_nchw));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->any_src, 4, src, dnnl_f32, dnnl_format_tag_any));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->any_dst, 4, dst, dnnl_f32, dnnl_format_tag_any));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->bias, 1, bias, dnnl_f32, dnnl_x));
    if (d->groups > 1) {
        dnnl_dims_t wei = {d->groups, d->K / d->groups, d->C / d->groups, d->R, d->S};
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->wei, 5, wei, dnnl_f32, dnnl_goihw));
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->any_wei, 5, wei, dnnl_f32, dnnl_format_tag_any));
    } else {
        dnnl_dims_t wei = {d->K, d->C, d->R, d->S};
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->wei, 4, wei, dnnl_f32, dnnl_oihw));
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->any_wei, 4, wei, dnnl_f32, dnnl_format_tag_any));
    }
    m->strides[0] = d->sh;
    m->strides[1] = d->sw;
    m->dilates[0] = d->dh - 1; /* oneDNN counts the gaps: 0 is no dilation */
    m->dilates[1] = d->dw - 1;
    m->pad_l[0] = d->ph;
    m->pad_l[1] = d->pw;
    /* The bottom/right padding that the last window reaches: PyTorch pads symmetrically and
     * drops what the stride does not reach, oneDNN wants the exact extent (possibly negative). */
    m->pad_r[0] = (d->OH - 1) * d->sh + (d->R - 1) * d->dh + 1 - d->H - d->ph;
    m->pad_r[1] = (d->OW - 1) * d->sw + (d->S - 1) * d->dw + 1 - d->W - d->pw;
    return FILO_OK;
}

/* Everything one call creates, destroyed together. */
typedef struct dnnl_objects {
    dnnl_primitive_desc_t pd[8];
    dnnl_primitive_t prim[8];
    dnnl_memory_t mem[8];
    int npd, nprim, nmem;
} dnnl_objects;

static void dnnl_objects_free(dnnl_objects *o)
{
    for (int i = 0; i < o->nmem; i++)
        dnnl_memory_destroy(o->mem[i]);
    for (int i = 0; i < o->nprim; i++)
        dnnl_primitive_destroy(o->prim[i]);
    for (int i = o->npd - 1; i >= 0; i--)
        dnnl_primitive_desc_destroy(o->pd[i]);
    memset(o, 0, sizeof *o);
}

static filo_status add_pd(dnnl_objects *o, const_dnnl_op_desc_t op, const_dnnl_primitive_desc_t hint,
                          dnnl_primitive_desc_t *out)
{
    DNNL_TRY(dnnl_primitive_desc_create(&o->pd[o->npd], op, NULL, cpu_engine, hint));
    *out = o->pd[o->npd++];
    return FILO_OK;
}

static filo_status add_mem(dnnl_objects *o, const dnnl_memory_desc_t *md, void *ptr, dnnl_memory_t *out)
{
    DNNL_TRY(dnnl_memory_create(&o->mem[o->nmem], md, cpu_engine, ptr));
    *out = o->mem[o->nmem++];
    return FILO_OK;
}

/* Copies `from` into `to` (different layouts of one tensor) on the stream. */
static filo_status reorder(dnnl_objects *o, dnnl_memory_t from, const dnnl_memory_desc_t *from_md, dnnl_memory_t to,
                           const dnnl_memory_desc_t *to_md)
{
    dnnl_primitive_desc_t rpd;
    DNNL_TRY(dnnl_reorder_primitive_desc_create(&o->pd[o->npd], from_md, cpu_engine, to_md, cpu_engine, NULL));
    rpd = o->pd[o->npd++];
    DNNL_TRY(dnnl_primitive_create(&o->prim[o->nprim], rpd));
    dnnl_primitive_t r = o->prim[o->nprim++];
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    DNNL_TRY(dnnl_primitive_execute(r, cpu_stream, 2, args));
    return FILO_OK;
}

/* One argument of a convolution primitive: the caller's plain buffer and the query for the
 * layout the primitive chose. */
typedef struct conv_arg {
    int arg;
    dnnl_query_t query;
    int index; /* of the query: the bias is the primitive's weights memory 1 */
    const dnnl_memory_desc_t *plain;
    void *ptr;
    int is_output;
} conv_arg;

/* Runs pd on the plain buffers: inputs are reordered into the primitive's layouts first and
 * outputs out of them after, where the layouts differ. Waits for the stream. */
static filo_status run_conv(dnnl_objects *o, dnnl_primitive_desc_t pd, const conv_arg *a, int n)
{
    dnnl_exec_arg_t ea[4];
    dnnl_memory_t user[4], inner[4];
    const dnnl_memory_desc_t *want[4];
    for (int i = 0; i < n; i++) {
        want[i] = dnnl_primitive_desc_query_md(pd, a[i].query, a[i].index);
        if (!want[i])
            return FILO_FAIL(FILO_ERR_INTERNAL, "oneDNN convolution has no memory for argument %d", a[i].arg);
        FILO_TRY(add_mem(o, a[i].plain, a[i].ptr, &user[i]));
        inner[i] = user[i];
        if (!dnnl_memory_desc_equal(want[i], a[i].plain)) {
            FILO_TRY(add_mem(o, want[i], DNNL_MEMORY_ALLOCATE, &inner[i]));
            if (!a[i].is_output)
                FILO_TRY(reorder(o, user[i], a[i].plain, inner[i], want[i]));
        }
        ea[i] = (dnnl_exec_arg_t){a[i].arg, inner[i]};
    }
    DNNL_TRY(dnnl_primitive_create(&o->prim[o->nprim], pd));
    DNNL_TRY(dnnl_primitive_execute(o->prim[o->nprim++], cpu_stream, n, ea));
    for (int i = 0; i < n; i++)
        if (a[i].is_output && inner[i] != user[i])
            FILO_TRY(reorder(o, inner[i], want[i], user[i], a[i].plain));
    DNNL_TRY(dnnl_stream_wait(cpu_stream));
    return FILO_OK;
}

static filo_status fwd_pd(dnnl_objects *o, const conv_mds *m, int with_bias, dnnl_prop_kind_t prop,
                          dnnl_primitive_desc_t *pd)
{
    dnnl_convolution_desc_t cd;
    DNNL_TRY(dnnl_dilated_convolution_forward_desc_init(&cd, prop, dnnl_convolution_direct, &m->any_src,
                                                        &m->any_wei, with_bias ? &m->bias : NULL, &m->any_dst,
                                                        m->strides, m->dilates, m->pad_l, m->pad_r));
    return add_pd(o, &cd, NULL, pd);
}

static filo_status forward_f32_objects(const filo_conv2d_desc *d, const float *x, const float *w, const float *bias,
                                       float *y, dnnl_objects *o)
{
    conv_mds m;
    dnnl_primitive_desc_t pd;
    FILO_TRY(make_mds(d, &m));
    FILO_TRY(fwd_pd(o, &m, bias != NULL, dnnl_forward_inference, &pd));
    conv_arg a[4] = {
        {DNNL_ARG_SRC, dnnl_query_src_md, 0, &m.src, (void *)x, 0},
        {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &m.wei, (void *)w, 0},
        {DNNL_ARG_DST, dnnl_query_dst_md, 0, &m.dst, y, 1},
        {DNNL_ARG_BIAS, dnnl_query_weights_md, 1, &m.bias, (void *)bias, 0},
    };
    return run_conv(o, pd, a, bias ? 4 : 3);
}

static filo_status backward_data_f32_objects(const filo_conv2d_desc *d, const float *dy, const float *w, float *dx,
                                             dnnl_objects *o)
{
    conv_mds m;
    dnnl_primitive_desc_t hint, pd;
    FILO_TRY(make_mds(d, &m));
    FILO_TRY(fwd_pd(o, &m, 0, dnnl_forward_training, &hint));
    dnnl_convolution_desc_t cd;
    DNNL_TRY(dnnl_dilated_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &m.any_src, &m.any_wei,
                                                              &m.any_dst, m.strides, m.dilates, m.pad_l, m.pad_r));
    FILO_TRY(add_pd(o, &cd, hint, &pd));
    conv_arg a[3] = {
        {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &m.dst, (void *)dy, 0},
        {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &m.wei, (void *)w, 0},
        {DNNL_ARG_DIFF_SRC, dnnl_query_diff_src_md, 0, &m.src, dx, 1},
    };
    return run_conv(o, pd, a, 3);
}

static filo_status backward_weights_f32_objects(const filo_conv2d_desc *d, const float *dy, const float *x, float *dw,
                                                dnnl_objects *o)
{
    conv_mds m;
    dnnl_primitive_desc_t hint, pd;
    FILO_TRY(make_mds(d, &m));
    FILO_TRY(fwd_pd(o, &m, 0, dnnl_forward_training, &hint));
    dnnl_convolution_desc_t cd;
    DNNL_TRY(dnnl_dilated_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &m.any_src, &m.any_wei,
                                                                 NULL, &m.any_dst, m.strides, m.dilates, m.pad_l,
                                                                 m.pad_r));
    FILO_TRY(add_pd(o, &cd, hint, &pd));
    conv_arg a[3] = {
        {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &m.dst, (void *)dy, 0},
        {DNNL_ARG_SRC, dnnl_query_src_md, 0, &m.src, (void *)x, 0},
        {DNNL_ARG_DIFF_WEIGHTS, dnnl_query_diff_weights_md, 0, &m.wei, dw, 1},
    };
    return run_conv(o, pd, a, 3);
}

/* ---- f64 loops ---- */

static void forward_f64(const filo_conv2d_desc *d, const double *x, const double *w, const double *bias, double *y)
{
    int64_t Cg = d->C / d->groups, Kg = d->K / d->groups;
    for (int64_t n = 0; n < d->N; n++)
        for (int64_t k = 0; k < d->K; k++) {
            const double *xg = x + (n * d->C + (k / Kg) * Cg) * d->H * d->W;
            const double *wk = w + k * Cg * d->R * d->S;
            for (int64_t oh = 0; oh < d->OH; oh++)
                for (int64_t ow = 0; ow < d->OW; ow++) {
                    double acc = bias ? bias[k] : 0.0;
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t r = 0; r < d->R; r++) {
                            int64_t h = oh * d->sh - d->ph + r * d->dh;
                            if (h < 0 || h >= d->H)
                                continue;
                            for (int64_t s = 0; s < d->S; s++) {
                                int64_t ww = ow * d->sw - d->pw + s * d->dw;
                                if (ww >= 0 && ww < d->W)
                                    acc += xg[(c * d->H + h) * d->W + ww] * wk[(c * d->R + r) * d->S + s];
                            }
                        }
                    y[((n * d->K + k) * d->OH + oh) * d->OW + ow] = acc;
                }
        }
}

/* dx gathers, for each of its elements, the outputs whose windows cover it. */
static void backward_data_f64(const filo_conv2d_desc *d, const double *dy, const double *w, double *dx)
{
    int64_t Cg = d->C / d->groups, Kg = d->K / d->groups;
    for (int64_t n = 0; n < d->N; n++)
        for (int64_t ci = 0; ci < d->C; ci++) {
            int64_t g = ci / Cg, c = ci % Cg;
            for (int64_t h = 0; h < d->H; h++)
                for (int64_t ww = 0; ww < d->W; ww++) {
                    double acc = 0.0;
                    for (int64_t k = g * Kg; k < (g + 1) * Kg; k++) {
                        const double *dyk = dy + (n * d->K + k) * d->OH * d->OW;
                        const double *wk = w + (k * Cg + c) * d->R * d->S;
                        for (int64_t r = 0; r < d->R; r++) {
                            int64_t th = h + d->ph - r * d->dh;
                            if (th < 0)
                                break;
                            if (th % d->sh != 0 || th / d->sh >= d->OH)
                                continue;
                            for (int64_t s = 0; s < d->S; s++) {
                                int64_t tw = ww + d->pw - s * d->dw;
                                if (tw < 0)
                                    break;
                                if (tw % d->sw != 0 || tw / d->sw >= d->OW)
                                    continue;
                                acc += dyk[(th / d->sh) * d->OW + tw / d->sw] * wk[r * d->S + s];
                            }
                        }
                    }
                    dx[((n * d->C + ci) * d->H + h) * d->W + ww] = acc;
                }
        }
}

static void backward_weights_f64(const filo_conv2d_desc *d, const double *dy, const double *x, double *dw)
{
    int64_t Cg = d->C / d->groups, Kg = d->K / d->groups;
    for (int64_t k = 0; k < d->K; k++)
        for (int64_t c = 0; c < Cg; c++)
            for (int64_t r = 0; r < d->R; r++)
                for (int64_t s = 0; s < d->S; s++) {
                    double acc = 0.0;
                    for (int64_t n = 0; n < d->N; n++) {
                        const double *xc = x + (n * d->C + (k / Kg) * Cg + c) * d->H * d->W;
                        const double *dyk = dy + (n * d->K + k) * d->OH * d->OW;
                        for (int64_t oh = 0; oh < d->OH; oh++) {
                            int64_t h = oh * d->sh - d->ph + r * d->dh;
                            if (h < 0 || h >= d->H)
                                continue;
                            for (int64_t ow = 0; ow < d->OW; ow++) {
                                int64_t ww = ow * d->sw - d->pw + s * d->dw;
                                if (ww >= 0 && ww < d->W)
                                    acc += dyk[oh * d->OW + ow] * xc[h * d->W + ww];
                            }
                        }
                    }
                    dw[((k * Cg + c) * d->R + r) * d->S + s] = acc;
                }
}

/* ---- dtype handling ---- */

static void bias_grad(const filo_conv2d_desc *d, const void *dy, void *dbias)
{
    size_t es = filo_el_size(d->dtype);
    int64_t plane = d->OH * d->OW;
    for (int64_t k = 0; k < d->K; k++) {
        double acc = 0.0;
        for (int64_t n = 0; n < d->N; n++) {
            const char *p = (const char *)dy + (size_t)((n * d->K + k) * plane) * es;
            for (int64_t i = 0; i < plane; i++)
                acc += filo_el_load_f(p + (size_t)i * es, d->dtype);
        }
        filo_el_store_f((char *)dbias + (size_t)k * es, d->dtype, acc);
    }
}

/* A f32 copy of n elements of dtype t (NULL src gives NULL; *oom set when malloc fails). */
static float *to_f32(const void *src, filo_dtype t, int64_t n, int *oom)
{
    if (!src)
        return NULL;
    float *buf = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!buf) {
        *oom = 1;
        return NULL;
    }
    size_t es = filo_el_size(t);
    for (int64_t i = 0; i < n; i++)
        buf[i] = (float)filo_el_load_f((const char *)src + (size_t)i * es, t);
    return buf;
}

static void from_f32(void *dst, filo_dtype t, const float *src, int64_t n)
{
    size_t es = filo_el_size(t);
    for (int64_t i = 0; i < n; i++)
        filo_el_store_f((char *)dst + (size_t)i * es, t, src[i]);
}

static filo_status oom(const filo_conv2d_desc *d)
{
    return FILO_FAIL(FILO_ERR_OOM, "out of host memory for the f32 copies of a %s convolution (x [%lld, %lld, %lld, %lld])",
                     filo_dtype_name(d->dtype), (long long)d->N, (long long)d->C, (long long)d->H, (long long)d->W);
}

filo_status filo_cpu_conv2d_forward(const filo_conv2d_desc *d, const void *x, const void *w, const void *bias,
                                    void *y)
{
    if (d->dtype == FILO_F64) {
        forward_f64(d, x, w, bias, y);
        return FILO_OK;
    }
    if (d->dtype != FILO_F32 && d->dtype != FILO_BF16 && d->dtype != FILO_F16)
        return FILO_FAIL(FILO_ERR_DTYPE, "no convolution for %s", filo_dtype_name(d->dtype));
    FILO_TRY(engine_and_stream());
    int64_t nx = d->N * d->C * d->H * d->W, nw = d->K * (d->C / d->groups) * d->R * d->S;
    int64_t ny = d->N * d->K * d->OH * d->OW;
    dnnl_objects o;
    memset(&o, 0, sizeof o);
    if (d->dtype == FILO_F32) {
        filo_status s = forward_f32_objects(d, x, w, bias, y, &o);
        dnnl_objects_free(&o);
        return s;
    }
    int no_mem = 0;
    float *fx = to_f32(x, d->dtype, nx, &no_mem), *fw = to_f32(w, d->dtype, nw, &no_mem);
    float *fb = to_f32(bias, d->dtype, d->K, &no_mem), *fy = malloc(sizeof(float) * (size_t)ny);
    filo_status s = no_mem || !fy ? oom(d) : forward_f32_objects(d, fx, fw, fb, fy, &o);
    if (s == FILO_OK)
        from_f32(y, d->dtype, fy, ny);
    dnnl_objects_free(&o);
    free(fx);
    free(fw);
    free(fb);
    free(fy);
    return s;
}

filo_status filo_cpu_conv2d_backward(const filo_conv2d_desc *d, const void *dy, const void *x, const void *w,
                                     void *dx, void *dw, void *dbias)
{
    if (dbias)
        bias_grad(d, dy, dbias);
    if (d->dtype == FILO_F64) {
        if (dx)
            backward_data_f64(d, dy, w, dx);
        if (dw)
            backward_weights_f64(d, dy, x, dw);
        return FILO_OK;
    }
    if (d->dtype != FILO_F32 && d->dtype != FILO_BF16 && d->dtype != FILO_F16)
        return FILO_FAIL(FILO_ERR_DTYPE, "no convolution for %s", filo_dtype_name(d->dtype));
    if (!dx && !dw)
        return FILO_OK;
    FILO_TRY(engine_and_stream());
    int64_t nx = d->N * d->C * d->H * d->W, nw = d->K * (d->C / d->groups) * d->R * d->S;
    int64_t ny = d->N * d->K * d->OH * d->OW;
    dnnl_objects o;
    memset(&o, 0, sizeof o);
    filo_status s = FILO_OK;
    if (d->dtype == FILO_F32) {
        if (dx)
            s = backward_data_f32_objects(d, dy, w, dx, &o);
        dnnl_objects_free(&o);
        if (s == FILO_OK && dw)
            s = backward_weights_f32_objects(d, dy, x, dw, &o);
        dnnl_objects_free(&o);
        return s;
    }
    int no_mem = 0;
    float *fdy = to_f32(dy, d->dtype, ny, &no_mem);
    float *fw = dx ? to_f32(w, d->dtype, nw, &no_mem) : NULL, *fx = dw ? to_f32(x, d->dtype, nx, &no_mem) : NULL;
    float *fdx = dx ? malloc(sizeof(float) * (size_t)nx) : NULL, *fdw = dw ? malloc(sizeof(float) * (size_t)nw) : NULL;
    if (no_mem || (dx && !fdx) || (dw && !fdw))
        s = oom(d);
    if (s == FILO_OK && dx) {
        s = backward_data_f32_objects(d, fdy, fw, fdx, &o);
        dnnl_objects_free(&o);
        if (s == FILO_OK)
            from_f32(dx, d->dtype, fdx, nx);
    }
    if (s == FILO_OK && dw) {
        s = backward_weights_f32_objects(d, fdy, fx, fdw, &o);
        dnnl_objects_free(&o);
        if (s == FILO_OK)
            from_f32(dw, d->dtype, fdw, nw);
    }
    free(fdy);
    free(fw);
    free(fx);
    free(fdx);
    free(fdw);
    return s;
}
