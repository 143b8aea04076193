/* The backend-agnostic caching allocator: one core, over a raw alloc/free pair, behind CUDA
 * device memory, pinned host memory and CPU memory alike. See include/filo/alloc.h for the
 * guarantees and settings, runtime/caching_alloc.c for the design. */
#ifndef FILO_RUNTIME_CACHING_ALLOC_H
#define FILO_RUNTIME_CACHING_ALLOC_H

#include <stddef.h>

#include "filo/alloc.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a backend provides. Every function is called with the allocator's lock held.
 * The allocator never dereferences the memory, so any address space works. */
typedef struct filo_raw_ops {
    void *ctx;
    /* FILO_ERR_OOM when the backend is out of memory; other failures as the backend sees fit
     * (with their message set). The pointer must be FILO_ALLOC_ALIGN-aligned. */
    filo_status (*alloc)(void *ctx, size_t bytes, void **ptr);
    /* Must be safe to call while streams may still have work queued on the memory, as
     * cudaFree and cudaFreeHost are (they synchronize). */
    void (*free)(void *ctx, void *ptr);
    /* Stream-ordered reuse: all three NULL for backends whose streams complete synchronously
     * (CPU), then streams are ignored and every freed block is reusable at once. */
    filo_status (*event_record)(void *ctx, void *stream, void **event); /* create + record */
    int (*event_done)(void *ctx, void *event);                          /* 1 once completed */
    void (*event_destroy)(void *ctx, void *event);
} filo_raw_ops;

typedef struct filo_caching_alloc filo_caching_alloc;

/* Reads FILO_ALLOC_CONF and FILO_ALLOC_DISABLE_CACHE. name ("cuda:0", "pinned", "cpu") appears
 * in error messages. ops is copied. */
filo_status filo_caching_alloc_create(const filo_raw_ops *ops, const char *name,
                                      filo_caching_alloc **out);
/* Returns all raw memory to the backend, live blocks included; NULL is a no-op. */
void filo_caching_alloc_destroy(filo_caching_alloc *a);

/* A block of at least bytes for work queued on stream (any value, NULL included, names a
 * stream; ignored without event ops). bytes == 0 gives *ptr = NULL. */
filo_status filo_caching_alloc_malloc(filo_caching_alloc *a, size_t bytes, void *stream,
                                      void **ptr);
/* NULL is a no-op; a pointer that is not a live block (double free, foreign pointer) gives
 * FILO_ERR_STATE. The memory is reused by its stream at once, by other streams only after an
 * event recorded on its stream has completed, and not at all until the events recorded on the
 * streams named by filo_caching_alloc_record_stream have completed. */
filo_status filo_caching_alloc_free(filo_caching_alloc *a, void *ptr);
/* The block is also used by work queued on stream: delays its reuse after free. */
filo_status filo_caching_alloc_record_stream(filo_caching_alloc *a, void *ptr, void *stream);
/* Returns every fully free cached segment to the backend. */
filo_status filo_caching_alloc_empty_cache(filo_caching_alloc *a);

void filo_caching_alloc_get_stats(filo_caching_alloc *a, filo_alloc_stats *out);
void filo_caching_alloc_reset_peak(filo_caching_alloc *a);
/* The usable size of a live block (the request rounded up), 0 for anything else. */
size_t filo_caching_alloc_block_size(filo_caching_alloc *a, const void *ptr);

#ifdef __cplusplus
}
#endif
#endif
