/* The CPU worker pool behind filo_parallel_for: an OpenMP parallel region whose threads take chunks
 * from a shared atomic index. OpenMP, not a pool of our own, because oneDNN (the CPU GEMM) runs on
 * libgomp's threads and keeps them spinning for a while after each call: a second pool beside them
 * put twice as many busy threads as cores on the machine, and a training step of BERT-mini lost a
 * fifth of its time to that spinning (docs/benchmarks.md). Sharing libgomp's team, the threads that
 * just ran a GEMM pick up the next elementwise op at once. */
#define _POSIX_C_SOURCE 200809L
#include "parallel.h"

#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

static int pool_threads;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static _Thread_local int in_region;

int filo_parallel_chunks(int64_t n, int64_t grain)
{
    if (n <= 0)
        return 0;
    if (grain < 1)
        grain = 1;
    int64_t c = (n + grain - 1) / grain;
    return c > FILO_PARALLEL_MAX_CHUNKS ? FILO_PARALLEL_MAX_CHUNKS : (int)c;
}

static void chunk_range(int64_t n, int chunks, int i, int64_t *begin, int64_t *end)
{
    *begin = n * i / chunks;
    *end = n * (i + 1) / chunks;
}

static void pool_start(void)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    const char *env = getenv("FILO_NUM_THREADS");
    int want = env && atoi(env) > 0 ? atoi(env) : (int)(cores > 0 ? cores : 1);
    pool_threads = want > 256 ? 256 : want;
}

int filo_parallel_threads(void)
{
    pthread_once(&pool_once, pool_start);
    return pool_threads;
}

int filo_parallel_for(int64_t n, int64_t grain, void (*fn)(void *ctx, int chunk, int64_t begin, int64_t end),
                      void *ctx)
{
    int chunks = filo_parallel_chunks(n, grain);
    if (chunks == 0)
        return 0;
    int threads = filo_parallel_threads();
    if (chunks == 1 || threads == 1 || in_region || omp_in_parallel()) {
        for (int i = 0; i < chunks; i++) {
            int64_t b, e;
            chunk_range(n, chunks, i, &b, &e);
            fn(ctx, i, b, e);
        }
        return chunks;
    }
    atomic_int next = 0;
#pragma omp parallel num_threads(threads < chunks ? threads : chunks)
    {
        /* A call from inside a chunk runs serially on its thread. */
        in_region = 1;
        for (;;) {
            int i = atomic_fetch_add(&next, 1);
            if (i >= chunks)
                break;
            int64_t b, e;
            chunk_range(n, chunks, i, &b, &e);
            fn(ctx, i, b, e);
        }
        in_region = 0;
    }
    return chunks;
}
