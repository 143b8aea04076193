/* Captured steps (include/filo/capture.h): CUDA stream capture into a graph with a private
 * memory pool, and the CPU's replay by calling the step again.
 *
 * The pool is a caching allocator of its own over the device's raw memory, without events: all
 * work of a graph runs in one stream order, so a block freed and reused inside the captured step
 * is used in the same order at every replay. Blocks that the step frees from the device's main
 * allocator are not freed until the captured step is: the graph may read them at each replay. */
#define _POSIX_C_SOURCE 200809L
#include "filo/capture.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "caching_alloc.h"
#include "error.h"

struct filo_capture_pool {
    filo_caching_alloc *alloc;
    pthread_t owner;   /* the capturing thread, while active */
    int active;        /* being captured: the owner's allocations come from here */
    int orphaned;      /* its captured step is freed: destroyed once its last block is */
    void **deferred;   /* main-allocator blocks freed during the capture */
    size_t n_deferred, cap_deferred;
    struct filo_capture_pool *next;
};

struct filo_captured_step {
    filo_device device;
    filo_step_fn step; /* the CPU's replay */
    void *user;
    void *exec;        /* cudaGraphExec_t */
    filo_device_ctx *ctx;
    struct filo_capture_pool *pool;
};

/* One lock for every device's pool list: captures are rare, allocations with pools present too. */
static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;

static struct filo_capture_pool *active_pool_locked(filo_device_ctx *ctx)
{
    for (struct filo_capture_pool *p = ctx->pools; p; p = p->next)
        if (p->active && pthread_equal(p->owner, pthread_self()))
            return p;
    return NULL;
}

static struct filo_capture_pool *owner_locked(filo_device_ctx *ctx, const void *ptr)
{
    for (struct filo_capture_pool *p = ctx->pools; p; p = p->next)
        if (filo_caching_alloc_block_size(p->alloc, ptr))
            return p;
    return NULL;
}

static void unlink_locked(filo_device_ctx *ctx, struct filo_capture_pool *pool)
{
    struct filo_capture_pool **link = &ctx->pools;
    while (*link && *link != pool)
        link = &(*link)->next;
    if (*link)
        *link = pool->next;
}

/* An orphaned pool with no live block left goes back to the device. */
static void reap_locked(filo_device_ctx *ctx, struct filo_capture_pool *pool)
{
    filo_alloc_stats st;
    filo_caching_alloc_get_stats(pool->alloc, &st);
    if (!pool->orphaned || st.active_blocks)
        return;
    unlink_locked(ctx, pool);
    filo_caching_alloc_destroy(pool->alloc);
    free(pool->deferred);
    free(pool);
}

filo_status filo_capture_route_malloc(filo_device_ctx *ctx, size_t bytes, void **ptr, int *handled)
{
    pthread_mutex_lock(&pools_lock);
    struct filo_capture_pool *p = active_pool_locked(ctx);
    filo_status s = FILO_OK;
    if (p) {
        *handled = 1;
        s = filo_caching_alloc_malloc(p->alloc, bytes, NULL, ptr);
    }
    pthread_mutex_unlock(&pools_lock);
    return s;
}

filo_status filo_capture_route_free(filo_device_ctx *ctx, void *ptr, int *handled)
{
    pthread_mutex_lock(&pools_lock);
    filo_status s = FILO_OK;
    struct filo_capture_pool *owner = owner_locked(ctx, ptr);
    if (owner) {
        *handled = 1;
        s = filo_caching_alloc_free(owner->alloc, ptr);
        reap_locked(ctx, owner);
    } else {
        struct filo_capture_pool *active = active_pool_locked(ctx);
        if (active) {
            *handled = 1;
            if (active->n_deferred == active->cap_deferred) {
                size_t cap = active->cap_deferred ? 2 * active->cap_deferred : 64;
                void **grown = realloc(active->deferred, cap * sizeof *grown);
                if (!grown) {
                    pthread_mutex_unlock(&pools_lock);
                    return FILO_FAIL(FILO_ERR_OOM, "out of host memory while capturing");
                }
                active->deferred = grown;
                active->cap_deferred = cap;
            }
            active->deferred[active->n_deferred++] = ptr;
        }
    }
    pthread_mutex_unlock(&pools_lock);
    return s;
}

int filo_capture_pool_owns(filo_device_ctx *ctx, const void *ptr)
{
    pthread_mutex_lock(&pools_lock);
    int owned = owner_locked(ctx, ptr) != NULL;
    pthread_mutex_unlock(&pools_lock);
    return owned;
}

/* Ends a pool's capture: the deferred frees stay until the step is freed (or happen now when
 * there is no graph), and the pool is orphaned when no graph will use it. */
static void pool_release(filo_device_ctx *ctx, struct filo_capture_pool *pool)
{
    pthread_mutex_lock(&pools_lock);
    pool->active = 0;
    pool->orphaned = 1;
    for (size_t i = 0; i < pool->n_deferred; i++)
        filo_caching_alloc_free(ctx->alloc, pool->deferred[i]);
    pool->n_deferred = 0;
    reap_locked(ctx, pool);
    pthread_mutex_unlock(&pools_lock);
}

static filo_status capture_cuda(filo_captured_step *c, filo_step_fn step, void *user)
{
    filo_stream *stream;
    FILO_TRY(filo_stream_current(c->device, &stream));
    FILO_TRY(filo_device_ctx_get(c->device, &c->ctx));
    struct filo_capture_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    filo_raw_ops ops = filo_cuda_raw_ops_template;
    ops.ctx = (void *)(intptr_t)c->device.index;
    ops.event_record = NULL;
    ops.event_done = NULL;
    ops.event_destroy = NULL;
    char name[48];
    snprintf(name, sizeof name, "cuda:%d captured step", c->device.index);
    filo_status s = filo_caching_alloc_create(&ops, name, &pool->alloc);
    if (s != FILO_OK) {
        free(pool);
        return s;
    }
    pool->owner = pthread_self();
    pool->active = 1;
    pthread_mutex_lock(&pools_lock);
    pool->next = c->ctx->pools;
    __atomic_store_n(&c->ctx->pools, pool, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&pools_lock);
    c->pool = pool;

    s = filo_cuda_capture_begin(c->device.index, stream->native);
    if (s == FILO_OK) {
        filo_status ran = step(user);
        if (ran == FILO_OK) {
            s = filo_cuda_capture_end(c->device.index, stream->native, &c->exec);
        } else {
            /* The step's own error says what went wrong; ending the broken capture adds nothing. */
            char why[1024];
            snprintf(why, sizeof why, "%s", filo_last_error());
            if (filo_cuda_capture_end(c->device.index, stream->native, &c->exec) == FILO_OK)
                filo_cuda_graph_destroy(c->device.index, c->exec);
            c->exec = NULL;
            s = FILO_FAIL(ran, "the step failed while being captured (a host read or synchronization inside "
                          "a captured step is not allowed): %s", why);
        }
    }
    pthread_mutex_lock(&pools_lock);
    pool->active = 0;
    pthread_mutex_unlock(&pools_lock);
    return s;
}

filo_status filo_step_capture(filo_device device, filo_step_fn step, void *user, filo_captured_step **out)
{
    if (!step || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "step and out must not be NULL");
    *out = NULL;
    FILO_TRY(filo_device_check(device));
    filo_captured_step *c = calloc(1, sizeof *c);
    if (!c)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    c->device = device;
    c->step = step;
    c->user = user;
    if (device.type == FILO_DEVICE_CUDA) {
        filo_status s = capture_cuda(c, step, user);
        if (s != FILO_OK) {
            filo_step_free(c);
            return s;
        }
    }
    *out = c;
    return FILO_OK;
}

filo_status filo_step_replay(filo_captured_step *c)
{
    if (!c)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "the captured step is NULL");
    if (c->device.type == FILO_DEVICE_CPU)
        return c->step(c->user);
    filo_stream *stream;
    FILO_TRY(filo_stream_current(c->device, &stream));
    return filo_cuda_graph_launch(c->device.index, c->exec, stream->native);
}

int filo_step_is_graph(const filo_captured_step *c) { return c && c->exec != NULL; }

void filo_step_free(filo_captured_step *c)
{
    if (!c)
        return;
    if (c->exec)
        filo_cuda_graph_destroy(c->device.index, c->exec);
    if (c->pool)
        pool_release(c->ctx, c->pool);
    free(c);
}
