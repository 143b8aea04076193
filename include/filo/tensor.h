/* Tensors: a dtype, up to FILO_MAX_DIMS dims with strides and an offset, over a refcounted
 * storage on one device. Views share the storage and copy nothing.
 *
 * Every filo_tensor returned through an out-parameter belongs to the caller, who releases it
 * with filo_tensor_free (views keep the storage alive on their own). Strides and the offset are
 * counted in elements. */
#ifndef FILO_TENSOR_H
#define FILO_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "filo/device.h"
#include "filo/dtype.h"
#include "filo/rng.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FILO_MAX_DIMS 8

typedef struct filo_storage filo_storage;

typedef struct filo_tensor {
    filo_storage *storage;
    filo_dtype dtype;
    filo_device device;
    int ndim;
    int64_t shape[FILO_MAX_DIMS];
    int64_t strides[FILO_MAX_DIMS];
    int64_t offset;
} filo_tensor;

/* Creation. `shape` has `ndim` entries (ndim 0 is a scalar); every size must be >= 0. */
filo_status filo_tensor_empty(filo_device device, filo_dtype dtype, int ndim, const int64_t *shape,
                              filo_tensor **out);
filo_status filo_tensor_zeros(filo_device device, filo_dtype dtype, int ndim, const int64_t *shape,
                              filo_tensor **out);
filo_status filo_tensor_full(filo_device device, filo_dtype dtype, int ndim, const int64_t *shape,
                             double value, filo_tensor **out);
/* Copies numel contiguous elements of `dtype` from host memory (any host pointer). On CUDA the
 * copy goes through pinned memory on the current stream and does not wait for the device. */
filo_status filo_tensor_from_host(filo_device device, filo_dtype dtype, int ndim, const int64_t *shape,
                                  const void *data, filo_tensor **out);
/* A new contiguous tensor with the same shape and dtype on `device`. */
filo_status filo_tensor_empty_like(const filo_tensor *t, filo_tensor **out);

void filo_tensor_free(filo_tensor *t);

/* Reads the tensor, in row-major order and its own dtype, into host memory of `size` bytes.
 * Waits for the device: this is the host synchronization point. */
filo_status filo_tensor_to_host(const filo_tensor *t, void *dst, size_t size);
/* Same, converting to dst_dtype on the way (e.g. a bf16 tensor read as f64 for a test). */
filo_status filo_tensor_to_host_as(const filo_tensor *t, filo_dtype dst_dtype, void *dst, size_t size);
/* A contiguous copy on another device (or the same one). */
filo_status filo_tensor_to(const filo_tensor *t, filo_device device, filo_tensor **out);
/* dst[...] = src[...] for equal shapes, any strides, any devices, any dtypes (converted). */
filo_status filo_tensor_copy(filo_tensor *dst, const filo_tensor *src);

/* The tensor's memory is also used by work on `stream` (another stream of its device): the
 * allocator does not reuse it after the free until that stream's work queued so far is done.
 * A no-op on the CPU. */
filo_status filo_tensor_record_stream(const filo_tensor *t, filo_stream *stream);

/* In-place initialization (any strides). */
filo_status filo_tensor_fill(filo_tensor *t, double value);
filo_status filo_tensor_uniform(filo_tensor *t, filo_generator *gen, double low, double high);
filo_status filo_tensor_normal(filo_tensor *t, filo_generator *gen, double mean, double std);

/* Queries. */
int64_t filo_tensor_numel(const filo_tensor *t);
size_t filo_tensor_nbytes(const filo_tensor *t);   /* numel * element size */
int filo_tensor_is_contiguous(const filo_tensor *t);
/* Address of element [0,...,0] (device memory for CUDA tensors). */
void *filo_tensor_data(const filo_tensor *t);
/* "[2, 3]" into buf (snprintf-style truncation), for shapes and index lists in messages. */
const char *filo_dims_format(int ndim, const int64_t *dims, char *buf, size_t size);
/* "f32[2, 3] cuda:0" into buf. */
const char *filo_tensor_describe(const filo_tensor *t, char *buf, size_t size);
/* FILO_ERR_SHAPE unless t has exactly this shape (message names `what`). */
filo_status filo_tensor_check_shape(const filo_tensor *t, const char *what, int ndim, const int64_t *shape);

/* Views: share storage, copy nothing. Negative dims count from the end. */
/* A view with a new shape; one size may be -1. Fails with FILO_ERR_SHAPE when the strides do not
 * allow it (call filo_tensor_reshape to copy in that case). */
filo_status filo_tensor_view(const filo_tensor *t, int ndim, const int64_t *shape, filo_tensor **out);
/* A view when possible, else a contiguous copy. */
filo_status filo_tensor_reshape(const filo_tensor *t, int ndim, const int64_t *shape, filo_tensor **out);
filo_status filo_tensor_transpose(const filo_tensor *t, int dim0, int dim1, filo_tensor **out);
filo_status filo_tensor_permute(const filo_tensor *t, const int *dims, filo_tensor **out);
/* Elements start, start+step, ... < end along dim (Python slice semantics, step >= 1). */
filo_status filo_tensor_slice(const filo_tensor *t, int dim, int64_t start, int64_t end, int64_t step,
                              filo_tensor **out);
/* Broadcast to `shape` (size-1 dims and new leading dims get stride 0). */
filo_status filo_tensor_expand(const filo_tensor *t, int ndim, const int64_t *shape, filo_tensor **out);
filo_status filo_tensor_squeeze(const filo_tensor *t, int dim, filo_tensor **out);
filo_status filo_tensor_unsqueeze(const filo_tensor *t, int dim, filo_tensor **out);
/* Another handle on the same view. */
filo_status filo_tensor_alias(const filo_tensor *t, filo_tensor **out);
/* A contiguous tensor with the same values: an alias when already contiguous, else a copy. */
filo_status filo_tensor_contiguous(const filo_tensor *t, filo_tensor **out);

#ifdef __cplusplus
}
#endif
#endif
