#define _POSIX_C_SOURCE 200809L
#include "atomic_file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

filo_status filo_atomic_file_open(const char *path, filo_atomic_file *f)
{
    memset(f, 0, sizeof *f);
    if (!path || !*path)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "an empty path");
    size_t n = strlen(path);
    f->path = strdup(path);
    f->tmp_path = malloc(n + 16);
    if (!f->path || !f->tmp_path) {
        filo_atomic_file_abort(f);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    }
    snprintf(f->tmp_path, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(f->tmp_path);
    if (fd < 0) {
        filo_status s = FILO_FAIL(FILO_ERR_IO, "cannot create a temporary file beside %s: %s", path, strerror(errno));
        free(f->tmp_path);
        f->tmp_path = NULL;
        filo_atomic_file_abort(f);
        return s;
    }
    /* mkstemp makes the file 0600; a saved model should get the permissions any new file of
     * the user gets (0666 less the umask), as open(O_CREAT) would give it. */
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0) {
        close(fd);
        filo_status s = FILO_FAIL(FILO_ERR_IO, "cannot set the mode of %s: %s", f->tmp_path, strerror(errno));
        filo_atomic_file_abort(f);
        return s;
    }
    f->fp = fdopen(fd, "wb");
    if (!f->fp) {
        close(fd);
        filo_status s = FILO_FAIL(FILO_ERR_IO, "cannot open %s: %s", f->tmp_path, strerror(errno));
        filo_atomic_file_abort(f);
        return s;
    }
    return FILO_OK;
}

filo_status filo_atomic_file_commit(filo_atomic_file *f)
{
    filo_status s = FILO_OK;
    if (fflush(f->fp) != 0 || ferror(f->fp) || fsync(fileno(f->fp)) != 0)
        s = FILO_FAIL(FILO_ERR_IO, "writing %s failed: %s", f->path, strerror(errno));
    if (fclose(f->fp) != 0 && s == FILO_OK)
        s = FILO_FAIL(FILO_ERR_IO, "writing %s failed: %s", f->path, strerror(errno));
    f->fp = NULL;
    if (s == FILO_OK && rename(f->tmp_path, f->path) != 0)
        s = FILO_FAIL(FILO_ERR_IO, "cannot rename %s to %s: %s", f->tmp_path, f->path, strerror(errno));
    if (s == FILO_OK) {
        free(f->tmp_path);
        f->tmp_path = NULL;
    }
    filo_atomic_file_abort(f);
    return s;
}

void filo_atomic_file_abort(filo_atomic_file *f)
{
    if (f->fp)
        fclose(f->fp);
    if (f->tmp_path)
        unlink(f->tmp_path);
    free(f->tmp_path);
    free(f->path);
    memset(f, 0, sizeof *f);
}
