/* Timing and medians for the kernel benchmarks. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <stdlib.h>
#include <time.h>

double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* On a GPU each call is bracketed by events on the current stream, so host launch overhead that
 * overlaps the previous call is not counted (as in PyTorch's benchmark utilities); on the CPU the
 * call runs to completion before the clock is read. */
filo_status bench_time_ms(filo_device device, int warmup, int reps, filo_status (*run)(void *), void *ctx,
                          double *median_ms)
{
    for (int i = 0; i < warmup; i++)
        BENCH_TRY(run(ctx));
    BENCH_TRY(filo_device_synchronize(device));
    double *t = malloc(sizeof(double) * (size_t)reps);
    if (!t)
        return FILO_ERR_OOM;
    filo_status st = FILO_OK;
    filo_event *start = NULL, *end = NULL;
    filo_stream *stream = NULL;
    int gpu = device.type == FILO_DEVICE_CUDA;
    if (gpu) {
        st = filo_stream_current(device, &stream);
        if (st == FILO_OK)
            st = filo_event_create(device, &start);
        if (st == FILO_OK)
            st = filo_event_create(device, &end);
    }
    for (int i = 0; st == FILO_OK && i < reps; i++) {
        if (gpu) {
            st = filo_event_record(start, stream);
            if (st == FILO_OK)
                st = run(ctx);
            if (st == FILO_OK)
                st = filo_event_record(end, stream);
            if (st == FILO_OK)
                st = filo_event_synchronize(end);
            float ms = 0;
            if (st == FILO_OK)
                st = filo_event_elapsed_ms(start, end, &ms);
            t[i] = ms;
        } else {
            double t0 = bench_now_ms();
            st = run(ctx);
            if (st == FILO_OK)
                st = filo_device_synchronize(device);
            t[i] = bench_now_ms() - t0;
        }
    }
    if (start)
        filo_event_destroy(start);
    if (end)
        filo_event_destroy(end);
    if (st == FILO_OK) {
        qsort(t, (size_t)reps, sizeof(double), bench_cmp_double);
        *median_ms = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    }
    free(t);
    return st;
}
