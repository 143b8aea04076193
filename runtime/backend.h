/* Internal: per-device contexts and the CUDA backend entry points the runtime dispatches to.
 *
 * The CUDA side lives in runtime/cuda_backend.c, built against the CUDA runtime API (real
 * libcudart, or the emulator in the test build); a CPU-only build links
 * runtime/cuda_backend_none.c instead, which reports zero devices. */
#ifndef FILO_RUNTIME_BACKEND_H
#define FILO_RUNTIME_BACKEND_H

#include <stddef.h>

#include "filo/device.h"
#include "caching_alloc.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FILO_MAX_CUDA_DEVICES 64

struct filo_stream {
    filo_device device;
    void *native;   /* cudaStream_t; NULL on the CPU */
    int is_default; /* owned by the device context */
};

struct filo_event {
    filo_device device;
    void *native;      /* cudaEvent_t; NULL on the CPU */
    double host_ms;    /* CPU events: the time of the record */
    int recorded;
};

typedef struct filo_device_ctx {
    filo_device device;
    struct filo_stream default_stream;
    filo_caching_alloc *alloc;
    /* Private pools of captured steps (runtime/capture.c); NULL almost always, which keeps the
     * allocation path free of capture checks. */
    struct filo_capture_pool *pools;
} filo_device_ctx;

/* runtime/capture.c: allocation routing while pools exist. Each sets *handled to 1 when the call
 * was for a capture's pool (an allocation by the capturing thread, a pool block, or a free of
 * a block the capture may read, which is deferred until the captured step is freed). */
filo_status filo_capture_route_malloc(filo_device_ctx *ctx, size_t bytes, void **ptr, int *handled);
filo_status filo_capture_route_free(filo_device_ctx *ctx, void *ptr, int *handled);
int filo_capture_pool_owns(filo_device_ctx *ctx, const void *ptr);

/* The context of an existing device, created on first use (thread-safe). */
filo_status filo_device_ctx_get(filo_device device, filo_device_ctx **out);
/* Allocates on the device's caching allocator for use on `stream` (NULL: the current stream). */
filo_status filo_device_malloc(filo_device device, size_t bytes, filo_stream *stream, void **ptr);
filo_status filo_device_free(filo_device device, void *ptr);
/* The block is also used on `stream`: its memory is not reused until that stream's work is done. */
filo_status filo_device_record_stream(filo_device device, void *ptr, filo_stream *stream);
/* The native handle (cudaStream_t, or NULL on the CPU) of the device's current stream: what an op
 * passes to its kernel launcher. */
filo_status filo_stream_current_native(filo_device device, void **native);
/* Pinned host memory (page-locked when a CUDA device exists) for staging copies. */
filo_status filo_pinned_malloc(size_t bytes, void **ptr);
filo_status filo_pinned_free(void *ptr, filo_stream *used_on);

/* CUDA backend, one function per runtime need. Indices are checked by the caller. */
int filo_cuda_backend_count(void);
int filo_cuda_backend_emulated(void);
filo_status filo_cuda_backend_info(int index, filo_device_info *out);
filo_status filo_cuda_backend_synchronize(int index);
extern const filo_raw_ops filo_cuda_raw_ops_template; /* ctx = (void *)(intptr_t)index */
extern const filo_raw_ops filo_pinned_raw_ops;
filo_status filo_cuda_stream_create(int index, void **native);
void filo_cuda_stream_destroy(int index, void *native);
filo_status filo_cuda_stream_synchronize(int index, void *native);
filo_status filo_cuda_stream_wait_event(int index, void *stream, void *event);
filo_status filo_cuda_event_create(int index, void **native);
void filo_cuda_event_destroy(int index, void *native);
filo_status filo_cuda_event_record(int index, void *event, void *stream);
filo_status filo_cuda_event_synchronize(int index, void *event);
filo_status filo_cuda_event_query(int index, void *event, int *done);
filo_status filo_cuda_event_elapsed(int index, void *start, void *end, float *ms);
typedef enum { FILO_COPY_H2D, FILO_COPY_D2H, FILO_COPY_D2D } filo_copy_kind;
filo_status filo_cuda_memcpy_async(int index, void *dst, const void *src, size_t bytes, filo_copy_kind kind,
                                   void *stream);
filo_status filo_cuda_memset_async(int index, void *dst, int byte, size_t bytes, void *stream);
/* Library handles, created on first use per device. */
/* Stream capture (relaxed mode: the capturing thread may still allocate), instantiation of the
 * captured graph into *exec, replay on a stream, and destruction. */
filo_status filo_cuda_capture_begin(int index, void *stream);
filo_status filo_cuda_capture_end(int index, void *stream, void **exec);
filo_status filo_cuda_graph_launch(int index, void *exec, void *stream);
void filo_cuda_graph_destroy(int index, void *exec);
filo_status filo_cuda_blaslt_handle(int index, void **out);
filo_status filo_cuda_dnn_handle(int index, void *stream, void **out);
/* FILO_ERR_CUDA with the failed call's name and the runtime's message, after a kernel launch. */
filo_status filo_cuda_check_launch(const char *where);

#ifdef __cplusplus
}
#endif

/* Wraps a call into CUDA kernel code (a .cu launcher), which a build without CUDA does not
 * compile: there the call becomes an error, and device checks keep it unreachable anyway. */
#ifdef FILO_HAVE_CUDA
#define FILO_CUDA_CALL(call) (call)
#else
#define FILO_CUDA_CALL(call) filo_error_set(FILO_ERR_DEVICE, __func__, "this build of filo has no CUDA backend")
#endif

#endif
