/* Devices, per-device contexts, streams and events: the dispatch between the CPU and CUDA. */
#define _GNU_SOURCE
#include "backend.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

filo_device filo_cpu(void) { return (filo_device){FILO_DEVICE_CPU, 0}; }
filo_device filo_cuda(int index) { return (filo_device){FILO_DEVICE_CUDA, index}; }

int filo_device_equal(filo_device a, filo_device b) { return a.type == b.type && a.index == b.index; }

int filo_cuda_device_count(void) { return filo_cuda_backend_count(); }
int filo_cuda_is_emulated(void) { return filo_cuda_backend_emulated(); }

const char *filo_device_format(filo_device device, char *buf, size_t size)
{
    if (device.type == FILO_DEVICE_CPU)
        snprintf(buf, size, "cpu");
    else if (device.type == FILO_DEVICE_CUDA)
        snprintf(buf, size, "cuda:%d", device.index);
    else
        snprintf(buf, size, "invalid-device(%d)", (int)device.type);
    return buf;
}

filo_status filo_device_check(filo_device device)
{
    if (device.type == FILO_DEVICE_CPU) {
        if (device.index != 0)
            return FILO_FAIL(FILO_ERR_DEVICE, "cpu device index must be 0, got %d", device.index);
        return FILO_OK;
    }
    if (device.type != FILO_DEVICE_CUDA)
        return FILO_FAIL(FILO_ERR_DEVICE, "unknown device type %d", (int)device.type);
    int count = filo_cuda_backend_count();
    if (device.index < 0 || device.index >= count)
        return FILO_FAIL(FILO_ERR_DEVICE, "cuda:%d does not exist (%d CUDA device%s available)", device.index,
                         count, count == 1 ? "" : "s");
    return FILO_OK;
}

filo_status filo_device_parse(const char *text, filo_device *out)
{
    if (!text || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "text and out must not be NULL");
    filo_device d;
    if (strcmp(text, "cpu") == 0) {
        d = filo_cpu();
    } else if (strcmp(text, "cuda") == 0) {
        d = filo_cuda(0);
    } else if (strncmp(text, "cuda:", 5) == 0 && text[5] >= '0' && text[5] <= '9') {
        char *end;
        long index = strtol(text + 5, &end, 10);
        if (*end != '\0' || index > FILO_MAX_CUDA_DEVICES)
            return FILO_FAIL(FILO_ERR_DEVICE, "'%s' is not a device: expected cpu, cuda or cuda:N", text);
        d = filo_cuda((int)index);
    } else {
        return FILO_FAIL(FILO_ERR_DEVICE, "'%s' is not a device: expected cpu, cuda or cuda:N", text);
    }
    FILO_TRY(filo_device_check(d));
    *out = d;
    return FILO_OK;
}

/* ---- CPU memory: the same caching core over aligned malloc ---- */

static filo_status cpu_raw_alloc(void *ctx, size_t bytes, void **ptr)
{
    (void)ctx;
    /* 256-byte alignment matches CUDA allocations, so vectorized loops behave alike. */
    void *p = aligned_alloc(256, (bytes + 255) & ~(size_t)255);
    if (!p)
        return FILO_FAIL(FILO_ERR_OOM, "host allocation of %zu bytes failed", bytes);
    *ptr = p;
    return FILO_OK;
}

static void cpu_raw_free(void *ctx, void *ptr)
{
    (void)ctx;
    free(ptr);
}

static const filo_raw_ops cpu_raw_ops = {NULL, cpu_raw_alloc, cpu_raw_free, NULL, NULL, NULL};

/* ---- contexts ---- */

static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static filo_device_ctx *cpu_ctx;
static filo_device_ctx *cuda_ctx[FILO_MAX_CUDA_DEVICES];
static filo_caching_alloc *pinned_alloc;

static filo_status ctx_create(filo_device device, filo_device_ctx **out)
{
    filo_device_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory creating a device context");
    ctx->device = device;
    ctx->default_stream.device = device;
    ctx->default_stream.is_default = 1;
    char name[32];
    filo_device_format(device, name, sizeof name);
    filo_status s;
    if (device.type == FILO_DEVICE_CPU) {
        s = filo_caching_alloc_create(&cpu_raw_ops, name, &ctx->alloc);
    } else {
        filo_raw_ops ops = filo_cuda_raw_ops_template;
        ops.ctx = (void *)(intptr_t)device.index;
        s = filo_cuda_stream_create(device.index, &ctx->default_stream.native);
        if (s == FILO_OK)
            s = filo_caching_alloc_create(&ops, name, &ctx->alloc);
    }
    if (s != FILO_OK) {
        free(ctx);
        return s;
    }
    *out = ctx;
    return FILO_OK;
}

filo_status filo_device_ctx_get(filo_device device, filo_device_ctx **out)
{
    FILO_TRY(filo_device_check(device));
    filo_device_ctx **slot = device.type == FILO_DEVICE_CPU ? &cpu_ctx : &cuda_ctx[device.index];
    filo_device_ctx *ctx = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (ctx) {
        *out = ctx;
        return FILO_OK;
    }
    pthread_mutex_lock(&ctx_lock);
    filo_status s = FILO_OK;
    if (!*slot) {
        s = ctx_create(device, &ctx);
        if (s == FILO_OK)
            __atomic_store_n(slot, ctx, __ATOMIC_RELEASE);
    }
    ctx = *slot;
    pthread_mutex_unlock(&ctx_lock);
    if (s != FILO_OK)
        return s;
    *out = ctx;
    return FILO_OK;
}

filo_status filo_device_malloc(filo_device device, size_t bytes, filo_stream *stream, void **ptr)
{
    filo_device_ctx *ctx;
    FILO_TRY(filo_device_ctx_get(device, &ctx));
    if (__atomic_load_n(&ctx->pools, __ATOMIC_ACQUIRE)) {
        int handled = 0;
        FILO_TRY(filo_capture_route_malloc(ctx, bytes, ptr, &handled));
        if (handled)
            return FILO_OK;
    }
    if (!stream)
        FILO_TRY(filo_stream_current(device, &stream));
    return filo_caching_alloc_malloc(ctx->alloc, bytes, stream->native, ptr);
}

filo_status filo_device_free(filo_device device, void *ptr)
{
    filo_device_ctx *ctx;
    FILO_TRY(filo_device_ctx_get(device, &ctx));
    if (ptr && __atomic_load_n(&ctx->pools, __ATOMIC_ACQUIRE)) {
        int handled = 0;
        FILO_TRY(filo_capture_route_free(ctx, ptr, &handled));
        if (handled)
            return FILO_OK;
    }
    return filo_caching_alloc_free(ctx->alloc, ptr);
}

filo_status filo_device_record_stream(filo_device device, void *ptr, filo_stream *stream)
{
    filo_device_ctx *ctx;
    FILO_TRY(filo_device_ctx_get(device, &ctx));
    /* A captured graph's pool has one stream order: nothing to record. */
    if (__atomic_load_n(&ctx->pools, __ATOMIC_ACQUIRE) && filo_capture_pool_owns(ctx, ptr))
        return FILO_OK;
    return filo_caching_alloc_record_stream(ctx->alloc, ptr, stream->native);
}

static filo_status pinned_get(filo_caching_alloc **out)
{
    pthread_mutex_lock(&ctx_lock);
    filo_status s = FILO_OK;
    if (!pinned_alloc)
        s = filo_caching_alloc_create(filo_cuda_backend_count() > 0 ? &filo_pinned_raw_ops : &cpu_raw_ops,
                                      "pinned", &pinned_alloc);
    *out = pinned_alloc;
    pthread_mutex_unlock(&ctx_lock);
    return s;
}

filo_status filo_pinned_malloc(size_t bytes, void **ptr)
{
    filo_caching_alloc *a;
    FILO_TRY(pinned_get(&a));
    /* Host writes are not stream-ordered: pinned blocks belong to the "host" stream (NULL) and
     * come back to it only after the events recorded by filo_pinned_free have completed. */
    return filo_caching_alloc_malloc(a, bytes, NULL, ptr);
}

filo_status filo_pinned_free(void *ptr, filo_stream *used_on)
{
    filo_caching_alloc *a;
    FILO_TRY(pinned_get(&a));
    if (used_on && used_on->native)
        FILO_TRY(filo_caching_alloc_record_stream(a, ptr, used_on->native));
    return filo_caching_alloc_free(a, ptr);
}

/* ---- allocator queries (include/filo/alloc.h) ---- */

filo_status filo_alloc_stats_get(filo_device device, filo_alloc_stats *out)
{
    filo_device_ctx *ctx;
    FILO_TRY(filo_device_ctx_get(device, &ctx));
    filo_caching_alloc_get_stats(ctx->alloc, out);
    return FILO_OK;
}

filo_status filo_alloc_empty_cache(filo_device device)
{
    filo_device_ctx *ctx;
    FILO_TRY(filo_device_ctx_get(device, &ctx));
    return filo_caching_alloc_empty_cache(ctx->alloc);
}

filo_status filo_alloc_reset_peak(filo_device device)
{
    filo_device_ctx *ctx;
    FILO_TRY(filo_device_ctx_get(device, &ctx));
    filo_caching_alloc_reset_peak(ctx->alloc);
    return FILO_OK;
}

/* ---- device info ---- */

filo_status filo_device_info_get(filo_device device, filo_device_info *out)
{
    FILO_TRY(filo_device_check(device));
    memset(out, 0, sizeof *out);
    if (device.type == FILO_DEVICE_CUDA)
        return filo_cuda_backend_info(device.index, out);
    snprintf(out->name, sizeof out->name, "cpu");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            char *colon = strchr(line, ':');
            if (strncmp(line, "model name", 10) == 0 && colon) {
                colon += 2;
                colon[strcspn(colon, "\n")] = '\0';
                snprintf(out->name, sizeof out->name, "%s", colon);
                break;
            }
        }
        fclose(f);
    }
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    out->total_memory = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    out->multiprocessors = cores > 0 ? (int)cores : 1;
    return FILO_OK;
}

filo_status filo_device_synchronize(filo_device device)
{
    FILO_TRY(filo_device_check(device));
    if (device.type == FILO_DEVICE_CUDA)
        return filo_cuda_backend_synchronize(device.index);
    return FILO_OK;
}

/* ---- streams ---- */

static _Thread_local filo_stream *current_cuda_stream[FILO_MAX_CUDA_DEVICES];

filo_status filo_stream_default(filo_device device, filo_stream **out)
{
    filo_device_ctx *ctx;
    FILO_TRY(filo_device_ctx_get(device, &ctx));
    *out = &ctx->default_stream;
    return FILO_OK;
}

filo_status filo_stream_current(filo_device device, filo_stream **out)
{
    if (device.type == FILO_DEVICE_CUDA && device.index >= 0 && device.index < FILO_MAX_CUDA_DEVICES &&
        current_cuda_stream[device.index]) {
        *out = current_cuda_stream[device.index];
        return FILO_OK;
    }
    return filo_stream_default(device, out);
}

filo_status filo_stream_current_native(filo_device device, void **native)
{
    filo_stream *s;
    FILO_TRY(filo_stream_current(device, &s));
    *native = s->native;
    return FILO_OK;
}

filo_status filo_stream_set_current(filo_device device, filo_stream *stream)
{
    FILO_TRY(filo_device_check(device));
    if (stream && !filo_device_equal(stream->device, device)) {
        char a[32], b[32];
        return FILO_FAIL(FILO_ERR_DEVICE, "stream of %s cannot be current on %s",
                         filo_device_format(stream->device, a, sizeof a), filo_device_format(device, b, sizeof b));
    }
    if (device.type == FILO_DEVICE_CUDA)
        current_cuda_stream[device.index] = stream;
    return FILO_OK;
}

filo_status filo_stream_create(filo_device device, filo_stream **out)
{
    filo_device_ctx *ctx;
    FILO_TRY(filo_device_ctx_get(device, &ctx));
    filo_stream *s = calloc(1, sizeof *s);
    if (!s)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory creating a stream");
    s->device = device;
    if (device.type == FILO_DEVICE_CUDA) {
        filo_status st = filo_cuda_stream_create(device.index, &s->native);
        if (st != FILO_OK) {
            free(s);
            return st;
        }
    }
    *out = s;
    return FILO_OK;
}

void filo_stream_destroy(filo_stream *stream)
{
    if (!stream || stream->is_default)
        return;
    if (stream->device.type == FILO_DEVICE_CUDA) {
        if (current_cuda_stream[stream->device.index] == stream)
            current_cuda_stream[stream->device.index] = NULL;
        filo_cuda_stream_destroy(stream->device.index, stream->native);
    }
    free(stream);
}

filo_device filo_stream_device(const filo_stream *stream) { return stream->device; }

void *filo_stream_native(const filo_stream *stream) { return stream ? stream->native : NULL; }

filo_status filo_stream_synchronize(filo_stream *stream)
{
    if (!stream)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "stream is NULL");
    if (stream->device.type == FILO_DEVICE_CUDA)
        return filo_cuda_stream_synchronize(stream->device.index, stream->native);
    return FILO_OK;
}

static filo_status check_same_device(filo_device a, filo_device b, const char *where)
{
    if (filo_device_equal(a, b))
        return FILO_OK;
    char x[32], y[32];
    return filo_error_set(FILO_ERR_DEVICE, where, "stream is on %s but event is on %s",
                          filo_device_format(a, x, sizeof x), filo_device_format(b, y, sizeof y));
}

filo_status filo_stream_wait_event(filo_stream *stream, filo_event *event)
{
    if (!stream || !event)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "stream and event must not be NULL");
    FILO_TRY(check_same_device(stream->device, event->device, __func__));
    if (stream->device.type == FILO_DEVICE_CUDA)
        return filo_cuda_stream_wait_event(stream->device.index, stream->native, event->native);
    return FILO_OK;
}

/* ---- events ---- */

static double host_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

filo_status filo_event_create(filo_device device, filo_event **out)
{
    FILO_TRY(filo_device_check(device));
    filo_event *e = calloc(1, sizeof *e);
    if (!e)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory creating an event");
    e->device = device;
    if (device.type == FILO_DEVICE_CUDA) {
        filo_status s = filo_cuda_event_create(device.index, &e->native);
        if (s != FILO_OK) {
            free(e);
            return s;
        }
    }
    *out = e;
    return FILO_OK;
}

void filo_event_destroy(filo_event *event)
{
    if (!event)
        return;
    if (event->device.type == FILO_DEVICE_CUDA)
        filo_cuda_event_destroy(event->device.index, event->native);
    free(event);
}

filo_status filo_event_record(filo_event *event, filo_stream *stream)
{
    if (!stream || !event)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "stream and event must not be NULL");
    FILO_TRY(check_same_device(stream->device, event->device, __func__));
    if (event->device.type == FILO_DEVICE_CUDA)
        FILO_TRY(filo_cuda_event_record(event->device.index, event->native, stream->native));
    else
        event->host_ms = host_now_ms();
    event->recorded = 1;
    return FILO_OK;
}

filo_status filo_event_synchronize(filo_event *event)
{
    if (!event)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "event is NULL");
    if (event->device.type == FILO_DEVICE_CUDA && event->recorded)
        return filo_cuda_event_synchronize(event->device.index, event->native);
    return FILO_OK;
}

filo_status filo_event_query(filo_event *event, int *done)
{
    if (!event || !done)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "event and done must not be NULL");
    *done = 1;
    if (event->device.type == FILO_DEVICE_CUDA && event->recorded)
        return filo_cuda_event_query(event->device.index, event->native, done);
    return FILO_OK;
}

filo_status filo_event_elapsed_ms(filo_event *start, filo_event *end, float *ms)
{
    if (!start || !end || !ms)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "start, end and ms must not be NULL");
    if (!start->recorded || !end->recorded)
        return FILO_FAIL(FILO_ERR_STATE, "both events must be recorded before measuring time between them");
    FILO_TRY(check_same_device(start->device, end->device, __func__));
    if (start->device.type == FILO_DEVICE_CUDA)
        return filo_cuda_event_elapsed(start->device.index, start->native, end->native, ms);
    *ms = (float)(end->host_ms - start->host_ms);
    return FILO_OK;
}
