/* The caching allocator core, after PyTorch's CUDA caching allocator.
 *
 * Raw memory comes from the backend in segments. A segment is cut into blocks, kept in address
 * order so that a freed block merges with free neighbours. Three pools, each with its own
 * segments: small (requests up to small_max, 2 MiB segments), medium (up to 10 MiB, 20 MiB
 * segments) and large (a segment per request, rounded up, later reused and split by other large
 * requests). PyTorch keeps medium and large in one pool; apart, a burst of medium temporaries
 * cannot carve up the segment of a huge tensor (an embedding gradient) and force a second one
 * next step, and small long-lived tensors cannot pin big segments. Only when the backend is out
 * of memory, even after the cache went back to it, may a request take a block of a bigger pool.
 *
 * Free blocks of a pool sit in one AVL tree ordered by (key, size, address): best fit on a
 * stream is a lower-bound search, O(log n). key says who may reuse the block without waiting:
 *   0          any stream (never used, or an event on its last stream has completed);
 *   stream id  only that stream: its work on the block may still be queued.
 * Live blocks are found by address in a hash map, O(1).
 *
 * Cross-stream reuse needs an event recorded on the block's stream after the free. Recording
 * one at every free would cost a cudaEventRecord on the hot path of the common single-stream
 * case, so events are recorded lazily: when a request misses its own stream's blocks and the
 * shared ones, but another stream holds a block that fits, an event goes on that stream; once
 * it completes (checked at later calls), that stream's blocks freed before it become shared.
 * The missing request meanwhile takes a new segment: the allocator never waits.
 * Blocks that record_stream marked as used elsewhere get one event per extra stream at free,
 * and return to their own stream's cache when all of them have completed.
 */
#include "caching_alloc.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define GIB ((size_t)1 << 30)

#define MIN_BLOCK 512               /* size granularity; keeps every block 256-byte aligned */
#define MAX_REQUEST ((size_t)1 << 48)
#define SMALL_SEGMENT (2 * MIB)
#define MID_LIMIT (10 * MIB)        /* medium requests are below this */
#define MID_SEGMENT (20 * MIB)
#define OVERSIZE_SLACK (20 * MIB)   /* most waste accepted when an oversize block is reused */

enum { POOL_SMALL, POOL_MEDIUM, POOL_LARGE, POOL_COUNT };
enum { BLOCK_FREE, BLOCK_LIVE, BLOCK_PENDING };

typedef struct segment segment;
typedef struct stream_state stream_state;
typedef struct block block;

struct block {
    char *ptr;
    size_t size;
    size_t requested;
    segment *seg;
    block *prev, *next;            /* address neighbours in the segment */
    int state;
    /* BLOCK_FREE: key 0 = shared, else the id of stream, the only one that may reuse it.
     * BLOCK_LIVE, BLOCK_PENDING: stream owns the block. */
    uint32_t key;
    stream_state *stream;
    block *left, *right;           /* free tree */
    int height;
    block *fifo_prev, *fifo_next;  /* free blocks of a stream, in free order (key != 0) */
    uint64_t free_seq;
    block *hash_next;              /* live blocks by address */
    stream_state **uses;           /* other streams from record_stream */
    uint32_t n_uses, cap_uses;
    uint32_t pending_events;
};

struct segment {
    char *ptr;
    size_t size;
    int pool;
    block *first;
    segment *prev, *next;
};

typedef struct event_node {
    void *event;
    block *block;     /* the pending block it releases, or NULL: makes the stream's frees shared */
    uint64_t seq;
    struct event_node *next;
} event_node;

struct stream_state {
    void *stream;
    uint32_t id;
    block *fifo_head, *fifo_tail;
    uint64_t safe_recorded_seq;    /* frees up to this seq are covered by a recorded event */
    event_node *ev_head, *ev_tail; /* events on one stream complete in order */
};

typedef struct settings {
    size_t max_split;
    size_t round;
    size_t small_max;
    size_t small_segment;
    size_t max_reserved; /* 0: no limit */
    bool disable_cache;
} settings;

struct filo_caching_alloc {
    pthread_mutex_t lock;
    filo_raw_ops ops;
    bool has_events;
    char name[48];
    settings cfg;
    block *roots[POOL_COUNT];
    segment *segments;
    block **buckets;
    size_t n_buckets, n_live;
    block *spare;
    stream_state **streams;
    size_t n_streams, cap_streams;
    stream_state *last_stream;
    size_t n_pending_events;
    uint64_t seq;
    filo_alloc_stats st;           /* the incrementally kept fields */
};

/* ---- sizes and messages ---- */

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

static const char *fmt_bytes(size_t n, char *buf, size_t len)
{
    if (n >= 1024 * GIB)
        snprintf(buf, len, "%.2f TiB", (double)n / (double)(1024 * GIB));
    else if (n >= GIB)
        snprintf(buf, len, "%.2f GiB", (double)n / (double)GIB);
    else if (n >= MIB)
        snprintf(buf, len, "%.2f MiB", (double)n / (double)MIB);
    else if (n >= KIB)
        snprintf(buf, len, "%.2f KiB", (double)n / (double)KIB);
    else
        snprintf(buf, len, "%zu bytes", n);
    return buf;
}

int filo_alloc_stats_format(const filo_alloc_stats *s, char *buf, size_t size)
{
    char b[7][32];
    return snprintf(buf, size,
                    "allocated %s (peak %s) in %zu blocks, reserved %s (peak %s) in %zu segments, "
                    "free in cache %s (largest free block %s, fragmentation %.0f%%), "
                    "pending on other streams %s, raw allocs %" PRIu64 " / frees %" PRIu64
                    ", cache hits %" PRIu64 " of %" PRIu64 ", OOM retries %" PRIu64,
                    fmt_bytes(s->allocated_bytes, b[0], sizeof b[0]),
                    fmt_bytes(s->allocated_peak, b[1], sizeof b[1]), s->active_blocks,
                    fmt_bytes(s->reserved_bytes, b[2], sizeof b[2]),
                    fmt_bytes(s->reserved_peak, b[3], sizeof b[3]), s->segments,
                    fmt_bytes(s->free_bytes, b[4], sizeof b[4]),
                    fmt_bytes(s->largest_free_block, b[5], sizeof b[5]),
                    100.0 * s->fragmentation, fmt_bytes(s->pending_bytes, b[6], sizeof b[6]),
                    s->raw_allocs, s->raw_frees, s->cache_hits, s->allocs, s->oom_retries);
}

/* ---- settings ---- */

static filo_status parse_size(const char *key, const char *val, size_t len, size_t lo,
                              size_t hi, size_t *out)
{
    size_t v = 0;
    if (len == 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "FILO_ALLOC_CONF: %s has no value", key);
    for (size_t i = 0; i < len; i++) {
        if (val[i] < '0' || val[i] > '9' || v > (SIZE_MAX - 9) / 10)
            return FILO_FAIL(FILO_ERR_INVALID_ARG,
                             "FILO_ALLOC_CONF: %s:%.*s is not a whole number from %zu to %zu",
                             key, (int)len, val, lo, hi);
        v = v * 10 + (size_t)(val[i] - '0');
    }
    if (v < lo || v > hi)
        return FILO_FAIL(FILO_ERR_INVALID_ARG,
                         "FILO_ALLOC_CONF: %s:%zu is out of range (%zu to %zu)", key, v, lo, hi);
    *out = v;
    return FILO_OK;
}

static filo_status parse_settings(settings *cfg)
{
    cfg->max_split = SIZE_MAX;
    cfg->round = 2 * MIB;
    cfg->small_max = MIB;
    cfg->max_reserved = 0;
    cfg->disable_cache = false;

    const char *conf = getenv("FILO_ALLOC_CONF");
    for (const char *p = conf; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        size_t len = strcspn(p, ",");
        while (len > 0 && p[len - 1] == ' ')
            len--;
        const char *colon = memchr(p, ':', len);
        if (!colon)
            return FILO_FAIL(FILO_ERR_INVALID_ARG,
                             "FILO_ALLOC_CONF: '%.*s' is not key:value (in \"%s\")", (int)len, p,
                             conf);
        size_t klen = (size_t)(colon - p);
        const char *val = colon + 1;
        size_t vlen = len - klen - 1;
        size_t v;
        if (klen == 17 && !memcmp(p, "max_split_size_mb", klen)) {
            FILO_TRY(parse_size("max_split_size_mb", val, vlen, OVERSIZE_SLACK / MIB + 1,
                                MAX_REQUEST / MIB, &v));
            cfg->max_split = v * MIB;
        } else if (klen == 8 && !memcmp(p, "round_mb", klen)) {
            FILO_TRY(parse_size("round_mb", val, vlen, 1, 1024, &v));
            cfg->round = v * MIB;
        } else if (klen == 12 && !memcmp(p, "small_max_kb", klen)) {
            FILO_TRY(parse_size("small_max_kb", val, vlen, 1, 32768, &v));
            cfg->small_max = round_up(v * KIB, MIN_BLOCK);
        } else if (klen == 15 && !memcmp(p, "max_reserved_mb", klen)) {
            FILO_TRY(parse_size("max_reserved_mb", val, vlen, 1, MAX_REQUEST / MIB, &v));
            cfg->max_reserved = v * MIB;
        } else {
            return FILO_FAIL(FILO_ERR_INVALID_ARG,
                             "FILO_ALLOC_CONF: unknown key '%.*s' (known: max_split_size_mb, "
                             "round_mb, small_max_kb, max_reserved_mb)",
                             (int)klen, p);
        }
        p += strcspn(p, ",");
    }
    cfg->small_segment = 2 * cfg->small_max > SMALL_SEGMENT ? 2 * cfg->small_max : SMALL_SEGMENT;

    const char *dis = getenv("FILO_ALLOC_DISABLE_CACHE");
    if (dis && *dis) {
        if (strcmp(dis, "0") && strcmp(dis, "1"))
            return FILO_FAIL(FILO_ERR_INVALID_ARG,
                             "FILO_ALLOC_DISABLE_CACHE=%s: expected 0 or 1", dis);
        cfg->disable_cache = dis[0] == '1';
    }
    return FILO_OK;
}

/* ---- the free tree: AVL ordered by (key, size, address) ---- */

static bool block_less(const block *x, const block *y)
{
    if (x->key != y->key)
        return x->key < y->key;
    if (x->size != y->size)
        return x->size < y->size;
    return (uintptr_t)x->ptr < (uintptr_t)y->ptr;
}

static int height(const block *b) { return b ? b->height : 0; }

static void fix_height(block *b)
{
    int l = height(b->left), r = height(b->right);
    b->height = (l > r ? l : r) + 1;
}

static block *rotate_right(block *b)
{
    block *l = b->left;
    b->left = l->right;
    l->right = b;
    fix_height(b);
    fix_height(l);
    return l;
}

static block *rotate_left(block *b)
{
    block *r = b->right;
    b->right = r->left;
    r->left = b;
    fix_height(b);
    fix_height(r);
    return r;
}

static block *rebalance(block *b)
{
    fix_height(b);
    int bal = height(b->left) - height(b->right);
    if (bal > 1) {
        if (height(b->left->left) < height(b->left->right))
            b->left = rotate_left(b->left);
        return rotate_right(b);
    }
    if (bal < -1) {
        if (height(b->right->right) < height(b->right->left))
            b->right = rotate_right(b->right);
        return rotate_left(b);
    }
    return b;
}

static block *tree_insert(block *root, block *b)
{
    if (!root) {
        b->left = b->right = NULL;
        b->height = 1;
        return b;
    }
    if (block_less(b, root))
        root->left = tree_insert(root->left, b);
    else
        root->right = tree_insert(root->right, b);
    return rebalance(root);
}

static block *tree_remove_min(block *root, block **min)
{
    if (!root->left) {
        *min = root;
        return root->right;
    }
    root->left = tree_remove_min(root->left, min);
    return rebalance(root);
}

static block *tree_remove(block *root, block *b)
{
    if (!root)
        return NULL;
    if (root == b) {
        block *l = b->left, *r = b->right, *m;
        if (!r)
            return l;
        r = tree_remove_min(r, &m);
        m->left = l;
        m->right = r;
        return rebalance(m);
    }
    if (block_less(b, root))
        root->left = tree_remove(root->left, b);
    else
        root->right = tree_remove(root->right, b);
    return rebalance(root);
}

/* The smallest free block with this key and at least size bytes. */
static block *tree_lower_bound(block *n, uint32_t key, size_t size)
{
    block *best = NULL;
    while (n) {
        if (n->key > key || (n->key == key && n->size >= size)) {
            best = n;
            n = n->left;
        } else {
            n = n->right;
        }
    }
    return best && best->key == key ? best : NULL;
}

/* ---- live blocks by address ---- */

static size_t hash_ptr(const void *p, size_t n_buckets)
{
    uint64_t h = (uint64_t)((uintptr_t)p >> 8) * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h >> 32) & (n_buckets - 1);
}

static void hash_link(filo_caching_alloc *a, block *b)
{
    size_t h = hash_ptr(b->ptr, a->n_buckets);
    b->hash_next = a->buckets[h];
    a->buckets[h] = b;
    a->n_live++;
}

static filo_status hash_insert(filo_caching_alloc *a, block *b)
{
    if (a->n_live >= a->n_buckets) {
        size_t n = a->n_buckets * 2;
        block **nb = calloc(n, sizeof *nb);
        if (!nb)
            return FILO_FAIL(FILO_ERR_OOM, "no host memory for the block map of '%s'", a->name);
        for (size_t i = 0; i < a->n_buckets; i++) {
            for (block *x = a->buckets[i], *next; x; x = next) {
                next = x->hash_next;
                size_t h = hash_ptr(x->ptr, n);
                x->hash_next = nb[h];
                nb[h] = x;
            }
        }
        free(a->buckets);
        a->buckets = nb;
        a->n_buckets = n;
    }
    hash_link(a, b);
    return FILO_OK;
}

static block *hash_find(filo_caching_alloc *a, const void *p)
{
    for (block *x = a->buckets[hash_ptr(p, a->n_buckets)]; x; x = x->hash_next)
        if (x->ptr == p)
            return x;
    return NULL;
}

static block *hash_remove(filo_caching_alloc *a, const void *p)
{
    for (block **link = &a->buckets[hash_ptr(p, a->n_buckets)]; *link; link = &(*link)->hash_next) {
        block *x = *link;
        if (x->ptr == p) {
            *link = x->hash_next;
            a->n_live--;
            return x;
        }
    }
    return NULL;
}

/* ---- blocks, segments, streams ---- */

static block *block_new(filo_caching_alloc *a)
{
    block *b = a->spare;
    if (b)
        a->spare = b->next;
    else if (!(b = malloc(sizeof *b)))
        return NULL;
    memset(b, 0, sizeof *b);
    return b;
}

static void block_recycle(filo_caching_alloc *a, block *b)
{
    free(b->uses);
    b->uses = NULL;
    b->next = a->spare;
    a->spare = b;
}

static void fifo_append(stream_state *s, block *b)
{
    b->fifo_next = NULL;
    b->fifo_prev = s->fifo_tail;
    if (s->fifo_tail)
        s->fifo_tail->fifo_next = b;
    else
        s->fifo_head = b;
    s->fifo_tail = b;
}

static void fifo_remove(stream_state *s, block *b)
{
    if (b->fifo_prev)
        b->fifo_prev->fifo_next = b->fifo_next;
    else
        s->fifo_head = b->fifo_next;
    if (b->fifo_next)
        b->fifo_next->fifo_prev = b->fifo_prev;
    else
        s->fifo_tail = b->fifo_prev;
}

/* r takes b's place in its stream's free order: it was freed at the same time. */
static void fifo_replace(stream_state *s, block *b, block *r)
{
    r->fifo_prev = b->fifo_prev;
    r->fifo_next = b->fifo_next;
    if (r->fifo_prev)
        r->fifo_prev->fifo_next = r;
    else
        s->fifo_head = r;
    if (r->fifo_next)
        r->fifo_next->fifo_prev = r;
    else
        s->fifo_tail = r;
}

/* Removes a free block from the tree and its stream's free order. */
static void detach_free(filo_caching_alloc *a, block *b)
{
    a->roots[b->seg->pool] = tree_remove(a->roots[b->seg->pool], b);
    if (b->key)
        fifo_remove(b->stream, b);
}

static filo_status stream_get(filo_caching_alloc *a, void *stream, stream_state **out)
{
    if (a->last_stream && a->last_stream->stream == stream) {
        *out = a->last_stream;
        return FILO_OK;
    }
    /* A linear scan: a device has a handful of streams. */
    for (size_t i = 0; i < a->n_streams; i++) {
        if (a->streams[i]->stream == stream) {
            *out = a->last_stream = a->streams[i];
            return FILO_OK;
        }
    }
    if (a->n_streams == a->cap_streams) {
        size_t cap = a->cap_streams ? 2 * a->cap_streams : 8;
        stream_state **ns = realloc(a->streams, cap * sizeof *ns);
        if (!ns)
            return FILO_FAIL(FILO_ERR_OOM, "no host memory for the streams of '%s'", a->name);
        a->streams = ns;
        a->cap_streams = cap;
    }
    stream_state *s = calloc(1, sizeof *s);
    if (!s)
        return FILO_FAIL(FILO_ERR_OOM, "no host memory for the streams of '%s'", a->name);
    s->stream = stream;
    s->id = (uint32_t)a->n_streams + 1;
    a->streams[a->n_streams++] = s;
    *out = a->last_stream = s;
    return FILO_OK;
}

static void segment_release(filo_caching_alloc *a, segment *seg)
{
    if (seg->prev)
        seg->prev->next = seg->next;
    else
        a->segments = seg->next;
    if (seg->next)
        seg->next->prev = seg->prev;
    a->ops.free(a->ops.ctx, seg->ptr);
    a->st.reserved_bytes -= seg->size;
    a->st.raw_frees++;
    a->st.segments--;
    block_recycle(a, seg->first);
    free(seg);
}

/* Returns every segment whose blocks are all free to the backend. Free blocks of different
 * streams do not merge, but the backend's free waits for queued work, so they go too. */
static void release_cached(filo_caching_alloc *a)
{
    for (segment *seg = a->segments, *next; seg; seg = next) {
        next = seg->next;
        bool all_free = true;
        for (block *b = seg->first; b && all_free; b = b->next)
            all_free = b->state == BLOCK_FREE;
        if (!all_free)
            continue;
        for (block *b = seg->first->next, *bn; b; b = bn) {
            bn = b->next;
            detach_free(a, b);
            block_recycle(a, b);
        }
        detach_free(a, seg->first);
        segment_release(a, seg);
    }
}

static bool may_merge(const block *n, uint32_t key)
{
    return n && n->state == BLOCK_FREE && (n->key == key || n->key == 0);
}

/* Puts a free block (key and stream set, in no tree) into the cache, merged with the free
 * neighbours it may absorb: shared ones, and for a stream's block, that stream's ones. The
 * merged block is as restricted as b. */
static void cache_insert(filo_caching_alloc *a, block *b)
{
    block *n = b->prev;
    if (may_merge(n, b->key)) {
        detach_free(a, n);
        b->ptr = n->ptr;
        b->size += n->size;
        b->prev = n->prev;
        if (b->prev)
            b->prev->next = b;
        else
            b->seg->first = b;
        block_recycle(a, n);
    }
    n = b->next;
    if (may_merge(n, b->key)) {
        detach_free(a, n);
        b->size += n->size;
        b->next = n->next;
        if (b->next)
            b->next->prev = b;
        block_recycle(a, n);
    }
    if (b->key) {
        b->free_seq = ++a->seq;
        fifo_append(b->stream, b);
    }
    a->roots[b->seg->pool] = tree_insert(a->roots[b->seg->pool], b);
}

/* A block its users are done with returns to its stream's cache (or to the backend). */
static void release_block(filo_caching_alloc *a, block *b)
{
    if (a->cfg.disable_cache) {
        segment_release(a, b->seg);
        return;
    }
    b->state = BLOCK_FREE;
    b->n_uses = 0;
    if (a->has_events) {
        b->key = b->stream->id;
    } else {
        b->key = 0;
        b->stream = NULL;
    }
    cache_insert(a, b);
}

/* An event recorded on s after its frees up to seq has completed: those blocks are shared. */
static void make_shared(filo_caching_alloc *a, stream_state *s, uint64_t seq)
{
    while (s->fifo_head && s->fifo_head->free_seq <= seq) {
        block *b = s->fifo_head;
        detach_free(a, b);
        b->key = 0;
        b->stream = NULL;
        cache_insert(a, b);
    }
}

static void process_events(filo_caching_alloc *a)
{
    for (size_t i = 0; i < a->n_streams && a->n_pending_events; i++) {
        stream_state *s = a->streams[i];
        while (s->ev_head && a->ops.event_done(a->ops.ctx, s->ev_head->event)) {
            event_node *n = s->ev_head;
            s->ev_head = n->next;
            if (!s->ev_head)
                s->ev_tail = NULL;
            a->ops.event_destroy(a->ops.ctx, n->event);
            a->n_pending_events--;
            if (!n->block) {
                make_shared(a, s, n->seq);
            } else if (--n->block->pending_events == 0) {
                a->st.pending_blocks--;
                a->st.pending_bytes -= n->block->size;
                release_block(a, n->block);
            }
            free(n);
        }
    }
}

static void event_push(filo_caching_alloc *a, stream_state *s, event_node *n)
{
    n->next = NULL;
    if (s->ev_tail)
        s->ev_tail->next = n;
    else
        s->ev_head = n;
    s->ev_tail = n;
    a->n_pending_events++;
}

/* ---- the allocation path ---- */

static bool fits(const filo_caching_alloc *a, int pool, const block *b, size_t size)
{
    if (!b || pool == POOL_SMALL)
        return b != NULL;
    if (size < a->cfg.max_split && b->size >= a->cfg.max_split)
        return false;
    return !(size >= a->cfg.max_split && b->size >= size + OVERSIZE_SLACK);
}

static block *find_free(filo_caching_alloc *a, int pool, stream_state *s, size_t size)
{
    block *best = NULL, *c;
    if (s && fits(a, pool, c = tree_lower_bound(a->roots[pool], s->id, size), size))
        best = c;
    c = tree_lower_bound(a->roots[pool], 0, size);
    if (fits(a, pool, c, size) && (!best || c->size < best->size))
        best = c;
    return best;
}

/* Records an event on every other stream that caches a block this request could use, so that
 * the block becomes shared once the event completes. Returns whether one was recorded. */
static filo_status request_shared(filo_caching_alloc *a, int pool, stream_state *s, size_t size,
                                  bool *recorded)
{
    *recorded = false;
    for (size_t i = 0; i < a->n_streams; i++) {
        stream_state *o = a->streams[i];
        block *c = tree_lower_bound(a->roots[pool], o->id, size);
        if (o == s || !fits(a, pool, c, size) || c->free_seq <= o->safe_recorded_seq)
            continue;
        event_node *n = malloc(sizeof *n);
        if (!n)
            return FILO_FAIL(FILO_ERR_OOM, "no host memory for an event of '%s'", a->name);
        filo_status st = a->ops.event_record(a->ops.ctx, o->stream, &n->event);
        if (st != FILO_OK) {
            free(n);
            return filo_error_wrap(st, __func__);
        }
        n->block = NULL;
        n->seq = o->safe_recorded_seq = a->seq;
        event_push(a, o, n);
        *recorded = true;
    }
    return FILO_OK;
}

static size_t segment_size(const filo_caching_alloc *a, int pool, size_t size)
{
    if (a->cfg.disable_cache)
        return size;
    if (pool == POOL_SMALL)
        return a->cfg.small_segment;
    if (pool == POOL_MEDIUM)
        return MID_SEGMENT;
    return round_up(size, a->cfg.round);
}

static filo_status raw_alloc(filo_caching_alloc *a, size_t bytes, void **ptr)
{
    *ptr = NULL;
    if (a->cfg.max_reserved && a->st.reserved_bytes + bytes > a->cfg.max_reserved)
        return FILO_FAIL(FILO_ERR_OOM, "'%s' would hold more than max_reserved_mb (FILO_ALLOC_CONF)", a->name);
    filo_status st = a->ops.alloc(a->ops.ctx, bytes, ptr);
    if (st == FILO_OK && (uintptr_t)*ptr % FILO_ALLOC_ALIGN) {
        a->ops.free(a->ops.ctx, *ptr);
        return FILO_FAIL(FILO_ERR_INTERNAL, "the backend of '%s' returned %p, not %d-byte aligned",
                         a->name, *ptr, FILO_ALLOC_ALIGN);
    }
    if (st == FILO_OK && !*ptr)
        return FILO_FAIL(FILO_ERR_INTERNAL, "the backend of '%s' returned NULL", a->name);
    return st;
}

/* A new segment as one block, in no tree. On OOM the cache goes back to the backend for one
 * retry, and then a segment of just the request, since 20 MiB may no longer fit where 3 do.
 * FILO_ERR_OOM is left for the caller to explain. */
static filo_status segment_new(filo_caching_alloc *a, int pool, size_t size, block **out)
{
    segment *seg = malloc(sizeof *seg);
    block *b = block_new(a);
    if (!seg || !b) {
        free(seg);
        if (b)
            block_recycle(a, b);
        return FILO_FAIL(FILO_ERR_OOM, "no host memory for the segment list of '%s'", a->name);
    }
    size_t seg_size = segment_size(a, pool, size);
    void *p;
    filo_status st = raw_alloc(a, seg_size, &p);
    if (st == FILO_ERR_OOM) {
        release_cached(a);
        a->st.oom_retries++;
        st = raw_alloc(a, seg_size, &p);
        if (st == FILO_ERR_OOM && seg_size > size) {
            seg_size = size;
            st = raw_alloc(a, seg_size, &p);
        }
    }
    if (st != FILO_OK) {
        free(seg);
        block_recycle(a, b);
        return st == FILO_ERR_OOM ? st : filo_error_wrap(st, "filo_caching_alloc_malloc");
    }
    seg->ptr = p;
    seg->size = seg_size;
    seg->pool = pool;
    seg->first = b;
    seg->prev = NULL;
    seg->next = a->segments;
    if (seg->next)
        seg->next->prev = seg;
    a->segments = seg;
    b->ptr = p;
    b->size = seg_size;
    b->seg = seg;
    a->st.reserved_bytes += seg_size;
    if (a->st.reserved_bytes > a->st.reserved_peak)
        a->st.reserved_peak = a->st.reserved_bytes;
    a->st.raw_allocs++;
    a->st.segments++;
    *out = b;
    return FILO_OK;
}

static bool should_split(const filo_caching_alloc *a, const block *b, size_t size)
{
    size_t rest = b->size - size;
    if (b->seg->pool == POOL_SMALL)
        return rest >= MIN_BLOCK;
    return size < a->cfg.max_split && rest > a->cfg.small_max;
}

/* Takes size bytes from the start of a free block that is in no tree; a kept remainder stays
 * free with b's key and its place in the free order. On failure b is left as it was. */
static filo_status carve(filo_caching_alloc *a, block *b, size_t size)
{
    if (!should_split(a, b, size)) {
        if (b->key)
            fifo_remove(b->stream, b);
        return FILO_OK;
    }
    block *r = block_new(a);
    if (!r)
        return FILO_FAIL(FILO_ERR_OOM, "no host memory for a block of '%s'", a->name);
    r->ptr = b->ptr + size;
    r->size = b->size - size;
    r->seg = b->seg;
    r->prev = b;
    r->next = b->next;
    if (r->next)
        r->next->prev = r;
    b->next = r;
    b->size = size;
    r->state = BLOCK_FREE;
    r->key = b->key;
    r->stream = b->key ? b->stream : NULL;
    r->free_seq = b->free_seq;
    if (b->key)
        fifo_replace(b->stream, b, r);
    a->roots[b->seg->pool] = tree_insert(a->roots[b->seg->pool], r);
    return FILO_OK;
}

static void scan_free(filo_caching_alloc *a, filo_alloc_stats *s)
{
    s->free_bytes = 0;
    s->largest_free_block = 0;
    for (segment *seg = a->segments; seg; seg = seg->next) {
        for (block *b = seg->first; b; b = b->next) {
            if (b->state != BLOCK_FREE)
                continue;
            s->free_bytes += b->size;
            if (b->size > s->largest_free_block)
                s->largest_free_block = b->size;
        }
    }
    s->fragmentation =
        s->free_bytes ? 1.0 - (double)s->largest_free_block / (double)s->free_bytes : 0.0;
}

static filo_status oom_error(filo_caching_alloc *a, size_t bytes, size_t size)
{
    filo_alloc_stats s = a->st;
    scan_free(a, &s);
    char req[32], freeb[32], stats[768];
    filo_alloc_stats_format(&s, stats, sizeof stats);
    const char *hint = "";
    char hint_buf[320];
    if (s.free_bytes >= size || s.free_bytes > s.reserved_bytes / 4) {
        snprintf(hint_buf, sizeof hint_buf,
                 ". Hint: %s is reserved but unallocated, cut into blocks too small for this "
                 "request (fragmentation); free long-lived tensors earlier or set "
                 "FILO_ALLOC_CONF=max_split_size_mb:<N> so big blocks are not split",
                 fmt_bytes(s.free_bytes, freeb, sizeof freeb));
        hint = hint_buf;
    }
    return filo_error_set(FILO_ERR_OOM, "filo_caching_alloc_malloc",
                          "out of memory on '%s': tried to allocate %s (%zu bytes) after "
                          "returning the cached segments to the backend; %s%s",
                          a->name, fmt_bytes(size, req, sizeof req), bytes, stats, hint);
}

/* Takes a cached free block for a request of size. */
static filo_status take_cached(filo_caching_alloc *a, block *b, size_t size)
{
    int pool = b->seg->pool;
    a->roots[pool] = tree_remove(a->roots[pool], b);
    filo_status st = carve(a, b, size);
    if (st != FILO_OK) {
        a->roots[pool] = tree_insert(a->roots[pool], b);
        return st;
    }
    a->st.cache_hits++;
    return FILO_OK;
}

static filo_status malloc_locked(filo_caching_alloc *a, size_t bytes, void *stream, void **ptr)
{
    size_t size = bytes < MIN_BLOCK ? MIN_BLOCK : round_up(bytes, MIN_BLOCK);
    int pool = size <= a->cfg.small_max ? POOL_SMALL : size < MID_LIMIT ? POOL_MEDIUM : POOL_LARGE;
    stream_state *s = NULL;
    if (a->has_events)
        FILO_TRY(stream_get(a, stream, &s));
    if (a->n_pending_events)
        process_events(a);

    block *b = NULL;
    if (!a->cfg.disable_cache) {
        b = find_free(a, pool, s, size);
        bool recorded = false;
        if (!b && a->has_events)
            FILO_TRY(request_shared(a, pool, s, size, &recorded));
        if (recorded) {
            process_events(a);
            b = find_free(a, pool, s, size);
        }
    }
    if (b) {
        FILO_TRY(take_cached(a, b, size));
    } else {
        filo_status st = segment_new(a, pool, size, &b);
        if (st == FILO_OK) {
            st = carve(a, b, size);
            if (st != FILO_OK) {
                segment_release(a, b->seg);
                return st;
            }
        } else if (st == FILO_ERR_OOM) {
            for (int p = pool + 1; p < POOL_COUNT && !b && !a->cfg.disable_cache; p++)
                b = find_free(a, p, s, size);
            if (!b) {
                a->st.ooms++;
                return oom_error(a, bytes, size);
            }
            FILO_TRY(take_cached(a, b, size));
        } else {
            return st;
        }
    }
    b->state = BLOCK_LIVE;
    b->stream = s;
    b->key = 0;
    b->requested = bytes;
    b->n_uses = 0;
    filo_status st = hash_insert(a, b);
    if (st != FILO_OK) {
        release_block(a, b);
        return st;
    }
    a->st.allocated_bytes += b->size;
    a->st.requested_bytes += bytes;
    if (a->st.allocated_bytes > a->st.allocated_peak)
        a->st.allocated_peak = a->st.allocated_bytes;
    a->st.active_blocks++;
    a->st.allocs++;
    *ptr = b->ptr;
    return FILO_OK;
}

/* ---- the API ---- */

filo_status filo_caching_alloc_create(const filo_raw_ops *ops, const char *name,
                                      filo_caching_alloc **out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!ops || !ops->alloc || !ops->free)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "raw ops need alloc and free");
    int n_event_ops = !!ops->event_record + !!ops->event_done + !!ops->event_destroy;
    if (n_event_ops != 0 && n_event_ops != 3)
        return FILO_FAIL(FILO_ERR_INVALID_ARG,
                         "event_record, event_done and event_destroy go together: all or none");
    settings cfg;
    FILO_TRY(parse_settings(&cfg));

    filo_caching_alloc *a = calloc(1, sizeof *a);
    if (!a)
        return FILO_FAIL(FILO_ERR_OOM, "no host memory for an allocator");
    a->n_buckets = 256;
    a->buckets = calloc(a->n_buckets, sizeof *a->buckets);
    if (!a->buckets || pthread_mutex_init(&a->lock, NULL)) {
        free(a->buckets);
        free(a);
        return FILO_FAIL(FILO_ERR_OOM, "no host memory for an allocator");
    }
    a->ops = *ops;
    a->has_events = n_event_ops == 3;
    a->cfg = cfg;
    snprintf(a->name, sizeof a->name, "%s", name ? name : "?");
    *out = a;
    return FILO_OK;
}

void filo_caching_alloc_destroy(filo_caching_alloc *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n_streams; i++) {
        for (event_node *n = a->streams[i]->ev_head, *next; n; n = next) {
            next = n->next;
            a->ops.event_destroy(a->ops.ctx, n->event);
            free(n);
        }
        free(a->streams[i]);
    }
    free(a->streams);
    for (segment *seg = a->segments, *next; seg; seg = next) {
        next = seg->next;
        for (block *b = seg->first->next, *bn; b; b = bn) {
            bn = b->next;
            block_recycle(a, b);
        }
        segment_release(a, seg);
    }
    for (block *b = a->spare, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(a->buckets);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

filo_status filo_caching_alloc_malloc(filo_caching_alloc *a, size_t bytes, void *stream,
                                      void **ptr)
{
    if (!a || !ptr)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "allocator or ptr is NULL");
    *ptr = NULL;
    if (bytes == 0)
        return FILO_OK;
    if (bytes > MAX_REQUEST)
        return FILO_FAIL(FILO_ERR_INVALID_ARG,
                         "request of %zu bytes on '%s' is above the 2^48-byte limit "
                         "(an overflowed size computation?)",
                         bytes, a->name);
    pthread_mutex_lock(&a->lock);
    filo_status st = malloc_locked(a, bytes, stream, ptr);
    pthread_mutex_unlock(&a->lock);
    return st;
}

static filo_status free_locked(filo_caching_alloc *a, void *ptr)
{
    block *b = hash_remove(a, ptr);
    if (!b)
        return FILO_FAIL(FILO_ERR_STATE,
                         "%p is not a live block of '%s': freed twice, or never allocated here",
                         ptr, a->name);
    if (b->n_uses) {
        /* Record every event before committing, so a failure leaves the block live. */
        event_node *nodes = NULL;
        filo_status st = FILO_OK;
        for (uint32_t i = 0; i < b->n_uses && st == FILO_OK; i++) {
            event_node *n = malloc(sizeof *n);
            if (!n) {
                st = FILO_FAIL(FILO_ERR_OOM, "no host memory for an event of '%s'", a->name);
                break;
            }
            st = a->ops.event_record(a->ops.ctx, b->uses[i]->stream, &n->event);
            if (st != FILO_OK) {
                free(n);
                st = filo_error_wrap(st, "filo_caching_alloc_free");
                break;
            }
            n->block = b;
            n->next = nodes;
            nodes = n;
        }
        if (st != FILO_OK) {
            for (event_node *n = nodes, *next; n; n = next) {
                next = n->next;
                a->ops.event_destroy(a->ops.ctx, n->event);
                free(n);
            }
            hash_link(a, b); /* it was just removed: no need to grow */
            return st;
        }
        /* nodes is in reverse order of b->uses. */
        for (uint32_t i = b->n_uses; i-- > 0;) {
            event_node *n = nodes;
            nodes = n->next;
            event_push(a, b->uses[i], n);
        }
        b->state = BLOCK_PENDING;
        b->pending_events = b->n_uses;
        a->st.pending_blocks++;
        a->st.pending_bytes += b->size;
    }
    a->st.allocated_bytes -= b->size;
    a->st.requested_bytes -= b->requested;
    a->st.active_blocks--;
    if (b->state == BLOCK_LIVE)
        release_block(a, b);
    return FILO_OK;
}

filo_status filo_caching_alloc_free(filo_caching_alloc *a, void *ptr)
{
    if (!a)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "allocator is NULL");
    if (!ptr)
        return FILO_OK;
    pthread_mutex_lock(&a->lock);
    filo_status st = free_locked(a, ptr);
    pthread_mutex_unlock(&a->lock);
    return st;
}

static filo_status record_stream_locked(filo_caching_alloc *a, void *ptr, void *stream)
{
    block *b = hash_find(a, ptr);
    if (!b)
        return FILO_FAIL(FILO_ERR_STATE, "%p is not a live block of '%s'", ptr, a->name);
    if (!a->has_events)
        return FILO_OK;
    stream_state *s;
    FILO_TRY(stream_get(a, stream, &s));
    if (s == b->stream)
        return FILO_OK;
    for (uint32_t i = 0; i < b->n_uses; i++)
        if (b->uses[i] == s)
            return FILO_OK;
    if (b->n_uses == b->cap_uses) {
        uint32_t cap = b->cap_uses ? 2 * b->cap_uses : 4;
        stream_state **nu = realloc(b->uses, cap * sizeof *nu);
        if (!nu)
            return FILO_FAIL(FILO_ERR_OOM, "no host memory to record a stream on '%s'", a->name);
        b->uses = nu;
        b->cap_uses = cap;
    }
    b->uses[b->n_uses++] = s;
    return FILO_OK;
}

filo_status filo_caching_alloc_record_stream(filo_caching_alloc *a, void *ptr, void *stream)
{
    if (!a || !ptr)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "allocator or ptr is NULL");
    pthread_mutex_lock(&a->lock);
    filo_status st = record_stream_locked(a, ptr, stream);
    pthread_mutex_unlock(&a->lock);
    return st;
}

filo_status filo_caching_alloc_empty_cache(filo_caching_alloc *a)
{
    if (!a)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "allocator is NULL");
    pthread_mutex_lock(&a->lock);
    if (a->n_pending_events)
        process_events(a);
    release_cached(a);
    pthread_mutex_unlock(&a->lock);
    return FILO_OK;
}

void filo_caching_alloc_get_stats(filo_caching_alloc *a, filo_alloc_stats *out)
{
    pthread_mutex_lock(&a->lock);
    *out = a->st;
    scan_free(a, out);
    pthread_mutex_unlock(&a->lock);
}

void filo_caching_alloc_reset_peak(filo_caching_alloc *a)
{
    pthread_mutex_lock(&a->lock);
    a->st.allocated_peak = a->st.allocated_bytes;
    a->st.reserved_peak = a->st.reserved_bytes;
    pthread_mutex_unlock(&a->lock);
}

size_t filo_caching_alloc_block_size(filo_caching_alloc *a, const void *ptr)
{
    if (!a || !ptr)
        return 0;
    pthread_mutex_lock(&a->lock);
    block *b = hash_find(a, ptr);
    size_t size = b ? b->size : 0;
    pthread_mutex_unlock(&a->lock);
    return size;
}
