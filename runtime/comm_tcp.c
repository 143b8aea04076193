/* The TCP host transport of filo_comm, for torchrun-style launches (RANK, WORLD_SIZE,
 * MASTER_ADDR, MASTER_PORT): rank 0 listens, every other rank connects to it, and collectives go
 * through rank 0 (a star).
 *
 * Why a star: rank 0 receives every rank's data and reduces it in rank order, so a sum is the
 * same bits on every run and every rank, and rank 0 sees every rank's call, so it can check that
 * all ranks run the same collective (op, size, dtype, root, sequence number) before any data is
 * used. Host collectives carry small control data and CPU gradients of small models; the NCCL
 * path carries the heavy traffic.
 *
 * Wire. Every collective message is a fixed header (struct wire_hdr) and a payload. A non-root
 * rank sends its header (and its data, when it contributes any) to rank 0; rank 0 checks every
 * header, combines, and answers each rank with a REPLY header and its result. On any failure a
 * rank sends its message in an ERROR frame to each peer whose stream is at a frame boundary and
 * shuts its sockets for writing, so a dead or failed rank makes every other rank fail at once
 * instead of at the deadline. All socket I/O is non-blocking and polled against the call's
 * deadline. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "comm_internal.h"
#include "error.h"

#define TCP_MAGIC 0x46494c4fu /* "FILO" */
#define TCP_VERSION 1u
/* Room for a call description (comm_call_describe or "rank R: rendezvous at addr:port"). */
#define DESC_MAX 600
#define HELLO_SIZE 16
#define LABEL_MAX 56
#define HDR_SIZE (40 + LABEL_MAX)
/* Rank 0 reduces in chunks of this size, so its scratch is (world - 1) chunks however large the
 * buffer is. A multiple of every dtype's size. */
#define REDUCE_CHUNK ((size_t)4 << 20)
/* The longest error text an ERROR frame or a refused handshake carries. */
#define TEXT_MAX 1900
/* Connections that have not sent their handshake yet, on rank 0. */
#define MAX_PENDING 64

enum { K_ALL_REDUCE = 1, K_BROADCAST, K_ALL_GATHER, K_BARRIER, K_REPLY, K_ERROR };

typedef struct wire_hdr {
    uint32_t kind;
    int64_t seq;
    uint64_t bytes;   /* payload bytes that follow; for a call, its per-rank size */
    int32_t dtype;    /* all_reduce */
    int32_t op;       /* all_reduce */
    int32_t root;     /* broadcast */
    int32_t status;   /* ERROR: the sender's filo_status */
    char label[LABEL_MAX];
} wire_hdr;

typedef struct tcp_host {
    comm_host base;
    int *fd;              /* rank 0: fd[r] for each peer r; other ranks: fd[0]; -1 otherwise */
    unsigned char *clean; /* 1 while no frame is half sent on fd[r] */
    int ready;            /* the rendezvous is over: streams carry wire_hdr frames */
    filo_status broken;   /* the first failure; later calls fail at once */
    char endpoint[300];   /* "addr:port" */
    unsigned char *scratch;
    size_t scratch_size;
    unsigned char *hdrs;  /* world * HDR_SIZE: the headers rank 0 receives */
} tcp_host;

/* One transfer of a batch that tcp_run polls together. */
typedef struct tcp_xfer {
    int peer;
    int send;
    unsigned char *p;
    size_t left;
    const unsigned char *start; /* receive of a header: checked against expect on arrival */
    const wire_hdr *expect;
} tcp_xfer;

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (24 - 8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static uint64_t get64(const unsigned char *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

static void hdr_encode(const wire_hdr *h, unsigned char *p)
{
    put32(p, TCP_MAGIC);
    put32(p + 4, h->kind);
    put64(p + 8, (uint64_t)h->seq);
    put64(p + 16, h->bytes);
    put32(p + 24, (uint32_t)h->dtype);
    put32(p + 28, (uint32_t)h->op);
    put32(p + 32, (uint32_t)h->root);
    put32(p + 36, (uint32_t)h->status);
    memcpy(p + 40, h->label, LABEL_MAX);
}

static int hdr_decode(const unsigned char *p, wire_hdr *h)
{
    h->kind = get32(p + 4);
    h->seq = (int64_t)get64(p + 8);
    h->bytes = get64(p + 16);
    h->dtype = (int32_t)get32(p + 24);
    h->op = (int32_t)get32(p + 28);
    h->root = (int32_t)get32(p + 32);
    h->status = (int32_t)get32(p + 36);
    memcpy(h->label, p + 40, LABEL_MAX);
    h->label[LABEL_MAX - 1] = '\0';
    return get32(p) == TCP_MAGIC;
}

static wire_hdr hdr_make(uint32_t kind, const comm_call *call, uint64_t bytes)
{
    wire_hdr h;
    memset(&h, 0, sizeof h);
    h.kind = kind;
    h.seq = call->seq;
    h.bytes = bytes;
    h.root = -1;
    if (call->label)
        snprintf(h.label, sizeof h.label, "%s", call->label);
    return h;
}

static const char *kind_name(uint32_t kind)
{
    switch (kind) {
    case K_ALL_REDUCE: return "all_reduce";
    case K_BROADCAST: return "broadcast";
    case K_ALL_GATHER: return "all_gather";
    case K_BARRIER: return "barrier";
    case K_REPLY: return "reply";
    case K_ERROR: return "error";
    }
    return "unknown";
}

static const char *op_name(int32_t op)
{
    switch (op) {
    case FILO_REDUCE_SUM: return "sum";
    case FILO_REDUCE_AVG: return "avg";
    case FILO_REDUCE_MAX: return "max";
    case FILO_REDUCE_MIN: return "min";
    }
    return "unknown op";
}

static const char *describe(const tcp_host *h, const comm_call *call, char *buf, size_t size)
{
    if (strcmp(call->op, "rendezvous") == 0) {
        snprintf(buf, size, "rank %d: rendezvous at %s", h->base.rank, h->endpoint);
        return buf;
    }
    return comm_call_describe(h->base.rank, call, buf, size);
}

/* "rank 1: broadcast #4 (bucket 2, 400 bytes) [root 1]": a call as rank `rank` made it. */
static void describe_hdr(int rank, const wire_hdr *w, char *buf, size_t size)
{
    comm_call c = {.op = kind_name(w->kind), .label = w->label, .seq = w->seq, .bytes = (size_t)w->bytes};
    char base[256];
    comm_call_describe(rank, &c, base, sizeof base);
    if (w->kind == K_ALL_REDUCE)
        snprintf(buf, size, "%s [%s, %s]", base, op_name(w->op), filo_dtype_name((filo_dtype)w->dtype));
    else if (w->kind == K_BROADCAST)
        snprintf(buf, size, "%s [root %d]", base, (int)w->root);
    else
        snprintf(buf, size, "%s", base);
}

static void set_nonblocking(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static int poll_ms(double deadline)
{
    double left = deadline - comm_now();
    if (left <= 0)
        return 0;
    return left > 60.0 ? 60000 : (int)(left * 1000.0) + 1;
}

static filo_status closed_error(const tcp_host *h, int peer, const comm_call *call)
{
    char d[DESC_MAX];
    if (strcmp(call->op, "rendezvous") == 0)
        return FILO_FAIL(FILO_ERR_COMM, "%s: rank %d closed its connection during the rendezvous: it exited or crashed",
                         describe(h, call, d, sizeof d), peer);
    return FILO_FAIL(FILO_ERR_COMM, "%s: rank %d closed its connection during %s #%lld: it exited or crashed",
                     describe(h, call, d, sizeof d), peer, call->op, (long long)call->seq);
}

static filo_status socket_error(const tcp_host *h, int peer, int err, const comm_call *call)
{
    char d[DESC_MAX];
    if (err == EPIPE || err == ECONNRESET || err == ENOTCONN)
        return closed_error(h, peer, call);
    return FILO_FAIL(FILO_ERR_COMM, "%s: the connection with rank %d failed: %s", describe(h, call, d, sizeof d),
                     peer, strerror(err));
}

static filo_status tcp_run(tcp_host *h, tcp_xfer *x, int n, const comm_call *call);

/* Reads exactly len bytes from peer (a single-transfer batch). */
static filo_status recv_exact(tcp_host *h, int peer, void *buf, size_t len, const comm_call *call)
{
    tcp_xfer x = {.peer = peer, .p = buf, .left = len};
    return tcp_run(h, &x, 1, call);
}

/* The peer sent an ERROR frame: read its text and fail with it (and with its status, so that a
 * timeout on rank 0 is a timeout on every rank). */
static filo_status peer_failed(tcp_host *h, int peer, const wire_hdr *w, const comm_call *call)
{
    char text[TEXT_MAX + 1];
    size_t len = w->bytes < TEXT_MAX ? (size_t)w->bytes : TEXT_MAX;
    /* The frame may land just as this rank's own deadline passes: a second more for its text. */
    comm_call grace = *call;
    if (grace.deadline < comm_now() + 1.0)
        grace.deadline = comm_now() + 1.0;
    if (recv_exact(h, peer, text, len, &grace) != FILO_OK)
        len = 0;
    text[len] = '\0';
    char d[DESC_MAX];
    filo_status st = w->status == FILO_ERR_TIMEOUT ? FILO_ERR_TIMEOUT : FILO_ERR_COMM;
    return FILO_FAIL(st, "%s: rank %d reported: %s", describe(h, call, d, sizeof d), peer,
                     len ? text : "(no message)");
}

static filo_status garbled(const tcp_host *h, int peer, const wire_hdr *w, const comm_call *call)
{
    char d[DESC_MAX];
    return FILO_FAIL(FILO_ERR_COMM, "%s: unexpected message from rank %d (%s #%lld, %llu bytes): the ranks are out of step",
                     describe(h, call, d, sizeof d), peer, kind_name(w->kind), (long long)w->seq,
                     (unsigned long long)w->bytes);
}

/* A header arrived from peer: an ERROR frame fails with the peer's message; on rank 0 the peer's
 * call must be this rank's call; elsewhere it must be rank 0's reply to this call. */
static filo_status check_header(tcp_host *h, int peer, const unsigned char *raw, const wire_hdr *expect,
                                const comm_call *call)
{
    wire_hdr w;
    char d[DESC_MAX];
    if (!hdr_decode(raw, &w))
        return FILO_FAIL(FILO_ERR_COMM, "%s: rank %d sent bytes that are not a filo frame: the connection is out of step",
                         describe(h, call, d, sizeof d), peer);
    if (w.kind == K_ERROR)
        return peer_failed(h, peer, &w, call);
    if (expect->kind == K_REPLY) {
        if (w.kind != K_REPLY || w.seq != expect->seq || w.bytes != expect->bytes)
            return garbled(h, peer, &w, call);
        return FILO_OK;
    }
    int same = w.kind == expect->kind && w.seq == expect->seq && w.bytes == expect->bytes;
    if (same && w.kind == K_ALL_REDUCE)
        same = w.dtype == expect->dtype && w.op == expect->op;
    if (same && w.kind == K_BROADCAST)
        same = w.root == expect->root;
    if (same)
        return FILO_OK;
    char mine[400], theirs[400];
    describe_hdr(h->base.rank, expect, mine, sizeof mine);
    describe_hdr(peer, &w, theirs, sizeof theirs);
    return FILO_FAIL(FILO_ERR_COMM,
                     "mismatched collectives: %s, but %s: every rank must call the same collectives in the same "
                     "order with the same sizes, dtypes and roots",
                     mine, theirs);
}

/* Data arrived from a peer this rank is sending to. Mid-call that is only ever an ERROR frame
 * or the end of the stream. */
static filo_status peer_spoke(tcp_host *h, int peer, const comm_call *call)
{
    unsigned char raw[HDR_SIZE];
    comm_call grace = *call;
    if (grace.deadline < comm_now() + 1.0)
        grace.deadline = comm_now() + 1.0;
    FILO_TRY(recv_exact(h, peer, raw, sizeof raw, &grace));
    wire_hdr w;
    if (!hdr_decode(raw, &w) || w.kind != K_ERROR)
        return garbled(h, peer, &w, call);
    return peer_failed(h, peer, &w, call);
}

static filo_status timeout_error(const tcp_host *h, const tcp_xfer *x, int n, const comm_call *call)
{
    char d[DESC_MAX], who[200] = "";
    size_t len = 0;
    int count = 0, sending = 0, first = -1;
    for (int i = 0; i < n; i++) {
        if (!x[i].left)
            continue;
        if (count++ == 0)
            first = x[i].peer;
        sending |= x[i].send;
        if (len < sizeof who)
            len += (size_t)snprintf(who + len, sizeof who - len, "%s%d", len ? ", " : "", x[i].peer);
    }
    const char *hint = "";
    if (h->base.rank != 0 && first == 0 && !sending)
        hint = strcmp(call->op, "rendezvous") == 0
                   ? " (rank 0 answers once every rank has connected)"
                   : " (rank 0 answers once every rank has made this call)";
    return FILO_FAIL(FILO_ERR_TIMEOUT, "%s: timed out %s rank%s %s%s", describe(h, call, d, sizeof d),
                     sending ? "sending to" : "waiting for", count > 1 ? "s" : "", who, hint);
}

/* Moves every transfer of the batch at once, until all are done, one fails, or the deadline. */
static filo_status tcp_run(tcp_host *h, tcp_xfer *x, int n, const comm_call *call)
{
    struct pollfd pfd[n > 0 ? n : 1];
    int idx[n > 0 ? n : 1];
    for (;;) {
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (!x[i].left)
                continue;
            pfd[k].fd = h->fd[x[i].peer];
            /* While sending, watch for input too: a peer that fails mid-call says so, and a
             * peer that stops reading must not keep this rank until the deadline. */
            pfd[k].events = (short)(x[i].send ? (POLLOUT | (h->ready ? POLLIN : 0)) : POLLIN);
            pfd[k].revents = 0;
            idx[k++] = i;
        }
        if (k == 0)
            return FILO_OK;
        if (comm_now() >= call->deadline)
            return timeout_error(h, x, n, call);
        int rc = poll(pfd, (nfds_t)k, poll_ms(call->deadline));
        if (rc < 0 && errno != EINTR) {
            char d[DESC_MAX];
            return FILO_FAIL(FILO_ERR_COMM, "%s: poll failed: %s", describe(h, call, d, sizeof d), strerror(errno));
        }
        for (int j = 0; rc > 0 && j < k; j++) {
            tcp_xfer *t = &x[idx[j]];
            int fd = pfd[j].fd;
            short ev = pfd[j].revents;
            if (!ev)
                continue;
            if (t->send) {
                if ((ev & POLLIN) && h->ready)
                    return peer_spoke(h, t->peer, call);
                ssize_t s = send(fd, t->p, t->left, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (s < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                    return socket_error(h, t->peer, errno, call);
                if (s > 0) {
                    t->p += s;
                    t->left -= (size_t)s;
                }
            } else {
                ssize_t r = recv(fd, t->p, t->left, MSG_DONTWAIT);
                if (r == 0)
                    return closed_error(h, t->peer, call);
                if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                    return socket_error(h, t->peer, errno, call);
                if (r > 0) {
                    t->p += r;
                    t->left -= (size_t)r;
                    if (!t->left && t->expect)
                        FILO_TRY(check_header(h, t->peer, t->start, t->expect, call));
                }
            }
        }
    }
}

/* Sends one frame (header, then payload) to each listed peer, to all of them at once. */
static filo_status send_frame(tcp_host *h, const int *peers, int n, const wire_hdr *hdr, const void *payload,
                              size_t len, const comm_call *call)
{
    unsigned char raw[HDR_SIZE];
    hdr_encode(hdr, raw);
    tcp_xfer x[n > 0 ? n : 1];
    for (int i = 0; i < n; i++) {
        h->clean[peers[i]] = 0;
        x[i] = (tcp_xfer){.peer = peers[i], .send = 1, .p = raw, .left = HDR_SIZE};
    }
    FILO_TRY(tcp_run(h, x, n, call));
    for (int i = 0; i < n; i++)
        x[i] = (tcp_xfer){.peer = peers[i], .send = 1, .p = (unsigned char *)(uintptr_t)payload, .left = len};
    FILO_TRY(tcp_run(h, x, n, call));
    for (int i = 0; i < n; i++)
        h->clean[peers[i]] = 1;
    return FILO_OK;
}

/* A non-root rank's answer from rank 0: the REPLY header, then len bytes into out. */
static filo_status recv_reply(tcp_host *h, void *out, size_t len, const comm_call *call)
{
    wire_hdr expect = hdr_make(K_REPLY, call, len);
    unsigned char raw[HDR_SIZE];
    tcp_xfer x = {.peer = 0, .p = raw, .left = HDR_SIZE, .start = raw, .expect = &expect};
    FILO_TRY(tcp_run(h, &x, 1, call));
    return recv_exact(h, 0, out, len, call);
}

/* Rank 0: every peer's header for this call, checked against this rank's as each arrives. */
static filo_status collect_headers(tcp_host *h, const wire_hdr *mine, const comm_call *call)
{
    int w = h->base.world;
    tcp_xfer x[w];
    for (int r = 1; r < w; r++) {
        unsigned char *raw = h->hdrs + (size_t)r * HDR_SIZE;
        x[r - 1] = (tcp_xfer){.peer = r, .p = raw, .left = HDR_SIZE, .start = raw, .expect = mine};
    }
    return tcp_run(h, x, w - 1, call);
}

/* Rank 0 answers every peer but `skip` with the same payload. */
static filo_status reply_all(tcp_host *h, int skip, const void *payload, size_t len, const comm_call *call)
{
    int w = h->base.world, n = 0;
    int peers[w];
    for (int r = 1; r < w; r++)
        if (r != skip)
            peers[n++] = r;
    wire_hdr reply = hdr_make(K_REPLY, call, len);
    return send_frame(h, peers, n, &reply, payload, len, call);
}

static filo_status usable(const tcp_host *h, const comm_call *call)
{
    if (!h->broken)
        return FILO_OK;
    char d[DESC_MAX];
    return FILO_FAIL(FILO_ERR_COMM, "%s: the TCP connections failed in an earlier collective and cannot be used again",
                     describe(h, call, d, sizeof d));
}

/* After a failure: tell each peer why (when its stream is at a frame boundary) and shut the
 * sockets for writing, so that every rank stops waiting now rather than at its deadline. */
static void tcp_break(tcp_host *h, filo_status st)
{
    if (!h->broken)
        h->broken = st;
    const char *text = filo_last_error();
    size_t len = strlen(text);
    if (len > TEXT_MAX)
        len = TEXT_MAX;
    unsigned char frame[HDR_SIZE + TEXT_MAX];
    comm_call none = {.op = "error", .label = ""};
    wire_hdr w = hdr_make(K_ERROR, &none, len);
    w.status = (int32_t)st;
    hdr_encode(&w, frame);
    memcpy(frame + HDR_SIZE, text, len);
    for (int r = 0; r < h->base.world; r++) {
        if (h->fd[r] < 0)
            continue;
        if (h->clean[r] && h->ready) {
            ssize_t s = send(h->fd[r], frame, HDR_SIZE + len, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)s; /* best effort: the peer sees the shutdown below either way */
        }
        shutdown(h->fd[r], SHUT_WR);
    }
}

static filo_status settle(tcp_host *h, filo_status st)
{
    if (st != FILO_OK)
        tcp_break(h, st);
    return st;
}

static filo_status reserve_scratch(tcp_host *h, size_t size)
{
    if (h->scratch_size >= size)
        return FILO_OK;
    unsigned char *p = realloc(h->scratch, size);
    if (!p)
        return FILO_FAIL(FILO_ERR_OOM, "rank 0: cannot allocate %zu bytes of reduction scratch", size);
    h->scratch = p;
    h->scratch_size = size;
    return FILO_OK;
}

static filo_status root_all_reduce(tcp_host *h, unsigned char *buf, size_t total, size_t esize, filo_dtype dt,
                                   filo_reduce_op op, const wire_hdr *mine, const comm_call *call)
{
    int w = h->base.world;
    FILO_TRY(collect_headers(h, mine, call));
    size_t chunk = total < REDUCE_CHUNK ? total : REDUCE_CHUNK;
    FILO_TRY(reserve_scratch(h, chunk * (size_t)(w - 1)));
    tcp_xfer x[w];
    for (size_t off = 0; off < total; off += chunk) {
        size_t len = total - off < chunk ? total - off : chunk;
        for (int r = 1; r < w; r++)
            x[r - 1] = (tcp_xfer){.peer = r, .p = h->scratch + (size_t)(r - 1) * len, .left = len};
        FILO_TRY(tcp_run(h, x, w - 1, call));
        for (int r = 1; r < w; r++)
            comm_reduce_into(buf + off, h->scratch + (size_t)(r - 1) * len, len / esize, dt, op);
    }
    if (op == FILO_REDUCE_AVG)
        comm_scale_avg(buf, total / esize, dt, w);
    return reply_all(h, -1, buf, total, call);
}

static filo_status tcp_all_reduce(comm_host *base, void *buf, size_t count, filo_dtype dt, filo_reduce_op op,
                                  const comm_call *call)
{
    tcp_host *h = (tcp_host *)base;
    FILO_TRY(usable(h, call));
    if (dt != FILO_F32 && dt != FILO_F64 && dt != FILO_I32 && dt != FILO_I64)
        return FILO_FAIL(FILO_ERR_DTYPE, "TCP all_reduce of %s: host collectives take f32, f64, i32 and i64",
                         filo_dtype_name(dt));
    size_t esize = filo_dtype_size(dt);
    if (count > SIZE_MAX / esize)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "all_reduce of %zu elements of %s", count, filo_dtype_name(dt));
    size_t total = count * esize;
    wire_hdr mine = hdr_make(K_ALL_REDUCE, call, total);
    mine.dtype = (int32_t)dt;
    mine.op = (int32_t)op;
    filo_status st;
    if (base->rank == 0) {
        st = root_all_reduce(h, buf, total, esize, dt, op, &mine, call);
    } else {
        int root = 0;
        st = send_frame(h, &root, 1, &mine, buf, total, call);
        if (st == FILO_OK)
            st = recv_reply(h, buf, total, call);
    }
    return settle(h, st);
}

static filo_status root_broadcast(tcp_host *h, void *buf, size_t bytes, int root, const wire_hdr *mine,
                                  const comm_call *call)
{
    FILO_TRY(collect_headers(h, mine, call));
    if (root != 0)
        FILO_TRY(recv_exact(h, root, buf, bytes, call));
    FILO_TRY(reply_all(h, root, buf, bytes, call));
    if (root == 0)
        return FILO_OK;
    wire_hdr done = hdr_make(K_REPLY, call, 0);
    return send_frame(h, &root, 1, &done, NULL, 0, call);
}

static filo_status tcp_broadcast(comm_host *base, void *buf, size_t bytes, int root, const comm_call *call)
{
    tcp_host *h = (tcp_host *)base;
    FILO_TRY(usable(h, call));
    if (root < 0 || root >= base->world)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "broadcast from root %d in a world of %d ranks", root, base->world);
    wire_hdr mine = hdr_make(K_BROADCAST, call, bytes);
    mine.root = root;
    filo_status st;
    if (base->rank == 0) {
        st = root_broadcast(h, buf, bytes, root, &mine, call);
    } else {
        int to = 0, is_root = base->rank == root;
        st = send_frame(h, &to, 1, &mine, buf, is_root ? bytes : 0, call);
        if (st == FILO_OK)
            st = recv_reply(h, buf, is_root ? 0 : bytes, call);
    }
    return settle(h, st);
}

static filo_status root_all_gather(tcp_host *h, const void *in, size_t bytes, unsigned char *out,
                                   const wire_hdr *mine, const comm_call *call)
{
    int w = h->base.world;
    FILO_TRY(collect_headers(h, mine, call));
    if (in != out)
        memmove(out, in, bytes);
    tcp_xfer x[w];
    for (int r = 1; r < w; r++)
        x[r - 1] = (tcp_xfer){.peer = r, .p = out + (size_t)r * bytes, .left = bytes};
    FILO_TRY(tcp_run(h, x, w - 1, call));
    return reply_all(h, -1, out, bytes * (size_t)w, call);
}

static filo_status tcp_all_gather(comm_host *base, const void *in, size_t bytes, void *out, const comm_call *call)
{
    tcp_host *h = (tcp_host *)base;
    FILO_TRY(usable(h, call));
    if (bytes > SIZE_MAX / (size_t)base->world)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "all_gather of %zu bytes from %d ranks", bytes, base->world);
    wire_hdr mine = hdr_make(K_ALL_GATHER, call, bytes);
    filo_status st;
    if (base->rank == 0) {
        st = root_all_gather(h, in, bytes, out, &mine, call);
    } else {
        int to = 0;
        st = send_frame(h, &to, 1, &mine, in, bytes, call);
        if (st == FILO_OK)
            st = recv_reply(h, out, bytes * (size_t)base->world, call);
    }
    return settle(h, st);
}

static filo_status tcp_barrier(comm_host *base, const comm_call *call)
{
    tcp_host *h = (tcp_host *)base;
    FILO_TRY(usable(h, call));
    wire_hdr mine = hdr_make(K_BARRIER, call, 0);
    filo_status st;
    if (base->rank == 0) {
        st = collect_headers(h, &mine, call);
        if (st == FILO_OK)
            st = reply_all(h, -1, NULL, 0, call);
    } else {
        int to = 0;
        st = send_frame(h, &to, 1, &mine, NULL, 0, call);
        if (st == FILO_OK)
            st = recv_reply(h, NULL, 0, call);
    }
    return settle(h, st);
}

static void tcp_free(comm_host *base)
{
    if (!base)
        return;
    tcp_host *h = (tcp_host *)base;
    for (int r = 0; r < base->world; r++) {
        if (h->fd[r] < 0)
            continue;
        /* Closing a socket with unread input resets the connection, and a reset can drop what
         * this rank sent last (an ERROR frame that tells the peer why): read what is there. */
        unsigned char sink[4096];
        while (recv(h->fd[r], sink, sizeof sink, MSG_DONTWAIT) > 0)
            ;
        close(h->fd[r]);
    }
    free(h->fd);
    free(h->clean);
    free(h->scratch);
    free(h->hdrs);
    free(h);
}

/* Shuts every socket both ways: peers see the end of the stream at once and this rank's worker
 * thread, if it is inside a collective, wakes up. The sockets are closed by free, not here: the
 * caller may be another thread than the worker, and a closed descriptor number can be reused
 * under the worker's poll. */
static void tcp_abort(comm_host *base, const char *message)
{
    (void)message;
    tcp_host *h = (tcp_host *)base;
    for (int r = 0; r < base->world; r++)
        if (h->fd[r] >= 0)
            shutdown(h->fd[r], SHUT_RDWR);
}

static const comm_host_ops tcp_ops = {
    .name = "tcp",
    .all_reduce = tcp_all_reduce,
    .broadcast = tcp_broadcast,
    .all_gather = tcp_all_gather,
    .barrier = tcp_barrier,
    .abort = tcp_abort,
    .free = tcp_free,
};

/* ---- rendezvous ---- */

static void hello_encode(unsigned char *p, uint32_t a, uint32_t b)
{
    put32(p, TCP_MAGIC);
    put32(p + 4, TCP_VERSION);
    put32(p + 8, a);
    put32(p + 12, b);
}

/* Rank 0 answers a connecting rank: status FILO_OK, or a failure and its text. Best effort: the
 * socket is fresh, so the few bytes fit its buffer. */
static void hello_answer(int fd, filo_status st, const char *text)
{
    size_t len = text ? strlen(text) : 0;
    if (len > TEXT_MAX)
        len = TEXT_MAX;
    unsigned char msg[HELLO_SIZE + TEXT_MAX];
    hello_encode(msg, (uint32_t)st, (uint32_t)len);
    if (len)
        memcpy(msg + HELLO_SIZE, text, len);
    ssize_t s = send(fd, msg, HELLO_SIZE + len, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)s;
}

static filo_status tcp_listen(tcp_host *h, const filo_dist_env *env, int *out_fd)
{
    char port[16];
    snprintf(port, sizeof port, "%d", env->master_port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(env->master_addr, port, &hints, &res);
    if (gai != 0)
        return FILO_FAIL(FILO_ERR_COMM, "rank 0: cannot resolve MASTER_ADDR %s: %s", env->master_addr,
                         gai_strerror(gai));
    int err = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, env->world_size + 16) == 0) {
            set_nonblocking(fd);
            freeaddrinfo(res);
            *out_fd = fd;
            return FILO_OK;
        }
        err = errno;
        close(fd);
    }
    freeaddrinfo(res);
    return FILO_FAIL(FILO_ERR_COMM, "rank 0: cannot listen on %s: %s%s", h->endpoint, strerror(err),
                     err == EADDRINUSE ? " (another process holds this port: choose another MASTER_PORT)" : "");
}

typedef struct pending_conn {
    int fd;
    size_t got;
    unsigned char hello[HELLO_SIZE];
} pending_conn;

/* Rank 0 judges a complete handshake: FILO_OK and the peer's rank, 1 to drop a stranger
 * silently, or a failure of the whole rendezvous (its message already set). */
static int judge_hello(tcp_host *h, const unsigned char *p, int *rank, filo_status *st)
{
    if (get32(p) != TCP_MAGIC)
        return 1;
    int r = (int)get32(p + 8), w = (int)get32(p + 12);
    *rank = r;
    if (get32(p + 4) != TCP_VERSION)
        *st = FILO_FAIL(FILO_ERR_COMM, "rank 0: rendezvous at %s: rank %d speaks protocol version %u, this rank %u: "
                        "every rank must run the same filo", h->endpoint, r, get32(p + 4), TCP_VERSION);
    else if (w != h->base.world)
        *st = FILO_FAIL(FILO_ERR_COMM, "rank 0: rendezvous at %s: rank %d was started with world size %d, but rank 0 "
                        "with world size %d: every rank needs the same WORLD_SIZE", h->endpoint, r, w, h->base.world);
    else if (r < 1 || r >= w)
        *st = FILO_FAIL(FILO_ERR_COMM, "rank 0: rendezvous at %s: a process connected as rank %d, outside 1..%d",
                        h->endpoint, r, w - 1);
    else if (h->fd[r] >= 0)
        *st = FILO_FAIL(FILO_ERR_COMM, "rank 0: rendezvous at %s: two processes connected as rank %d: every rank "
                        "needs its own RANK", h->endpoint, r);
    else
        *st = FILO_OK;
    return 0;
}

static filo_status rendezvous_timeout(tcp_host *h, double seconds)
{
    char missing[256] = "";
    size_t len = 0;
    int count = 0;
    for (int r = 1; r < h->base.world; r++) {
        if (h->fd[r] >= 0 || len >= sizeof missing)
            continue;
        count++;
        len += (size_t)snprintf(missing + len, sizeof missing - len, "%s%d", len ? ", " : "", r);
    }
    return FILO_FAIL(FILO_ERR_TIMEOUT, "rank 0: rendezvous at %s timed out after %.1f s: rank%s %s never connected",
                     h->endpoint, seconds, count > 1 ? "s" : "", missing);
}

static filo_status accept_all(tcp_host *h, int lfd, double deadline, double seconds)
{
    pending_conn pend[MAX_PENDING];
    int npend = 0, joined = 0;
    filo_status st = FILO_OK;
    while (joined < h->base.world - 1 && st == FILO_OK) {
        if (comm_now() >= deadline) {
            st = rendezvous_timeout(h, seconds);
            break;
        }
        struct pollfd pfd[MAX_PENDING + 1];
        pfd[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
        for (int i = 0; i < npend; i++)
            pfd[i + 1] = (struct pollfd){.fd = pend[i].fd, .events = POLLIN};
        int rc = poll(pfd, (nfds_t)npend + 1, poll_ms(deadline));
        if (rc <= 0)
            continue;
        /* Downwards, so that moving the last entry into a freed slot skips nothing. */
        for (int i = npend - 1; i >= 0 && st == FILO_OK; i--) {
            if (!pfd[i + 1].revents)
                continue;
            pending_conn *c = &pend[i];
            ssize_t n = recv(c->fd, c->hello + c->got, HELLO_SIZE - c->got, MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                continue;
            if (n > 0 && (c->got += (size_t)n) < HELLO_SIZE)
                continue;
            int rank = -1;
            if (n <= 0 || judge_hello(h, c->hello, &rank, &st)) {
                close(c->fd);
            } else if (st != FILO_OK) {
                hello_answer(c->fd, st, filo_last_error());
                close(c->fd);
            } else {
                h->fd[rank] = c->fd;
                joined++;
            }
            pend[i] = pend[--npend];
        }
        if (st == FILO_OK && (pfd[0].revents & POLLIN)) {
            int fd = accept(lfd, NULL, NULL);
            if (fd >= 0 && npend < MAX_PENDING) {
                set_nonblocking(fd);
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                pend[npend++] = (pending_conn){.fd = fd};
            } else if (fd >= 0) {
                close(fd);
            }
        }
    }
    /* Ranks still in their handshake hear the reason too. Their input is read first: closing a
     * socket with unread input resets it, and the reset can drop the answer. */
    for (int i = 0; i < npend; i++) {
        if (st != FILO_OK) {
            unsigned char sink[HELLO_SIZE];
            while (recv(pend[i].fd, sink, sizeof sink, MSG_DONTWAIT) > 0)
                ;
            hello_answer(pend[i].fd, st, filo_last_error());
        }
        close(pend[i].fd);
    }
    return st;
}

static filo_status open_root(tcp_host *h, const filo_dist_env *env, double deadline)
{
    double seconds = deadline - comm_now();
    int lfd = -1;
    FILO_TRY(tcp_listen(h, env, &lfd));
    filo_status st = accept_all(h, lfd, deadline, seconds);
    close(lfd);
    /* Every rank hears the outcome: the others start only once the whole world is there, and a
     * failed rendezvous fails them now with rank 0's reason. */
    const char *text = st == FILO_OK ? NULL : filo_last_error();
    for (int r = 1; r < h->base.world; r++)
        if (h->fd[r] >= 0)
            hello_answer(h->fd[r], st, text);
    return st;
}

/* One connection attempt to every address of MASTER_ADDR; the socket, or -1 and *err. */
static int try_connect(const filo_dist_env *env, double deadline, char *err, size_t errsize)
{
    char port[16];
    snprintf(port, sizeof port, "%d", env->master_port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(env->master_addr, port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errsize, "cannot resolve MASTER_ADDR: %s", gai_strerror(gai));
        return -1;
    }
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) {
            snprintf(err, errsize, "%s", strerror(errno));
            continue;
        }
        set_nonblocking(fd);
        int e = 0;
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            e = errno;
            if (e == EINPROGRESS) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                double until = comm_now() + 2.0 < deadline ? comm_now() + 2.0 : deadline;
                if (poll(&p, 1, poll_ms(until)) == 1) {
                    socklen_t sl = sizeof e;
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl);
                } else {
                    e = ETIMEDOUT;
                }
            }
        }
        if (e == 0) {
            freeaddrinfo(res);
            return fd;
        }
        snprintf(err, errsize, "%s", strerror(e));
        close(fd);
    }
    freeaddrinfo(res);
    return -1;
}

static filo_status open_peer(tcp_host *h, const filo_dist_env *env, double deadline)
{
    double seconds = deadline - comm_now();
    char err[200] = "no attempt";
    int fd = -1;
    while ((fd = try_connect(env, deadline, err, sizeof err)) < 0) {
        double left = deadline - comm_now();
        if (left <= 0)
            return FILO_FAIL(FILO_ERR_TIMEOUT, "rank %d: rendezvous at %s timed out after %.1f s: could not connect to "
                             "rank 0 (%s): is rank 0 running, and are MASTER_ADDR and MASTER_PORT right?",
                             h->base.rank, h->endpoint, seconds, err);
        double nap = left < 0.05 ? left : 0.05;
        struct timespec ts = {0, (long)(nap * 1e9)};
        nanosleep(&ts, NULL);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    h->fd[0] = fd;
    comm_call call = {.op = "rendezvous", .label = "", .deadline = deadline};
    unsigned char hello[HELLO_SIZE];
    hello_encode(hello, (uint32_t)h->base.rank, (uint32_t)h->base.world);
    tcp_xfer x = {.peer = 0, .send = 1, .p = hello, .left = HELLO_SIZE};
    FILO_TRY(tcp_run(h, &x, 1, &call));
    FILO_TRY(recv_exact(h, 0, hello, HELLO_SIZE, &call));
    uint32_t st = get32(hello + 8), len = get32(hello + 12);
    if (get32(hello) != TCP_MAGIC)
        return FILO_FAIL(FILO_ERR_COMM, "rank %d: rendezvous at %s: the process listening there is not filo's rank 0",
                         h->base.rank, h->endpoint);
    if (st == FILO_OK)
        return FILO_OK;
    char text[TEXT_MAX + 1];
    if (len > TEXT_MAX)
        len = TEXT_MAX;
    if (recv_exact(h, 0, text, len, &call) != FILO_OK)
        len = 0;
    text[len] = '\0';
    return FILO_FAIL(st == FILO_ERR_TIMEOUT ? FILO_ERR_TIMEOUT : FILO_ERR_COMM,
                     "rank %d: rendezvous at %s: rank 0 ended it: %s", h->base.rank, h->endpoint,
                     len ? text : "(no reason given)");
}

filo_status comm_tcp_open(const filo_dist_env *env, double connect_deadline, comm_host **out)
{
    *out = NULL;
    if (!env || env->world_size < 1 || env->rank < 0 || env->rank >= env->world_size)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "rank %d outside a world of %d ranks", env ? env->rank : -1,
                         env ? env->world_size : 0);
    if (env->master_port < 1 || env->master_port > 65535)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "MASTER_PORT %d is not a TCP port (1-65535)", env->master_port);
    tcp_host *h = calloc(1, sizeof *h);
    int w = env->world_size;
    if (h) {
        h->fd = malloc(sizeof *h->fd * (size_t)w);
        h->clean = malloc((size_t)w);
        h->hdrs = malloc((size_t)w * HDR_SIZE);
    }
    if (!h || !h->fd || !h->clean || !h->hdrs) {
        if (h) {
            free(h->fd);
            free(h->clean);
            free(h->hdrs);
        }
        free(h);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    }
    h->base = (comm_host){.ops = &tcp_ops, .rank = env->rank, .world = w};
    for (int r = 0; r < w; r++) {
        h->fd[r] = -1;
        h->clean[r] = 1;
    }
    snprintf(h->endpoint, sizeof h->endpoint, "%s:%d", env->master_addr, env->master_port);
    filo_status st = FILO_OK;
    if (w > 1)
        st = env->rank == 0 ? open_root(h, env, connect_deadline) : open_peer(h, env, connect_deadline);
    if (st != FILO_OK) {
        tcp_free(&h->base);
        return st;
    }
    h->ready = 1;
    *out = &h->base;
    return FILO_OK;
}
