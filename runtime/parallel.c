/* The CPU worker pool behind filo_parallel_for: threads - 1 workers started on first use, woken by
 * a generation counter, taking chunks from a shared atomic index; the caller takes chunks too and
 * waits until every chunk is done and no worker is still inside the region. One parallel region at a time (a mutex serializes callers). */
#define _POSIX_C_SOURCE 200809L
#include "parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct pool {
    pthread_mutex_t region; /* one region at a time */
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    int threads;
    uint64_t generation;
    /* the current region */
    void (*fn)(void *, int, int64_t, int64_t);
    void *ctx;
    int64_t n;
    int chunks;
    atomic_int next;
    int finished;
    int active; /* workers inside take_chunks: the region's fields must not change under them */
} pool;

static pool the_pool = {.region = PTHREAD_MUTEX_INITIALIZER,
                        .lock = PTHREAD_MUTEX_INITIALIZER,
                        .wake = PTHREAD_COND_INITIALIZER,
                        .done = PTHREAD_COND_INITIALIZER};
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

/* Runs chunks until none is left; returns how many this thread ran. */
static int take_chunks(pool *p)
{
    int ran = 0;
    for (;;) {
        int i = atomic_fetch_add(&p->next, 1);
        if (i >= p->chunks)
            return ran;
        int64_t b, e;
        chunk_range(p->n, p->chunks, i, &b, &e);
        p->fn(p->ctx, i, b, e);
        ran++;
    }
}

static void *worker(void *arg)
{
    pool *p = arg;
    uint64_t seen = 0;
    in_region = 1;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (p->generation == seen)
            pthread_cond_wait(&p->wake, &p->lock);
        seen = p->generation;
        p->active++;
        pthread_mutex_unlock(&p->lock);
        int ran = take_chunks(p);
        pthread_mutex_lock(&p->lock);
        p->finished += ran;
        p->active--;
        pthread_cond_broadcast(&p->done);
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

static void pool_start(void)
{
    pool *p = &the_pool;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    const char *env = getenv("FILO_NUM_THREADS");
    int want = env && atoi(env) > 0 ? atoi(env) : (int)(cores > 0 ? cores : 1);
    if (want > 256)
        want = 256;
    p->threads = 1;
    for (int i = 1; i < want; i++) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int ok = pthread_create(&t, &attr, worker, p) == 0;
        pthread_attr_destroy(&attr);
        if (!ok)
            break; /* run with the threads we have */
        p->threads++;
    }
}

int filo_parallel_threads(void)
{
    pthread_once(&pool_once, pool_start);
    return the_pool.threads;
}

int filo_parallel_for(int64_t n, int64_t grain, void (*fn)(void *ctx, int chunk, int64_t begin, int64_t end),
                      void *ctx)
{
    int chunks = filo_parallel_chunks(n, grain);
    if (chunks == 0)
        return 0;
    if (chunks == 1 || in_region || filo_parallel_threads() == 1) {
        for (int i = 0; i < chunks; i++) {
            int64_t b, e;
            chunk_range(n, chunks, i, &b, &e);
            fn(ctx, i, b, e);
        }
        return chunks;
    }
    pool *p = &the_pool;
    pthread_mutex_lock(&p->region);
    pthread_mutex_lock(&p->lock);
    /* A worker that woke late for the previous region may still be looking at its fields. */
    while (p->active > 0)
        pthread_cond_wait(&p->done, &p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunks = chunks;
    p->finished = 0;
    atomic_store(&p->next, 0);
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    in_region = 1;
    int ran = take_chunks(p);
    in_region = 0;

    pthread_mutex_lock(&p->lock);
    p->finished += ran;
    while (p->finished < p->chunks || p->active > 0)
        pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->region);
    return chunks;
}
