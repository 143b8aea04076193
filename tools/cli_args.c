#define _POSIX_C_SOURCE 200809L
#include "cli_args.h"

#include <errno.h>
#include <filo/filo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_parse_long(const char *cmd, const char *flag, const char *value, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = value ? strtol(value, &end, 10) : 0;
    if (!value || !*value || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "filo %s: %s needs an integer in [%ld, %ld], got '%s'\n", cmd, flag, lo, hi,
                value ? value : "");
        return 2;
    }
    *out = v;
    return 0;
}

int cli_parse_double(const char *cmd, const char *flag, const char *value, double lo, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = value ? strtod(value, &end) : 0;
    if (!value || !*value || *end || errno || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "filo %s: %s needs a number in [%g, %g], got '%s'\n", cmd, flag, lo, hi, value ? value : "");
        return 2;
    }
    *out = v;
    return 0;
}

int cli_parse_device(const char *cmd, const char *value, filo_device *out)
{
    filo_device d;
    if (!value || filo_device_parse(strcmp(value, "cuda") == 0 ? "cuda:0" : value, &d) != FILO_OK ||
        filo_device_check(d) != FILO_OK) {
        fprintf(stderr, "filo %s: --device '%s': %s\n", cmd, value ? value : "", filo_last_error());
        return 2;
    }
    *out = d;
    return 0;
}

filo_device cli_default_device(void)
{
    return filo_cuda_device_count() > 0 ? filo_cuda(0) : filo_cpu();
}
