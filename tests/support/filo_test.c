#define _POSIX_C_SOURCE 200809L
#include "filo_test.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int filo_test_backends(filo_device *out)
{
    int n = 0;
    out[n++] = filo_cpu();
    int cuda = filo_cuda_device_count();
    for (int i = 0; i < cuda && n < FILO_TEST_MAX_BACKENDS; i++)
        out[n++] = filo_cuda(i);
    return n;
}

const char *filo_test_backend_name(filo_device device)
{
    static _Thread_local char buf[48];
    char dev[32];
    filo_device_format(device, dev, sizeof dev);
    snprintf(buf, sizeof buf, "%s%s", dev,
             device.type == FILO_DEVICE_CUDA && filo_cuda_is_emulated() ? " (emulated)" : "");
    return buf;
}

void filo_test_fill_random(double *v, int64_t n, uint64_t seed, double lo, double hi)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double u = (double)(x >> 11) * 0x1p-53;
        double r = lo + (hi - lo) * u;
        v[i] = r == 0.0 ? (hi - lo) * 0.5 + lo + 1e-3 : r;
    }
}

filo_tensor *filo_test_upload(filo_device device, filo_dtype dtype, int ndim, const int64_t *shape, const double *values)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    void *host = malloc((size_t)(n + 1) * 8);
    FILO_CHECK(filo_convert(values, FILO_F64, host, dtype, (size_t)n));
    filo_tensor *t;
    FILO_CHECK(filo_tensor_from_host(device, dtype, ndim, shape, host, &t));
    free(host);
    return t;
}

double *filo_test_download(const filo_tensor *t)
{
    int64_t n = filo_tensor_numel(t);
    double *v = malloc(sizeof(double) * (size_t)(n + 1));
    FILO_CHECK(filo_tensor_to_host_as(t, FILO_F64, v, sizeof(double) * (size_t)n));
    return v;
}

void filo_test_make_tmpdir(char *dir, size_t size, const char *tag)
{
    snprintf(dir, size, "/tmp/filo-%s-XXXXXX", tag);
    cr_assert(mkdtemp(dir) != NULL, "mkdtemp %s", dir);
}

void filo_test_remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            struct stat sb;
            if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
                filo_test_remove_dir(p);
            else
                unlink(p);
        }
    closedir(d);
    rmdir(dir);
}
