/* Shared helpers for filo's Criterion tests. */
#ifndef FILO_TEST_H
#define FILO_TEST_H

#include <criterion/criterion.h>
#include <stddef.h>
#include <stdint.h>

#include "filo/filo.h"

/* Asserts a filo call succeeded, printing filo_last_error() when it did not. */
#define FILO_CHECK(expr)                                                                      \
    do {                                                                                      \
        filo_status check_s_ = (expr);                                                        \
        cr_assert_eq(check_s_, FILO_OK, "%s -> %s: %s", #expr, filo_status_name(check_s_),    \
                     filo_last_error());                                                      \
    } while (0)

/* Asserts a filo call failed with `status` and that the message contains `needle`. */
#define FILO_CHECK_FAILS(expr, status, needle)                                                   \
    do {                                                                                         \
        filo_status check_s_ = (expr);                                                           \
        cr_assert_eq(check_s_, (status), "%s -> %s, expected %s (%s)", #expr,                    \
                     filo_status_name(check_s_), filo_status_name(status), filo_last_error());   \
        cr_assert(strstr(filo_last_error(), (needle)) != NULL, "%s: message '%s' lacks '%s'",    \
                  #expr, filo_last_error(), (needle));                                           \
    } while (0)

#define FILO_TEST_MAX_BACKENDS 4

/* Every backend this build can run: the CPU, then each CUDA device (the emulator in the emu/
 * build of a test, a real GPU when one is present). Returns the count. */
int filo_test_backends(filo_device *out);
/* "cpu", "cuda:0" or "cuda:0 (emulated)": tests print it so their output says what ran. */
const char *filo_test_backend_name(filo_device device);

/* A tensor of `dtype` on `device` holding `values` (doubles converted to dtype). */
filo_tensor *filo_test_upload(filo_device device, filo_dtype dtype, int ndim, const int64_t *shape, const double *values);
/* The tensor's elements as doubles in row-major order; the caller frees the array. */
double *filo_test_download(const filo_tensor *t);

/* Deterministic pseudo-random doubles in [lo, hi), none of them zero. */
void filo_test_fill_random(double *v, int64_t n, uint64_t seed, double lo, double hi);

/* A fresh directory /tmp/filo-<tag>-XXXXXX written into dir (64 bytes are enough); asserts. */
void filo_test_make_tmpdir(char *dir, size_t size, const char *tag);
/* Removes dir and everything below it. */
void filo_test_remove_dir(const char *dir);

#endif
