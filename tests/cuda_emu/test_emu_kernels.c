/* Correct kernels run on the CUDA emulator give the right answers under every schedule
 * (registered with ctest under forward, reverse, random and depth-first). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "emu_test_kernels.h"
#include "filo_emu.h"

#define CUDA_OK(call) cr_assert_eq((call), cudaSuccess, "%s: %s", #call, filo_emu_last_error_detail())

static void *dev_alloc(size_t n)
{
    void *p = NULL;
    CUDA_OK(cudaMalloc(&p, n));
    return p;
}

static void to_dev(void *d, const void *h, size_t n) { CUDA_OK(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice)); }
static void to_host(void *h, const void *d, size_t n) { CUDA_OK(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost)); }

Test(emu_kernels, block_sum_shared_and_shuffles)
{
    const int rows = 7, cols = 1000;
    float *x = malloc(sizeof(float) * rows * cols), out[7];
    for (int i = 0; i < rows * cols; i++)
        x[i] = (float)((i * 37) % 11) - 5.0f;
    float *dx = dev_alloc(sizeof(float) * rows * cols), *dout = dev_alloc(sizeof out);
    to_dev(dx, x, sizeof(float) * rows * cols);
    int threads[] = {32, 96, 256, 1024};
    for (int k = 0; k < 4; k++) {
        CUDA_OK(emu_block_sum(dx, dout, rows, cols, threads[k], 0));
        to_host(out, dout, sizeof out);
        for (int r = 0; r < rows; r++) {
            double ref = 0;
            for (int c = 0; c < cols; c++)
                ref += x[r * cols + c];
            cr_assert_float_eq(out[r], ref, 1e-3, "row %d threads %d: %f vs %f", r, threads[k], out[r], ref);
        }
    }
    cudaFree(dx);
    cudaFree(dout);
    free(x);
}

Test(emu_kernels, warp_shuffles_and_votes)
{
    const int threads = 64;
    int *d = dev_alloc(sizeof(int) * threads * 12), h[64 * 12];
    CUDA_OK(emu_warp_ops(d, threads, 0));
    to_host(h, d, sizeof h);
    for (int t = 0; t < threads; t++) {
        int l = t % 32, *o = h + t * 12;
        cr_assert_eq(o[0], ((l + 3) & 31) * 10, "shfl idx lane %d", l);
        cr_assert_eq(o[1], (l % 8) >= 2 ? l - 2 : l, "shfl up width 8 lane %d: %d", l, o[1]);
        cr_assert_eq(o[2], (l % 16) + 3 < 16 ? l + 3 : l, "shfl down width 16 lane %d: %d", l, o[2]);
        cr_assert_eq(o[3], l ^ 5);
        cr_assert_eq((unsigned)o[4], 0xAAAAAAAAu);
        cr_assert_eq(o[5], 1);
        cr_assert_eq(o[6], 0);
        if (l < 16)
            cr_assert_eq(o[7], 15 - l, "half-warp shuffle lane %d", l);
        else
            cr_assert_eq((unsigned)o[7], 0xFFE00000u, "half-warp ballot lane %d: %x", l, o[7]);
        cr_assert_eq(o[8], (l & ~7) + 1, "shfl width 8 src 1 lane %d: %d", l, o[8]);
        cr_assert_eq(o[9], 496);
        cr_assert_eq(o[10], 2 * (l ^ 1) + 1);
        cr_assert_eq(o[11], 1);
    }
    cudaFree(d);
}

Test(emu_kernels, atomics_across_blocks)
{
    const int n = 3001;
    int *v = malloc(sizeof(int) * n), hist[4] = {0};
    long long ref_sum = 0;
    for (int i = 0; i < n; i++) {
        v[i] = (i * 7919) % 1000;
        hist[v[i] % 4]++;
        ref_sum += v[i];
    }
    int *dv = dev_alloc(sizeof(int) * n), *dc = dev_alloc(sizeof(int) * 10);
    float *df = dev_alloc(sizeof(float));
    double *dd = dev_alloc(sizeof(double));
    unsigned long long *du = dev_alloc(sizeof(unsigned long long));
    int c0[10] = {0, 0, 0, 0, 0, -1, 1 << 30, 0, 0, 0};
    to_dev(dv, v, sizeof(int) * n);
    to_dev(dc, c0, sizeof c0);
    CUDA_OK(cudaMemset(df, 0, sizeof(float)));
    CUDA_OK(cudaMemset(dd, 0, sizeof(double)));
    CUDA_OK(cudaMemset(du, 0, sizeof(unsigned long long)));
    CUDA_OK(emu_atomics(dv, n, dc, df, dd, du, 0));
    int c[10];
    float f;
    double d;
    unsigned long long u;
    to_host(c, dc, sizeof c);
    to_host(&f, df, sizeof f);
    to_host(&d, dd, sizeof d);
    to_host(&u, du, sizeof u);
    cr_assert_eq(c[0], n);
    for (int k = 0; k < 4; k++)
        cr_assert_eq(c[1 + k], hist[k]);
    cr_assert_eq(c[5], 999);
    cr_assert_eq(c[6], 0);
    cr_assert_eq(c[7], n, "CAS loop count %d", c[7]);
    cr_assert_eq(c[8], 42);
    cr_assert_eq(c[9], 999);
    cr_assert_eq(f, (float)n);
    cr_assert_eq(d, (double)ref_sum);
    cr_assert_eq(u, (unsigned long long)ref_sum);
    cudaFree(dv);
    cudaFree(dc);
    cudaFree(df);
    cudaFree(dd);
    cudaFree(du);
    free(v);
}

Test(emu_kernels, dynamic_shared_memory_with_optin)
{
    const int n = 25600; /* 100 KB */
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++)
        x[i] = (float)i;
    float *dx = dev_alloc(sizeof(float) * n), *dy = dev_alloc(sizeof(float) * n);
    to_dev(dx, x, sizeof(float) * n);
    cr_assert_eq(emu_reverse_dynamic(dx, dy, n, 0, 0), cudaErrorInvalidValue, "100 KB without opt-in must fail");
    cr_assert(strstr(filo_emu_last_error_detail(), "cudaFuncSetAttribute"));
    CUDA_OK(emu_reverse_dynamic(dx, dy, n, 1, 0));
    to_host(y, dy, sizeof(float) * n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(y[i], (float)(n - 1 - i));
    /* small sizes need no opt-in */
    CUDA_OK(emu_reverse_dynamic(dx, dy, 1000, 0, 0));
    cudaFree(dx);
    cudaFree(dy);
    free(x);
    free(y);
}

Test(emu_kernels, bf16_and_fp16)
{
    const int n = 100;
    float x[100], b[100], h[100], e[400];
    for (int i = 0; i < n; i++)
        x[i] = (i - 50) * 0.37f + 1.0f / (i + 1);
    float *dx = dev_alloc(sizeof x), *db = dev_alloc(sizeof b), *dh = dev_alloc(sizeof h), *de = dev_alloc(sizeof e);
    to_dev(dx, x, sizeof x);
    CUDA_OK(emu_convert_half(dx, db, dh, de, n, 0));
    to_host(b, db, sizeof b);
    to_host(h, dh, sizeof h);
    to_host(e, de, sizeof e);
    for (int i = 0; i < n; i++) {
        cr_assert(fabsf(b[i] - x[i]) <= fabsf(x[i]) * (1.0f / 256) + 1e-30f, "bf16 %d: %g vs %g", i, b[i], x[i]);
        cr_assert(fabsf(h[i] - x[i]) <= fabsf(x[i]) * (1.0f / 2048) + 1e-7f, "f16 %d: %g vs %g", i, h[i], x[i]);
        cr_assert(fabsf(e[4 * i] - (2 * b[i] + 2)) <= fabsf(2 * b[i] + 2) / 128 + 1e-6f, "hfma %d", i);
        cr_assert(fabsf(e[4 * i + 1] - sqrtf(fabsf(h[i]))) <= 2e-3f * (1 + sqrtf(fabsf(h[i]))), "hsqrt %d", i);
        cr_assert_eq(e[4 * i + 2], nearbyintf(b[i]), "bfloat162int_rn %d", i);
        cr_assert(fabsf(e[4 * i + 3] - x[i] * x[i]) <= x[i] * x[i] / 64 + 1e-6f, "hmul2 %d", i);
    }
    cudaFree(dx);
    cudaFree(db);
    cudaFree(dh);
    cudaFree(de);
}

Test(emu_kernels, layernorm_matches_reference)
{
    const int rows = 9, cols = 333;
    float *x = malloc(sizeof(float) * rows * cols), *y = malloc(sizeof(float) * rows * cols);
    float g[333], be[333];
    for (int i = 0; i < rows * cols; i++)
        x[i] = sinf(i * 0.1f) * 3 + (i % 7);
    for (int i = 0; i < cols; i++) {
        g[i] = 1.0f + i * 0.001f;
        be[i] = 0.01f * i;
    }
    float *dx = dev_alloc(sizeof(float) * rows * cols), *dy = dev_alloc(sizeof(float) * rows * cols);
    float *dg = dev_alloc(sizeof g), *db = dev_alloc(sizeof be);
    to_dev(dx, x, sizeof(float) * rows * cols);
    to_dev(dg, g, sizeof g);
    to_dev(db, be, sizeof be);
    CUDA_OK(emu_layernorm(dx, dg, db, dy, rows, cols, 0));
    to_host(y, dy, sizeof(float) * rows * cols);
    for (int r = 0; r < rows; r++) {
        double m = 0, v = 0;
        for (int c = 0; c < cols; c++)
            m += x[r * cols + c];
        m /= cols;
        for (int c = 0; c < cols; c++)
            v += (x[r * cols + c] - m) * (x[r * cols + c] - m);
        v /= cols;
        for (int c = 0; c < cols; c++) {
            double ref = (x[r * cols + c] - m) / sqrt(v + 1e-5) * g[c] + be[c];
            cr_assert_float_eq(y[r * cols + c], ref, 1e-4, "(%d,%d) %f vs %f", r, c, y[r * cols + c], ref);
        }
    }
    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dg);
    cudaFree(db);
    free(x);
    free(y);
}

Test(emu_kernels, barriers_rotate_shared_memory)
{
    const int blocks = 5, threads = 100, rounds = 7;
    float h[500];
    for (int i = 0; i < blocks * threads; i++)
        h[i] = (float)i;
    float *d = dev_alloc(sizeof h);
    to_dev(d, h, sizeof h);
    CUDA_OK(emu_barrier_heavy(d, blocks, threads, rounds, 0));
    float out[500];
    to_host(out, d, sizeof out);
    for (int b = 0; b < blocks; b++)
        for (int t = 0; t < threads; t++)
            cr_assert_eq(out[b * threads + t], h[b * threads + (t + rounds) % threads] + rounds);
    cudaFree(d);
}

Test(emu_kernels, syncthreads_count_and_or_and_sleeping_spin)
{
    int *d = dev_alloc(sizeof(int) * 5), h[5];
    CUDA_OK(emu_sync_votes(d, 100, 0));
    to_host(h, d, sizeof h);
    cr_assert_eq(h[0], 34);
    cr_assert_eq(h[1], 1);
    cr_assert_eq(h[2], 1);
    cr_assert_eq(h[3], 0);
    cr_assert_eq(h[4], 100);
    cudaFree(d);
}

Test(emu_kernels, multi_dimensional_indices)
{
    const int gx = 3, gy = 2, bx = 5, by = 3, bz = 2, n = gx * gy * bx * by * bz;
    unsigned *d = dev_alloc(sizeof(unsigned) * n), h[180];
    CUDA_OK(emu_indices(d, gx, gy, bx, by, bz, 0));
    to_host(h, d, sizeof(unsigned) * n);
    int k = 0;
    for (int y = 0; y < gy; y++)
        for (int x = 0; x < gx; x++)
            for (int tz = 0; tz < bz; tz++)
                for (int ty = 0; ty < by; ty++)
                    for (int tx = 0; tx < bx; tx++, k++)
                        cr_assert_eq(h[k], (unsigned)(x | y << 8 | tx << 16 | ty << 20 | tz << 24));
    cudaFree(d);
}

Test(emu_kernels, many_blocks_fill)
{
    const int n = 100003;
    float *d = dev_alloc(sizeof(float) * n), *h = malloc(sizeof(float) * n);
    CUDA_OK(emu_fill(d, n, 2.5f, 128, 0, 0));
    to_host(h, d, sizeof(float) * n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(h[i], 2.5f);
    cudaFree(d);
    free(h);
}

Test(emu_kernels, correct_kernels_pass_race_check)
{
    filo_emu_set_racecheck(1);
    int *d = dev_alloc(sizeof(int) * 5);
    CUDA_OK(emu_sync_votes(d, 64, 0));
    float *x = dev_alloc(sizeof(float) * 300);
    CUDA_OK(emu_fill(x, 300, 1.0f, 64, 0, 0));
    CUDA_OK(emu_barrier_heavy(x, 3, 100, 3, 0));
    CUDA_OK(cudaDeviceSynchronize());
    cr_assert_eq(filo_emu_last_fault(), FILO_EMU_FAULT_NONE);
    cudaFree(d);
    cudaFree(x);
}
