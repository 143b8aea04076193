/* `filo bench kernels`: the machine's ceilings, then every case of the kernel table, as one table
 * of medians, rates and the fraction of the ceiling each reaches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_cases.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: filo bench kernels [--device cpu|cuda:N] [--shapes base|mini] [--reps N] [--warmup N]\n"
               "                          [--filter TEXT] [--quick]\n"
               "  base: BERT-base, batch 32 x seq 128 (GPU default); mini: BERT-mini, batch 16 x seq 128 (CPU default)\n");
}

static void dims_text(const int64_t *d, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < 4 && d[i] > 0; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? "x" : "", (long long)d[i]);
}

static int fail(const char *what, filo_status st)
{
    fprintf(stderr, "filo bench kernels: %s: %s (%s)\n", what, filo_status_name(st), filo_last_error());
    return 1;
}

int filo_bench_kernels_main(int argc, char **argv)
{
    bench_options opt = {.device = filo_cpu(), .warmup = 3, .reps = 21};
    const char *shapes = NULL;
    int have_device = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) {
            opt.quick = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (v && strcmp(a, "--device") == 0) {
            filo_status st = filo_device_parse(v, &opt.device);
            if (st != FILO_OK)
                return fail("--device", st);
            have_device = 1;
            i++;
        } else if (v && strcmp(a, "--shapes") == 0 && (strcmp(v, "base") == 0 || strcmp(v, "mini") == 0)) {
            shapes = v;
            i++;
        } else if (v && (strcmp(a, "--reps") == 0 || strcmp(a, "--warmup") == 0) && atoi(v) >= (a[2] == 'r')) {
            *(a[2] == 'r' ? &opt.reps : &opt.warmup) = atoi(v);
            i++;
        } else if (v && strcmp(a, "--filter") == 0) {
            opt.filter = v;
            i++;
        } else {
            fprintf(stderr, "filo bench kernels: bad argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!have_device && filo_cuda_device_count() > 0)
        opt.device = filo_cuda(0);
    filo_status st = filo_device_check(opt.device);
    if (st != FILO_OK)
        return fail("device", st);
    if (!shapes)
        shapes = opt.device.type == FILO_DEVICE_CPU ? "mini" : "base";
    if (opt.quick) {
        opt.reps = 1;
        opt.warmup = 1;
    }

    filo_device_info info;
    if ((st = filo_device_info_get(opt.device, &info)) != FILO_OK)
        return fail("device info", st);
    char dev[32];
    filo_device_format(opt.device, dev, sizeof dev);
    bench_ceilings ceil;
    if ((st = bench_measure_ceilings(&opt, &ceil)) != FILO_OK)
        return fail("ceilings", st);
    printf("device %s: %s; shapes %s; median of %d runs after %d warm-up\n", dev, info.name,
           opt.quick ? "quick (too small for the rates to mean anything: a smoke test)" : shapes, opt.reps,
           opt.warmup);
    printf("ceilings: copy %.1f GB/s (read + write); GEMM f32 %.2f, bf16 %.2f, f16 %.2f TFLOP/s\n",
           ceil.copy_bytes_per_s * 1e-9, ceil.gemm_flops_per_s[FILO_F32] * 1e-12,
           ceil.gemm_flops_per_s[FILO_BF16] * 1e-12, ceil.gemm_flops_per_s[FILO_F16] * 1e-12);
    printf("\n%-28s %-5s %-16s %10s %9s %9s %10s\n", "kernel", "dtype", "dims", "median ms", "GB/s", "TFLOP/s",
           "% ceiling");
    int failures = 0;
    for (int i = 0; i < bench_entry_count; i++) {
        const bench_entry *e = &bench_entries[i];
        if (opt.filter && !strstr(e->c->name, opt.filter))
            continue;
        const int64_t *dims = opt.quick ? e->quick : strcmp(shapes, "base") == 0 ? e->base : e->mini;
        char dt[48];
        dims_text(dims, dt, sizeof dt);
        void *ctx = NULL;
        double ms = 0;
        st = e->c->setup(opt.device, e->dtype, dims, &ctx);
        if (st == FILO_OK)
            st = bench_time_ms(opt.device, opt.warmup, opt.reps, e->c->run, ctx, &ms);
        e->c->teardown(ctx);
        if (st != FILO_OK) {
            printf("%-28s %-5s %-16s failed: %s (%s)\n", e->c->name, filo_dtype_name(e->dtype), dt,
                   filo_status_name(st), filo_last_error());
            failures++;
            continue;
        }
        double s = ms * 1e-3;
        double gbs = e->c->bytes(e->dtype, dims) / s * 1e-9;
        if (e->c->flops) {
            double rate = e->c->flops(dims) / s;
            printf("%-28s %-5s %-16s %10.4f %9.1f %9.2f %9.1f%% of GEMM\n", e->c->name, filo_dtype_name(e->dtype), dt,
                   ms, gbs, rate * 1e-12, 100.0 * rate / ceil.gemm_flops_per_s[e->dtype]);
        } else {
            printf("%-28s %-5s %-16s %10.4f %9.1f %9s %9.1f%% of copy\n", e->c->name, filo_dtype_name(e->dtype), dt,
                   ms, gbs, "-", 100.0 * gbs * 1e9 / ceil.copy_bytes_per_s);
        }
        fflush(stdout);
    }
    return failures ? 1 : 0;
}
