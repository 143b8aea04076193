#define _POSIX_C_SOURCE 200809L
#include "example.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void ex_check(filo_status s, const char *expr, const char *file, int line)
{
    if (s == FILO_OK)
        return;
    fprintf(stderr, "error: %s failed (%s at %s:%d)\n  %s\n", expr, filo_status_name(s), file, line,
            filo_last_error());
    exit(1);
}

void ex_die(const char *fmt, ...)
{
    va_list ap;
    fputs("error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

long ex_parse_long(const char *opt, const char *text, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi)
        ex_die("%s wants an integer in [%ld, %ld], got '%s'", opt, lo, hi, text);
    return v;
}

double ex_parse_double(const char *opt, const char *text, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v) || v < lo || v > hi)
        ex_die("%s wants a number in [%g, %g], got '%s'", opt, lo, hi, text);
    return v;
}

uint64_t ex_parse_u64(const char *opt, const char *text)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-')
        ex_die("%s wants a non-negative integer, got '%s'", opt, text);
    return (uint64_t)v;
}

const char *ex_option_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        ex_die("%s needs a value", argv[*i]);
    return argv[++*i];
}

double ex_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void ex_random_u32(filo_generator *gen, uint32_t *out, int64_t n)
{
    uint64_t first = filo_generator_advance(gen, (uint64_t)n);
    uint32_t block[4];
    for (int64_t i = 0; i < n; i++) {
        if (i % 4 == 0)
            filo_philox4x32(first + (uint64_t)i / 4, 0, gen->seed, block);
        out[i] = block[i % 4];
    }
}

void ex_permutation(filo_generator *gen, int64_t *perm, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    if (n < 2)
        return;
    uint32_t *r = malloc(sizeof *r * (size_t)n);
    if (!r)
        ex_die("out of host memory for a permutation of %lld", (long long)n);
    ex_random_u32(gen, r, n);
    for (int64_t i = n - 1; i > 0; i--) {
        /* Multiply-shift maps a 32-bit draw onto [0, i]; its bias (< i / 2^32) is negligible here. */
        int64_t j = (int64_t)(((uint64_t)r[i] * (uint64_t)(i + 1)) >> 32);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    free(r);
}

void ex_loss_log_push(ex_loss_log *log, const filo_var *loss)
{
    if (log->n == log->cap) {
        int cap = log->cap ? 2 * log->cap : 64;
        filo_tensor **items = realloc(log->items, sizeof *items * (size_t)cap);
        if (!items)
            ex_die("out of host memory for the loss log");
        log->items = items;
        log->cap = cap;
    }
    EX_CHECK(filo_tensor_alias(filo_var_value(loss), &log->items[log->n]));
    log->n++;
}

double ex_loss_log_mean(ex_loss_log *log)
{
    double sum = 0;
    for (int i = 0; i < log->n; i++) {
        float v;
        EX_CHECK(filo_tensor_to_host_as(log->items[i], FILO_F32, &v, sizeof v));
        sum += v;
        filo_tensor_free(log->items[i]);
    }
    double mean = log->n ? sum / log->n : NAN;
    log->n = 0;
    return mean;
}

void ex_loss_log_free(ex_loss_log *log)
{
    for (int i = 0; i < log->n; i++)
        filo_tensor_free(log->items[i]);
    free(log->items);
    log->items = NULL;
    log->n = log->cap = 0;
}
