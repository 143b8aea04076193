/* Statistics of filo's caching allocators (one per CUDA device, one for pinned host memory, one
 * for CPU memory), how to print them, and the settings they read from the environment.
 *
 * Every allocator caches the memory it gets from its backend (cudaMalloc, cudaHostAlloc,
 * aligned_alloc) and hands out blocks of it, so a training step that repeats the same pattern of
 * tensor sizes stops calling the backend after the first step.
 *
 * Guarantees
 *   - Every pointer it returns is aligned to at least 256 bytes (FILO_ALLOC_ALIGN), enough for
 *     any vectorized load; block sizes are multiples of 512 bytes.
 *   - A zero-byte request returns NULL without touching the backend; freeing NULL is a no-op.
 *   - A request above 2^48 bytes fails with FILO_ERR_INVALID_ARG (it is an overflowed size
 *     computation, not a real tensor), never wraps around.
 *   - When the backend is out of memory, the allocator returns every fully free cached segment
 *     to the backend and retries; if that fails too, FILO_ERR_OOM comes with a message that
 *     gives the request, the allocated and reserved bytes, the largest free block and, when the
 *     cache holds much unused memory, a fragmentation hint.
 *
 * Settings, read once when an allocator is created (a malformed value makes creation fail with
 * FILO_ERR_INVALID_ARG and a message naming the key):
 *   FILO_ALLOC_CONF=key:value[,key:value...]
 *     max_split_size_mb:N  cached blocks of N MiB or more are never split for smaller requests,
 *                          and a request of N MiB or more takes a cached block only when it
 *                          wastes less than 20 MiB. Limits the fragmentation that long-lived
 *                          small tensors cause inside big blocks, at the price of more reserved
 *                          memory. N > 20; default: no limit.
 *     round_mb:N           a large request (10 MiB or more) gets a segment of its own, rounded
 *                          up to a multiple of N MiB. 1 <= N <= 1024; default 2.
 *     small_max_kb:N       requests up to N KiB are served from the small pool, carved out of
 *                          segments of max(2 MiB, 2 N KiB). 1 <= N <= 32768; default 1024.
 *                          Requests between that and 10 MiB share 20 MiB segments.
 *     max_reserved_mb:N    the allocator holds at most N MiB from the backend; a request past
 *                          that fails as out of memory does (after the cache is returned), as
 *                          torch.cuda.set_per_process_memory_fraction makes PyTorch's. Shares a
 *                          GPU with other processes, and lets tests reach out-of-memory paths.
 *                          Default: no limit.
 *   FILO_ALLOC_DISABLE_CACHE=1  every free goes straight back to the backend and every request
 *                          to the backend: slow, but lets memory checkers see each tensor.
 *                          Accepted values: 0, 1.
 */
#ifndef FILO_ALLOC_H
#define FILO_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FILO_ALLOC_ALIGN 256

typedef struct filo_alloc_stats {
    size_t allocated_bytes;    /* in live blocks, after rounding */
    size_t allocated_peak;
    size_t requested_bytes;    /* what callers asked for, before rounding */
    size_t reserved_bytes;     /* held from the backend: allocated + free + pending */
    size_t reserved_peak;
    size_t free_bytes;         /* reserved but not allocated: "reserved but unallocated" */
    size_t pending_bytes;      /* freed, but still in use by another stream's queued work */
    size_t largest_free_block;
    double fragmentation;      /* 1 - largest_free_block / free_bytes; 0 when nothing is free */
    size_t active_blocks;
    size_t pending_blocks;
    size_t segments;           /* raw allocations currently held */
    uint64_t allocs;           /* successful non-empty requests, cumulative */
    uint64_t cache_hits;       /* requests served without a raw allocation, cumulative */
    uint64_t raw_allocs;       /* cumulative */
    uint64_t raw_frees;        /* cumulative */
    uint64_t oom_retries;      /* times the cache was emptied to retry a failed raw allocation */
    uint64_t ooms;             /* requests that failed with FILO_ERR_OOM */
} filo_alloc_stats;

/* Writes a one-line human-readable summary ("allocated 1.20 GiB (peak ...), reserved ...") into
 * buf like snprintf: always NUL-terminated when size > 0, returns the length it wanted. */
int filo_alloc_stats_format(const filo_alloc_stats *stats, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
