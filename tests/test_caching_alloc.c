/* Tests of the caching allocator core over a fake backend: it hands out addresses from a counter
 * (or real memory, for the thread test), counts raw calls, fails with OOM above a byte budget,
 * and has events that a test completes by hand. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caching_alloc.h"
#include "error.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

typedef struct fake_event {
    void *stream;
    int done, destroyed;
} fake_event;

typedef struct fake_region {
    uintptr_t ptr;
    size_t size;
} fake_region;

typedef struct fake {
    int real;              /* hand out real memory (aligned_alloc) instead of counter addresses */
    size_t budget;         /* 0: unlimited */
    int misalign;          /* hand out pointers 16 bytes off alignment */
    int fail_events;       /* event_record fails */
    uintptr_t next_addr;
    size_t live_bytes;
    fake_region *live;
    size_t n_live, cap_live;
    uint64_t allocs, frees;
    size_t last_alloc;
    fake_event **events;
    size_t n_events, cap_events;
    uint64_t destroyed;
} fake;

static filo_status fake_alloc(void *ctx, size_t bytes, void **ptr)
{
    fake *f = ctx;
    if (f->budget && f->live_bytes + bytes > f->budget)
        return filo_error_set(FILO_ERR_OOM, "fake_alloc", "over budget");
    uintptr_t p;
    if (f->real) {
        p = (uintptr_t)aligned_alloc(4096, bytes);
        cr_assert(p, "host out of memory");
    } else {
        if (!f->next_addr)
            f->next_addr = (uintptr_t)1 << 40;
        p = f->next_addr + (f->misalign ? 16 : 0);
        f->next_addr += (bytes + 2 * MIB) / MIB * MIB; /* leaves a gap between segments */
    }
    if (f->n_live == f->cap_live) {
        f->cap_live = f->cap_live ? 2 * f->cap_live : 64;
        f->live = realloc(f->live, f->cap_live * sizeof *f->live);
        cr_assert(f->live);
    }
    f->live[f->n_live++] = (fake_region){p, bytes};
    f->live_bytes += bytes;
    f->allocs++;
    f->last_alloc = bytes;
    *ptr = (void *)p;
    return FILO_OK;
}

static void fake_free(void *ctx, void *ptr)
{
    fake *f = ctx;
    for (size_t i = 0; i < f->n_live; i++) {
        if (f->live[i].ptr == (uintptr_t)ptr) {
            f->live_bytes -= f->live[i].size;
            f->live[i] = f->live[--f->n_live];
            f->frees++;
            if (f->real)
                free(ptr);
            return;
        }
    }
    cr_assert_fail("raw free of %p, which the fake never handed out", ptr);
}

static filo_status fake_event_record(void *ctx, void *stream, void **event)
{
    fake *f = ctx;
    if (f->fail_events)
        return filo_error_set(FILO_ERR_CUDA, "fake_event_record", "device lost");
    fake_event *e = calloc(1, sizeof *e);
    cr_assert(e);
    e->stream = stream;
    if (f->n_events == f->cap_events) {
        f->cap_events = f->cap_events ? 2 * f->cap_events : 64;
        f->events = realloc(f->events, f->cap_events * sizeof *f->events);
        cr_assert(f->events);
    }
    f->events[f->n_events++] = e;
    *event = e;
    return FILO_OK;
}

static int fake_event_done(void *ctx, void *event)
{
    (void)ctx;
    fake_event *e = event;
    cr_assert(!e->destroyed, "event queried after destroy");
    return e->done;
}

static void fake_event_destroy(void *ctx, void *event)
{
    fake *f = ctx;
    fake_event *e = event;
    cr_assert(!e->destroyed, "event destroyed twice");
    e->destroyed = 1;
    f->destroyed++;
}

static size_t fake_events_on(const fake *f, void *stream)
{
    size_t n = 0;
    for (size_t i = 0; i < f->n_events; i++)
        n += f->events[i]->stream == stream;
    return n;
}

/* Completes every event recorded so far on stream. */
static void fake_complete(fake *f, void *stream)
{
    for (size_t i = 0; i < f->n_events; i++)
        if (f->events[i]->stream == stream)
            f->events[i]->done = 1;
}

static void fake_complete_all(fake *f)
{
    for (size_t i = 0; i < f->n_events; i++)
        f->events[i]->done = 1;
}

static void fake_fini(fake *f)
{
    for (size_t i = 0; i < f->n_events; i++)
        free(f->events[i]);
    free(f->events);
    free(f->live);
}

static filo_caching_alloc *make(fake *f, int with_events)
{
    filo_raw_ops ops = {.ctx = f, .alloc = fake_alloc, .free = fake_free};
    if (with_events) {
        ops.event_record = fake_event_record;
        ops.event_done = fake_event_done;
        ops.event_destroy = fake_event_destroy;
    }
    filo_caching_alloc *a = NULL;
    filo_status st = filo_caching_alloc_create(&ops, "fake:0", &a);
    cr_assert_eq(st, FILO_OK, "create: %s", filo_last_error());
    return a;
}

static void *must_malloc(filo_caching_alloc *a, size_t bytes, void *stream)
{
    void *p = NULL;
    filo_status st = filo_caching_alloc_malloc(a, bytes, stream, &p);
    cr_assert_eq(st, FILO_OK, "malloc(%zu): %s", bytes, filo_last_error());
    cr_assert(p);
    return p;
}

static void must_free(filo_caching_alloc *a, void *p)
{
    filo_status st = filo_caching_alloc_free(a, p);
    cr_assert_eq(st, FILO_OK, "free(%p): %s", p, filo_last_error());
}

static filo_alloc_stats stats_of(filo_caching_alloc *a)
{
    filo_alloc_stats s;
    filo_caching_alloc_get_stats(a, &s);
    return s;
}

#define STREAM_A ((void *)0xA0)
#define STREAM_B ((void *)0xB0)
#define STREAM_C ((void *)0xC0)

/* ---- a training step ---- */

/* One BERT-like step (batch 8, sequence 128, hidden 768, 12 heads, FFN 3072, two layers, f32):
 * activations kept for backward and freed in LIFO order, temporaries freed at once, gradients
 * freed in allocation order by the optimizer. */
static void training_step(filo_caching_alloc *a, void *s)
{
    const size_t act = 8 * 128 * 768 * 4, scores = 8 * 12 * 128 * 128 * 4,
                 ffn = 8 * 128 * 3072 * 4, stats = 8 * 128 * 4 * 2;
    void *layer[2][11], *grads[16];
    int n_grads = 0;

    void *emb = must_malloc(a, act, s);
    void *mask = must_malloc(a, 8 * 128 * 8, s);
    for (int l = 0; l < 2; l++) {
        const size_t sizes[11] = {stats, act, act, act, scores, scores, act, act, ffn, ffn, act};
        for (int i = 0; i < 11; i++) {
            layer[l][i] = must_malloc(a, sizes[i], s);
            if (i == 6)
                must_free(a, must_malloc(a, act, s)); /* a temporary: head transpose */
        }
    }
    void *logits = must_malloc(a, 8 * 2 * 4, s);
    void *loss = must_malloc(a, 4, s);
    void *dlogits = must_malloc(a, 8 * 2 * 4, s);
    must_free(a, loss);
    must_free(a, logits);
    void *dx = must_malloc(a, act, s);
    must_free(a, dlogits);
    for (int l = 1; l >= 0; l--) {
        void *dffn = must_malloc(a, ffn, s);
        grads[n_grads++] = must_malloc(a, 3072 * 768 * 4, s);
        grads[n_grads++] = must_malloc(a, 3072 * 4, s);
        must_free(a, layer[l][10]);
        must_free(a, layer[l][9]);
        must_free(a, layer[l][8]);
        must_free(a, dffn);
        grads[n_grads++] = must_malloc(a, 768 * 3072 * 4, s);
        void *dnew = must_malloc(a, act, s);
        must_free(a, dx);
        dx = dnew;
        void *dscores = must_malloc(a, scores, s);
        must_free(a, layer[l][5]);
        must_free(a, layer[l][4]);
        must_free(a, dscores);
        for (int i = 0; i < 3; i++)
            grads[n_grads++] = must_malloc(a, 768 * 768 * 4, s);
        /* mixed order: k, q, v, then the rest */
        must_free(a, layer[l][2]);
        must_free(a, layer[l][1]);
        must_free(a, layer[l][3]);
        must_free(a, layer[l][7]);
        must_free(a, layer[l][6]);
        must_free(a, layer[l][0]);
    }
    grads[n_grads++] = must_malloc(a, (size_t)30522 * 768 * 4, s);
    must_free(a, dx);
    must_free(a, mask);
    must_free(a, emb);
    for (int i = 0; i < n_grads; i++)
        must_free(a, grads[i]);
}

Test(caching_alloc, repeated_training_step_makes_no_raw_allocations)
{
    fake f = {0};
    filo_caching_alloc *a = make(&f, 1);
    training_step(a, STREAM_A);
    filo_alloc_stats warm = stats_of(a);
    for (int step = 0; step < 3; step++)
        training_step(a, STREAM_A);
    filo_alloc_stats s = stats_of(a);
    cr_assert_eq(s.raw_allocs, warm.raw_allocs, "steps after warm-up made %llu raw allocations",
                 (unsigned long long)(s.raw_allocs - warm.raw_allocs));
    cr_assert_eq(s.raw_frees, 0);
    cr_assert_eq(s.allocated_bytes, 0);
    cr_assert_eq(s.cache_hits, s.allocs - warm.raw_allocs);
    double ratio = (double)s.reserved_peak / (double)s.allocated_peak;
    char line[1024];
    filo_alloc_stats_format(&s, line, sizeof line);
    cr_log_info("training step: peak reserved / peak allocated = %.3f (%.1f / %.1f MiB); %s",
                ratio, (double)s.reserved_peak / MIB, (double)s.allocated_peak / MIB, line);
    printf("training step: peak reserved / peak allocated = %.3f (%.1f / %.1f MiB)\n", ratio,
           (double)s.reserved_peak / MIB, (double)s.allocated_peak / MIB);
    /* The 90 MiB embedding gradient needs its own segment at the end of the step, when the
     * activations' segments are free but too small: a segment allocator cannot do much better
     * than 1.4 here. A regression guard, not a goal. */
    cr_assert_lt(ratio, 1.8);
    filo_caching_alloc_destroy(a);
    cr_assert_eq(f.n_live, 0);
    fake_fini(&f);
}

/* ---- split, coalesce, best fit ---- */

Test(caching_alloc, best_fit_picks_the_smallest_fitting_block)
{
    fake f = {0};
    filo_caching_alloc *a = make(&f, 0);
    /* One small segment: big, spacer, small, spacer, medium, spacer. */
    char *big = must_malloc(a, 64 * KIB, NULL);
    void *s1 = must_malloc(a, 4 * KIB, NULL);
    char *small = must_malloc(a, 16 * KIB, NULL);
    void *s2 = must_malloc(a, 4 * KIB, NULL);
    char *medium = must_malloc(a, 32 * KIB, NULL);
    void *s3 = must_malloc(a, 4 * KIB, NULL);
    cr_assert_eq(f.allocs, 1);
    cr_assert_eq(small, big + 68 * KIB, "blocks are carved in address order");
    must_free(a, big);
    must_free(a, small);
    must_free(a, medium);
    cr_assert_eq(must_malloc(a, 10 * KIB, NULL), small);
    cr_assert_eq(must_malloc(a, 20 * KIB, NULL), medium);
    cr_assert_eq(must_malloc(a, 40 * KIB, NULL), big);
    cr_assert_eq(filo_caching_alloc_block_size(a, small), 10 * KIB);
    cr_assert_eq(f.allocs, 1);
    (void)s1, (void)s2, (void)s3;
    filo_caching_alloc_destroy(a);
    cr_assert_eq(f.n_live, 0);
    fake_fini(&f);
}

Test(caching_alloc, free_neighbours_coalesce)
{
    fake f = {0};
    filo_caching_alloc *a = make(&f, 1);
    char *x = must_malloc(a, 100 * KIB, STREAM_A);
    char *y = must_malloc(a, 200 * KIB, STREAM_A);
    char *z = must_malloc(a, 300 * KIB, STREAM_A);
    cr_assert_eq(y, x + 100 * KIB);
    cr_assert_eq(z, y + 200 * KIB);
    must_free(a, x);
    must_free(a, y);
    /* x and y merged: a request for both fits where x was. */
    cr_assert_eq(must_malloc(a, 300 * KIB, STREAM_A), x);
    must_free(a, x);
    filo_alloc_stats s = stats_of(a);
    cr_assert_eq(s.free_bytes, 2 * MIB - 300 * KIB);
    cr_assert_eq(s.largest_free_block, 2 * MIB - 600 * KIB);
    must_free(a, z);
    s = stats_of(a);
    cr_assert_eq(s.largest_free_block, 2 * MIB, "the whole segment is one block again");
    cr_assert_eq(s.fragmentation, 0.0);
    cr_assert_eq(filo_caching_alloc_empty_cache(a), FILO_OK);
    s = stats_of(a);
    cr_assert_eq(s.reserved_bytes, 0);
    cr_assert_eq(s.segments, 0);
    cr_assert_eq(f.frees, 1);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

Test(caching_alloc, pools_and_segment_sizes)
{
    fake f = {0};
    filo_caching_alloc *a = make(&f, 0);
    void *p = must_malloc(a, 1, NULL);
    cr_assert_eq(f.last_alloc, 2 * MIB, "small requests share 2 MiB segments");
    cr_assert_eq(filo_caching_alloc_block_size(a, p), 512);
    cr_assert_eq((uintptr_t)p % FILO_ALLOC_ALIGN, 0);
    must_malloc(a, MIB + 1, NULL);
    cr_assert_eq(f.last_alloc, 20 * MIB, "medium requests share 20 MiB segments");
    must_malloc(a, 11 * MIB + 5, NULL);
    cr_assert_eq(f.last_alloc, 12 * MIB, "large requests get their own segment, 2 MiB rounded");
    must_malloc(a, 5 * MIB, NULL);
    cr_assert_eq(f.allocs, 3, "the 20 MiB segment serves the next medium request");
    char *big = must_malloc(a, 64 * MIB, NULL);
    must_free(a, big);
    char *medium = must_malloc(a, 9 * MIB, NULL);
    cr_assert(medium < big || medium >= big + 64 * MIB,
              "a medium request does not carve up a large segment");
    cr_assert_eq(must_malloc(a, 30 * MIB, NULL), big, "a large one does");
    cr_assert_eq(f.allocs, 4);
    filo_caching_alloc_destroy(a);
    cr_assert_eq(f.n_live, 0);
    fake_fini(&f);
}

/* ---- OOM ---- */

Test(caching_alloc, oom_frees_the_cache_retries_then_reports)
{
    fake f = {.budget = 40 * MIB};
    filo_caching_alloc *a = make(&f, 1);
    void *x = must_malloc(a, 12 * MIB, STREAM_A);
    must_malloc(a, 12 * MIB, STREAM_A);
    must_free(a, x);
    must_malloc(a, 20 * MIB, STREAM_A); /* fits only once x's cached segment is returned */
    filo_alloc_stats s = stats_of(a);
    cr_assert_eq(s.oom_retries, 1);
    cr_assert_eq(s.raw_frees, 1);
    cr_assert_eq(s.ooms, 0);

    void *p = (void *)1;
    filo_status st = filo_caching_alloc_malloc(a, 16 * MIB, STREAM_A, &p);
    cr_assert_eq(st, FILO_ERR_OOM);
    cr_assert_null(p);
    const char *msg = filo_last_error();
    cr_log_info("%s", msg);
    cr_assert(strstr(msg, "'fake:0'"), "%s", msg);
    cr_assert(strstr(msg, "tried to allocate 16.00 MiB"), "%s", msg);
    cr_assert(strstr(msg, "allocated 32.00 MiB"), "%s", msg);
    cr_assert(strstr(msg, "reserved 32.00 MiB"), "%s", msg);
    cr_assert(strstr(msg, "largest free block 0 bytes"), "%s", msg);
    cr_assert_null(strstr(msg, "Hint"), "no fragmentation here: %s", msg);
    s = stats_of(a);
    cr_assert_eq(s.ooms, 1);
    cr_assert_eq(s.oom_retries, 2);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

Test(caching_alloc, oom_message_explains_fragmentation)
{
    fake f = {.budget = 40 * MIB};
    filo_caching_alloc *a = make(&f, 0);
    void *q[4];
    for (int i = 0; i < 4; i++)
        q[i] = must_malloc(a, 5 * MIB, NULL);
    cr_assert_eq(f.allocs, 1);
    must_free(a, q[0]);
    must_free(a, q[2]);
    void *p;
    cr_assert_eq(filo_caching_alloc_malloc(a, 24 * MIB, NULL, &p), FILO_ERR_OOM);
    const char *msg = filo_last_error();
    cr_log_info("%s", msg);
    cr_assert(strstr(msg, "tried to allocate 24.00 MiB (25165824 bytes)"), "%s", msg);
    cr_assert(strstr(msg, "allocated 10.00 MiB"), "%s", msg);
    cr_assert(strstr(msg, "reserved 20.00 MiB"), "%s", msg);
    cr_assert(strstr(msg, "largest free block 5.00 MiB"), "%s", msg);
    cr_assert(strstr(msg, "fragmentation"), "%s", msg);
    cr_assert(strstr(msg, "max_split_size_mb"), "%s", msg);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

Test(caching_alloc, oom_falls_back_to_a_segment_of_just_the_request)
{
    fake f = {.budget = 30 * MIB};
    filo_caching_alloc *a = make(&f, 0);
    must_malloc(a, 12 * MIB, NULL);
    must_malloc(a, 2 * MIB, NULL); /* a 20 MiB segment would not fit */
    cr_assert_eq(f.last_alloc, 2 * MIB);
    cr_assert_eq(stats_of(a).ooms, 0);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

/* ---- streams ---- */

Test(caching_alloc, record_stream_delays_reuse_until_the_event)
{
    fake f = {0};
    filo_caching_alloc *a = make(&f, 1);
    void *p = must_malloc(a, 12 * MIB, STREAM_A);
    cr_assert_eq(filo_caching_alloc_record_stream(a, p, STREAM_B), FILO_OK);
    cr_assert_eq(filo_caching_alloc_record_stream(a, p, STREAM_B), FILO_OK);
    cr_assert_eq(filo_caching_alloc_record_stream(a, p, STREAM_A), FILO_OK);
    must_free(a, p);
    cr_assert_eq(f.n_events, 1, "one event, on B only");
    cr_assert_eq(fake_events_on(&f, STREAM_B), 1);
    filo_alloc_stats s = stats_of(a);
    cr_assert_eq(s.pending_blocks, 1);
    cr_assert_eq(s.pending_bytes, 12 * MIB);
    cr_assert_eq(s.allocated_bytes, 0);

    void *q = must_malloc(a, 12 * MIB, STREAM_A);
    cr_assert_neq(q, p, "B may still be using p");
    cr_assert_eq(f.allocs, 2);
    fake_complete(&f, STREAM_B);
    void *r = must_malloc(a, 12 * MIB, STREAM_A);
    cr_assert_eq(r, p, "B's event completed: p is A's again");
    cr_assert_eq(f.allocs, 2);
    cr_assert_eq(f.destroyed, 1);
    s = stats_of(a);
    cr_assert_eq(s.pending_blocks, 0);
    cr_assert_eq(s.pending_bytes, 0);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

/* The event on A is recorded when C first misses (not at every free), and C reuses the block
 * once that event has completed. */
Test(caching_alloc, another_stream_reuses_a_block_after_the_owner_event)
{
    fake f = {0};
    filo_caching_alloc *a = make(&f, 1);
    void *p = must_malloc(a, 12 * MIB, STREAM_A);
    must_free(a, p);
    cr_assert_eq(must_malloc(a, 12 * MIB, STREAM_A), p, "the owner stream reuses at once");
    must_free(a, p);
    cr_assert_eq(f.n_events, 0, "single-stream reuse records no event");

    void *c1 = must_malloc(a, 12 * MIB, STREAM_C);
    cr_assert_neq(c1, p, "A's queued work may still use p");
    cr_assert_eq(fake_events_on(&f, STREAM_A), 1, "C's miss asks A for an event");
    void *c2 = must_malloc(a, 12 * MIB, STREAM_C);
    cr_assert_neq(c2, p);
    cr_assert_eq(fake_events_on(&f, STREAM_A), 1, "the event in flight already covers p");
    cr_assert_eq(f.allocs, 3);

    fake_complete(&f, STREAM_A);
    cr_assert_eq(must_malloc(a, 12 * MIB, STREAM_C), p, "A's event completed");
    cr_assert_eq(f.allocs, 3);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

Test(caching_alloc, without_events_streams_share_at_once)
{
    fake f = {0};
    filo_caching_alloc *a = make(&f, 0);
    void *p = must_malloc(a, 12 * MIB, STREAM_A);
    cr_assert_eq(filo_caching_alloc_record_stream(a, p, STREAM_B), FILO_OK);
    must_free(a, p);
    cr_assert_eq(must_malloc(a, 12 * MIB, STREAM_C), p);
    cr_assert_eq(f.allocs, 1);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

/* ---- misuse ---- */

Test(caching_alloc, double_free_and_unknown_pointers_are_state_errors)
{
    fake f = {0};
    filo_caching_alloc *a = make(&f, 1);
    void *p = must_malloc(a, 1000, STREAM_A);
    must_free(a, p);
    char name[32];
    snprintf(name, sizeof name, "%p", p);
    cr_assert_eq(filo_caching_alloc_free(a, p), FILO_ERR_STATE);
    cr_assert(strstr(filo_last_error(), name), "%s", filo_last_error());
    cr_assert(strstr(filo_last_error(), "freed twice"), "%s", filo_last_error());

    void *bogus = (void *)0x1234500;
    snprintf(name, sizeof name, "%p", bogus);
    cr_assert_eq(filo_caching_alloc_free(a, bogus), FILO_ERR_STATE);
    cr_assert(strstr(filo_last_error(), name), "%s", filo_last_error());
    cr_assert_eq(filo_caching_alloc_record_stream(a, bogus, STREAM_B), FILO_ERR_STATE);
    cr_assert_eq(filo_caching_alloc_block_size(a, p), 0);
    /* an interior pointer is not a block either */
    void *q = must_malloc(a, 4096, STREAM_A);
    cr_assert_eq(filo_caching_alloc_free(a, (char *)q + 512), FILO_ERR_STATE);
    must_free(a, q);
    filo_alloc_stats s = stats_of(a);
    cr_assert_eq(s.active_blocks, 0);
    cr_assert_eq(s.allocated_bytes, 0);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

Test(caching_alloc, zero_and_absurd_sizes)
{
    fake f = {.budget = 1024 * MIB};
    filo_caching_alloc *a = make(&f, 0);
    void *p = (void *)1;
    cr_assert_eq(filo_caching_alloc_malloc(a, 0, NULL, &p), FILO_OK);
    cr_assert_null(p);
    cr_assert_eq(filo_caching_alloc_free(a, NULL), FILO_OK);
    cr_assert_eq(filo_caching_alloc_block_size(a, NULL), 0);

    const size_t absurd[] = {SIZE_MAX, SIZE_MAX - 100, SIZE_MAX / 2, ((size_t)1 << 48) + 1};
    for (size_t i = 0; i < sizeof absurd / sizeof absurd[0]; i++) {
        p = (void *)1;
        cr_assert_eq(filo_caching_alloc_malloc(a, absurd[i], NULL, &p), FILO_ERR_INVALID_ARG);
        cr_assert_null(p);
        cr_assert(strstr(filo_last_error(), "2^48"), "%s", filo_last_error());
    }
    cr_assert_eq(f.allocs, 0);
    cr_assert_eq(filo_caching_alloc_malloc(a, (size_t)1 << 48, NULL, &p), FILO_ERR_OOM);
    cr_assert(strstr(filo_last_error(), "256.00 TiB"), "%s", filo_last_error());
    cr_assert_eq(stats_of(a).reserved_bytes, 0);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

Test(caching_alloc, stats_format_names_every_figure)
{
    fake f = {0};
    filo_caching_alloc *a = make(&f, 0);
    must_malloc(a, 3 * MIB, NULL);
    filo_caching_alloc_reset_peak(a);
    filo_alloc_stats s = stats_of(a);
    cr_assert_eq(s.allocated_peak, 3 * MIB);
    cr_assert_eq(s.requested_bytes, 3 * MIB);
    char buf[1024];
    int n = filo_alloc_stats_format(&s, buf, sizeof buf);
    cr_assert_eq((size_t)n, strlen(buf));
    cr_assert(strstr(buf, "allocated 3.00 MiB"), "%s", buf);
    cr_assert(strstr(buf, "reserved 20.00 MiB"), "%s", buf);
    cr_assert(strstr(buf, "largest free block 17.00 MiB"), "%s", buf);
    cr_assert(strstr(buf, "raw allocs 1"), "%s", buf);
    char tiny[8];
    filo_alloc_stats_format(&s, tiny, sizeof tiny);
    cr_assert_eq(strlen(tiny), 7);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

Test(caching_alloc, many_live_blocks)
{
    fake f = {0};
    filo_caching_alloc *a = make(&f, 0);
    enum { N = 5000 };
    static char *p[N];
    for (int i = 0; i < N; i++)
        p[i] = must_malloc(a, 300, NULL);
    for (int i = 1; i < N; i++)
        cr_assert_eq(filo_caching_alloc_block_size(a, p[i]), 512);
    cr_assert_eq(stats_of(a).active_blocks, N);
    for (int i = 0; i < N; i += 2)
        must_free(a, p[i]);
    for (int i = 1; i < N; i += 2)
        must_free(a, p[i]);
    filo_alloc_stats s = stats_of(a);
    cr_assert_eq(s.active_blocks, 0);
    cr_assert_eq(s.largest_free_block, 2 * MIB, "every segment merged back whole");
    cr_assert_eq(s.segments, (N * 512 + 2 * MIB - 1) / (2 * MIB));
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

Test(caching_alloc, backend_failures)
{
    fake f = {.misalign = 1};
    filo_caching_alloc *a = make(&f, 1);
    void *p;
    cr_assert_eq(filo_caching_alloc_malloc(a, 100, STREAM_A, &p), FILO_ERR_INTERNAL);
    cr_assert(strstr(filo_last_error(), "aligned"), "%s", filo_last_error());
    cr_assert_eq(f.frees, 1, "the misaligned memory went back");
    f.misalign = 0;

    p = must_malloc(a, 100, STREAM_A);
    cr_assert_eq(filo_caching_alloc_record_stream(a, p, STREAM_B), FILO_OK);
    cr_assert_eq(filo_caching_alloc_record_stream(a, p, STREAM_C), FILO_OK);
    f.fail_events = 1;
    cr_assert_eq(filo_caching_alloc_free(a, p), FILO_ERR_CUDA);
    cr_assert(strstr(filo_last_error(), "device lost"), "%s", filo_last_error());
    cr_assert_eq(filo_caching_alloc_block_size(a, p), 512, "a failed free leaves the block live");
    f.fail_events = 0;
    must_free(a, p);
    cr_assert_eq(f.n_events, 2);
    /* destroy with events in flight releases them */
    filo_caching_alloc_destroy(a);
    cr_assert_eq(f.destroyed, 2);
    cr_assert_eq(f.n_live, 0);

    filo_raw_ops half = {.ctx = &f, .alloc = fake_alloc, .free = fake_free,
                         .event_record = fake_event_record};
    cr_assert_eq(filo_caching_alloc_create(&half, "x", &a), FILO_ERR_INVALID_ARG);
    cr_assert_eq(filo_caching_alloc_create(NULL, "x", &a), FILO_ERR_INVALID_ARG);
    fake_fini(&f);
}

/* ---- settings ---- */

static filo_status create_with_conf(const char *conf)
{
    setenv("FILO_ALLOC_CONF", conf, 1);
    fake f = {0};
    filo_raw_ops ops = {.ctx = &f, .alloc = fake_alloc, .free = fake_free};
    filo_caching_alloc *a = (filo_caching_alloc *)1;
    filo_status st = filo_caching_alloc_create(&ops, "cpu", &a);
    if (st != FILO_OK)
        cr_assert_null(a);
    filo_caching_alloc_destroy(a);
    unsetenv("FILO_ALLOC_CONF");
    return st;
}

Test(caching_alloc, malformed_settings_are_rejected)
{
    const struct {
        const char *conf, *says;
    } bad[] = {
        {"max_split_size_mb:abc", "max_split_size_mb:abc"},
        {"max_split_size_mb:", "max_split_size_mb has no value"},
        {"max_split_size_mb:10", "out of range"},
        {"round_mb", "'round_mb' is not key:value"},
        {"round_mb:0", "round_mb:0 is out of range"},
        {"round_mb:-2", "round_mb:-2"},
        {"small_max_kb:99999999999999999999999", "small_max_kb"},
        {"small_max_kb:1k", "small_max_kb:1k"},
        {"round_mb:2,colour:blue", "unknown key 'colour'"},
        {"max_reserved_mb:0", "max_reserved_mb:0 is out of range"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(create_with_conf(bad[i].conf), FILO_ERR_INVALID_ARG, "%s accepted",
                     bad[i].conf);
        cr_assert(strstr(filo_last_error(), "FILO_ALLOC_CONF"), "%s", filo_last_error());
        cr_assert(strstr(filo_last_error(), bad[i].says), "%s: %s", bad[i].conf,
                  filo_last_error());
    }
    cr_assert_eq(create_with_conf(""), FILO_OK);
    cr_assert_eq(create_with_conf(" round_mb:4 , small_max_kb:512,"), FILO_OK);

    setenv("FILO_ALLOC_DISABLE_CACHE", "yes", 1);
    cr_assert_eq(create_with_conf(""), FILO_ERR_INVALID_ARG);
    cr_assert(strstr(filo_last_error(), "FILO_ALLOC_DISABLE_CACHE"), "%s", filo_last_error());
}

Test(caching_alloc, settings_take_effect)
{
    setenv("FILO_ALLOC_CONF", "max_split_size_mb:64, round_mb:4,small_max_kb:512", 1);
    fake f = {0};
    filo_caching_alloc *a = make(&f, 0);
    must_malloc(a, 600 * KIB, NULL);
    cr_assert_eq(f.last_alloc, 20 * MIB, "600 KiB is medium with small_max_kb:512");
    must_malloc(a, 512 * KIB, NULL);
    cr_assert_eq(f.last_alloc, 2 * MIB);
    must_malloc(a, 11 * MIB, NULL);
    cr_assert_eq(f.last_alloc, 12 * MIB, "rounded to 4 MiB");
    must_malloc(a, 13 * MIB, NULL);
    cr_assert_eq(f.last_alloc, 16 * MIB, "rounded to 4 MiB");

    void *big = must_malloc(a, 100 * MIB, NULL);
    must_free(a, big);
    uint64_t raw = f.allocs;
    void *mid = must_malloc(a, 30 * MIB, NULL);
    cr_assert_neq(mid, big, "a 100 MiB block is not split for a request below 64 MiB");
    cr_assert_eq(f.allocs, raw + 1);
    void *near = must_malloc(a, 90 * MIB, NULL);
    cr_assert_eq(near, big, "an oversize request takes an oversize block wasting < 20 MiB");
    cr_assert_eq(filo_caching_alloc_block_size(a, near), 100 * MIB, "and does not split it");
    cr_assert_eq(f.allocs, raw + 1);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

Test(caching_alloc, max_reserved_caps_what_the_backend_gives)
{
    setenv("FILO_ALLOC_CONF", "max_reserved_mb:30", 1);
    fake f = {0};
    filo_caching_alloc *a = make(&f, 0);
    void *first = must_malloc(a, 12 * MIB, NULL);
    void *p = NULL;
    cr_assert_eq(filo_caching_alloc_malloc(a, 20 * MIB, NULL, &p), FILO_ERR_OOM, "12 + 20 MiB is over 30");
    cr_assert_null(p);
    cr_assert(strstr(filo_last_error(), "out of memory"), "%s", filo_last_error());
    must_free(a, first);
    p = must_malloc(a, 20 * MIB, NULL); /* the cached 12 MiB went back to the backend first */
    cr_assert_leq(stats_of(a).reserved_bytes, 30 * MIB);
    must_free(a, p);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

Test(caching_alloc, disable_cache_sends_every_free_to_the_backend)
{
    setenv("FILO_ALLOC_DISABLE_CACHE", "1", 1);
    fake f = {0};
    filo_caching_alloc *a = make(&f, 1);
    void *p = must_malloc(a, 100, STREAM_A);
    cr_assert_eq(f.last_alloc, 512);
    must_free(a, p);
    cr_assert_eq(f.frees, 1);
    p = must_malloc(a, 100, STREAM_A);
    cr_assert_eq(f.allocs, 2);
    cr_assert_eq(filo_caching_alloc_record_stream(a, p, STREAM_B), FILO_OK);
    must_free(a, p);
    cr_assert_eq(f.frees, 1, "B may still use it");
    fake_complete(&f, STREAM_B);
    cr_assert_eq(filo_caching_alloc_empty_cache(a), FILO_OK);
    cr_assert_eq(f.frees, 2);
    cr_assert_eq(stats_of(a).reserved_bytes, 0);
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

/* ---- randomized ---- */

typedef struct live_block {
    uintptr_t ptr;
    size_t size, requested;
} live_block;

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Sizes from 1 byte to 64 MiB, log-uniform, with exact powers of two now and then. */
static size_t random_size(uint64_t *rng)
{
    size_t base = (size_t)1 << (rng_next(rng) % 27);
    return base + (rng_next(rng) % 3 ? rng_next(rng) % base : 0);
}

static void check_consistent(filo_caching_alloc *a, const fake *f, const live_block *live,
                             size_t n_live)
{
    filo_alloc_stats s = stats_of(a);
    size_t allocated = 0, requested = 0;
    for (size_t i = 0; i < n_live; i++) {
        allocated += live[i].size;
        requested += live[i].requested;
        cr_assert_eq(filo_caching_alloc_block_size(a, (void *)live[i].ptr), live[i].size);
    }
    cr_assert_eq(s.allocated_bytes, allocated);
    cr_assert_eq(s.requested_bytes, requested);
    cr_assert_eq(s.active_blocks, n_live);
    cr_assert_eq(s.reserved_bytes, f->live_bytes);
    cr_assert_eq(s.segments, f->n_live);
    cr_assert_eq(s.raw_allocs, f->allocs);
    cr_assert_eq(s.raw_frees, f->frees);
    cr_assert_eq(s.allocated_bytes + s.free_bytes + s.pending_bytes, s.reserved_bytes);
    cr_assert_leq(s.allocated_bytes, s.allocated_peak);
    cr_assert_leq(s.reserved_bytes, s.reserved_peak);
    cr_assert_leq(s.largest_free_block, s.free_bytes);
}

static void stress(int with_events, size_t budget, uint64_t seed)
{
    fake f = {.budget = budget};
    filo_caching_alloc *a = make(&f, with_events);
    void *streams[3] = {STREAM_A, STREAM_B, NULL};
    enum { CAP = 256, OPS = 6000 };
    live_block live[CAP];
    size_t n_live = 0, ooms = 0;
    uint64_t rng = seed;
    for (int op = 0; op < OPS; op++) {
        uint64_t r = rng_next(&rng) % 100;
        if (r < 55 && n_live < CAP) {
            size_t bytes = random_size(&rng);
            void *p;
            filo_status st =
                filo_caching_alloc_malloc(a, bytes, streams[rng_next(&rng) % 3], &p);
            if (st == FILO_ERR_OOM) {
                cr_assert(budget, "OOM without a budget: %s", filo_last_error());
                ooms++;
                continue;
            }
            cr_assert_eq(st, FILO_OK, "%s", filo_last_error());
            uintptr_t u = (uintptr_t)p;
            size_t size = filo_caching_alloc_block_size(a, p);
            cr_assert_geq(size, bytes);
            cr_assert_eq(u % FILO_ALLOC_ALIGN, 0);
            for (size_t i = 0; i < n_live; i++)
                cr_assert(u + size <= live[i].ptr || live[i].ptr + live[i].size <= u,
                          "%#lx+%zu overlaps %#lx+%zu", (unsigned long)u, size,
                          (unsigned long)live[i].ptr, live[i].size);
            int inside = 0;
            for (size_t i = 0; i < f.n_live && !inside; i++)
                inside = u >= f.live[i].ptr && u + size <= f.live[i].ptr + f.live[i].size;
            cr_assert(inside, "block outside every raw segment");
            live[n_live++] = (live_block){u, size, bytes};
        } else if (r < 90 && n_live) {
            size_t i = rng_next(&rng) % n_live;
            must_free(a, (void *)live[i].ptr);
            live[i] = live[--n_live];
        } else if (r < 95 && n_live) {
            size_t i = rng_next(&rng) % n_live;
            cr_assert_eq(filo_caching_alloc_record_stream(a, (void *)live[i].ptr,
                                                          streams[rng_next(&rng) % 3]),
                         FILO_OK);
        } else if (r < 99) {
            fake_complete(&f, streams[rng_next(&rng) % 3]);
        } else {
            cr_assert_eq(filo_caching_alloc_empty_cache(a), FILO_OK);
        }
        if (op % 97 == 0)
            check_consistent(a, &f, live, n_live);
    }
    check_consistent(a, &f, live, n_live);
    while (n_live)
        must_free(a, (void *)live[--n_live].ptr);
    fake_complete_all(&f);
    cr_assert_eq(filo_caching_alloc_empty_cache(a), FILO_OK);
    filo_alloc_stats s = stats_of(a);
    cr_assert_eq(s.reserved_bytes, 0);
    cr_assert_eq(s.segments, 0);
    cr_assert_eq(s.pending_blocks, 0);
    cr_assert_eq(s.raw_allocs, s.raw_frees);
    cr_assert_eq(f.n_live, 0);
    cr_assert_eq(f.destroyed, f.n_events, "every event destroyed");
    cr_log_info("stress (events %d, budget %zu MiB): %llu raw allocs, %llu cache hits of %llu, "
                "%zu OOMs, %llu OOM retries, %zu events",
                with_events, budget / MIB, (unsigned long long)s.raw_allocs,
                (unsigned long long)s.cache_hits, (unsigned long long)s.allocs, ooms,
                (unsigned long long)s.oom_retries, f.n_events);
    if (budget)
        cr_assert_gt(ooms, 0, "the budget was never hit: the test does not test OOM");
    filo_caching_alloc_destroy(a);
    fake_fini(&f);
}

Test(caching_alloc, random_stress_with_streams) { stress(1, 0, 0x9E3779B97F4A7C15u); }
Test(caching_alloc, random_stress_without_events) { stress(0, 0, 0x1234567u); }
Test(caching_alloc, random_stress_under_a_budget) { stress(1, 1024 * MIB, 0xDEADBEEFu); }

/* ---- threads ---- */

typedef struct thread_arg {
    filo_caching_alloc *a;
    unsigned char tag;
    int failures;
} thread_arg;

/* Each thread fills its blocks with its tag and checks them before free: an overlap with
 * another thread's block shows as a changed byte. */
static void *thread_main(void *p)
{
    thread_arg *t = p;
    uint64_t rng = 0x51ED + t->tag;
    struct {
        unsigned char *ptr;
        size_t size;
    } mine[32];
    int n = 0;
    for (int op = 0; op < 3000; op++) {
        if (n < 32 && rng_next(&rng) % 2) {
            size_t size = 1 + rng_next(&rng) % (96 * KIB);
            void *q;
            if (filo_caching_alloc_malloc(t->a, size, NULL, &q) != FILO_OK) {
                t->failures++;
                continue;
            }
            memset(q, t->tag, size);
            mine[n].ptr = q;
            mine[n++].size = size;
        } else if (n) {
            int i = (int)(rng_next(&rng) % (uint64_t)n);
            for (size_t k = 0; k < mine[i].size; k++)
                t->failures += mine[i].ptr[k] != t->tag;
            t->failures += filo_caching_alloc_free(t->a, mine[i].ptr) != FILO_OK;
            mine[i] = mine[--n];
        }
    }
    while (n)
        t->failures += filo_caching_alloc_free(t->a, mine[--n].ptr) != FILO_OK;
    return NULL;
}

Test(caching_alloc, threads_share_one_allocator)
{
    fake f = {.real = 1};
    filo_caching_alloc *a = make(&f, 0);
    pthread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){a, (unsigned char)(i + 1), 0};
        cr_assert_eq(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(args[i].failures, 0, "thread %d saw %d failures", i, args[i].failures);
    }
    filo_alloc_stats s = stats_of(a);
    cr_assert_eq(s.allocated_bytes, 0);
    cr_assert_eq(s.active_blocks, 0);
    filo_caching_alloc_destroy(a);
    cr_assert_eq(f.n_live, 0);
    fake_fini(&f);
}
