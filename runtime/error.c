#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Long enough for an OOM report with allocator stats. */
#define FILO_ERROR_MAX 2048

static _Thread_local char error_message[FILO_ERROR_MAX];

const char *filo_last_error(void) { return error_message; }

void filo_error_clear(void) { error_message[0] = '\0'; }

filo_status filo_error_set(filo_status status, const char *where, const char *fmt, ...)
{
    int n = snprintf(error_message, sizeof error_message, "%s: ", where ? where : "filo");
    if (n < 0 || (size_t)n >= sizeof error_message)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message + n, sizeof error_message - (size_t)n, fmt, ap);
    va_end(ap);
    return status;
}

filo_status filo_error_wrap(filo_status status, const char *where)
{
    size_t len = strlen(error_message);
    if (len < sizeof error_message)
        snprintf(error_message + len, sizeof error_message - len, "\n  from %s", where);
    return status;
}

const char *filo_status_name(filo_status status)
{
    switch (status) {
    case FILO_OK: return "FILO_OK";
    case FILO_ERR_INVALID_ARG: return "FILO_ERR_INVALID_ARG";
    case FILO_ERR_SHAPE: return "FILO_ERR_SHAPE";
    case FILO_ERR_DTYPE: return "FILO_ERR_DTYPE";
    case FILO_ERR_DEVICE: return "FILO_ERR_DEVICE";
    case FILO_ERR_OOM: return "FILO_ERR_OOM";
    case FILO_ERR_CUDA: return "FILO_ERR_CUDA";
    case FILO_ERR_IO: return "FILO_ERR_IO";
    case FILO_ERR_FORMAT: return "FILO_ERR_FORMAT";
    case FILO_ERR_UNSUPPORTED: return "FILO_ERR_UNSUPPORTED";
    case FILO_ERR_STATE: return "FILO_ERR_STATE";
    case FILO_ERR_INTERNAL: return "FILO_ERR_INTERNAL";
    case FILO_ERR_TIMEOUT: return "FILO_ERR_TIMEOUT";
    case FILO_ERR_COMM: return "FILO_ERR_COMM";
    }
    return "FILO_ERR_UNKNOWN";
}
