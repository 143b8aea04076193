/* CPU elementwise ops: the reference for kernels/cuda/elementwise.cu.
 *
 * Flat layouts (output and inputs all contiguous) of the arithmetic kinds run typed loops with
 * the op fixed per loop, which the compiler can vectorize, and exp, sigmoid, SiLU and GELU in
 * f32/bf16/f16 run on kernels/cpu/vec_math.h's vectors; everything else (broadcasts, strided
 * views, comparisons, where) walks the collapsed layout element by element. The per-element
 * math is the shared code of elementwise_backend.h. Both paths split the elements over the CPU
 * pool (runtime/parallel.h). */
#include <string.h>

#include "elementwise_backend.h"
#include "parallel.h"
#include "vec_math.h"

/* Elements per chunk at least: below this a second thread costs more than it saves. */
#define GRAIN_ELEMENTS 32768

#define LD_SAME(v) (v)
#define ST_SAME(v) (v)
#define LD_BF16(v) filo_el_bf16_to_f32(v)
#define ST_BF16(v) filo_el_f32_to_bf16(v)
#define LD_F16(v) filo_el_f16_to_f32(v)
#define ST_F16(v) filo_el_f32_to_f16(v)

#define UNARY_CASE(OP, SFX, LD, ST)                                                               \
    case OP:                                                                                      \
        for (int64_t i = 0; i < n; i++)                                                           \
            y[i] = ST(filo_ew_unary_##SFX(OP, LD(a[i]), s));                                      \
        break;

/* Tensor-tensor when b is set; tensor-scalar (either order) when b is NULL. */
#define BINARY_CASE(OP, SFX, LD, ST)                                                              \
    case OP:                                                                                      \
        if (b)                                                                                    \
            for (int64_t i = 0; i < n; i++)                                                       \
                y[i] = ST(filo_ew_binary_##SFX(OP, LD(a[i]), LD(b[i])));                          \
        else if (d->reversed)                                                                     \
            for (int64_t i = 0; i < n; i++)                                                       \
                y[i] = ST(filo_ew_binary_##SFX(OP, s, LD(a[i])));                                 \
        else                                                                                      \
            for (int64_t i = 0; i < n; i++)                                                       \
                y[i] = ST(filo_ew_binary_##SFX(OP, LD(a[i]), s));                                 \
        break;

#define DEFINE_FLAT(NAME, TS, TC, SFX, LD, ST)                                                    \
    static void NAME(const filo_ew_desc *d)                                                       \
    {                                                                                             \
        const TS *a = (const TS *)d->in[0];                                                       \
        const TS *b = d->kind == FILO_EW_BINARY ? (const TS *)d->in[1] : NULL;                    \
        TS *y = (TS *)d->out;                                                                     \
        int64_t n = d->numel;                                                                     \
        TC s = (TC)d->scalar;                                                                     \
        if (d->kind == FILO_EW_UNARY) {                                                           \
            switch (d->op) {                                                                      \
                UNARY_CASE(FILO_UNARY_NEG, SFX, LD, ST)                                           \
                UNARY_CASE(FILO_UNARY_ABS, SFX, LD, ST)                                           \
                UNARY_CASE(FILO_UNARY_EXP, SFX, LD, ST)                                           \
                UNARY_CASE(FILO_UNARY_LOG, SFX, LD, ST)                                           \
                UNARY_CASE(FILO_UNARY_SQRT, SFX, LD, ST)                                          \
                UNARY_CASE(FILO_UNARY_RSQRT, SFX, LD, ST)                                         \
                UNARY_CASE(FILO_UNARY_TANH, SFX, LD, ST)                                          \
                UNARY_CASE(FILO_UNARY_SIGMOID, SFX, LD, ST)                                       \
                UNARY_CASE(FILO_UNARY_RELU, SFX, LD, ST)                                          \
                UNARY_CASE(FILO_UNARY_GELU, SFX, LD, ST)                                          \
                UNARY_CASE(FILO_UNARY_GELU_TANH, SFX, LD, ST)                                     \
                UNARY_CASE(FILO_UNARY_SILU, SFX, LD, ST)                                          \
                UNARY_CASE(FILO_UNARY_SOFTPLUS, SFX, LD, ST)                                      \
                UNARY_CASE(FILO_EW_POW, SFX, LD, ST)                                              \
            default: break;                                                                       \
            }                                                                                     \
            return;                                                                               \
        }                                                                                         \
        switch (d->op) {                                                                          \
            BINARY_CASE(FILO_BINARY_ADD, SFX, LD, ST)                                             \
            BINARY_CASE(FILO_BINARY_SUB, SFX, LD, ST)                                             \
            BINARY_CASE(FILO_BINARY_MUL, SFX, LD, ST)                                             \
            BINARY_CASE(FILO_BINARY_DIV, SFX, LD, ST)                                             \
            BINARY_CASE(FILO_BINARY_MAX, SFX, LD, ST)                                             \
            BINARY_CASE(FILO_BINARY_MIN, SFX, LD, ST)                                             \
        default: break;                                                                           \
        }                                                                                         \
    }

DEFINE_FLAT(flat_f64, double, double, d, LD_SAME, ST_SAME)
DEFINE_FLAT(flat_f32, float, float, f, LD_SAME, ST_SAME)
DEFINE_FLAT(flat_bf16, uint16_t, float, f, LD_BF16, ST_BF16)
DEFINE_FLAT(flat_f16, uint16_t, float, f, LD_F16, ST_F16)

/* The unary ops built on kernels/cpu/vec_math.h's exp and GELU, for flat f32/bf16/f16 data: 16
 * lanes at a time in f32, one rounding at the store. (GELU takes vec_math's erfc form, more
 * accurate for negative x than 0.5 x (1 + erf(x / sqrt 2)); GELU_TANH takes h / (1 + exp(-2u)),
 * equal to 0.5 h (1 + tanh u).) */
static int unary_has_vec(int op)
{
    return op == FILO_UNARY_EXP || op == FILO_UNARY_SIGMOID || op == FILO_UNARY_SILU || op == FILO_UNARY_GELU ||
           op == FILO_UNARY_GELU_TANH;
}

#define UNARY_VEC_LOOP(EXPR)                                                                      \
    for (int64_t i = 0; i < d->numel; i += FILO_V16) {                                            \
        int n = d->numel - i < FILO_V16 ? (int)(d->numel - i) : FILO_V16;                         \
        filo_v16f x = filo_v16_load_n((const char *)d->in[0] + (size_t)i * es, d->dtype, n);      \
        filo_v16_store_n((char *)d->out + (size_t)i * es, d->dtype, EXPR, n);                     \
    }

FILO_SIMD_CLONES static void unary_vec(const filo_ew_desc *d)
{
    size_t es = filo_el_size(d->dtype);
    switch (d->op) {
    case FILO_UNARY_EXP: UNARY_VEC_LOOP(filo_v16_exp(x)) break;
    case FILO_UNARY_SIGMOID: UNARY_VEC_LOOP(1.0f / (1.0f + filo_v16_exp(-x))) break;
    case FILO_UNARY_SILU: UNARY_VEC_LOOP(x / (1.0f + filo_v16_exp(-x))) break;
    case FILO_UNARY_GELU: UNARY_VEC_LOOP(filo_v16_gelu(x)) break;
    default: UNARY_VEC_LOOP(filo_v16_gelu_tanh(x)) break;
    }
}

/* One element of any kind, from loaded addresses: the strided path and its reference. */
static void element(const filo_ew_desc *d, char *out, const char *const *in)
{
    filo_dtype t = d->dtype;
    if (d->kind == FILO_EW_WHERE) {
        memcpy(out, *(const uint8_t *)in[0] ? in[1] : in[2], filo_el_size(t));
        return;
    }
    if (d->kind == FILO_EW_COMPARE) {
        int r;
        if (filo_el_is_int(t)) {
            int64_t a = filo_el_load_i(in[0], t), b = filo_el_load_i(in[1], t);
            r = FILO_EW_COMPARE(d->op, a, b);
        } else {
            double a = filo_el_load_f(in[0], t), b = filo_el_load_f(in[1], t);
            r = FILO_EW_COMPARE(d->op, a, b);
        }
        *(uint8_t *)out = (uint8_t)r;
        return;
    }
    /* Values load exactly as double; f32, bf16 and f16 then compute in float. */
    double a = filo_el_load_f(in[0], t), v;
    if (t == FILO_F64) {
        if (d->kind == FILO_EW_UNARY)
            v = filo_ew_unary_d(d->op, a, d->scalar);
        else if (d->kind == FILO_EW_BINARY)
            v = filo_ew_binary_d(d->op, a, filo_el_load_f(in[1], t));
        else
            v = d->reversed ? filo_ew_binary_d(d->op, d->scalar, a) : filo_ew_binary_d(d->op, a, d->scalar);
    } else {
        float af = (float)a, s = (float)d->scalar;
        if (d->kind == FILO_EW_UNARY)
            v = filo_ew_unary_f(d->op, af, s);
        else if (d->kind == FILO_EW_BINARY)
            v = filo_ew_binary_f(d->op, af, (float)filo_el_load_f(in[1], t));
        else
            v = d->reversed ? filo_ew_binary_f(d->op, s, af) : filo_ew_binary_f(d->op, af, s);
    }
    filo_el_store_f(out, t, v);
}

/* Elements [begin, end) of the collapsed layout. */
static void strided(const filo_ew_desc *d, int64_t begin, int64_t end)
{
    filo_dtype in_dtypes[FILO_EW_MAX_INPUTS] = {d->dtype, d->dtype, d->dtype};
    if (d->kind == FILO_EW_WHERE)
        in_dtypes[0] = FILO_U8;
    filo_dtype out_dtype = d->kind == FILO_EW_COMPARE ? FILO_U8 : d->dtype;
    int64_t es[FILO_EW_MAX_INPUTS];
    for (int k = 0; k < d->n_inputs; k++)
        es[k] = (int64_t)filo_el_size(in_dtypes[k]);
    int64_t os = (int64_t)filo_el_size(out_dtype);
    int64_t idx[FILO_MAX_DIMS] = {0}, off[FILO_EW_MAX_INPUTS] = {0};
    /* Unravel `begin` into the odometer's starting position. */
    for (int64_t rest = begin, dim = d->ndim - 1; dim >= 0; dim--) {
        idx[dim] = rest % d->shape[dim];
        rest /= d->shape[dim];
        for (int k = 0; k < d->n_inputs; k++)
            off[k] += idx[dim] * d->strides[k][dim];
    }
    const char *ptr[FILO_EW_MAX_INPUTS];
    for (int64_t i = begin; i < end; i++) {
        for (int k = 0; k < d->n_inputs; k++)
            ptr[k] = (const char *)d->in[k] + off[k] * es[k];
        element(d, (char *)d->out + i * os, ptr);
        /* Odometer over the collapsed dims: the last dim moves fastest. */
        for (int dim = d->ndim - 1; dim >= 0; dim--) {
            idx[dim]++;
            for (int k = 0; k < d->n_inputs; k++)
                off[k] += d->strides[k][dim];
            if (idx[dim] < d->shape[dim])
                break;
            for (int k = 0; k < d->n_inputs; k++)
                off[k] -= d->strides[k][dim] * d->shape[dim];
            idx[dim] = 0;
        }
    }
}

typedef struct ew_job {
    const filo_ew_desc *d;
    int flat;
} ew_job;

/* A chunk of the flat path is the same op on shorter arrays: a copy of the descriptor with its
 * pointers advanced. */
static void ew_chunk(void *ctx, int chunk, int64_t begin, int64_t end)
{
    (void)chunk;
    const ew_job *job = ctx;
    const filo_ew_desc *d = job->d;
    if (!job->flat) {
        strided(d, begin, end);
        return;
    }
    filo_ew_desc part = *d;
    size_t es = filo_el_size(d->dtype);
    for (int k = 0; k < d->n_inputs; k++)
        part.in[k] = (const char *)d->in[k] + (size_t)begin * es;
    part.out = (char *)d->out + (size_t)begin * es;
    part.numel = end - begin;
    if (d->kind == FILO_EW_UNARY && d->dtype != FILO_F64 && unary_has_vec(d->op)) {
        unary_vec(&part);
        return;
    }
    switch (d->dtype) {
    case FILO_F64: flat_f64(&part); break;
    case FILO_F32: flat_f32(&part); break;
    case FILO_BF16: flat_bf16(&part); break;
    default: flat_f16(&part); break;
    }
}

void filo_cpu_elementwise(const filo_ew_desc *d)
{
    int flat = d->kind != FILO_EW_COMPARE && d->kind != FILO_EW_WHERE && d->ndim <= 1 &&
               (d->dtype == FILO_F64 || d->dtype == FILO_F32 || d->dtype == FILO_BF16 || d->dtype == FILO_F16);
    for (int k = 0; flat && d->ndim == 1 && k < d->n_inputs; k++)
        flat = d->strides[k][0] == 1;
    ew_job job = {d, flat};
    filo_parallel_for(d->numel, GRAIN_ELEMENTS, ew_chunk, &job);
}

void filo_cpu_arange(void *out, filo_dtype dtype, int64_t n, double start, double step)
{
    size_t es = filo_el_size(dtype);
    for (int64_t i = 0; i < n; i++)
        filo_el_store_f((char *)out + (size_t)i * es, dtype, start + (double)i * step);
}

int64_t filo_cpu_one_hot(const filo_one_hot_desc *d)
{
    int64_t is = (int64_t)filo_el_size(d->index_dtype), os = (int64_t)filo_el_size(d->out_dtype);
    int64_t idx[FILO_MAX_DIMS] = {0}, off = 0;
    for (int64_t r = 0; r < d->rows; r++) {
        int64_t c = filo_el_load_i((const char *)d->indices + off * is, d->index_dtype);
        if (c < 0 || c >= d->num_classes)
            return r;
        filo_el_store_f((char *)d->out + (r * d->num_classes + c) * os, d->out_dtype, 1.0);
        for (int dim = d->ndim - 1; dim >= 0; dim--) {
            idx[dim]++;
            off += d->strides[dim];
            if (idx[dim] < d->shape[dim])
                break;
            off -= d->strides[dim] * d->shape[dim];
            idx[dim] = 0;
        }
    }
    return -1;
}
