/* Labelled text data files: TSV, CSV and JSONL read into rows of named string cells.
 *
 *   TSV    a header line of column names, then one row a line, fields split on tabs (no quoting;
 *          "\t", "\n" and "\\" escapes are decoded);
 *   CSV    RFC 4180: a header line, fields separated by commas, quoted with "" (a quoted field
 *          may hold commas, doubled quotes and newlines);
 *   JSONL  one JSON object a line (cJSON); strings are taken as they are, numbers and booleans
 *          as their JSON text, arrays of strings/numbers as lists (filo_cell.items), nested
 *          objects as their JSON text; a missing key is a missing cell;
 *   TEXT   one input a line, in one column named "text".
 * Blank lines are skipped. A UTF-8 byte-order mark at the start is skipped. Line endings may be
 * \n or \r\n.
 *
 * Errors name file:line and what is wrong (a row with too few or too many fields, JSON that does
 * not parse or is not an object, invalid UTF-8). With skip_bad such rows are counted in
 * filo_table.skipped and left out instead; an empty file, or one with no rows left, is always
 * an error. */
#ifndef FILO_TABLE_H
#define FILO_TABLE_H

#include <stdint.h>

#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_table_format {
    FILO_TABLE_AUTO = 0, /* from the extension: .tsv .csv .jsonl/.json/.ndjson, else TEXT */
    FILO_TABLE_TSV,
    FILO_TABLE_CSV,
    FILO_TABLE_JSONL,
    FILO_TABLE_TEXT,
} filo_table_format;

/* "tsv", "csv", "jsonl", "text", "auto". */
filo_status filo_table_format_parse(const char *name, filo_table_format *out);

typedef struct filo_cell {
    char *text;   /* NULL: missing; for a list, its JSON text */
    char **items; /* a JSON array's elements as strings, else NULL */
    int n_items;
} filo_cell;

typedef struct filo_table {
    char *path;
    int n_cols;
    char **columns;      /* names, in first-seen order */
    int64_t n_rows;
    filo_cell *cells;    /* n_rows * n_cols, row-major */
    int64_t *lines;      /* the source line each row starts on (1-based) */
    int64_t skipped;     /* bad rows left out (skip_bad) */
} filo_table;

/* Reads path ("-": standard input, format required unless TEXT) into *out. */
filo_status filo_table_read(const char *path, filo_table_format format, int skip_bad, filo_table *out);
void filo_table_free(filo_table *t);

/* Column index of name, or -1. */
int filo_table_column(const filo_table *t, const char *name);
/* The cell at (row, col); col -1 gives a missing cell. */
const filo_cell *filo_table_cell(const filo_table *t, int64_t row, int col);
/* Formats "path:line" of a row into buf, for error messages. */
const char *filo_table_where(const filo_table *t, int64_t row, char *buf, int size);

#ifdef __cplusplus
}
#endif
#endif
