#include "filo_test.h"

#include <stdio.h>

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
