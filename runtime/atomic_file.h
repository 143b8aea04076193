/* Internal: files written atomically. The data goes to a temporary file beside the target
 * (same directory, so the rename stays on one file system), is flushed and fsync'ed, and only
 * then renamed over the target: a crash or an error mid-write leaves the old file untouched. */
#ifndef FILO_RUNTIME_ATOMIC_FILE_H
#define FILO_RUNTIME_ATOMIC_FILE_H

#include <stdio.h>

#include "filo/status.h"

typedef struct filo_atomic_file {
    FILE *fp;           /* write here */
    char *path;         /* the target */
    char *tmp_path;     /* the temporary file */
} filo_atomic_file;

filo_status filo_atomic_file_open(const char *path, filo_atomic_file *f);
/* Flushes, syncs and renames; on any failure the temporary file is removed and the target kept. */
filo_status filo_atomic_file_commit(filo_atomic_file *f);
/* Drops the temporary file (after an error while writing). */
void filo_atomic_file_abort(filo_atomic_file *f);

#endif
