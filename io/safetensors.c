#define _POSIX_C_SOURCE 200809L
/* safetensors files (include/filo/safetensors.h): the reader maps the file and validates the
 * whole header before any tensor is read; the writer streams the header and each tensor's bytes
 * through runtime/atomic_file.h. Every malformed case is FILO_ERR_FORMAT with the file and the
 * tensor in the message, because the typical cause is a truncated download or a foreign writer,
 * and the user needs to know which file to fetch again. */
#include "filo/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_file.h"
#include "element.h"
#include "error.h"

/* Hugging Face's reader refuses larger headers too: a bigger length is a corrupt file, not a model. */
#define MAX_HEADER_BYTES ((uint64_t)100 << 20)
/* Dims and offsets travel as JSON numbers (doubles): integers are exact up to 2^53. */
#define MAX_EXACT ((double)((uint64_t)1 << 53))

typedef struct st_entry {
    char *name;
    char st_dtype[16];
    filo_dtype dtype;   /* FILO_DTYPE_COUNT for a dtype filo lacks */
    int ndim;
    int64_t shape[FILO_SAFETENSORS_MAX_DIMS];
    uint64_t begin, end;
} st_entry;

struct filo_safetensors {
    char *path;
    void *map;
    size_t map_size;
    const unsigned char *data; /* the data region */
    uint64_t data_size;
    int n;
    st_entry *e;
    int n_meta;
    char **meta_keys, **meta_values;
};

/* ---- dtypes ---- */

typedef struct st_dtype_info {
    const char *name;
    int size;
    filo_dtype dtype;
} st_dtype_info;

static const st_dtype_info st_dtypes[] = {
    {"F64", 8, FILO_F64},          {"F32", 4, FILO_F32},          {"BF16", 2, FILO_BF16},
    {"F16", 2, FILO_F16},          {"I64", 8, FILO_I64},          {"I32", 4, FILO_I32},
    {"U8", 1, FILO_U8},            {"BOOL", 1, FILO_U8},          {"I8", 1, FILO_DTYPE_COUNT},
    {"I16", 2, FILO_DTYPE_COUNT},  {"U16", 2, FILO_DTYPE_COUNT},  {"U32", 4, FILO_DTYPE_COUNT},
    {"U64", 8, FILO_DTYPE_COUNT},  {"F8_E5M2", 1, FILO_DTYPE_COUNT}, {"F8_E4M3", 1, FILO_DTYPE_COUNT},
};

static const st_dtype_info *dtype_by_name(const char *s)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, s) == 0)
            return &st_dtypes[i];
    return NULL;
}

static const char *dtype_to_st(filo_dtype t)
{
    switch (t) {
    case FILO_F64: return "F64";
    case FILO_F32: return "F32";
    case FILO_BF16: return "BF16";
    case FILO_F16: return "F16";
    case FILO_I64: return "I64";
    case FILO_I32: return "I32";
    case FILO_U8: return "U8";
    default: return NULL;
    }
}

/* ---- reader ---- */

void filo_safetensors_close(filo_safetensors *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_size);
    for (int i = 0; i < f->n; i++)
        free(f->e[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->e);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    free(f);
}

/* A non-negative integer that a double holds exactly. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    if (!(d >= 0) || d > MAX_EXACT || d != floor(d))
        return 0;
    *out = (uint64_t)d;
    return 1;
}

static filo_status parse_entry(const char *path, const cJSON *item, st_entry *e)
{
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: tensor '%s': the entry is not an object",
                              path, name);
    const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
    for (const cJSON *k = item->child; k; k = k->next) {
        const cJSON **slot = strcmp(k->string, "dtype") == 0          ? &dtype
                             : strcmp(k->string, "shape") == 0        ? &shape
                             : strcmp(k->string, "data_offsets") == 0 ? &offsets
                                                                      : NULL;
        if (!slot)
            return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: tensor '%s': unknown key '%s'", path,
                                  name, k->string);
        if (*slot)
            return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: tensor '%s': key '%s' appears twice",
                                  path, name, k->string);
        *slot = k;
    }
    if (!cJSON_IsString(dtype))
        return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: tensor '%s': %s", path, name,
                              dtype ? "dtype is not a string" : "no dtype");
    const st_dtype_info *info = dtype_by_name(dtype->valuestring);
    if (!info)
        return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: tensor '%s': unknown dtype \"%s\"", path,
                              name, dtype->valuestring);
    snprintf(e->st_dtype, sizeof e->st_dtype, "%s", info->name);
    e->dtype = info->dtype;
    if (!cJSON_IsArray(shape))
        return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: tensor '%s': %s", path, name,
                              shape ? "shape is not an array" : "no shape");
    int nd = cJSON_GetArraySize(shape);
    if (nd > FILO_SAFETENSORS_MAX_DIMS)
        return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: tensor '%s': %d dims, at most %d", path,
                              name, nd, FILO_SAFETENSORS_MAX_DIMS);
    e->ndim = nd;
    uint64_t numel = 1;
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        uint64_t v;
        if (!json_uint(d, &v))
            return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open",
                                  "%s: tensor '%s': dim %d is not a non-negative integer", path, name, i);
        e->shape[i] = (int64_t)v;
        if (v != 0 && numel > (uint64_t)INT64_MAX / v)
            return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: tensor '%s': the shape overflows", path,
                                  name);
        numel *= v;
    }
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 || !json_uint(offsets->child, &e->begin) ||
        !json_uint(offsets->child->next, &e->end))
        return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open",
                              "%s: tensor '%s': data_offsets must be two non-negative integers [begin, end]", path, name);
    if (e->begin > e->end)
        return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open",
                              "%s: tensor '%s': data_offsets [%llu, %llu] are reversed", path, name,
                              (unsigned long long)e->begin, (unsigned long long)e->end);
    if (numel > (uint64_t)INT64_MAX / (uint64_t)info->size || e->end - e->begin != numel * (uint64_t)info->size)
        return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open",
                              "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, but %s %s of %llu elements "
                              "needs %llu",
                              path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                              (unsigned long long)(e->end - e->begin), info->name, nd ? "shape" : "0-dim shape",
                              (unsigned long long)numel, (unsigned long long)(numel * (uint64_t)info->size));
    return FILO_OK;
}

static filo_status parse_metadata(const char *path, const cJSON *meta, filo_safetensors *f)
{
    if (!cJSON_IsObject(meta))
        return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: __metadata__ is not an object", path);
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = calloc((size_t)(n ? n : 1), sizeof *f->meta_keys);
    f->meta_values = calloc((size_t)(n ? n : 1), sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    for (const cJSON *m = meta->child; m; m = m->next) {
        if (!cJSON_IsString(m))
            return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open",
                                  "%s: __metadata__ value of '%s' is not a string", path, m->string);
        for (int j = 0; j < f->n_meta; j++)
            if (strcmp(f->meta_keys[j], m->string) == 0)
                return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: __metadata__ key '%s' appears twice",
                                      path, m->string);
        f->meta_keys[f->n_meta] = strdup(m->string);
        f->meta_values[f->n_meta] = strdup(m->valuestring);
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_values[f->n_meta - 1])
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    }
    return FILO_OK;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}

static int by_begin(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    /* Empty tensors sit at their offset before a non-empty one starting there. */
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return (x->end > x->begin) - (y->end > y->begin);
}

/* Names unique; the sorted byte ranges tile [0, data_size) without gaps or overlaps. */
static filo_status check_layout(const char *path, filo_safetensors *f)
{
    st_entry **order = malloc(sizeof *order * (size_t)(f->n ? f->n : 1));
    if (!order)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    filo_status s = FILO_OK;
    for (int i = 0; i < f->n; i++)
        order[i] = &f->e[i];
    qsort(order, (size_t)f->n, sizeof *order, by_name);
    for (int i = 1; i < f->n && s == FILO_OK; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0)
            s = filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: tensor '%s' appears twice", path,
                               order[i]->name);
    if (s == FILO_OK)
        qsort(order, (size_t)f->n, sizeof *order, by_begin);
    uint64_t at = 0;
    for (int i = 0; i < f->n && s == FILO_OK; i++) {
        const st_entry *e = order[i];
        if (e->end > f->data_size)
            s = filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open",
                               "%s: tensor '%s': data_offsets [%llu, %llu] run past the data region of %llu bytes "
                               "(truncated file?)",
                               path, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                               (unsigned long long)f->data_size);
        else if (e->begin < at)
            s = filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open",
                               "%s: tensor '%s': data_offsets [%llu, %llu] overlap the tensor before it (ending at %llu)",
                               path, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                               (unsigned long long)at);
        else if (e->begin > at)
            s = filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open",
                               "%s: tensor '%s': data_offsets [%llu, %llu] leave a gap after byte %llu", path, e->name,
                               (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)at);
        at = e->end;
    }
    if (s == FILO_OK && at != f->data_size)
        s = filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open",
                           "%s: the tensors cover %llu bytes of a data region of %llu bytes", path,
                           (unsigned long long)at, (unsigned long long)f->data_size);
    free(order);
    return s;
}

static filo_status parse_header(filo_safetensors *f, const char *text, size_t len)
{
    const char *path = f->path, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long pos = at && at >= text && at <= text + len ? (long)(at - text) : -1;
        return filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: the header is not valid JSON (near byte %ld)",
                              path, pos);
    }
    filo_status s = FILO_OK;
    /* After the object only the format's padding (spaces) may follow. */
    for (const char *p = end; p < text + len && s == FILO_OK; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            s = filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: bytes after the header's JSON object", path);
    if (s == FILO_OK && !cJSON_IsObject(root))
        s = filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: the header is not a JSON object", path);
    int n = 0;
    for (const cJSON *item = root->child; s == FILO_OK && item; item = item->next)
        n += strcmp(item->string, "__metadata__") != 0;
    if (s == FILO_OK && !(f->e = calloc((size_t)(n ? n : 1), sizeof *f->e)))
        s = FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    int seen_meta = 0;
    for (const cJSON *item = root->child; s == FILO_OK && item; item = item->next) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (seen_meta++)
                s = filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: __metadata__ appears twice", path);
            else
                s = parse_metadata(path, item, f);
            continue;
        }
        st_entry *e = &f->e[f->n];
        if (!(e->name = strdup(item->string))) {
            s = FILO_FAIL(FILO_ERR_OOM, "out of host memory");
            break;
        }
        f->n++;
        if (!*e->name)
            s = filo_error_set(FILO_ERR_FORMAT, "filo_safetensors_open", "%s: a tensor has an empty name", path);
        else
            s = parse_entry(path, item, e);
    }
    cJSON_Delete(root);
    if (s == FILO_OK)
        s = check_layout(path, f);
    return s;
}

filo_status filo_safetensors_open(const char *path, filo_safetensors **out)
{
    if (!path || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "path and out must not be NULL");
    *out = NULL;
    filo_safetensors *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    }
    filo_status s = FILO_OK;
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        s = FILO_FAIL(FILO_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    } else if (sb.st_size < 8) {
        s = FILO_FAIL(FILO_ERR_FORMAT, "%s: truncated: %lld bytes, less than the 8-byte header length", path,
                      (long long)sb.st_size);
    } else {
        f->map_size = (size_t)sb.st_size;
        f->map = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            s = FILO_FAIL(FILO_ERR_IO, "cannot map %s: %s", path, strerror(errno));
        }
    }
    if (fd >= 0)
        close(fd);
    if (s == FILO_OK) {
        const unsigned char *b = f->map;
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | b[i];
        uint64_t room = (uint64_t)f->map_size - 8;
        if (hlen > room)
            s = FILO_FAIL(FILO_ERR_FORMAT, "%s: truncated: the header length %llu runs past the end of the file (%llu bytes)",
                          path, (unsigned long long)hlen, (unsigned long long)f->map_size);
        else if (hlen > MAX_HEADER_BYTES)
            s = FILO_FAIL(FILO_ERR_FORMAT, "%s: a header length of %llu bytes (over 100 MB) is not credible", path,
                          (unsigned long long)hlen);
        else if (hlen < 2)
            s = FILO_FAIL(FILO_ERR_FORMAT, "%s: a header length of %llu bytes cannot hold a JSON object", path,
                          (unsigned long long)hlen);
        if (s == FILO_OK) {
            f->data = b + 8 + hlen;
            f->data_size = room - hlen;
            s = parse_header(f, (const char *)b + 8, (size_t)hlen);
        }
    }
    if (s != FILO_OK) {
        filo_safetensors_close(f);
        return s;
    }
    *out = f;
    return FILO_OK;
}

int filo_safetensors_count(const filo_safetensors *f) { return f ? f->n : 0; }

const char *filo_safetensors_name_at(const filo_safetensors *f, int i)
{
    return f && i >= 0 && i < f->n ? f->e[i].name : NULL;
}

static const st_entry *find(const filo_safetensors *f, const char *name)
{
    for (int i = 0; f && name && i < f->n; i++)
        if (strcmp(f->e[i].name, name) == 0)
            return &f->e[i];
    return NULL;
}

int filo_safetensors_has(const filo_safetensors *f, const char *name) { return find(f, name) != NULL; }

static filo_status lookup(const char *op, const filo_safetensors *f, const char *name, const st_entry **e)
{
    if (!f || !name)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "the file and the name must not be NULL");
    *e = find(f, name);
    if (!*e)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s has no tensor '%s'", f->path, name);
    return FILO_OK;
}

filo_status filo_safetensors_info(const filo_safetensors *f, const char *name, filo_dtype *dtype, int *ndim,
                                  int64_t shape[FILO_SAFETENSORS_MAX_DIMS], const char **st_dtype)
{
    const st_entry *e;
    FILO_TRY(lookup(__func__, f, name, &e));
    if (dtype)
        *dtype = e->dtype;
    if (ndim)
        *ndim = e->ndim;
    if (shape)
        memcpy(shape, e->shape, sizeof(int64_t) * (size_t)e->ndim);
    if (st_dtype)
        *st_dtype = e->st_dtype;
    return FILO_OK;
}

const char *filo_safetensors_metadata(const filo_safetensors *f, const char *key)
{
    for (int i = 0; f && key && i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_values[i];
    return NULL;
}

/* f64 -> f32 rounding to odd: rounding that to bf16 or f16 (fewer bits) is then the correctly
 * rounded (nearest even) result, where a plain f64 -> f32 -> bf16 could round twice. */
static float f64_to_f32_odd(double d)
{
    float f = (float)d;
    if (isfinite(d) && (double)f != d) {
        uint32_t u = filo_bits_f32(f);
        if (fabs((double)f) > fabs(d))
            u -= 1; /* truncate toward zero: one step down in magnitude */
        f = filo_f32_bits(u | 1u);
    }
    return f;
}

/* One element from stored dtype st to dt: integers stay exact through int64, floats round to
 * nearest even. */
static void convert_element(void *dst, filo_dtype dt, const void *src, filo_dtype st)
{
    if (st == FILO_F64 && (dt == FILO_BF16 || dt == FILO_F16)) {
        float f = f64_to_f32_odd(filo_el_load_f(src, st));
        uint16_t h = dt == FILO_BF16 ? filo_el_f32_to_bf16(f) : filo_el_f32_to_f16(f);
        memcpy(dst, &h, 2);
        return;
    }
    filo_el_convert(dst, dt, src, st);
}

/* A new contiguous tensor of e's shape on device holding its values in dtype. */
static filo_status load_entry(const char *op, const filo_safetensors *f, const st_entry *e, filo_device device,
                              filo_dtype dtype, filo_tensor **out)
{
    if (e->dtype == FILO_DTYPE_COUNT)
        return filo_error_set(FILO_ERR_UNSUPPORTED, op, "%s: tensor '%s' has dtype %s, which filo has no type for",
                              f->path, e->name, e->st_dtype);
    const unsigned char *src = f->data + e->begin;
    if (dtype == e->dtype) {
        filo_status s = filo_tensor_from_host(device, dtype, e->ndim, e->shape, src, out);
        return s == FILO_OK ? FILO_OK : filo_error_wrap(s, op);
    }
    int64_t numel = 1;
    for (int i = 0; i < e->ndim; i++)
        numel *= e->shape[i];
    size_t ss = filo_el_size(e->dtype), ds = filo_el_size(dtype);
    unsigned char *buf = malloc((size_t)numel * ds + 1);
    if (!buf)
        return filo_error_set(FILO_ERR_OOM, op, "out of host memory converting '%s' (%lld elements)", e->name,
                              (long long)numel);
    for (int64_t i = 0; i < numel; i++)
        convert_element(buf + i * (int64_t)ds, dtype, src + i * (int64_t)ss, e->dtype);
    filo_status s = filo_tensor_from_host(device, dtype, e->ndim, e->shape, buf, out);
    free(buf);
    return s == FILO_OK ? FILO_OK : filo_error_wrap(s, op);
}

filo_status filo_safetensors_load(const filo_safetensors *f, const char *name, filo_device device, filo_dtype dtype,
                                  filo_tensor **out)
{
    const st_entry *e;
    FILO_TRY(lookup(__func__, f, name, &e));
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    if (dtype == FILO_DTYPE_COUNT && e->dtype != FILO_DTYPE_COUNT)
        dtype = e->dtype;
    if (e->dtype != FILO_DTYPE_COUNT && !dtype_to_st(dtype))
        return FILO_FAIL(FILO_ERR_DTYPE, "cannot load '%s' as dtype %s", name, filo_dtype_name(dtype));
    return load_entry(__func__, f, e, device, dtype, out);
}

filo_status filo_safetensors_load_into(const filo_safetensors *f, const char *name, filo_tensor *dst)
{
    const st_entry *e;
    FILO_TRY(lookup(__func__, f, name, &e));
    if (!dst)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dst is NULL");
    int same = dst->ndim == e->ndim;
    for (int i = 0; same && i < e->ndim; i++)
        same = dst->shape[i] == e->shape[i];
    if (!same) {
        char a[120], b[120], c[200];
        return FILO_FAIL(FILO_ERR_SHAPE, "%s: tensor '%s' is stored with shape %s, the destination %s has shape %s",
                         f->path, name, filo_dims_format(e->ndim, e->shape, a, sizeof a),
                         filo_tensor_describe(dst, c, sizeof c), filo_dims_format(dst->ndim, dst->shape, b, sizeof b));
    }
    filo_tensor *t;
    FILO_TRY(load_entry(__func__, f, e, dst->device, dst->dtype, &t));
    filo_status s = filo_tensor_copy(dst, t);
    filo_tensor_free(t);
    return s == FILO_OK ? FILO_OK : filo_error_wrap(s, __func__);
}

/* ---- writer ---- */

static filo_status check_write_args(int n, const char *const *names, const filo_tensor *const *tensors, int n_meta,
                                    const char *const *keys, const char *const *values)
{
    if (n < 0 || n_meta < 0 || (n > 0 && (!names || !tensors)) || (n_meta > 0 && (!keys || !values)))
        return filo_error_set(FILO_ERR_INVALID_ARG, "filo_safetensors_write",
                              "bad counts or NULL arrays (n %d, n_meta %d)", n, n_meta);
    for (int i = 0; i < n; i++) {
        if (!names[i] || !*names[i])
            return filo_error_set(FILO_ERR_INVALID_ARG, "filo_safetensors_write", "tensor %d has an empty name", i);
        if (strcmp(names[i], "__metadata__") == 0)
            return filo_error_set(FILO_ERR_INVALID_ARG, "filo_safetensors_write",
                                  "tensor %d: '__metadata__' is reserved by the format", i);
        if (!tensors[i])
            return filo_error_set(FILO_ERR_INVALID_ARG, "filo_safetensors_write", "tensor '%s' is NULL", names[i]);
        if (!dtype_to_st(tensors[i]->dtype))
            return filo_error_set(FILO_ERR_DTYPE, "filo_safetensors_write", "tensor '%s' has an unsupported dtype",
                                  names[i]);
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return filo_error_set(FILO_ERR_INVALID_ARG, "filo_safetensors_write", "the name '%s' is given twice",
                                      names[i]);
    }
    for (int i = 0; i < n_meta; i++)
        if (!keys[i] || !values[i])
            return filo_error_set(FILO_ERR_INVALID_ARG, "filo_safetensors_write", "metadata pair %d has a NULL key or value",
                                  i);
    return FILO_OK;
}

/* The header JSON, not yet padded. */
static char *build_header(int n, const char *const *names, const filo_tensor *const *tensors, int n_meta,
                          const char *const *keys, const char *const *values)
{
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok && n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        ok = meta != NULL;
        for (int i = 0; ok && i < n_meta; i++)
            ok = cJSON_AddStringToObject(meta, keys[i], values[i]) != NULL;
    }
    uint64_t at = 0;
    for (int i = 0; ok && i < n; i++) {
        const filo_tensor *t = tensors[i];
        cJSON *e = cJSON_AddObjectToObject(root, names[i]);
        cJSON *shape = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *off = shape ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        ok = off && cJSON_AddStringToObject(e, "dtype", dtype_to_st(t->dtype));
        for (int d = 0; ok && d < t->ndim; d++) {
            cJSON *v = cJSON_CreateNumber((double)t->shape[d]);
            ok = v && cJSON_AddItemToArray(shape, v);
        }
        uint64_t end = at + (uint64_t)filo_tensor_nbytes(t);
        cJSON *b = ok ? cJSON_CreateNumber((double)at) : NULL, *en = b ? cJSON_CreateNumber((double)end) : NULL;
        ok = b && en && cJSON_AddItemToArray(off, b) && cJSON_AddItemToArray(off, en);
        at = end;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text;
}

/* Streams a tensor's bytes (read to the host in row-major order) in pieces. */
static filo_status write_tensor(FILE *fp, const char *path, const char *name, const filo_tensor *t)
{
    size_t nbytes = filo_tensor_nbytes(t);
    if (nbytes == 0)
        return FILO_OK;
    void *buf = malloc(nbytes);
    if (!buf)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for tensor '%s' (%zu bytes)", name, nbytes);
    filo_status s = filo_tensor_to_host(t, buf, nbytes);
    if (s != FILO_OK)
        s = filo_error_wrap(s, __func__);
    else if (fwrite(buf, 1, nbytes, fp) != nbytes)
        s = FILO_FAIL(FILO_ERR_IO, "writing tensor '%s' to %s failed: %s", name, path, strerror(errno));
    free(buf);
    return s;
}

filo_status filo_safetensors_write(const char *path, int n, const char *const *names,
                                   const filo_tensor *const *tensors, int n_meta, const char *const *meta_keys,
                                   const char *const *meta_values)
{
    if (!path || !*path)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "path is NULL or empty");
    FILO_TRY(check_write_args(n, names, tensors, n_meta, meta_keys, meta_values));
    char *header = build_header(n, names, tensors, n_meta, meta_keys, meta_values);
    if (!header)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory building the header of %s", path);
    /* The data region starts 8-byte aligned: the header is padded with spaces, as the format allows. */
    size_t hlen = strlen(header);
    size_t padded = (hlen + 7) / 8 * 8;
    filo_atomic_file af;
    filo_status s = filo_atomic_file_open(path, &af);
    if (s != FILO_OK) {
        free(header);
        return filo_error_wrap(s, __func__);
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    if (fwrite(len8, 1, 8, af.fp) != 8 || fwrite(header, 1, hlen, af.fp) != hlen)
        s = FILO_FAIL(FILO_ERR_IO, "writing the header of %s failed: %s", path, strerror(errno));
    for (size_t i = hlen; s == FILO_OK && i < padded; i++)
        if (fputc(' ', af.fp) == EOF)
            s = FILO_FAIL(FILO_ERR_IO, "writing the header of %s failed: %s", path, strerror(errno));
    free(header);
    for (int i = 0; s == FILO_OK && i < n; i++)
        s = write_tensor(af.fp, path, names[i], tensors[i]);
    if (s != FILO_OK) {
        filo_atomic_file_abort(&af);
        return s;
    }
    s = filo_atomic_file_commit(&af);
    return s == FILO_OK ? FILO_OK : filo_error_wrap(s, __func__);
}
