/* filo CUDA emulator, runtime side: the CUDA runtime API (C linkage, real signatures) over host
 * memory, and the kernel executor.
 *
 * Execution model: a launch is split into blocks; blocks are claimed by a small pool of worker
 * OS threads (the launching thread is one of them). A block's threads are fibers on one worker,
 * switched by a hand-written x86-64 context switch. Fibers run until a synchronization point
 * (__syncthreads, a warp collective, __nanosleep, exit); the worker's scheduler then resumes
 * the next runnable fiber in the order the schedule (FILO_EMU_SCHEDULE) dictates. When nothing
 * is runnable the scheduler resolves the stall: releases a barrier, or reports the deadlock it
 * found (early exit, divergent barrier, warp collective with a missing lane). A watchdog thread
 * catches spin-hangs. Streams are synchronous: work runs when it is enqueued.
 * docs/cuda-emulation.md has the whole story. */
#include "cuda_emu.h"
/* the runtime names the device property, not the kernel built-in */
#undef warpSize

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define FILO_EMU_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#else
#define FILO_EMU_ASAN 0
#endif

#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

/* ---------------------------------------------------------------------------------------------
 * Context switch. Saves the callee-saved registers on the current stack, stores the stack
 * pointer in *from, loads `to` and pops the target's registers. A fresh fiber's stack holds the
 * trampoline as return address, with the fiber pointer in r12 and the entry function in r13.
 * ------------------------------------------------------------------------------------------- */
extern "C" void filo_emu_ctx_switch(void **from, void *to);
extern "C" void filo_emu_ctx_trampoline(void);
asm(R"(
    .text
    .globl filo_emu_ctx_switch
    .hidden filo_emu_ctx_switch
    .type filo_emu_ctx_switch,@function
filo_emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size filo_emu_ctx_switch, .-filo_emu_ctx_switch

    .globl filo_emu_ctx_trampoline
    .hidden filo_emu_ctx_trampoline
    .type filo_emu_ctx_trampoline,@function
filo_emu_ctx_trampoline:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size filo_emu_ctx_trampoline, .-filo_emu_ctx_trampoline
)");

namespace filo_emu {

__thread Tls tls __attribute__((tls_model("initial-exec")));

namespace {

constexpr size_t kSmemDefault = 48 * 1024;
constexpr size_t kSmemOptin = 227 * 1024;
constexpr size_t kSmemGuard = 4096;
constexpr unsigned kMaxThreads = 1024;
constexpr int kSmCount = 132;

enum Schedule { SCHED_FORWARD, SCHED_REVERSE, SCHED_RANDOM, SCHED_DEPTH };

struct Config {
    int workers = 1;
    Schedule schedule = SCHED_FORWARD;
    unsigned long long seed = 1;
    unsigned char poison = 0x7f;
    size_t total_mem = (size_t)8 << 30;
    double watchdog_s = 60.0;
    size_t stack_bytes = 64 * 1024;
    bool quiet = false;
    std::atomic<bool> racecheck{false};
    std::string coverage_file;
    std::string schedule_name = "forward";
};

Config &cfg()
{
    static Config *c = [] {
        Config *k = new Config;
        if (const char *s = getenv("FILO_EMU_WORKERS"); s && atoi(s) > 0)
            k->workers = atoi(s);
        else
            k->workers = std::max(1u, std::thread::hardware_concurrency());
        if (const char *s = getenv("FILO_EMU_SCHEDULE"); s && *s) {
            std::string v = s;
            if (v == "reverse") {
                k->schedule = SCHED_REVERSE;
            } else if (v == "depth-first" || v == "depth") {
                k->schedule = SCHED_DEPTH;
                v = "depth-first";
            } else if (v.rfind("random", 0) == 0) {
                k->schedule = SCHED_RANDOM;
                k->seed = v.size() > 7 && v[6] == ':' ? strtoull(v.c_str() + 7, nullptr, 0) : 1;
                v = "random:" + std::to_string(k->seed);
            } else if (v != "forward") {
                fprintf(stderr, "filo-emu: unknown FILO_EMU_SCHEDULE '%s', using forward\n", s);
                v = "forward";
            }
            k->schedule_name = v;
        }
        if (const char *s = getenv("FILO_EMU_POISON"); s && *s)
            k->poison = (unsigned char)strtoul(s, nullptr, 0);
        if (const char *s = getenv("FILO_EMU_MEMORY_MB"); s && *s)
            k->total_mem = (size_t)strtoull(s, nullptr, 0) << 20;
        if (const char *s = getenv("FILO_EMU_WATCHDOG_S"); s && *s)
            k->watchdog_s = strtod(s, nullptr);
        if (FILO_EMU_ASAN)
            k->stack_bytes = 256 * 1024;
        if (const char *s = getenv("FILO_EMU_STACK_KB"); s && atoi(s) > 0)
            k->stack_bytes = (size_t)atoi(s) * 1024;
        if (const char *s = getenv("FILO_EMU_QUIET"); s && *s && *s != '0')
            k->quiet = true;
        if (const char *s = getenv("FILO_EMU_RACECHECK"); s && *s && *s != '0')
            k->racecheck = true;
        if (const char *s = getenv("FILO_EMU_COVERAGE_FILE"); s && *s)
            k->coverage_file = s;
        return k;
    }();
    return *c;
}

double now_ms()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

long long now_ns()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---------------------------------------------------------------------------------------------
 * Errors. cudaGetLastError state is per host thread, as in CUDA. Faults found while a kernel
 * runs are also "pending" for the next synchronizing call, which returns them once.
 * ------------------------------------------------------------------------------------------- */
thread_local cudaError_t t_last_error = cudaSuccess;
std::atomic<int> g_pending_error{cudaSuccess};
std::mutex g_detail_mu;
/* Containers are created once and never destroyed: pool and watchdog threads may still touch
 * them while the process runs its static destructors at exit. */
std::string &g_detail = *new std::string;
filo_emu_fault g_fault = FILO_EMU_FAULT_NONE;
std::atomic<unsigned long long> g_host_syncs{0}, g_implicit_syncs{0}, g_launches{0};

cudaError_t ret(cudaError_t e)
{
    if (e != cudaSuccess)
        t_last_error = e;
    return e;
}

void report(filo_emu_fault fault, cudaError_t err, bool async, const std::string &msg)
{
    {
        std::lock_guard<std::mutex> lock(g_detail_mu);
        g_detail = msg;
        g_fault = fault;
    }
    t_last_error = err;
    if (async)
        g_pending_error.store(err);
    if (!cfg().quiet)
        fprintf(stderr, "filo-emu: %s: %s\n", cudaGetErrorName(err), msg.c_str());
}

/* Stream capture: the graph being recorded for each capturing stream. Work enqueued on such a
 * stream is appended as a closure over the replay stream instead of running. */
struct Capture {
    std::vector<std::function<void(cudaStream_t)>> items;
    bool invalidated = false;
};
std::mutex &g_capture_mu = *new std::mutex;
std::map<cudaStream_t, Capture *> &g_captures = *new std::map<cudaStream_t, Capture *>;

/* Appends to the stream's capture; false when the stream is not capturing. */
bool capture_record(cudaStream_t s, std::function<void(cudaStream_t)> item)
{
    std::lock_guard<std::mutex> lock(g_capture_mu);
    auto it = g_captures.find(s);
    if (it == g_captures.end())
        return false;
    it->second->items.push_back(std::move(item));
    return true;
}

/* A synchronizing call: count it and hand out a pending kernel fault. During a capture it is an
 * error, as on a GPU, and the capture is invalidated. */
cudaError_t sync_point()
{
    {
        std::lock_guard<std::mutex> lock(g_capture_mu);
        if (!g_captures.empty()) {
            for (auto &c : g_captures)
                c.second->invalidated = true;
            report(FILO_EMU_FAULT_NONE, cudaErrorStreamCaptureUnsupported, false,
                   "a host synchronization while a stream is being captured (the capture is invalidated)");
            return cudaErrorStreamCaptureUnsupported;
        }
    }
    g_host_syncs.fetch_add(1, std::memory_order_relaxed);
    int e = g_pending_error.exchange(cudaSuccess);
    return ret((cudaError_t)e);
}

std::string strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
std::string strf(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

/* ---------------------------------------------------------------------------------------------
 * Memory. Device and pinned allocations are host memory, tracked by address so that copies
 * and frees can be checked and the race check can snapshot them.
 * ------------------------------------------------------------------------------------------- */
enum AllocKind { ALLOC_DEVICE, ALLOC_PINNED, ALLOC_REGISTERED };
struct Alloc {
    size_t size;
    AllocKind kind;
};
std::mutex g_mem_mu;
std::map<uintptr_t, Alloc> &g_allocs = *new std::map<uintptr_t, Alloc>;
size_t g_device_bytes = 0;

/* The allocation containing [p, p+n), or null. Caller holds g_mem_mu. */
const Alloc *find_alloc(const void *p, size_t n, uintptr_t *base)
{
    uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin())
        return nullptr;
    --it;
    if (a >= it->first + std::max<size_t>(it->second.size, 1) || a + n > it->first + it->second.size)
        return nullptr;
    if (base)
        *base = it->first;
    return &it->second;
}

enum PtrClass { PTR_DEVICE, PTR_PINNED, PTR_PAGEABLE, PTR_PARTIAL };

PtrClass classify(const void *p, size_t n)
{
    std::lock_guard<std::mutex> lock(g_mem_mu);
    uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it != g_allocs.begin()) {
        --it;
        if (a < it->first + it->second.size || (a == it->first && n == 0)) {
            if (a + n > it->first + it->second.size)
                return PTR_PARTIAL;
            return it->second.kind == ALLOC_DEVICE ? PTR_DEVICE : PTR_PINNED;
        }
    }
    return PTR_PAGEABLE;
}

const char *kind_name(cudaMemcpyKind k)
{
    switch (k) {
    case cudaMemcpyHostToHost: return "cudaMemcpyHostToHost";
    case cudaMemcpyHostToDevice: return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost: return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice: return "cudaMemcpyDeviceToDevice";
    default: return "cudaMemcpyDefault";
    }
}

/* Checks a copy against the allocations: a side the kind calls "device" must lie inside one
 * device allocation; one it calls "host" must not be device memory. */
cudaError_t check_copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind, bool *pageable)
{
    if (n == 0)
        return cudaSuccess;
    if (!dst || !src)
        return cudaErrorInvalidValue;
    PtrClass d = classify(dst, n), s = classify(src, n);
    if (d == PTR_PARTIAL || s == PTR_PARTIAL) {
        report(FILO_EMU_FAULT_NONE, cudaErrorInvalidValue, false,
               strf("%s of %zu bytes runs past the end of the %s allocation", kind_name(kind), n,
                    d == PTR_PARTIAL ? "destination" : "source"));
        return cudaErrorInvalidValue;
    }
    bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind != cudaMemcpyDefault) {
        if (dst_dev != (d == PTR_DEVICE) || src_dev != (s == PTR_DEVICE)) {
            report(FILO_EMU_FAULT_NONE, cudaErrorInvalidValue, false,
                   strf("%s: destination is %s memory and source is %s memory", kind_name(kind),
                        d == PTR_DEVICE ? "device" : "host", s == PTR_DEVICE ? "device" : "host"));
            return cudaErrorInvalidValue;
        }
    }
    if (pageable)
        *pageable = (d == PTR_PAGEABLE && s == PTR_DEVICE) || (s == PTR_PAGEABLE && d == PTR_DEVICE);
    return cudaSuccess;
}

/* ---------------------------------------------------------------------------------------------
 * Streams and events: validated handles; work runs at enqueue time.
 * ------------------------------------------------------------------------------------------- */
std::mutex g_handle_mu;
std::set<const void *> &g_streams = *new std::set<const void *>;
std::set<const void *> &g_events = *new std::set<const void *>;

bool stream_ok(cudaStream_t s)
{
    if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread)
        return true;
    std::lock_guard<std::mutex> lock(g_handle_mu);
    return g_streams.count(s) != 0;
}

/* ---------------------------------------------------------------------------------------------
 * Fibers, warps, workers.
 * ------------------------------------------------------------------------------------------- */
enum FiberState { F_RUNNABLE, F_AT_BARRIER, F_AT_WARP, F_DONE, F_FAULTED };

struct Worker;

struct Fiber {
    ThreadState ts; /* first: tls.thread points here */
    void *sp;
    unsigned char *stack_lo;
    size_t stack_size;
    Worker *worker;
    unsigned index, lane, warp;
    int state;
    const char *file;
    int line;
    int bar_kind;
    int pred;
    void *asan_fake;
};

struct Warp {
    unsigned exists;  /* lanes present in this (maybe partial) warp */
    unsigned arrived; /* lanes waiting at a warp collective */
    int op[32];
    unsigned mask[32];
    int b[32];
    int width[32];
    const char *file[32];
    int line[32];
    unsigned long long val[32];
    unsigned long long res[32];
};

struct Job {
    const char *name;
    const char *file;
    int line;
    InvokeFn invoke;
    void *ctx;
    uint3 grid, block;
    size_t smem;
    unsigned nthreads;
    unsigned long long nblocks;
    Schedule schedule;
    unsigned long long seed;
    unsigned long long launch_id;
    std::vector<unsigned long long> order; /* block order for the random schedule */
    std::atomic<unsigned long long> next{0};
    std::atomic<bool> abort{false};
    std::mutex mu;
    bool faulted = false;
    filo_emu_fault fault = FILO_EMU_FAULT_NONE;
    cudaError_t err = cudaSuccess;
    std::string msg;
};

/* Run queue: a ring of fiber pointers; each fiber is in it at most once. */
struct RunQueue {
    Fiber *buf[kMaxThreads];
    unsigned head = 0, count = 0;
    void clear() { head = count = 0; }
    void push_back(Fiber *f) { buf[(head + count++) & (kMaxThreads - 1)] = f; }
    void push_front(Fiber *f)
    {
        head = (head - 1) & (kMaxThreads - 1);
        buf[head] = f;
        count++;
    }
    Fiber *pop_front()
    {
        Fiber *f = buf[head];
        head = (head + 1) & (kMaxThreads - 1);
        count--;
        return f;
    }
    Fiber *pop_random(unsigned long long r)
    {
        unsigned k = (unsigned)(r % count);
        std::swap(buf[(head + k) & (kMaxThreads - 1)], buf[head]);
        return pop_front();
    }
};

struct Worker {
    void *sched_sp = nullptr;
    Fiber *fibers = nullptr;
    unsigned nstacks = 0;
    Warp warps[kMaxThreads / 32];
    RunQueue queue;
    unsigned char *smem = nullptr; /* kSmemOptin + guard, then a PROT_NONE page */
    size_t smem_map = 0;
    Job *job = nullptr;
    Schedule schedule = SCHED_FORWARD;
    unsigned nthreads = 0;
    unsigned live = 0;
    int bar_result = 0;
    unsigned long long rng = 1;
    uint3 block_idx{0, 0, 0};
    /* fault of the current block */
    filo_emu_fault fault = FILO_EMU_FAULT_NONE;
    cudaError_t fault_err = cudaSuccess;
    unsigned fault_thread = 0;
    char fault_msg[1024];
    Fiber *running = nullptr;
    /* watchdog */
    pthread_t thread;
    std::atomic<long long> block_start_ns{0};
    std::atomic<unsigned long long> block_seq{0};
    std::atomic<unsigned long long> fire_seq{~0ull};
    const void *asan_sched_bottom = nullptr;
    size_t asan_sched_size = 0;
    void *asan_fake = nullptr;

    ~Worker()
    {
        for (unsigned i = 0; i < nstacks; i++)
            munmap(fibers[i].stack_lo - 4096, fibers[i].stack_size + 4096);
        free(fibers);
        if (smem)
            munmap(smem, smem_map);
    }
};

std::mutex g_workers_mu;
std::vector<Worker *> &g_workers = *new std::vector<Worker *>;
__thread Worker *t_worker __attribute__((tls_model("initial-exec")));

struct WorkerHolder {
    std::unique_ptr<Worker> w;
    ~WorkerHolder()
    {
        if (w) {
            std::lock_guard<std::mutex> lock(g_workers_mu);
            g_workers.erase(std::find(g_workers.begin(), g_workers.end(), w.get()));
            t_worker = nullptr;
        }
    }
};
thread_local WorkerHolder t_holder;

void *map_or_die(size_t n, int prot)
{
    void *p = mmap(nullptr, n, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "filo-emu: cannot map %zu bytes for fiber stacks/shared memory\n", n);
        abort();
    }
    return p;
}

Worker *this_worker()
{
    if (t_worker)
        return t_worker;
    Worker *w = new Worker;
    w->thread = pthread_self();
    w->fibers = static_cast<Fiber *>(calloc(kMaxThreads, sizeof(Fiber)));
    w->smem_map = kSmemOptin + kSmemGuard + 4096;
    w->smem = static_cast<unsigned char *>(map_or_die(w->smem_map, PROT_READ | PROT_WRITE));
    mprotect(w->smem + kSmemOptin + kSmemGuard, 4096, PROT_NONE);
    t_holder.w.reset(w);
    t_worker = w;
    std::lock_guard<std::mutex> lock(g_workers_mu);
    g_workers.push_back(w);
    return w;
}

void ensure_stacks(Worker *w, unsigned n)
{
    size_t sz = cfg().stack_bytes;
    while (w->nstacks < n) {
        /* a PROT_NONE page below each stack turns an overflow into a crash, not corruption */
        unsigned char *m = static_cast<unsigned char *>(map_or_die(sz + 4096, PROT_READ | PROT_WRITE));
        mprotect(m, 4096, PROT_NONE);
        Fiber &f = w->fibers[w->nstacks++];
        f.stack_lo = m + 4096;
        f.stack_size = sz;
    }
}

inline Fiber *cur_fiber() { return reinterpret_cast<Fiber *>(tls.thread); }

unsigned long long next_rand(unsigned long long &s)
{
    s += 0x9e3779b97f4a7c15ull;
    unsigned long long z = s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Switch from the scheduler into fiber f, and back when it suspends. */
inline void resume(Worker *w, Fiber *f)
{
    tls.thread = &f->ts;
    w->running = f;
#if FILO_EMU_ASAN
    __sanitizer_start_switch_fiber(&w->asan_fake, f->stack_lo, f->stack_size);
#endif
    filo_emu_ctx_switch(&w->sched_sp, f->sp);
#if FILO_EMU_ASAN
    __sanitizer_finish_switch_fiber(w->asan_fake, nullptr, nullptr);
#endif
    w->running = nullptr;
}

/* From inside fiber f: back to the scheduler; returns when the scheduler resumes f. */
inline void suspend(Worker *w, Fiber *f)
{
#if FILO_EMU_ASAN
    __sanitizer_start_switch_fiber(&f->asan_fake, w->asan_sched_bottom, w->asan_sched_size);
#endif
    filo_emu_ctx_switch(&f->sp, w->sched_sp);
#if FILO_EMU_ASAN
    __sanitizer_finish_switch_fiber(f->asan_fake, &w->asan_sched_bottom, &w->asan_sched_size);
#endif
}

[[noreturn]] void fiber_entry(Fiber *f)
{
    Worker *w = f->worker;
#if FILO_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &w->asan_sched_bottom, &w->asan_sched_size);
#endif
    w->job->invoke(w->job->ctx);
    f->state = F_DONE;
    w->live--;
#if FILO_EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, w->asan_sched_bottom, w->asan_sched_size);
#endif
    filo_emu_ctx_switch(&f->sp, w->sched_sp);
    __builtin_unreachable();
}

void fiber_init(Fiber *f)
{
    void **top = reinterpret_cast<void **>(f->stack_lo + f->stack_size);
    void **sp = top - 7;
    sp[0] = nullptr;                                            /* r15 */
    sp[1] = nullptr;                                            /* r14 */
    sp[2] = reinterpret_cast<void *>(&fiber_entry);             /* r13 */
    sp[3] = f;                                                  /* r12 */
    sp[4] = nullptr;                                            /* rbx */
    sp[5] = nullptr;                                            /* rbp */
    sp[6] = reinterpret_cast<void *>(&filo_emu_ctx_trampoline); /* return address */
    f->sp = sp;
}

std::string thread_str(const Worker *w, unsigned index)
{
    const uint3 &bd = w->job->block;
    return strf("(%u,%u,%u)", index % bd.x, (index / bd.x) % bd.y, index / (bd.x * bd.y));
}

std::string where_str(const Worker *w)
{
    return strf("kernel '%s' (launched at %s:%d) block (%u,%u,%u)", w->job->name, w->job->file,
                w->job->line, w->block_idx.x, w->block_idx.y, w->block_idx.z);
}

/* Raises a fault from inside a fiber; the fiber is abandoned and never resumed. The message is
 * formatted into the worker, so the abandoned stack holds no heap memory. */
[[noreturn]] void fiber_fault(Fiber *f, filo_emu_fault kind, cudaError_t err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
[[noreturn]] void fiber_fault(Fiber *f, filo_emu_fault kind, cudaError_t err, const char *fmt, ...)
{
    Worker *w = f->worker;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->fault_msg, sizeof w->fault_msg, fmt, ap);
    va_end(ap);
    w->fault = kind;
    w->fault_err = err;
    w->fault_thread = f->index;
    f->state = F_FAULTED;
    suspend(w, f);
    __builtin_unreachable();
}

void block_fault(Worker *w, filo_emu_fault kind, cudaError_t err, unsigned thread, const std::string &msg)
{
    snprintf(w->fault_msg, sizeof w->fault_msg, "%s", msg.c_str());
    w->fault = kind;
    w->fault_err = err;
    w->fault_thread = thread;
}

/* Wake order of a group of fibers made runnable together. */
void wake(Worker *w, Fiber *const *group, unsigned n)
{
    switch (w->schedule) {
    case SCHED_FORWARD:
    case SCHED_RANDOM:
        for (unsigned i = 0; i < n; i++)
            w->queue.push_back(group[i]);
        break;
    case SCHED_REVERSE:
        for (unsigned i = n; i-- > 0;)
            w->queue.push_back(group[i]);
        break;
    case SCHED_DEPTH:
        for (unsigned i = n; i-- > 0;)
            w->queue.push_front(group[i]);
        break;
    }
}

void wake_all(Worker *w)
{
    Fiber *all[kMaxThreads];
    for (unsigned i = 0; i < w->nthreads; i++)
        all[i] = &w->fibers[i];
    if (w->schedule == SCHED_DEPTH) {
        for (unsigned i = 0; i < w->nthreads; i++)
            w->queue.push_back(all[i]);
    } else {
        wake(w, all, w->nthreads);
    }
}

const char *op_name(int op)
{
    switch (op) {
    case WARP_SHFL_IDX: return "__shfl_sync";
    case WARP_SHFL_UP: return "__shfl_up_sync";
    case WARP_SHFL_DOWN: return "__shfl_down_sync";
    case WARP_SHFL_XOR: return "__shfl_xor_sync";
    case WARP_BALLOT: return "__ballot_sync";
    case WARP_ANY: return "__any_sync";
    case WARP_ALL: return "__all_sync";
    case WARP_SYNC: return "__syncwarp";
    case WARP_REDUCE_AND: return "__reduce_and_sync";
    case WARP_REDUCE_OR: return "__reduce_or_sync";
    case WARP_REDUCE_XOR: return "__reduce_xor_sync";
    default: return "__reduce_*_sync";
    }
}

const char *barrier_name(int kind)
{
    switch (kind) {
    case BARRIER_COUNT: return "__syncthreads_count";
    case BARRIER_AND: return "__syncthreads_and";
    case BARRIER_OR: return "__syncthreads_or";
    default: return "__syncthreads";
    }
}

unsigned long long poison_word()
{
    unsigned long long p = cfg().poison;
    return p * 0x0101010101010101ull;
}

/* All lanes named by mask have arrived: check that they agree, compute every lane's result
 * (PTX shfl.sync / vote.sync semantics) and wake them. */
void warp_complete(Worker *w, Warp &wp, unsigned warp_index, unsigned mask, Fiber *self)
{
    unsigned lane0 = self->lane;
    int op = wp.op[lane0];
    for (unsigned m = mask; m; m &= m - 1) {
        unsigned l = __builtin_ctz(m);
        if (wp.mask[l] != mask || wp.op[l] != op) {
            wp.arrived &= ~(1u << lane0);
            fiber_fault(self, FILO_EMU_FAULT_WARP, cudaErrorIllegalInstruction,
                        "%s thread %s: divergent warp collective: lane %u is at %s (mask 0x%08x) "
                        "at %s:%d while lane %u is at %s (mask 0x%08x) at %s:%d",
                        where_str(w).c_str(), thread_str(w, self->index).c_str(), lane0, op_name(op),
                        mask, wp.file[lane0], wp.line[lane0], l, op_name(wp.op[l]), wp.mask[l],
                        wp.file[l], wp.line[l]);
        }
    }
    unsigned long long r = 0;
    switch (op) {
    case WARP_SHFL_IDX:
    case WARP_SHFL_UP:
    case WARP_SHFL_DOWN:
    case WARP_SHFL_XOR:
        for (unsigned m = mask; m; m &= m - 1) {
            int l = __builtin_ctz(m);
            int width = wp.width[l];
            int c = ((32 - width) << 8) | (op == WARP_SHFL_UP ? 0 : 0x1f);
            int segmask = (c >> 8) & 0x1f, clamp = c & 0x1f;
            int max_lane = (l & segmask) | (clamp & ~segmask);
            int min_lane = l & segmask;
            int b = wp.b[l], j;
            bool pval;
            if (op == WARP_SHFL_IDX) {
                j = min_lane | (b & 0x1f & ~segmask);
                pval = j <= max_lane;
            } else if (op == WARP_SHFL_UP) {
                j = l - b;
                pval = j >= max_lane;
            } else if (op == WARP_SHFL_DOWN) {
                j = l + b;
                pval = j <= max_lane;
            } else {
                j = l ^ b;
                pval = j <= max_lane;
            }
            if (!pval)
                j = l;
            /* reading a lane outside the mask is undefined on the GPU: give the poison value */
            wp.res[l] = (j >= 0 && j < 32 && (mask >> j & 1)) ? wp.val[j] : poison_word();
        }
        break;
    case WARP_BALLOT:
    case WARP_ANY:
    case WARP_ALL: {
        unsigned ballot = 0;
        for (unsigned m = mask; m; m &= m - 1) {
            unsigned l = __builtin_ctz(m);
            if (wp.val[l])
                ballot |= 1u << l;
        }
        r = op == WARP_BALLOT ? ballot : op == WARP_ANY ? ballot != 0 : ballot == mask;
        break;
    }
    case WARP_SYNC:
        break;
    default: {
        unsigned first = __builtin_ctz(mask);
        unsigned u = (unsigned)wp.val[first];
        int i = (int)u;
        for (unsigned m = mask & (mask - 1); m; m &= m - 1) {
            unsigned v = (unsigned)wp.val[__builtin_ctz(m)];
            switch (op) {
            case WARP_REDUCE_ADD_U: u += v; break;
            case WARP_REDUCE_MIN_U: u = std::min(u, v); break;
            case WARP_REDUCE_MAX_U: u = std::max(u, v); break;
            case WARP_REDUCE_ADD_I: i = (int)((unsigned)i + v); break;
            case WARP_REDUCE_MIN_I: i = std::min(i, (int)v); break;
            case WARP_REDUCE_MAX_I: i = std::max(i, (int)v); break;
            case WARP_REDUCE_AND: u &= v; break;
            case WARP_REDUCE_OR: u |= v; break;
            case WARP_REDUCE_XOR: u ^= v; break;
            }
        }
        bool is_int = op == WARP_REDUCE_ADD_I || op == WARP_REDUCE_MIN_I || op == WARP_REDUCE_MAX_I;
        r = is_int ? (unsigned)i : u;
        break;
    }
    }
    if (op >= WARP_BALLOT)
        for (unsigned m = mask; m; m &= m - 1)
            wp.res[__builtin_ctz(m)] = r;
    wp.arrived &= ~mask;
    Fiber *group[32];
    unsigned n = 0;
    for (unsigned m = mask & ~(1u << lane0); m; m &= m - 1) {
        Fiber *g = &w->fibers[warp_index * 32 + __builtin_ctz(m)];
        g->state = F_RUNNABLE;
        group[n++] = g;
    }
    wake(w, group, n);
}

/* Nothing can run but threads are alive: release the barrier they all wait at, or report why
 * the block is stuck. */
void resolve_stall(Worker *w)
{
    unsigned n = w->nthreads;
    Fiber *fb = w->fibers;
    /* warp collectives that cannot complete */
    for (unsigned i = 0; i < n; i++) {
        Fiber *f = &fb[i];
        if (f->state != F_AT_WARP)
            continue;
        Warp &wp = w->warps[f->warp];
        unsigned missing = wp.mask[f->lane] & ~wp.arrived;
        unsigned l = missing ? __builtin_ctz(missing) : f->lane;
        Fiber *g = &fb[f->warp * 32 + l];
        std::string why;
        if (g->state == F_DONE)
            why = strf("lane %u has exited", l);
        else if (g->state == F_AT_BARRIER)
            why = strf("lane %u is waiting at %s at %s:%d", l, barrier_name(g->bar_kind), g->file, g->line);
        else
            why = strf("lane %u is at %s with mask 0x%08x at %s:%d", l, op_name(wp.op[l]), wp.mask[l],
                       wp.file[l], wp.line[l]);
        block_fault(w, FILO_EMU_FAULT_WARP, cudaErrorIllegalInstruction, i,
                    strf("%s thread %s: %s (mask 0x%08x) at %s:%d cannot complete: %s",
                         where_str(w).c_str(), thread_str(w, i).c_str(), op_name(wp.op[f->lane]),
                         wp.mask[f->lane], wp.file[f->lane], wp.line[f->lane], why.c_str()));
        return;
    }
    /* everyone alive is at a barrier */
    Fiber *first = nullptr;
    for (unsigned i = 0; i < n; i++) {
        if (fb[i].state == F_AT_BARRIER) {
            first = &fb[i];
            break;
        }
    }
    if (!first) {
        block_fault(w, FILO_EMU_FAULT_BARRIER_DIVERGENT, cudaErrorIllegalInstruction, 0,
                    where_str(w) + ": scheduler stalled with no waiting thread");
        return;
    }
    if (w->live < n) {
        unsigned exited = 0, nexited = n - w->live;
        for (unsigned i = 0; i < n; i++)
            if (fb[i].state == F_DONE) {
                exited = i;
                break;
            }
        block_fault(w, FILO_EMU_FAULT_BARRIER_EXIT, cudaErrorIllegalInstruction, exited,
                    strf("%s thread %s: exited (with %u other exited threads) while %u threads "
                         "wait at %s at %s:%d (early return before a barrier?)",
                         where_str(w).c_str(), thread_str(w, exited).c_str(), nexited - 1, w->live,
                         barrier_name(first->bar_kind), first->file, first->line));
        return;
    }
    int count = 0;
    for (unsigned i = 0; i < n; i++) {
        Fiber *f = &fb[i];
        if (f->line != first->line || f->bar_kind != first->bar_kind ||
            (f->file != first->file && strcmp(f->file, first->file) != 0)) {
            block_fault(w, FILO_EMU_FAULT_BARRIER_DIVERGENT, cudaErrorIllegalInstruction, i,
                        strf("%s: divergent barriers: thread %s waits at %s at %s:%d while thread %s "
                             "waits at %s at %s:%d",
                             where_str(w).c_str(), thread_str(w, first->index).c_str(),
                             barrier_name(first->bar_kind), first->file, first->line,
                             thread_str(w, i).c_str(), barrier_name(f->bar_kind), f->file, f->line));
            return;
        }
        count += f->pred;
    }
    switch (first->bar_kind) {
    case BARRIER_COUNT: w->bar_result = count; break;
    case BARRIER_AND: w->bar_result = count == (int)n; break;
    case BARRIER_OR: w->bar_result = count != 0; break;
    default: w->bar_result = 0;
    }
    for (unsigned i = 0; i < n; i++)
        fb[i].state = F_RUNNABLE;
    wake_all(w);
}

unsigned char canary_byte(size_t i) { return (unsigned char)(0xA5 ^ (i * 61)); }

bool watchdog_fired(Worker *w)
{
    return w->fire_seq.load(std::memory_order_relaxed) == w->block_seq.load(std::memory_order_relaxed);
}

void run_block(Worker *w, Job *j, unsigned long long b)
{
    unsigned n = j->nthreads;
    uint3 bi;
    bi.x = (unsigned)(b % j->grid.x);
    bi.y = (unsigned)((b / j->grid.x) % j->grid.y);
    bi.z = (unsigned)(b / ((unsigned long long)j->grid.x * j->grid.y));
    w->block_idx = bi;
    tls.block_idx = bi;
    w->nthreads = n;
    w->live = n;
    w->fault = FILO_EMU_FAULT_NONE;
    w->rng = j->seed ^ (j->launch_id * 0x9e3779b97f4a7c15ull) ^ (b * 0xbf58476d1ce4e5b9ull);
    ensure_stacks(w, n);
    for (unsigned i = 0; i < n; i++) {
        Fiber *f = &w->fibers[i];
        f->ts.tid.x = i % j->block.x;
        f->ts.tid.y = (i / j->block.x) % j->block.y;
        f->ts.tid.z = i / (j->block.x * j->block.y);
        f->worker = w;
        f->index = i;
        f->lane = i & 31;
        f->warp = i >> 5;
        f->state = F_RUNNABLE;
        f->pred = 0;
        fiber_init(f);
    }
    for (unsigned k = 0; k < (n + 31) / 32; k++) {
        unsigned lanes = std::min(32u, n - k * 32);
        w->warps[k].exists = lanes == 32 ? ~0u : (1u << lanes) - 1;
        w->warps[k].arrived = 0;
    }
    if (j->smem) {
        memset(w->smem, cfg().poison, j->smem);
        for (size_t i = 0; i < kSmemGuard; i++)
            w->smem[j->smem + i] = canary_byte(i);
    }
    w->queue.clear();
    wake_all(w);

    w->block_start_ns.store(now_ns(), std::memory_order_relaxed);
    w->block_seq.fetch_add(1, std::memory_order_release);
    for (;;) {
        while (w->queue.count) {
            Fiber *f = w->schedule == SCHED_RANDOM ? w->queue.pop_random(next_rand(w->rng)) : w->queue.pop_front();
            resume(w, f);
            if (w->fault)
                goto done;
            if (watchdog_fired(w)) {
                block_fault(w, FILO_EMU_FAULT_WATCHDOG, cudaErrorLaunchTimeout, f->index, "");
                goto done;
            }
        }
        if (w->live == 0)
            break;
        resolve_stall(w);
        if (w->fault)
            goto done;
    }
    if (j->smem) {
        for (size_t i = 0; i < kSmemGuard; i++) {
            if (w->smem[j->smem + i] != canary_byte(i)) {
                block_fault(w, FILO_EMU_FAULT_SHARED_OOB, cudaErrorIllegalAddress, 0,
                            strf("%s: write past the end of dynamic shared memory: byte %zu "
                                 "(offset %zu past the %zu bytes given at launch) was overwritten",
                                 where_str(w).c_str(), j->smem + i, i, j->smem));
                break;
            }
        }
    }
done:
    w->block_start_ns.store(0, std::memory_order_relaxed);
    if (w->fault == FILO_EMU_FAULT_WATCHDOG) {
        snprintf(w->fault_msg, sizeof w->fault_msg,
                 "%s thread %s: block ran longer than the watchdog limit FILO_EMU_WATCHDOG_S=%g s "
                 "(a spin-wait on a value that another thread must set? fibers only switch at "
                 "__syncthreads, warp collectives and __nanosleep)",
                 where_str(w).c_str(), thread_str(w, w->fault_thread).c_str(), cfg().watchdog_s);
    }
    if (w->fault) {
#if FILO_EMU_ASAN
        for (unsigned i = 0; i < n; i++)
            ASAN_UNPOISON_MEMORY_REGION(w->fibers[i].stack_lo, w->fibers[i].stack_size);
#endif
        std::lock_guard<std::mutex> lock(j->mu);
        if (!j->faulted) {
            j->faulted = true;
            j->fault = w->fault;
            j->err = w->fault_err;
            j->msg = w->fault_msg;
        }
        j->abort.store(true);
    }
    tls.thread = nullptr;
}

void run_blocks(Worker *w, Job *j)
{
    w->job = j;
    w->schedule = j->schedule;
    tls.block_dim = j->block;
    tls.grid_dim = j->grid;
    tls.dyn_smem = w->smem;
    for (;;) {
        if (j->abort.load(std::memory_order_relaxed))
            break;
        unsigned long long k = j->next.fetch_add(1, std::memory_order_relaxed);
        if (k >= j->nblocks)
            break;
        unsigned long long b = k;
        if (j->schedule == SCHED_REVERSE)
            b = j->nblocks - 1 - k;
        else if (j->schedule == SCHED_RANDOM && !j->order.empty())
            b = j->order[k];
        run_block(w, j, b);
    }
    w->job = nullptr;
}

/* ---------------------------------------------------------------------------------------------
 * The worker pool and the watchdog.
 * ------------------------------------------------------------------------------------------- */
struct Pool {
    std::mutex mu;
    std::condition_variable cv, done_cv;
    Job *job = nullptr;
    unsigned long long gen = 0;
    int participants = 0;
    std::vector<std::thread> threads;
};
Pool *g_pool;
std::mutex g_launch_mu;
int g_watchdog_signal = 0;

void pool_thread()
{
    this_worker();
    unsigned long long seen = 0;
    for (;;) {
        Job *j;
        {
            std::unique_lock<std::mutex> lock(g_pool->mu);
            g_pool->cv.wait(lock, [&] { return g_pool->gen != seen && g_pool->job; });
            seen = g_pool->gen;
            j = g_pool->job;
            g_pool->participants++;
        }
        run_blocks(t_worker, j);
        {
            std::lock_guard<std::mutex> lock(g_pool->mu);
            if (--g_pool->participants == 0)
                g_pool->done_cv.notify_all();
        }
    }
}

void watchdog_handler(int)
{
    Worker *w = t_worker;
    if (!w || !w->running || !watchdog_fired(w))
        return;
    Fiber *f = w->running;
    char probe;
    unsigned char *here = reinterpret_cast<unsigned char *>(&probe);
    if (here < f->stack_lo || here >= f->stack_lo + f->stack_size)
        return; /* not on the fiber's stack yet: the scheduler sees the flag */
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, g_watchdog_signal);
    pthread_sigmask(SIG_UNBLOCK, &s, nullptr);
    w->fault = FILO_EMU_FAULT_WATCHDOG;
    w->fault_err = cudaErrorLaunchTimeout;
    w->fault_thread = f->index;
    f->state = F_FAULTED;
    suspend(w, f);
}

void watchdog_thread()
{
    double limit_s = cfg().watchdog_s;
    long long limit = (long long)(limit_s * 1e9);
    auto period = std::chrono::milliseconds(std::clamp((long long)(limit_s * 1000 / 8), 5LL, 500LL));
    for (;;) {
        std::this_thread::sleep_for(period);
        std::lock_guard<std::mutex> lock(g_workers_mu);
        long long t = now_ns();
        for (Worker *w : g_workers) {
            unsigned long long seq = w->block_seq.load(std::memory_order_acquire);
            long long start = w->block_start_ns.load(std::memory_order_relaxed);
            if (!start || w->block_seq.load(std::memory_order_acquire) != seq || t - start < limit)
                continue;
            w->fire_seq.store(seq);
            /* repeated each period until the block ends: the first signal may land while the
             * worker is between fibers */
            pthread_kill(w->thread, g_watchdog_signal);
        }
    }
}

void init_once()
{
    static std::once_flag once;
    std::call_once(once, [] {
        Config &c = cfg();
        g_pool = new Pool;
        for (int i = 1; i < c.workers; i++) {
            g_pool->threads.emplace_back(pool_thread);
            g_pool->threads.back().detach();
        }
        if (c.watchdog_s > 0) {
            g_watchdog_signal = SIGRTMIN + 3;
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = watchdog_handler;
            sa.sa_flags = SA_RESTART;
            sigemptyset(&sa.sa_mask);
            sigaction(g_watchdog_signal, &sa, nullptr);
            std::thread(watchdog_thread).detach();
        }
    });
}

void run_job(Job *j)
{
    Worker *w = this_worker();
    if (j->nblocks == 1 || cfg().workers == 1) {
        run_blocks(w, j);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(g_pool->mu);
        g_pool->job = j;
        g_pool->gen++;
    }
    g_pool->cv.notify_all();
    run_blocks(w, j);
    std::unique_lock<std::mutex> lock(g_pool->mu);
    g_pool->job = nullptr; /* late helpers do not join */
    g_pool->done_cv.wait(lock, [] { return g_pool->participants == 0; });
}

/* ---------------------------------------------------------------------------------------------
 * Coverage: the distinct kernel names this process launched, appended to a file as they appear.
 * ------------------------------------------------------------------------------------------- */
std::set<std::string> &g_kernels_seen = *new std::set<std::string>;

std::string base_name(const char *expr)
{
    std::string s;
    for (const char *p = expr; *p; p++)
        if (*p != ' ' && *p != '(' && *p != ')' && *p != '&')
            s += *p;
    size_t lt = s.find('<');
    if (lt != std::string::npos)
        s.resize(lt);
    size_t colon = s.rfind("::");
    if (colon != std::string::npos)
        s = s.substr(colon + 2);
    return s;
}

void record_coverage(const char *name)
{
    std::string b = base_name(name);
    if (!g_kernels_seen.insert(b).second || cfg().coverage_file.empty())
        return;
    int fd = open(cfg().coverage_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    b += '\n';
    ssize_t r = write(fd, b.data(), b.size());
    (void)r;
    close(fd);
}

std::mutex g_attr_mu;
std::map<const void *, int> &g_max_dyn_smem = *new std::map<const void *, int>;

/* ---------------------------------------------------------------------------------------------
 * Race check: run the launch under two schedules from the same memory image and compare.
 * ------------------------------------------------------------------------------------------- */
struct Image {
    std::vector<std::pair<unsigned char *, std::vector<unsigned char>>> parts;
};

Image snapshot()
{
    Image img;
    std::lock_guard<std::mutex> lock(g_mem_mu);
    for (auto &a : g_allocs) {
        unsigned char *p = reinterpret_cast<unsigned char *>(a.first);
        img.parts.emplace_back(p, std::vector<unsigned char>(p, p + a.second.size));
    }
    return img;
}

void restore(const Image &img)
{
    for (auto &p : img.parts)
        memcpy(p.first, p.second.data(), p.second.size());
}

void execute(Job &j, Schedule sched)
{
    j.schedule = sched;
    j.next = 0;
    j.order.clear();
    if (sched == SCHED_RANDOM && j.nblocks <= (1u << 22)) {
        j.order.resize(j.nblocks);
        for (unsigned long long i = 0; i < j.nblocks; i++)
            j.order[i] = i;
        unsigned long long s = j.seed ^ j.launch_id;
        for (unsigned long long i = j.nblocks; i > 1; i--)
            std::swap(j.order[i - 1], j.order[next_rand(s) % i]);
    }
    run_job(&j);
}

} /* namespace */

void launch(const char *name, const void *fn_id, dim3 grid, dim3 block, size_t smem,
            cudaStream_t stream, InvokeFn invoke, void *ctx, const char *file, int line)
{
    init_once();
    std::lock_guard<std::mutex> launch_lock(g_launch_mu);
    unsigned long long id = g_launches.fetch_add(1);
    record_coverage(name);
    std::string where = strf("kernel '%s' launched at %s:%d", base_name(name).c_str(), file, line);
    if (!stream_ok(stream)) {
        report(FILO_EMU_FAULT_CONFIG, cudaErrorInvalidResourceHandle, false,
               where + ": invalid or destroyed stream");
        return;
    }
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (!grid.x || !grid.y || !grid.z || !block.x || !block.y || !block.z) {
        report(FILO_EMU_FAULT_CONFIG, cudaErrorInvalidConfiguration, false,
               where + strf(": zero-sized launch: grid (%u,%u,%u) block (%u,%u,%u)", grid.x, grid.y,
                            grid.z, block.x, block.y, block.z));
        return;
    }
    if (block.x > 1024 || block.y > 1024 || block.z > 64 || threads > kMaxThreads) {
        report(FILO_EMU_FAULT_CONFIG, cudaErrorInvalidConfiguration, false,
               where + strf(": block (%u,%u,%u) = %llu threads exceeds the limits (1024 threads, "
                            "dims 1024x1024x64)", block.x, block.y, block.z, threads));
        return;
    }
    if (grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        report(FILO_EMU_FAULT_CONFIG, cudaErrorInvalidConfiguration, false,
               where + strf(": grid (%u,%u,%u) exceeds the limits (2^31-1 x 65535 x 65535)", grid.x,
                            grid.y, grid.z));
        return;
    }
    size_t allowed = kSmemDefault;
    {
        std::lock_guard<std::mutex> lock(g_attr_mu);
        auto it = g_max_dyn_smem.find(fn_id);
        if (it != g_max_dyn_smem.end())
            allowed = std::max(allowed, (size_t)it->second);
    }
    if (smem > allowed) {
        report(FILO_EMU_FAULT_CONFIG, cudaErrorInvalidValue, false,
               where + strf(": %zu bytes of dynamic shared memory exceed the %zu allowed (%s)", smem,
                            allowed,
                            smem > kSmemOptin ? "the device maximum is 232448 (227 KB)"
                                              : "above 48 KB needs cudaFuncSetAttribute("
                                                "cudaFuncAttributeMaxDynamicSharedMemorySize)"));
        return;
    }
    Job j;
    j.name = name;
    j.file = file;
    j.line = line;
    j.invoke = invoke;
    j.ctx = ctx;
    j.grid = uint3{grid.x, grid.y, grid.z};
    j.block = uint3{block.x, block.y, block.z};
    j.smem = smem;
    j.nthreads = (unsigned)threads;
    j.nblocks = (unsigned long long)grid.x * grid.y * grid.z;
    j.seed = cfg().seed;
    j.launch_id = id;
    std::string base = base_name(name);
    j.name = base.c_str();

    Schedule primary = cfg().schedule;
    bool race = cfg().racecheck.load();
    Image before;
    if (race)
        before = snapshot();
    execute(j, primary);
    if (race && !j.faulted) {
        Image after = snapshot();
        restore(before);
        Schedule other = primary == SCHED_REVERSE ? SCHED_FORWARD : SCHED_REVERSE;
        execute(j, other);
        if (!j.faulted) {
            for (size_t k = 0; k < after.parts.size() && !j.faulted; k++) {
                const auto &p = after.parts[k];
                if (memcmp(p.first, p.second.data(), p.second.size()) == 0)
                    continue;
                size_t off = 0;
                while (p.first[off] == p.second[off])
                    off++;
                j.faulted = true;
                j.fault = FILO_EMU_FAULT_RACE;
                j.err = cudaErrorLaunchFailure;
                j.msg = strf("kernel '%s' (launched at %s:%d): result depends on the thread schedule: "
                             "byte %zu of the allocation at %p (%zu bytes) is 0x%02x under one schedule "
                             "and 0x%02x under the other (missing __syncthreads? a race between "
                             "blocks? order-dependent float atomics also show here)",
                             j.name, file, line, off, (void *)p.first, p.second.size(),
                             p.second[off], p.first[off]);
            }
        }
        restore(after);
    }
    if (j.faulted)
        report(j.fault, j.err, true, j.msg);
}

bool capturing(cudaStream_t stream)
{
    std::lock_guard<std::mutex> lock(g_capture_mu);
    return g_captures.count(stream) != 0;
}

void capture_launch(const char *name, const void *fn_id, dim3 grid, dim3 block, size_t smem,
                    cudaStream_t stream, InvokeFn invoke, std::shared_ptr<void> ctx, const char *file,
                    int line)
{
    capture_record(stream, [=](cudaStream_t replay) {
        launch(name, fn_id, grid, block, smem, replay, invoke, ctx.get(), file, line);
    });
}

int block_barrier(int kind, int pred, const char *file, int line)
{
    Fiber *f = cur_fiber();
    Worker *w = f->worker;
    f->state = F_AT_BARRIER;
    f->bar_kind = kind;
    f->pred = pred;
    f->file = file;
    f->line = line;
    suspend(w, f);
    return w->bar_result;
}

unsigned long long warp_collective(int op, unsigned mask, unsigned long long value, int b, int width,
                                   const char *file, int line)
{
    Fiber *f = cur_fiber();
    Worker *w = f->worker;
    Warp &wp = w->warps[f->warp];
    unsigned lane = f->lane, bit = 1u << lane;
    if (!(mask & bit))
        fiber_fault(f, FILO_EMU_FAULT_WARP, cudaErrorIllegalInstruction,
                    "%s thread %s: %s at %s:%d: mask 0x%08x does not include the calling lane %u",
                    where_str(w).c_str(), thread_str(w, f->index).c_str(), op_name(op), file, line,
                    mask, lane);
    if (mask & ~wp.exists)
        fiber_fault(f, FILO_EMU_FAULT_WARP, cudaErrorIllegalInstruction,
                    "%s thread %s: %s at %s:%d: mask 0x%08x names lanes that do not exist (this warp "
                    "has %d threads)",
                    where_str(w).c_str(), thread_str(w, f->index).c_str(), op_name(op), file, line,
                    mask, __builtin_popcount(wp.exists));
    if (width < 1 || width > 32 || (width & (width - 1)))
        fiber_fault(f, FILO_EMU_FAULT_WARP, cudaErrorIllegalInstruction,
                    "%s thread %s: %s at %s:%d: width %d is not a power of two in [1, 32]",
                    where_str(w).c_str(), thread_str(w, f->index).c_str(), op_name(op), file, line, width);
    wp.op[lane] = op;
    wp.mask[lane] = mask;
    wp.b[lane] = b;
    wp.width[lane] = width;
    wp.val[lane] = value;
    wp.file[lane] = file;
    wp.line[lane] = line;
    wp.arrived |= bit;
    if ((wp.arrived & mask) == mask) {
        warp_complete(w, wp, f->warp, mask, f);
        if (w->schedule == SCHED_RANDOM) {
            w->queue.push_back(f);
            suspend(w, f);
        }
        return wp.res[lane];
    }
    f->state = F_AT_WARP;
    suspend(w, f);
    return wp.res[lane];
}

unsigned warp_active_mask()
{
    Fiber *f = cur_fiber();
    Worker *w = f->worker;
    unsigned m = 0;
    unsigned base = f->warp * 32;
    for (unsigned l = 0; l < 32 && base + l < w->nthreads; l++)
        if (w->fibers[base + l].state != F_DONE)
            m |= 1u << l;
    return m;
}

void yield_thread()
{
    Fiber *f = cur_fiber();
    Worker *w = f->worker;
    w->queue.push_back(f);
    suspend(w, f);
}

} /* namespace filo_emu */

/* =============================================================================================
 * The CUDA runtime API.
 * =========================================================================================== */
using namespace filo_emu;

struct CUstream_st {
    unsigned flags;
    int priority;
};
struct CUevent_st {
    unsigned flags;
    bool recorded;
    double t_ms;
};

namespace {

bool event_ok(cudaEvent_t e)
{
    std::lock_guard<std::mutex> lock(g_handle_mu);
    return e && g_events.count(e) != 0;
}

#define EMU_CHECK_STREAM(s)                                                                       \
    do {                                                                                          \
        if (!stream_ok(s))                                                                        \
            return ret(cudaErrorInvalidResourceHandle);                                           \
    } while (0)

#define EMU_CHECK_DEVICE(d)                                                                       \
    do {                                                                                          \
        if ((d) != 0)                                                                             \
            return ret(cudaErrorInvalidDevice);                                                   \
    } while (0)

cudaError_t host_alloc(void **p, size_t n, AllocKind kind)
{
    if (!p)
        return ret(cudaErrorInvalidValue);
    *p = nullptr;
    if (n == 0)
        return cudaSuccess;
    std::lock_guard<std::mutex> lock(g_mem_mu);
    if (kind == ALLOC_DEVICE && g_device_bytes + n > cfg().total_mem)
        return ret(cudaErrorMemoryAllocation);
    void *q = nullptr;
    if (posix_memalign(&q, 256, n) != 0)
        return ret(kind == ALLOC_DEVICE ? cudaErrorMemoryAllocation : cudaErrorMemoryAllocation);
    memset(q, cfg().poison, n);
    g_allocs[(uintptr_t)q] = Alloc{n, kind};
    if (kind == ALLOC_DEVICE)
        g_device_bytes += n;
    *p = q;
    return cudaSuccess;
}

cudaError_t host_free(void *p, AllocKind kind)
{
    if (!p)
        return cudaSuccess;
    std::lock_guard<std::mutex> lock(g_mem_mu);
    auto it = g_allocs.find((uintptr_t)p);
    if (it == g_allocs.end() || it->second.kind != kind) {
        report(FILO_EMU_FAULT_NONE, cudaErrorInvalidValue, false,
               strf("%s(%p): not a live %s allocation", kind == ALLOC_DEVICE ? "cudaFree" : "cudaFreeHost",
                    p, kind == ALLOC_DEVICE ? "device" : "pinned host"));
        return cudaErrorInvalidValue;
    }
    if (kind == ALLOC_DEVICE)
        g_device_bytes -= it->second.size;
    g_allocs.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t do_copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind, bool async)
{
    bool pageable = false;
    cudaError_t e = check_copy(dst, src, n, kind, &pageable);
    if (e)
        return ret(e);
    if (async && pageable)
        g_implicit_syncs.fetch_add(1, std::memory_order_relaxed);
    if (n)
        memmove(dst, src, n);
    return cudaSuccess;
}

cudaError_t do_memset(void *p, int v, size_t n)
{
    if (n == 0)
        return cudaSuccess;
    if (classify(p, n) != PTR_DEVICE) {
        report(FILO_EMU_FAULT_NONE, cudaErrorInvalidValue, false,
               strf("cudaMemset(%p, %zu bytes): not inside one device allocation", p, n));
        return cudaErrorInvalidValue;
    }
    memset(p, v, n);
    return cudaSuccess;
}

} /* namespace */

extern "C" {

cudaError_t cudaGetDeviceCount(int *count)
{
    if (!count)
        return ret(cudaErrorInvalidValue);
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    EMU_CHECK_DEVICE(device);
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    if (!device)
        return ret(cudaErrorInvalidValue);
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaSetDeviceFlags(unsigned int) { return cudaSuccess; }

cudaError_t cudaGetDeviceFlags(unsigned int *flags)
{
    if (!flags)
        return ret(cudaErrorInvalidValue);
    *flags = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
    EMU_CHECK_DEVICE(device);
    if (!p)
        return ret(cudaErrorInvalidValue);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "filo CUDA emulator (sm_90)");
    p->totalGlobalMem = cfg().total_mem;
    p->sharedMemPerBlock = kSmemDefault;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->memPitch = (size_t)1 << 31;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024;
    p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = 65535;
    p->maxGridSize[2] = 65535;
    p->totalConstMem = 65536;
    p->major = 9;
    p->minor = 0;
    p->textureAlignment = 512;
    p->texturePitchAlignment = 32;
    p->multiProcessorCount = kSmCount;
    p->canMapHostMemory = 1;
    p->concurrentKernels = 1;
    p->asyncEngineCount = 2;
    p->unifiedAddressing = 1;
    p->memoryBusWidth = 5120;
    p->l2CacheSize = 50 * 1024 * 1024;
    p->maxThreadsPerMultiProcessor = 2048;
    p->streamPrioritiesSupported = 1;
    p->globalL1CacheSupported = 1;
    p->localL1CacheSupported = 1;
    p->sharedMemPerMultiprocessor = 228 * 1024;
    p->regsPerMultiprocessor = 65536;
    p->managedMemory = 1;
    p->computePreemptionSupported = 1;
    p->cooperativeLaunch = 1;
    p->sharedMemPerBlockOptin = kSmemOptin;
    p->maxBlocksPerMultiProcessor = 32;
    p->reservedSharedMemPerBlock = 1024;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    EMU_CHECK_DEVICE(device);
    if (!value)
        return ret(cudaErrorInvalidValue);
    int v = 0;
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: v = 1024; break;
    case cudaDevAttrMaxBlockDimX: v = 1024; break;
    case cudaDevAttrMaxBlockDimY: v = 1024; break;
    case cudaDevAttrMaxBlockDimZ: v = 64; break;
    case cudaDevAttrMaxGridDimX: v = 0x7fffffff; break;
    case cudaDevAttrMaxGridDimY: v = 65535; break;
    case cudaDevAttrMaxGridDimZ: v = 65535; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: v = (int)kSmemDefault; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: v = (int)kSmemOptin; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: v = 228 * 1024; break;
    case cudaDevAttrTotalConstantMemory: v = 65536; break;
    case cudaDevAttrWarpSize: v = 32; break;
    case cudaDevAttrMaxRegistersPerBlock: v = 65536; break;
    case cudaDevAttrMaxRegistersPerMultiprocessor: v = 65536; break;
    case cudaDevAttrMultiProcessorCount: v = kSmCount; break;
    case cudaDevAttrComputeCapabilityMajor: v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: v = 0; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: v = 2048; break;
    case cudaDevAttrMaxBlocksPerMultiprocessor: v = 32; break;
    case cudaDevAttrL2CacheSize: v = 50 * 1024 * 1024; break;
    case cudaDevAttrGlobalMemoryBusWidth: v = 5120; break;
    case cudaDevAttrClockRate: v = 1980000; break;
    case cudaDevAttrMemoryClockRate: v = 2619000; break;
    case cudaDevAttrUnifiedAddressing: v = 1; break;
    case cudaDevAttrConcurrentKernels: v = 1; break;
    case cudaDevAttrAsyncEngineCount: v = 2; break;
    case cudaDevAttrCanMapHostMemory: v = 1; break;
    case cudaDevAttrManagedMemory: v = 1; break;
    case cudaDevAttrCooperativeLaunch: v = 1; break;
    case cudaDevAttrStreamPrioritiesSupported: v = 1; break;
    case cudaDevAttrComputeMode: v = cudaComputeModeDefault; break;
    default: v = 0;
    }
    *value = v;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest)
{
    if (least)
        *least = 0;
    if (greatest)
        *greatest = -5;
    return cudaSuccess;
}

cudaError_t cudaDeviceSetLimit(enum cudaLimit, size_t) { return cudaSuccess; }

cudaError_t cudaDeviceGetLimit(size_t *value, enum cudaLimit limit)
{
    if (!value)
        return ret(cudaErrorInvalidValue);
    *value = limit == cudaLimitStackSize ? cfg().stack_bytes : 0;
    return cudaSuccess;
}

cudaError_t cudaDeviceCanAccessPeer(int *can, int, int)
{
    if (!can)
        return ret(cudaErrorInvalidValue);
    *can = 0;
    return cudaSuccess;
}

cudaError_t cudaDeviceReset(void) { return cudaSuccess; }

cudaError_t cudaDeviceSynchronize(void) { return sync_point(); }

cudaError_t cudaRuntimeGetVersion(int *v)
{
    if (!v)
        return ret(cudaErrorInvalidValue);
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v)
{
    if (!v)
        return ret(cudaErrorInvalidValue);
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = t_last_error;
    t_last_error = cudaSuccess;
    int p = g_pending_error.exchange(cudaSuccess);
    if (e == cudaSuccess)
        e = (cudaError_t)p;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    cudaError_t e = t_last_error;
    if (e == cudaSuccess)
        e = (cudaError_t)g_pending_error.load();
    return e;
}

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
#define EMU_ERR(name, text) case name: return #name;
#include "cuda_emu_errors.inc"
#undef EMU_ERR
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
#define EMU_ERR(name, text) case name: return text;
#include "cuda_emu_errors.inc"
#undef EMU_ERR
    default: return "unrecognized error code";
    }
}

/* ---- memory ---- */
cudaError_t cudaMalloc(void **p, size_t n)
{
    cudaError_t e = host_alloc(p, n, ALLOC_DEVICE);
    if (e == cudaErrorMemoryAllocation) {
        std::lock_guard<std::mutex> lock(g_detail_mu);
        g_detail = strf("cudaMalloc(%zu): out of memory: %zu of %zu bytes in use (FILO_EMU_MEMORY_MB)",
                        n, g_device_bytes, cfg().total_mem);
    }
    return e;
}

cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s)
{
    EMU_CHECK_STREAM(s);
    return cudaMalloc(p, n);
}

cudaError_t cudaFree(void *p)
{
    if (p)
        g_implicit_syncs.fetch_add(1, std::memory_order_relaxed);
    return ret(host_free(p, ALLOC_DEVICE));
}

cudaError_t cudaFreeAsync(void *p, cudaStream_t s)
{
    EMU_CHECK_STREAM(s);
    return ret(host_free(p, ALLOC_DEVICE));
}

cudaError_t cudaMallocHost(void **p, size_t n)
{
    g_implicit_syncs.fetch_add(1, std::memory_order_relaxed);
    return host_alloc(p, n, ALLOC_PINNED);
}

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned int)
{
    g_implicit_syncs.fetch_add(1, std::memory_order_relaxed);
    return host_alloc(p, n, ALLOC_PINNED);
}

cudaError_t cudaFreeHost(void *p)
{
    if (p)
        g_implicit_syncs.fetch_add(1, std::memory_order_relaxed);
    return ret(host_free(p, ALLOC_PINNED));
}

cudaError_t cudaHostRegister(void *p, size_t n, unsigned int)
{
    if (!p || !n)
        return ret(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_mem_mu);
    if (find_alloc(p, 1, nullptr))
        return ret(cudaErrorHostMemoryAlreadyRegistered);
    g_allocs[(uintptr_t)p] = Alloc{n, ALLOC_REGISTERED};
    return cudaSuccess;
}

cudaError_t cudaHostUnregister(void *p)
{
    std::lock_guard<std::mutex> lock(g_mem_mu);
    auto it = g_allocs.find((uintptr_t)p);
    if (it == g_allocs.end() || it->second.kind != ALLOC_REGISTERED)
        return ret(cudaErrorHostMemoryNotRegistered);
    g_allocs.erase(it);
    return cudaSuccess;
}

cudaError_t cudaHostGetDevicePointer(void **dev, void *host, unsigned int)
{
    if (!dev)
        return ret(cudaErrorInvalidValue);
    *dev = host;
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p)
{
    if (!a)
        return ret(cudaErrorInvalidValue);
    memset(a, 0, sizeof *a);
    PtrClass c = classify(p, 1);
    a->type = c == PTR_DEVICE ? cudaMemoryTypeDevice : c == PTR_PAGEABLE ? cudaMemoryTypeUnregistered : cudaMemoryTypeHost;
    a->device = 0;
    a->devicePointer = c == PTR_PAGEABLE ? nullptr : const_cast<void *>(p);
    a->hostPointer = c == PTR_DEVICE || c == PTR_PAGEABLE ? nullptr : const_cast<void *>(p);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total)
{
    std::lock_guard<std::mutex> lock(g_mem_mu);
    if (free_bytes)
        *free_bytes = cfg().total_mem - g_device_bytes;
    if (total)
        *total = cfg().total_mem;
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    cudaError_t e = sync_point();
    cudaError_t c = do_copy(dst, src, n, kind, false);
    return e ? e : c;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s)
{
    EMU_CHECK_STREAM(s);
    if (capture_record(s, [=](cudaStream_t) { do_copy(dst, src, n, kind, true); }))
        return cudaSuccess;
    return do_copy(dst, src, n, kind, true);
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                              size_t height, enum cudaMemcpyKind kind, cudaStream_t s)
{
    EMU_CHECK_STREAM(s);
    if (width > dpitch || width > spitch)
        return ret(cudaErrorInvalidPitchValue);
    for (size_t r = 0; r < height; r++) {
        cudaError_t e = do_copy(static_cast<char *>(dst) + r * dpitch,
                                static_cast<const char *>(src) + r * spitch, width, kind, r == 0);
        if (e)
            return e;
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                         size_t height, enum cudaMemcpyKind kind)
{
    cudaError_t e = sync_point();
    cudaError_t c = cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, kind, nullptr);
    return e ? e : c;
}

cudaError_t cudaMemcpyPeerAsync(void *dst, int dd, const void *src, int sd, size_t n, cudaStream_t s)
{
    EMU_CHECK_DEVICE(dd);
    EMU_CHECK_DEVICE(sd);
    return cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s);
}

cudaError_t cudaMemcpyPeer(void *dst, int dd, const void *src, int sd, size_t n)
{
    EMU_CHECK_DEVICE(dd);
    EMU_CHECK_DEVICE(sd);
    return cudaMemcpy(dst, src, n, cudaMemcpyDeviceToDevice);
}

/* __device__/__constant__ variables are ordinary host globals in the emulator. */
cudaError_t cudaMemcpyToSymbol(const void *symbol, const void *src, size_t n, size_t offset, enum cudaMemcpyKind)
{
    if (!symbol || (n && !src))
        return ret(cudaErrorInvalidValue);
    memcpy(static_cast<char *>(const_cast<void *>(symbol)) + offset, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpyFromSymbol(void *dst, const void *symbol, size_t n, size_t offset, enum cudaMemcpyKind)
{
    if (!symbol || (n && !dst))
        return ret(cudaErrorInvalidValue);
    memcpy(dst, static_cast<const char *>(symbol) + offset, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpyToSymbolAsync(const void *symbol, const void *src, size_t n, size_t offset,
                                    enum cudaMemcpyKind kind, cudaStream_t s)
{
    EMU_CHECK_STREAM(s);
    return cudaMemcpyToSymbol(symbol, src, n, offset, kind);
}

cudaError_t cudaMemcpyFromSymbolAsync(void *dst, const void *symbol, size_t n, size_t offset,
                                      enum cudaMemcpyKind kind, cudaStream_t s)
{
    EMU_CHECK_STREAM(s);
    return cudaMemcpyFromSymbol(dst, symbol, n, offset, kind);
}

cudaError_t cudaMemset(void *p, int v, size_t n)
{
    cudaError_t e = sync_point();
    cudaError_t c = do_memset(p, v, n);
    return ret(e ? e : c);
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    EMU_CHECK_STREAM(s);
    if (capture_record(s, [=](cudaStream_t) { do_memset(p, v, n); }))
        return cudaSuccess;
    return ret(do_memset(p, v, n));
}

/* ---- streams ---- */
cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned int flags, int priority)
{
    if (!s)
        return ret(cudaErrorInvalidValue);
    CUstream_st *h = new CUstream_st{flags, priority};
    std::lock_guard<std::mutex> lock(g_handle_mu);
    g_streams.insert(h);
    *s = h;
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    return cudaStreamCreateWithPriority(s, flags, 0);
}

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithPriority(s, 0, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread)
        return ret(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> lock(g_handle_mu);
    if (!g_streams.erase(s))
        return ret(cudaErrorInvalidResourceHandle);
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    EMU_CHECK_STREAM(s);
    return sync_point();
}

cudaError_t cudaStreamQuery(cudaStream_t s)
{
    EMU_CHECK_STREAM(s);
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int)
{
    EMU_CHECK_STREAM(s);
    if (!event_ok(e))
        return ret(cudaErrorInvalidResourceHandle);
    return cudaSuccess;
}

cudaError_t cudaStreamGetPriority(cudaStream_t s, int *priority)
{
    EMU_CHECK_STREAM(s);
    if (!priority)
        return ret(cudaErrorInvalidValue);
    *priority = (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) ? 0 : s->priority;
    return cudaSuccess;
}

cudaError_t cudaStreamGetFlags(cudaStream_t s, unsigned int *flags)
{
    EMU_CHECK_STREAM(s);
    if (!flags)
        return ret(cudaErrorInvalidValue);
    *flags = (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) ? 0 : s->flags;
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *status)
{
    EMU_CHECK_STREAM(s);
    if (!status)
        return ret(cudaErrorInvalidValue);
    *status = filo_emu::capturing(s) ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}

cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void *data)
{
    EMU_CHECK_STREAM(s);
    if (!fn)
        return ret(cudaErrorInvalidValue);
    if (capture_record(s, [=](cudaStream_t) { fn(data); }))
        return cudaSuccess;
    fn(data);
    return cudaSuccess;
}

/* ---- stream capture and graphs: a graph is the recorded sequence, replayed in order ---- */
struct CUgraph_st {
    std::vector<std::function<void(cudaStream_t)>> items;
};
struct CUgraphExec_st {
    std::vector<std::function<void(cudaStream_t)>> items;
};

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode)
{
    EMU_CHECK_STREAM(s);
    if (s == nullptr || s == cudaStreamLegacy)
        return ret(cudaErrorStreamCaptureUnsupported);
    std::lock_guard<std::mutex> lock(g_capture_mu);
    if (g_captures.count(s))
        return ret(cudaErrorIllegalState);
    g_captures[s] = new Capture;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph)
{
    EMU_CHECK_STREAM(s);
    if (!graph)
        return ret(cudaErrorInvalidValue);
    Capture *c;
    {
        std::lock_guard<std::mutex> lock(g_capture_mu);
        auto it = g_captures.find(s);
        if (it == g_captures.end())
            return ret(cudaErrorIllegalState);
        c = it->second;
        g_captures.erase(it);
    }
    *graph = nullptr;
    if (c->invalidated) {
        delete c;
        return ret(cudaErrorStreamCaptureInvalidated);
    }
    *graph = new CUgraph_st{std::move(c->items)};
    delete c;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long)
{
    if (!exec || !graph)
        return ret(cudaErrorInvalidValue);
    *exec = new CUgraphExec_st{graph->items};
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s)
{
    EMU_CHECK_STREAM(s);
    if (!exec)
        return ret(cudaErrorInvalidValue);
    if (filo_emu::capturing(s))
        return ret(cudaErrorStreamCaptureUnsupported);
    for (auto &item : exec->items)
        item(s);
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    delete exec;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    delete graph;
    return cudaSuccess;
}

int filo_emu_host_task(void *stream, void (*fn)(void *arg), const void *arg, size_t size)
{
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (!stream_ok(s))
        return ret(cudaErrorInvalidResourceHandle);
    if (filo_emu::capturing(s)) {
        std::shared_ptr<std::vector<unsigned char>> copy = std::make_shared<std::vector<unsigned char>>(
            static_cast<const unsigned char *>(arg), static_cast<const unsigned char *>(arg) + size);
        capture_record(s, [=](cudaStream_t) { fn(copy->data()); });
        return cudaSuccess;
    }
    fn(const_cast<void *>(arg));
    return cudaSuccess;
}

cudaError_t cudaStreamAddCallback(cudaStream_t s, cudaStreamCallback_t cb, void *data, unsigned int flags)
{
    EMU_CHECK_STREAM(s);
    if (!cb || flags)
        return ret(cudaErrorInvalidValue);
    cb(s, cudaSuccess, data);
    return cudaSuccess;
}

/* ---- events ---- */
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    if (!e)
        return ret(cudaErrorInvalidValue);
    CUevent_st *h = new CUevent_st{flags, false, 0.0};
    std::lock_guard<std::mutex> lock(g_handle_mu);
    g_events.insert(h);
    *e = h;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    std::lock_guard<std::mutex> lock(g_handle_mu);
    if (!e || !g_events.erase(e))
        return ret(cudaErrorInvalidResourceHandle);
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    EMU_CHECK_STREAM(s);
    if (!event_ok(e))
        return ret(cudaErrorInvalidResourceHandle);
    e->recorded = true;
    e->t_ms = now_ms();
    return cudaSuccess;
}

cudaError_t cudaEventRecordWithFlags(cudaEvent_t e, cudaStream_t s, unsigned int)
{
    return cudaEventRecord(e, s);
}

cudaError_t cudaEventQuery(cudaEvent_t e)
{
    if (!event_ok(e))
        return ret(cudaErrorInvalidResourceHandle);
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    if (!event_ok(e))
        return ret(cudaErrorInvalidResourceHandle);
    return sync_point();
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    if (!ms)
        return ret(cudaErrorInvalidValue);
    if (!event_ok(a) || !event_ok(b))
        return ret(cudaErrorInvalidResourceHandle);
    if ((a->flags | b->flags) & cudaEventDisableTiming)
        return ret(cudaErrorInvalidResourceHandle);
    if (!a->recorded || !b->recorded)
        return ret(cudaErrorInvalidResourceHandle);
    *ms = (float)(b->t_ms - a->t_ms);
    return cudaSuccess;
}

/* ---- kernels ---- */
cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value)
{
    if (!func)
        return ret(cudaErrorInvalidDeviceFunction);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || (size_t)value > kSmemOptin) {
            report(FILO_EMU_FAULT_CONFIG, cudaErrorInvalidValue, false,
                   strf("cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize, %d): over "
                        "the device maximum of 232448 bytes (227 KB)", value));
            return cudaErrorInvalidValue;
        }
        std::lock_guard<std::mutex> lock(g_attr_mu);
        g_max_dyn_smem[func] = value;
    }
    return cudaSuccess;
}

cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes *a, const void *func)
{
    if (!a || !func)
        return ret(cudaErrorInvalidValue);
    memset(a, 0, sizeof *a);
    a->maxThreadsPerBlock = 1024;
    a->numRegs = 32;
    a->ptxVersion = 90;
    a->binaryVersion = 90;
    std::lock_guard<std::mutex> lock(g_attr_mu);
    auto it = g_max_dyn_smem.find(func);
    a->maxDynamicSharedSizeBytes = it == g_max_dyn_smem.end() ? (int)kSmemDefault : it->second;
    return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, const void *, int block, size_t)
{
    if (!n || block <= 0)
        return ret(cudaErrorInvalidValue);
    *n = std::max(1, std::min(32, 2048 / block));
    return cudaSuccess;
}

/* ---- emulator API ---- */
const char *filo_emu_last_error_detail(void)
{
    static thread_local std::string copy;
    std::lock_guard<std::mutex> lock(g_detail_mu);
    copy = g_detail;
    return copy.c_str();
}

filo_emu_fault filo_emu_last_fault(void)
{
    std::lock_guard<std::mutex> lock(g_detail_mu);
    return g_fault;
}

const char *filo_emu_fault_name(filo_emu_fault f)
{
    switch (f) {
    case FILO_EMU_FAULT_NONE: return "none";
    case FILO_EMU_FAULT_CONFIG: return "launch-configuration";
    case FILO_EMU_FAULT_BARRIER_EXIT: return "exit-before-barrier";
    case FILO_EMU_FAULT_BARRIER_DIVERGENT: return "divergent-barrier";
    case FILO_EMU_FAULT_WARP: return "warp-collective";
    case FILO_EMU_FAULT_SHARED_OOB: return "shared-out-of-bounds";
    case FILO_EMU_FAULT_WATCHDOG: return "watchdog";
    case FILO_EMU_FAULT_RACE: return "schedule-dependent-result";
    }
    return "unknown";
}

void filo_emu_reset_error(void)
{
    {
        std::lock_guard<std::mutex> lock(g_detail_mu);
        g_detail.clear();
        g_fault = FILO_EMU_FAULT_NONE;
    }
    g_pending_error.store(cudaSuccess);
    t_last_error = cudaSuccess;
}

unsigned long long filo_emu_host_sync_count(void) { return g_host_syncs.load(); }
unsigned long long filo_emu_implicit_sync_count(void) { return g_implicit_syncs.load(); }
unsigned long long filo_emu_launch_count(void) { return g_launches.load(); }
const char *filo_emu_schedule_name(void) { return cfg().schedule_name.c_str(); }
int filo_emu_worker_count(void) { return cfg().workers; }

size_t filo_emu_device_bytes_in_use(void)
{
    std::lock_guard<std::mutex> lock(g_mem_mu);
    return g_device_bytes;
}

size_t filo_emu_device_total_bytes(void) { return cfg().total_mem; }
int filo_emu_racecheck_enabled(void) { return cfg().racecheck.load(); }
void filo_emu_set_racecheck(int enabled) { cfg().racecheck.store(enabled != 0); }
int filo_emu_active(void) { return 1; }

} /* extern "C" */
