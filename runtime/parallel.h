/* Internal: a small pool of CPU worker threads for the CPU kernels.
 *
 * filo_parallel_for splits [0, n) into at most FILO_PARALLEL_MAX_CHUNKS contiguous chunks whose
 * boundaries depend only on n and grain (never on how many threads run them), so a kernel that
 * writes per-chunk partial results and combines them in chunk order gives the same bits on any
 * thread count. Threads: the machine's cores, or FILO_NUM_THREADS. The calling thread works too;
 * a call from inside a running chunk runs serially. */
#ifndef FILO_RUNTIME_PARALLEL_H
#define FILO_RUNTIME_PARALLEL_H

#include <stdint.h>

#define FILO_PARALLEL_MAX_CHUNKS 64

/* fn(ctx, chunk, begin, end) for each chunk; chunks of fewer than `grain` iterations are merged
 * (grain >= 1). Returns the number of chunks used (0 when n <= 0). */
int filo_parallel_for(int64_t n, int64_t grain, void (*fn)(void *ctx, int chunk, int64_t begin, int64_t end),
                      void *ctx);

/* The chunk count filo_parallel_for uses for (n, grain): size per-chunk partial buffers with it. */
int filo_parallel_chunks(int64_t n, int64_t grain);

/* The number of threads the pool runs (>= 1). */
int filo_parallel_threads(void);

#endif
