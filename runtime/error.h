/* Internal helpers to report errors: every failing path calls FILO_FAIL with what and where. */
#ifndef FILO_RUNTIME_ERROR_H
#define FILO_RUNTIME_ERROR_H

#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Formats "where: message" into the thread-local error buffer and returns status. */
filo_status filo_error_set(filo_status status, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends "\n  from where" so a message shows the call chain that led to it. */
filo_status filo_error_wrap(filo_status status, const char *where);

#ifdef __cplusplus
}
#endif

#define FILO_FAIL(status, ...) filo_error_set((status), __func__, __VA_ARGS__)

/* Propagate a failure from a callee unchanged (its message already says what and where). */
#define FILO_TRY(expr)                       \
    do {                                     \
        filo_status filo_try_s_ = (expr);    \
        if (filo_try_s_ != FILO_OK)          \
            return filo_try_s_;              \
    } while (0)

#endif
