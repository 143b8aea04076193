#define _POSIX_C_SOURCE 200809L
/* Speed of the CUDA emulator on this machine: the figures in docs/cuda-emulation.md.
 * Usage: bench_emu  (env FILO_EMU_WORKERS / FILO_EMU_SCHEDULE apply) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "emu_test_kernels.h"
#include "filo_emu.h"

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static void *dalloc(size_t n)
{
    void *p = NULL;
    if (cudaMalloc(&p, n) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc failed\n");
        exit(1);
    }
    return p;
}

int main(void)
{
    const int rows = 512, cols = 768;
    float *x = dalloc(sizeof(float) * rows * cols), *y = dalloc(sizeof(float) * rows * cols);
    float *g = dalloc(sizeof(float) * cols), *b = dalloc(sizeof(float) * cols);
    emu_fill(x, rows * cols, 1.5f, 256, 0, 0);
    emu_fill(g, cols, 1.0f, 256, 0, 0);
    emu_fill(b, cols, 0.0f, 256, 0, 0);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now_ms();
        emu_layernorm(x, g, b, y, rows, cols, 0);
        cudaDeviceSynchronize();
        double t = now_ms() - t0;
        best = t < best ? t : best;
    }
    printf("layernorm %dx%d, 256 threads/block: %.1f ms (best of 5, %d workers, schedule %s)\n", rows, cols, best,
           filo_emu_worker_count(), filo_emu_schedule_name());

    const int blocks = 64, threads = 256, rounds = 50;
    float *d = dalloc(sizeof(float) * blocks * threads);
    emu_fill(d, blocks * threads, 0.0f, 256, 0, 0);
    best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now_ms();
        emu_barrier_heavy(d, blocks, threads, rounds, 0);
        double t = now_ms() - t0;
        best = t < best ? t : best;
    }
    double per = best * 1e6 / ((double)blocks * threads * rounds * 2);
    printf("barrier-heavy %d blocks x %d threads x %d rounds (2 barriers each): %.1f ms, %.1f ns per thread-barrier\n",
           blocks, threads, rounds, best, per);

    const int n = 1 << 20;
    float *f = dalloc(sizeof(float) * n);
    best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now_ms();
        emu_fill(f, n, 2.0f, 256, 0, 0);
        double t = now_ms() - t0;
        best = t < best ? t : best;
    }
    printf("elementwise fill of %d floats (256 threads/block): %.1f ms, %.1f ns per thread\n", n, best, best * 1e6 / n);

    best = 1e30;
    for (int r = 0; r < 200; r++) {
        double t0 = now_ms();
        emu_fill(f, 256, 2.0f, 256, 0, 0);
        double t = now_ms() - t0;
        best = t < best ? t : best;
    }
    printf("launch overhead (1 block of 256 threads): %.1f us\n", best * 1e3);
    return 0;
}
