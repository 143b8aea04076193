/* CPU GEMM: f32 through oneDNN's matmul primitive (the fastest GEMM on the target CPUs, see
 * shared/notes/cpu-blas.md); bf16 through oneDNN's bf16 kernels (f32 accumulation and bias, one
 * rounding at the store, as cuBLASLt does), twice the f32 rate on the AMD EPYC of
 * docs/benchmarks.md, falling back to f32 around the f32 call where oneDNN has only reference
 * code for bf16; f16 converted to f32 around the f32 call; f64, which oneDNN lacks, through a
 * plain loop in double. This is also the reference the CUDA (cuBLASLt) path is compared with. */
#include <dnnl.h>
#include <stdlib.h>
#include <string.h>

#include "element.h"
#include "dnnl_context.h"
#include "error.h"
#include "matmul_backend.h"

/* The 3-D memory descriptor [batch or 1, rows, cols] of an operand. */
static filo_status operand_md(dnnl_memory_desc_t *md, const filo_matmul_operand *o, int64_t batch, int64_t rows,
                              int64_t cols, dnnl_data_type_t dt)
{
    int64_t extent = o->trans ? cols * o->ld : rows * o->ld;
    dnnl_dims_t dims = {o->batch_stride ? batch : 1, rows, cols};
    dnnl_dims_t strides = {o->batch_stride ? o->batch_stride : extent, o->trans ? 1 : o->ld, o->trans ? o->ld : 1};
    DNNL_TRY(dnnl_memory_desc_init_by_strides(md, 3, dims, dt, strides));
    return FILO_OK;
}

typedef struct dnnl_objects {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_t mem[4];
} dnnl_objects;

static void dnnl_objects_free(dnnl_objects *o)
{
    for (int i = 0; i < 4; i++)
        if (o->mem[i])
            dnnl_memory_destroy(o->mem[i]);
    if (o->prim)
        dnnl_primitive_destroy(o->prim);
    if (o->pd)
        dnnl_primitive_desc_destroy(o->pd);
}

/* Builds the primitive for d's shapes with operands of type dt (f32 accumulation either way). */
static filo_status matmul_prepare(const filo_matmul_desc *d, dnnl_data_type_t dt, int with_bias, dnnl_objects *o,
                                  dnnl_memory_desc_t md[4])
{
    FILO_TRY(operand_md(&md[0], &d->a, d->batch, d->m, d->k, dt));
    FILO_TRY(operand_md(&md[1], &d->b, d->batch, d->k, d->n, dt));
    dnnl_dims_t c_dims = {d->batch, d->m, d->n}, c_strides = {d->m * d->n, d->n, 1};
    DNNL_TRY(dnnl_memory_desc_init_by_strides(&md[2], 3, c_dims, dt, c_strides));
    dnnl_dims_t bias_dims = {1, 1, d->n}, bias_strides = {d->n, d->n, 1};
    DNNL_TRY(dnnl_memory_desc_init_by_strides(&md[3], 3, bias_dims, dt, bias_strides));
    dnnl_matmul_desc_t op;
    DNNL_TRY(dnnl_matmul_desc_init(&op, &md[0], &md[1], with_bias ? &md[3] : NULL, &md[2]));
    DNNL_TRY(dnnl_primitive_desc_create(&o->pd, &op, NULL, filo_dnnl_engine(), NULL));
    return FILO_OK;
}

static filo_status matmul_execute(dnnl_objects *o, const dnnl_memory_desc_t md[4], const void *a, const void *b,
                                  const void *bias, void *c)
{
    DNNL_TRY(dnnl_primitive_create(&o->prim, o->pd));
    DNNL_TRY(dnnl_memory_create(&o->mem[0], &md[0], filo_dnnl_engine(), (void *)a));
    DNNL_TRY(dnnl_memory_create(&o->mem[1], &md[1], filo_dnnl_engine(), (void *)b));
    DNNL_TRY(dnnl_memory_create(&o->mem[2], &md[2], filo_dnnl_engine(), c));
    dnnl_exec_arg_t args[4] = {
        {DNNL_ARG_SRC, o->mem[0]}, {DNNL_ARG_WEIGHTS, o->mem[1]}, {DNNL_ARG_DST, o->mem[2]}, {DNNL_ARG_BIAS, NULL}};
    int nargs = 3;
    if (bias) {
        DNNL_TRY(dnnl_memory_create(&o->mem[3], &md[3], filo_dnnl_engine(), (void *)bias));
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, o->mem[3]};
    }
    DNNL_TRY(dnnl_primitive_execute(o->prim, filo_dnnl_stream(), nargs, args));
    DNNL_TRY(dnnl_stream_wait(filo_dnnl_stream()));
    return FILO_OK;
}

/* The f32 GEMM on f32 data laid out as d describes (d->dtype is ignored). */
static filo_status matmul_f32(const filo_matmul_desc *d, const float *a, const float *b, const float *bias, float *c)
{
    FILO_TRY(filo_dnnl_ready());
    dnnl_objects o;
    dnnl_memory_desc_t md[4];
    memset(&o, 0, sizeof o);
    filo_status s = matmul_prepare(d, dnnl_f32, bias != NULL, &o, md);
    if (s == FILO_OK)
        s = matmul_execute(&o, md, a, b, bias, c);
    dnnl_objects_free(&o);
    return s;
}

/* bf16 operands, bias and result, f32 accumulation and bias add in oneDNN's bf16 kernel. Sets
 * *taken = 0 (and computes nothing) where oneDNN offers only reference code for bf16 here. */
static filo_status matmul_bf16_native(const filo_matmul_desc *d, int *taken)
{
    *taken = 0;
    FILO_TRY(filo_dnnl_ready());
    dnnl_objects o;
    dnnl_memory_desc_t md[4];
    memset(&o, 0, sizeof o);
    filo_status s = matmul_prepare(d, dnnl_bf16, d->bias != NULL, &o, md);
    const char *impl = NULL;
    if (s == FILO_OK && dnnl_primitive_desc_query(o.pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
        impl && !strstr(impl, "ref")) {
        *taken = 1;
        s = matmul_execute(&o, md, d->a.data, d->b.data, d->bias, d->c);
    }
    dnnl_objects_free(&o);
    return s;
}

/* Copies an operand's matrices (one when shared) to packed f32, keeping its transposition. */
static float *to_f32(const filo_matmul_operand *o, filo_dtype t, int64_t batch, int64_t rows, int64_t cols,
                     filo_matmul_operand *packed)
{
    int64_t nb = o->batch_stride ? batch : 1;
    int64_t outer = o->trans ? cols : rows, inner = o->trans ? rows : cols;
    float *buf = malloc(sizeof(float) * (size_t)(nb * outer * inner));
    if (!buf)
        return NULL;
    size_t es = filo_el_size(t);
    for (int64_t p = 0; p < nb; p++)
        for (int64_t r = 0; r < outer; r++) {
            const char *src = (const char *)o->data + (size_t)(p * o->batch_stride + r * o->ld) * es;
            float *dst = buf + (p * outer + r) * inner;
            for (int64_t j = 0; j < inner; j++)
                dst[j] = (float)filo_el_load_f(src + (size_t)j * es, t);
        }
    *packed = (filo_matmul_operand){buf, o->trans, inner, o->batch_stride ? outer * inner : 0};
    return buf;
}

static filo_status matmul_half(const filo_matmul_desc *d)
{
    filo_matmul_desc f = *d;
    int64_t total = d->batch * d->m * d->n;
    float *a = to_f32(&d->a, d->dtype, d->batch, d->m, d->k, &f.a);
    float *b = to_f32(&d->b, d->dtype, d->batch, d->k, d->n, &f.b);
    float *bias = d->bias ? malloc(sizeof(float) * (size_t)d->n) : NULL;
    float *c = malloc(sizeof(float) * (size_t)total);
    filo_status s = FILO_OK;
    if (!a || !b || !c || (d->bias && !bias)) {
        s = FILO_FAIL(FILO_ERR_OOM, "out of host memory for the f32 copies of a %lldx%lldx%lld %s GEMM",
                      (long long)d->m, (long long)d->k, (long long)d->n, filo_dtype_name(d->dtype));
    } else {
        size_t es = filo_el_size(d->dtype);
        for (int64_t j = 0; bias && j < d->n; j++)
            bias[j] = (float)filo_el_load_f((const char *)d->bias + (size_t)j * es, d->dtype);
        s = matmul_f32(&f, a, b, bias, c);
        for (int64_t i = 0; s == FILO_OK && i < total; i++)
            filo_el_store_f((char *)d->c + (size_t)i * es, d->dtype, c[i]);
    }
    free(a);
    free(b);
    free(bias);
    free(c);
    return s;
}

static double at(const filo_matmul_operand *o, int64_t p, int64_t i, int64_t j)
{
    return ((const double *)o->data)[p * o->batch_stride + (o->trans ? j * o->ld + i : i * o->ld + j)];
}

/* f64 (no oneDNN support): row i of C accumulates a(i, l) * row l of B, blocked over l so a
 * block of B's rows stays in cache while it is reused for every row of A. */
static filo_status matmul_f64(const filo_matmul_desc *d)
{
    enum { KB = 64 };
    double *out = d->c;
    for (int64_t p = 0; p < d->batch; p++) {
        double *cp = out + p * d->m * d->n;
        for (int64_t i = 0; i < d->m; i++)
            for (int64_t j = 0; j < d->n; j++)
                cp[i * d->n + j] = d->bias ? ((const double *)d->bias)[j] : 0.0;
        for (int64_t l0 = 0; l0 < d->k; l0 += KB) {
            int64_t l1 = l0 + KB < d->k ? l0 + KB : d->k;
            for (int64_t i = 0; i < d->m; i++) {
                double *row = cp + i * d->n;
                for (int64_t l = l0; l < l1; l++) {
                    double av = at(&d->a, p, i, l);
                    for (int64_t j = 0; j < d->n; j++)
                        row[j] += av * at(&d->b, p, l, j);
                }
            }
        }
    }
    return FILO_OK;
}

filo_status filo_cpu_matmul(const filo_matmul_desc *d)
{
    switch (d->dtype) {
    case FILO_F32: return matmul_f32(d, d->a.data, d->b.data, d->bias, d->c);
    case FILO_BF16: {
        int taken;
        filo_status s = matmul_bf16_native(d, &taken);
        return s != FILO_OK || taken ? s : matmul_half(d);
    }
    case FILO_F16: return matmul_half(d);
    case FILO_F64: return matmul_f64(d);
    default: return FILO_FAIL(FILO_ERR_DTYPE, "no GEMM for %s", filo_dtype_name(d->dtype));
    }
}
