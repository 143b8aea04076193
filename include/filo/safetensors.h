/* safetensors files (Hugging Face's format): read through a memory map with a strict header
 * parser, written atomically.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string value", ...}}
 * and the data region, offsets relative to its start. The reader rejects, naming the file and the
 * tensor: a header length past the file, JSON that does not parse (cJSON) or is not an object,
 * unknown keys or wrong types in an entry, negative or non-integer dims, offsets out of the
 * data region, reversed, overlapping or leaving gaps, a byte size that disagrees with dtype and
 * shape, duplicate names, and metadata values that are not strings. Tensors of dtypes filo has
 * no type for (I8, U16, F8...) may be listed; loading one is FILO_ERR_UNSUPPORTED.
 *
 * Supported dtypes: F64, F32, BF16, F16, I64, I32, U8 and BOOL (read as U8). */
#ifndef FILO_SAFETENSORS_H
#define FILO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FILO_SAFETENSORS_MAX_DIMS 8

typedef struct filo_safetensors filo_safetensors;

/* Maps and validates the whole header (FILO_ERR_IO: cannot open; FILO_ERR_FORMAT: malformed). */
filo_status filo_safetensors_open(const char *path, filo_safetensors **out);
void filo_safetensors_close(filo_safetensors *f);

/* Tensors in the file's header order. */
int filo_safetensors_count(const filo_safetensors *f);
const char *filo_safetensors_name_at(const filo_safetensors *f, int i);
/* 1 when the file has a tensor named `name`. */
int filo_safetensors_has(const filo_safetensors *f, const char *name);
/* Dtype (FILO_DTYPE_COUNT for a dtype filo lacks), dims and shape of a tensor; the safetensors
 * dtype string ("F32") in *st_dtype when non-NULL. FILO_ERR_INVALID_ARG when not present. */
filo_status filo_safetensors_info(const filo_safetensors *f, const char *name, filo_dtype *dtype, int *ndim,
                                  int64_t shape[FILO_SAFETENSORS_MAX_DIMS], const char **st_dtype);
/* A new contiguous tensor on `device` with the stored values converted to `dtype` (the stored
 * dtype when dtype is FILO_DTYPE_COUNT); float <-> float conversions round to nearest even. */
filo_status filo_safetensors_load(const filo_safetensors *f, const char *name, filo_device device, filo_dtype dtype,
                                  filo_tensor **out);
/* Copies the stored values into dst, which must have the stored shape (FILO_ERR_SHAPE naming
 * both shapes otherwise); converts to dst's dtype. */
filo_status filo_safetensors_load_into(const filo_safetensors *f, const char *name, filo_tensor *dst);
/* The __metadata__ value for key, or NULL. */
const char *filo_safetensors_metadata(const filo_safetensors *f, const char *key);

/* Writes n tensors (any device, dtype and strides; stored contiguous in their own dtype, in the
 * given order, 8-byte aligned as the format asks) and n_meta metadata string pairs to `path`
 * through a temporary file and a rename. Names must be unique and non-empty. */
filo_status filo_safetensors_write(const char *path, int n, const char *const *names,
                                   const filo_tensor *const *tensors, int n_meta, const char *const *meta_keys,
                                   const char *const *meta_values);

#ifdef __cplusplus
}
#endif
#endif
