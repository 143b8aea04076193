#define _POSIX_C_SOURCE 200809L
#include "text_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomic_file.h"
#include "error.h"

filo_status filo_text_file_read(const char *path, char **text, size_t *len)
{
    *text = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return FILO_FAIL(FILO_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, fp);
        if (n < cap - 1)
            break;
        char *grown = realloc(buf, cap * 2);
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    int failed = ferror(fp) ? errno : 0;
    fclose(fp);
    if (!buf)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory reading %s", path);
    if (failed) {
        free(buf);
        return FILO_FAIL(FILO_ERR_IO, "cannot read %s: %s", path, strerror(failed));
    }
    buf[n] = '\0';
    *text = buf;
    if (len)
        *len = n;
    return FILO_OK;
}

filo_status filo_text_file_write(const char *path, const char *text)
{
    filo_atomic_file af;
    FILO_TRY(filo_atomic_file_open(path, &af));
    size_t n = strlen(text);
    if (fwrite(text, 1, n, af.fp) != n || fputc('\n', af.fp) == EOF) {
        filo_status s = FILO_FAIL(FILO_ERR_IO, "writing %s failed: %s", path, strerror(errno));
        filo_atomic_file_abort(&af);
        return s;
    }
    return filo_atomic_file_commit(&af);
}
