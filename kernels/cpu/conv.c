/* CPU 2-D convolution, forward and backward.
 * f32: oneDNN's convolution primitives (forward, backward data, backward weights; direct
 * algorithm) in the layouts oneDNN picks (format "any": the blocked layouts of its JIT kernels),
 * with reorders from and to filo's plain NCHW / OIHW buffers where they differ. The primitives and
 * reorders of a geometry are built once and kept in a small per-thread cache (conv_plan).
 * bf16/f16: converted to f32 around the same calls (bf16 compute is slower than f32 on CPUs
 * without AMX, see shared/notes/cpu-blas.md).
 * f64, which oneDNN lacks: plain loops in double, the reference path (also what the tests'
 * finite-difference checks run).
 * The bias gradient is a sum over N, OH, OW in double, rounded once.
 * This is also what the CUDA backend runs under the emulator. */
#include <dnnl.h>
#include <stdlib.h>
#include <string.h>

#include "conv_backend.h"
#include "element.h"
#include "dnnl_context.h"
#include "error.h"

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

/* A ready-to-run convolution of one kind and geometry: its primitive and, for each argument whose
 * layout oneDNN chose differently from filo's plain one, the reorder to (inputs) or from
 * (outputs) that layout. Creating these costs far more than running a small convolution, so each
 * thread keeps the PLAN_SLOTS most recently used plans (thread-local: oneDNN primitives may be
 * shared, but a plan's reuse order is per thread anyway). They live until the thread ends. */
typedef enum { PLAN_FWD, PLAN_FWD_BIAS, PLAN_BWD_DATA, PLAN_BWD_WEIGHTS } plan_kind;

typedef struct plan_arg {
    int arg;
    int is_output;
    dnnl_memory_desc_t plain, inner;
    dnnl_primitive_desc_t reorder_pd; /* NULL: the primitive reads/writes the plain buffer */
    dnnl_primitive_t reorder;
} plan_arg;

#define PLAN_KEY_LEN 16
#define PLAN_SLOTS 16

typedef struct conv_plan {
    uint64_t last_use; /* 0: an empty slot */
    plan_kind kind;
    int64_t key[PLAN_KEY_LEN];
    dnnl_primitive_desc_t hint, pd;
    dnnl_primitive_t prim;
    int nargs;
    plan_arg args[4];
} conv_plan;

static _Thread_local conv_plan plans[PLAN_SLOTS];
static _Thread_local uint64_t plan_clock;

static void plan_key(const filo_conv2d_desc *d, int64_t *key)
{
    const int64_t k[PLAN_KEY_LEN] = {d->N,  d->C,  d->H,  d->W,  d->K,  d->R,  d->S,  d->OH,
                                     d->OW, d->sh, d->sw, d->ph, d->pw, d->dh, d->dw, d->groups};
    memcpy(key, k, sizeof k);
}

static void plan_free(conv_plan *p)
{
    for (int i = 0; i < p->nargs; i++) {
        if (p->args[i].reorder)
            dnnl_primitive_destroy(p->args[i].reorder);
        if (p->args[i].reorder_pd)
            dnnl_primitive_desc_destroy(p->args[i].reorder_pd);
    }
    if (p->prim)
        dnnl_primitive_destroy(p->prim);
    if (p->pd)
        dnnl_primitive_desc_destroy(p->pd);
    if (p->hint)
        dnnl_primitive_desc_destroy(p->hint);
    memset(p, 0, sizeof *p);
}

/* One argument of the primitive: the query for the layout it chose and filo's plain layout. */
typedef struct arg_spec {
    int arg;
    dnnl_query_t query;
    int index; /* of the query: the bias is the forward primitive's weights memory 1 */
    const dnnl_memory_desc_t *plain;
    int is_output;
} arg_spec;

static filo_status fwd_pd(const conv_mds *m, int with_bias, dnnl_prop_kind_t prop, dnnl_primitive_desc_t *pd)
{
    dnnl_convolution_desc_t cd;
    DNNL_TRY(dnnl_dilated_convolution_forward_desc_init(&cd, prop, dnnl_convolution_direct, &m->any_src,
                                                        &m->any_wei, with_bias ? &m->bias : NULL, &m->any_dst,
                                                        m->strides, m->dilates, m->pad_l, m->pad_r));
    DNNL_TRY(dnnl_primitive_desc_create(pd, &cd, NULL, filo_dnnl_engine(), NULL));
    return FILO_OK;
}

/* Fills an empty slot p (left empty again on failure). */
static filo_status plan_build_in(conv_plan *p, plan_kind kind, const filo_conv2d_desc *d)
{
    conv_mds m;
    FILO_TRY(make_mds(d, &m));
    dnnl_convolution_desc_t cd;
    arg_spec a[4];
    int n = 3;
    switch (kind) {
    case PLAN_FWD:
    case PLAN_FWD_BIAS:
        FILO_TRY(fwd_pd(&m, kind == PLAN_FWD_BIAS, dnnl_forward_inference, &p->pd));
        a[0] = (arg_spec){DNNL_ARG_SRC, dnnl_query_src_md, 0, &m.src, 0};
        a[1] = (arg_spec){DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &m.wei, 0};
        a[2] = (arg_spec){DNNL_ARG_DST, dnnl_query_dst_md, 0, &m.dst, 1};
        a[3] = (arg_spec){DNNL_ARG_BIAS, dnnl_query_weights_md, 1, &m.bias, 0};
        n = kind == PLAN_FWD_BIAS ? 4 : 3;
        break;
    case PLAN_BWD_DATA:
        FILO_TRY(fwd_pd(&m, 0, dnnl_forward_training, &p->hint));
        DNNL_TRY(dnnl_dilated_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &m.any_src, &m.any_wei,
                                                                  &m.any_dst, m.strides, m.dilates, m.pad_l, m.pad_r));
        DNNL_TRY(dnnl_primitive_desc_create(&p->pd, &cd, NULL, filo_dnnl_engine(), p->hint));
        a[0] = (arg_spec){DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &m.dst, 0};
        a[1] = (arg_spec){DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &m.wei, 0};
        a[2] = (arg_spec){DNNL_ARG_DIFF_SRC, dnnl_query_diff_src_md, 0, &m.src, 1};
        break;
    default:
        FILO_TRY(fwd_pd(&m, 0, dnnl_forward_training, &p->hint));
        DNNL_TRY(dnnl_dilated_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &m.any_src,
                                                                     &m.any_wei, NULL, &m.any_dst, m.strides,
                                                                     m.dilates, m.pad_l, m.pad_r));
        DNNL_TRY(dnnl_primitive_desc_create(&p->pd, &cd, NULL, filo_dnnl_engine(), p->hint));
        a[0] = (arg_spec){DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &m.dst, 0};
        a[1] = (arg_spec){DNNL_ARG_SRC, dnnl_query_src_md, 0, &m.src, 0};
        a[2] = (arg_spec){DNNL_ARG_DIFF_WEIGHTS, dnnl_query_diff_weights_md, 0, &m.wei, 1};
        break;
    }
    DNNL_TRY(dnnl_primitive_create(&p->prim, p->pd));
    for (int i = 0; i < n; i++) {
        plan_arg *pa = &p->args[p->nargs++];
        const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(p->pd, a[i].query, a[i].index);
        if (!want)
            return FILO_FAIL(FILO_ERR_INTERNAL, "oneDNN convolution has no memory for argument %d", a[i].arg);
        pa->arg = a[i].arg;
        pa->is_output = a[i].is_output;
        pa->plain = *a[i].plain;
        pa->inner = *want;
        if (dnnl_memory_desc_equal(want, a[i].plain))
            continue;
        const dnnl_memory_desc_t *from = pa->is_output ? &pa->inner : &pa->plain;
        const dnnl_memory_desc_t *to = pa->is_output ? &pa->plain : &pa->inner;
        DNNL_TRY(dnnl_reorder_primitive_desc_create(&pa->reorder_pd, from, filo_dnnl_engine(), to, filo_dnnl_engine(),
                                                    NULL));
        DNNL_TRY(dnnl_primitive_create(&pa->reorder, pa->reorder_pd));
    }
    return FILO_OK;
}

/* The thread's plan for (kind, d): a cached one, or a new one in an empty or the least recently
 * used slot. */
static filo_status plan_get(plan_kind kind, const filo_conv2d_desc *d, conv_plan **out)
{
    int64_t key[PLAN_KEY_LEN];
    plan_key(d, key);
    conv_plan *slot = &plans[0];
    for (int i = 0; i < PLAN_SLOTS; i++) {
        conv_plan *p = &plans[i];
        if (p->last_use && p->kind == kind && memcmp(p->key, key, sizeof key) == 0) {
            p->last_use = ++plan_clock;
            *out = p;
            return FILO_OK;
        }
        if (p->last_use < slot->last_use)
            slot = p;
    }
    plan_free(slot);
    filo_status st = plan_build_in(slot, kind, d);
    if (st != FILO_OK) {
        plan_free(slot);
        return st;
    }
    slot->kind = kind;
    memcpy(slot->key, key, sizeof key);
    slot->last_use = ++plan_clock;
    *out = slot;
    return FILO_OK;
}

#define EXEC_TRY(call)                                              \
    do {                                                            \
        dnnl_status_t exec_s_ = (call);                             \
        if (exec_s_ != dnnl_success) {                              \
            st = filo_dnnl_fail(exec_s_, #call, "filo_cpu_conv2d");      \
            goto done;                                              \
        }                                                           \
    } while (0)

/* Runs a plan on filo's plain buffers (ptrs in the plan's argument order). Waits for the stream. */
static filo_status plan_run(const conv_plan *p, void *const *ptrs)
{
    filo_status st = FILO_OK;
    dnnl_memory_t user[4] = {NULL}, inner[4] = {NULL};
    dnnl_exec_arg_t ea[4];
    for (int i = 0; i < p->nargs; i++) {
        const plan_arg *pa = &p->args[i];
        EXEC_TRY(dnnl_memory_create(&user[i], &pa->plain, filo_dnnl_engine(), ptrs[i]));
        if (pa->reorder) {
            EXEC_TRY(dnnl_memory_create(&inner[i], &pa->inner, filo_dnnl_engine(), DNNL_MEMORY_ALLOCATE));
            if (!pa->is_output) {
                dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, user[i]}, {DNNL_ARG_TO, inner[i]}};
                EXEC_TRY(dnnl_primitive_execute(pa->reorder, filo_dnnl_stream(), 2, r));
            }
        }
        ea[i] = (dnnl_exec_arg_t){pa->arg, inner[i] ? inner[i] : user[i]};
    }
    EXEC_TRY(dnnl_primitive_execute(p->prim, filo_dnnl_stream(), p->nargs, ea));
    for (int i = 0; i < p->nargs; i++)
        if (p->args[i].reorder && p->args[i].is_output) {
            dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, inner[i]}, {DNNL_ARG_TO, user[i]}};
            EXEC_TRY(dnnl_primitive_execute(p->args[i].reorder, filo_dnnl_stream(), 2, r));
        }
    EXEC_TRY(dnnl_stream_wait(filo_dnnl_stream()));
done:
    for (int i = 0; i < 4; i++) {
        if (user[i])
            dnnl_memory_destroy(user[i]);
        if (inner[i])
            dnnl_memory_destroy(inner[i]);
    }
    return st;
}

static filo_status forward_f32(const filo_conv2d_desc *d, const float *x, const float *w, const float *bias, float *y)
{
    conv_plan *p;
    FILO_TRY(plan_get(bias ? PLAN_FWD_BIAS : PLAN_FWD, d, &p));
    void *ptrs[4] = {(void *)x, (void *)w, y, (void *)bias};
    return plan_run(p, ptrs);
}

static filo_status backward_data_f32(const filo_conv2d_desc *d, const float *dy, const float *w, float *dx)
{
    conv_plan *p;
    FILO_TRY(plan_get(PLAN_BWD_DATA, d, &p));
    void *ptrs[3] = {(void *)dy, (void *)w, dx};
    return plan_run(p, ptrs);
}

static filo_status backward_weights_f32(const filo_conv2d_desc *d, const float *dy, const float *x, float *dw)
{
    conv_plan *p;
    FILO_TRY(plan_get(PLAN_BWD_WEIGHTS, d, &p));
    void *ptrs[3] = {(void *)dy, (void *)x, dw};
    return plan_run(p, ptrs);
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
    FILO_TRY(filo_dnnl_ready());
    int64_t nx = d->N * d->C * d->H * d->W, nw = d->K * (d->C / d->groups) * d->R * d->S;
    int64_t ny = d->N * d->K * d->OH * d->OW;
    if (d->dtype == FILO_F32)
        return forward_f32(d, x, w, bias, y);
    int no_mem = 0;
    float *fx = to_f32(x, d->dtype, nx, &no_mem), *fw = to_f32(w, d->dtype, nw, &no_mem);
    float *fb = to_f32(bias, d->dtype, d->K, &no_mem), *fy = malloc(sizeof(float) * (size_t)ny);
    filo_status s = no_mem || !fy ? oom(d) : forward_f32(d, fx, fw, fb, fy);
    if (s == FILO_OK)
        from_f32(y, d->dtype, fy, ny);
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
    FILO_TRY(filo_dnnl_ready());
    int64_t nx = d->N * d->C * d->H * d->W, nw = d->K * (d->C / d->groups) * d->R * d->S;
    int64_t ny = d->N * d->K * d->OH * d->OW;
    filo_status s = FILO_OK;
    if (d->dtype == FILO_F32) {
        if (dx)
            s = backward_data_f32(d, dy, w, dx);
        if (s == FILO_OK && dw)
            s = backward_weights_f32(d, dy, x, dw);
        return s;
    }
    int no_mem = 0;
    float *fdy = to_f32(dy, d->dtype, ny, &no_mem);
    float *fw = dx ? to_f32(w, d->dtype, nw, &no_mem) : NULL, *fx = dw ? to_f32(x, d->dtype, nx, &no_mem) : NULL;
    float *fdx = dx ? malloc(sizeof(float) * (size_t)nx) : NULL, *fdw = dw ? malloc(sizeof(float) * (size_t)nw) : NULL;
    if (no_mem || (dx && !fdx) || (dw && !fdw))
        s = oom(d);
    if (s == FILO_OK && dx) {
        s = backward_data_f32(d, fdy, fw, fdx);
        if (s == FILO_OK)
            from_f32(dx, d->dtype, fdx, nx);
    }
    if (s == FILO_OK && dw) {
        s = backward_weights_f32(d, fdy, fx, fdw);
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
