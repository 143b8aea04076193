/* Internal: small text files (JSON configs, vocabularies, trainer records) read whole and
 * written atomically. */
#ifndef FILO_RUNTIME_TEXT_FILE_H
#define FILO_RUNTIME_TEXT_FILE_H

#include <stddef.h>

#include "filo/status.h"

/* The whole file as a malloc'd NUL-terminated string in *text and its length in *len (len may
 * be NULL). FILO_ERR_IO names the file when it cannot be opened or read. */
filo_status filo_text_file_read(const char *path, char **text, size_t *len);

/* Writes text and a final newline to path through filo_atomic_file (temporary file, fsync,
 * rename). */
filo_status filo_text_file_write(const char *path, const char *text);

#endif
