/* The kernel benchmark harness: time an op on a device (CUDA events on a GPU, the monotonic clock
 * around a synchronized call on the CPU), take the median of many runs, and relate it to what the
 * machine can do at best (the ceilings measured in bench/ceilings.c). Built on the public API only. */
#ifndef FILO_BENCH_HARNESS_H
#define FILO_BENCH_HARNESS_H

#include <filo/filo.h>

#define BENCH_TRY(expr)                   \
    do {                                  \
        filo_status bench_try_s_ = (expr); \
        if (bench_try_s_ != FILO_OK)       \
            return bench_try_s_;           \
    } while (0)

/* The measured ceilings of one device: bytes/s of a large device-to-device copy (read + write
 * counted) and the large square GEMM rate of f32, bf16 and f16 (0 for other dtypes). */
typedef struct bench_ceilings {
    double copy_bytes_per_s;
    double gemm_flops_per_s[FILO_DTYPE_COUNT];
} bench_ceilings;

/* One timed op. setup allocates inputs and returns the case's context; run calls the op once
 * (freeing what it produced); teardown frees the context. bytes: the fewest bytes the op must
 * move (each input read once, each output written once); flops: its arithmetic (0 for ops that
 * are bound by memory). */
typedef struct bench_case {
    const char *name;
    filo_status (*setup)(filo_device device, filo_dtype dtype, const int64_t *dims, void **ctx);
    filo_status (*run)(void *ctx);
    void (*teardown)(void *ctx);
    double (*bytes)(filo_dtype dtype, const int64_t *dims);
    double (*flops)(const int64_t *dims); /* NULL: memory-bound */
} bench_case;

typedef struct bench_options {
    filo_device device;
    int warmup;
    int reps;
    const char *filter; /* only cases whose name contains it; NULL: all */
    int quick;          /* tiny shapes and one repetition: checks that every case runs */
} bench_options;

/* The monotonic clock in milliseconds; qsort's comparison of doubles. */
double bench_now_ms(void);
int bench_cmp_double(const void *a, const void *b);

/* Median milliseconds of `reps` calls of run(ctx) after `warmup` calls. */
filo_status bench_time_ms(filo_device device, int warmup, int reps, filo_status (*run)(void *), void *ctx,
                          double *median_ms);

filo_status bench_measure_ceilings(const bench_options *opt, bench_ceilings *out);
/* The rate of a large square GEMM of dtype on opt->device (tiny with opt->quick). */
filo_status bench_gemm_peak(const bench_options *opt, filo_dtype dtype, double *flops_per_s);

/* `filo bench kernels [--device D] [--reps N] [--filter S] [--quick]`: measures the ceilings,
 * then every case of bench/kernel_cases.c, and prints one table. Returns a process exit code. */
int filo_bench_kernels_main(int argc, char **argv);

#endif
