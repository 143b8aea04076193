/* The CPU worker pool (runtime/parallel.h): every iteration runs exactly once, chunk boundaries
 * depend only on (n, grain), nested calls run serially, and thousands of back-to-back regions
 * (the pattern of small ops in a training step) neither lose work nor hang. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "parallel.h"

typedef struct count_job {
    atomic_int *hits;
    int64_t chunk_begin[FILO_PARALLEL_MAX_CHUNKS];
    int64_t chunk_end[FILO_PARALLEL_MAX_CHUNKS];
    atomic_int nested_chunks;
} count_job;

static void count(void *ctx, int chunk, int64_t b, int64_t e)
{
    count_job *job = ctx;
    job->chunk_begin[chunk] = b;
    job->chunk_end[chunk] = e;
    for (int64_t i = b; i < e; i++)
        atomic_fetch_add(&job->hits[i], 1);
}

Test(parallel, every_iteration_once_in_fixed_chunks)
{
    cr_assert_geq(filo_parallel_threads(), 1);
    const int64_t sizes[] = {1, 7, 33, 129, 1000, 100003};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s];
        count_job job = {.hits = calloc((size_t)n, sizeof(atomic_int))};
        int chunks = filo_parallel_for(n, 10, count, &job);
        cr_assert_eq(chunks, filo_parallel_chunks(n, 10));
        cr_assert_leq(chunks, FILO_PARALLEL_MAX_CHUNKS);
        for (int64_t i = 0; i < n; i++)
            cr_assert_eq(atomic_load(&job.hits[i]), 1, "n=%lld: iteration %lld ran %d times", (long long)n,
                         (long long)i, atomic_load(&job.hits[i]));
        /* Contiguous chunks in order, covering [0, n). */
        cr_assert_eq(job.chunk_begin[0], 0);
        for (int c = 1; c < chunks; c++)
            cr_assert_eq(job.chunk_begin[c], job.chunk_end[c - 1]);
        cr_assert_eq(job.chunk_end[chunks - 1], n);
        free(job.hits);
    }
    cr_assert_eq(filo_parallel_for(0, 1, count, NULL), 0);
}

static void inner(void *ctx, int chunk, int64_t b, int64_t e)
{
    (void)chunk;
    atomic_int *sum = ctx;
    for (int64_t i = b; i < e; i++)
        atomic_fetch_add(sum, 1);
}

static void outer(void *ctx, int chunk, int64_t b, int64_t e)
{
    (void)chunk;
    atomic_int *sum = ctx;
    for (int64_t i = b; i < e; i++)
        filo_parallel_for(100, 1, inner, sum); /* runs serially on this thread */
}

Test(parallel, nested_regions_run_serially)
{
    atomic_int sum = 0;
    filo_parallel_for(64, 1, outer, &sum);
    cr_assert_eq(atomic_load(&sum), 64 * 100);
}

Test(parallel, many_small_regions)
{
    atomic_int sum = 0;
    for (int r = 0; r < 20000; r++)
        filo_parallel_for(2 + r % 7, 1, inner, &sum);
    long want = 0;
    for (int r = 0; r < 20000; r++)
        want += 2 + r % 7;
    cr_assert_eq(atomic_load(&sum), want);
}
