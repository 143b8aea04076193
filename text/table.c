#define _POSIX_C_SOURCE 200809L
/* Labelled text files (include/filo/table.h). The whole file is read into memory; each format's
 * record parser decodes one record's fields into a scratch buffer, and the shared code checks the
 * record (UTF-8, field count) and appends its cells. Cells are collected as (row, column, cell)
 * entries and laid out row-major at the end, because JSONL only knows its columns after the last
 * line. A bad record is rejected before any of its cells is kept, so skip_bad needs no rollback.
 *
 * Choices the header leaves open: a blank line is an empty one (spaces make a record); a JSON
 * null is a missing cell; numbers read as cJSON prints them (1.0 gives "1"); an array holding
 * anything but strings, numbers and booleans is only its JSON text; a repeated JSON key and a
 * CSV quote followed by more text are bad rows; an unterminated CSV quote runs to the end of the
 * file and is an error even with skip_bad, since skipping it would drop every row after it. */
#include "filo/table.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"

/* Every message is from filo_table_read, whichever helper found the problem. */
#define TABLE_FAIL(status, ...) filo_error_set((status), "filo_table_read", __VA_ARGS__)

typedef struct entry {
    int64_t row;
    int col;
    filo_cell cell;
} entry;

typedef struct reader {
    filo_table *t;
    int skip_bad;
    int in_header; /* a bad header is an error even with skip_bad */
    char *buf; /* the file, NUL-terminated; line-based formats cut lines in place */
    size_t len, pos;
    int64_t line; /* the line at pos */
    /* the current record's fields, decoded, NUL-terminated back to back */
    char *text;
    size_t text_len, text_cap;
    size_t *field, field_cap;
    int n_fields;
    entry *e;
    size_t n_e, cap_e;
    size_t cap_rows;
} reader;

static const filo_cell missing_cell = {NULL, NULL, 0};

filo_status filo_table_format_parse(const char *name, filo_table_format *out)
{
    static const char *const names[] = {"auto", "tsv", "csv", "jsonl", "text"};
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    for (int i = 0; name && i < 5; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (filo_table_format)i;
            return FILO_OK;
        }
    return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown table format '%s' (tsv, csv, jsonl, text or auto)",
                     name ? name : "(null)");
}

static filo_table_format format_from_extension(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/'))
        return FILO_TABLE_TEXT;
    if (strcasecmp(dot, ".tsv") == 0)
        return FILO_TABLE_TSV;
    if (strcasecmp(dot, ".csv") == 0)
        return FILO_TABLE_CSV;
    if (strcasecmp(dot, ".jsonl") == 0 || strcasecmp(dot, ".json") == 0 || strcasecmp(dot, ".ndjson") == 0)
        return FILO_TABLE_JSONL;
    return FILO_TABLE_TEXT;
}

static void cell_free(filo_cell *c)
{
    free(c->text);
    for (int i = 0; i < c->n_items; i++)
        free(c->items[i]);
    free(c->items);
    *c = missing_cell;
}

void filo_table_free(filo_table *t)
{
    if (!t)
        return;
    if (t->cells)
        for (int64_t i = 0; i < t->n_rows * t->n_cols; i++)
            cell_free(&t->cells[i]);
    for (int i = 0; i < t->n_cols; i++)
        free(t->columns[i]);
    free(t->columns);
    free(t->cells);
    free(t->lines);
    free(t->path);
    memset(t, 0, sizeof *t);
}

int filo_table_column(const filo_table *t, const char *name)
{
    for (int i = 0; t && name && i < t->n_cols; i++)
        if (strcmp(t->columns[i], name) == 0)
            return i;
    return -1;
}

const filo_cell *filo_table_cell(const filo_table *t, int64_t row, int col)
{
    if (!t || row < 0 || row >= t->n_rows || col < 0 || col >= t->n_cols)
        return &missing_cell;
    return &t->cells[row * t->n_cols + col];
}

const char *filo_table_where(const filo_table *t, int64_t row, char *buf, int size)
{
    if (buf && size > 0) {
        if (t && row >= 0 && row < t->n_rows)
            snprintf(buf, (size_t)size, "%s:%" PRId64, t->path, t->lines[row]);
        else
            snprintf(buf, (size_t)size, "%s:?", t && t->path ? t->path : "?");
    }
    return buf;
}

/* ---- growing arrays ---- */

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 1;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *q = n <= SIZE_MAX / elem ? realloc(*p, n * elem) : NULL;
    if (!q)
        return 0;
    *p = q;
    *cap = n;
    return 1;
}

static filo_status oom(void)
{
    return TABLE_FAIL(FILO_ERR_OOM, "out of host memory reading a table");
}

static filo_status put_char(reader *r, char c)
{
    if (!grow((void **)&r->text, &r->text_cap, r->text_len + 1, 1))
        return oom();
    r->text[r->text_len++] = c;
    return FILO_OK;
}

static filo_status begin_field(reader *r)
{
    if (r->n_fields == INT32_MAX || !grow((void **)&r->field, &r->field_cap, (size_t)r->n_fields + 1, sizeof(size_t)))
        return oom();
    r->field[r->n_fields++] = r->text_len;
    return FILO_OK;
}

static const char *field_text(const reader *r, int i)
{
    return r->text + r->field[i];
}

/* ---- checks ---- */

/* The fatal form of a row error: "path:line: what". */
static filo_status fail_at(const reader *r, int64_t line, const char *what)
{
    return TABLE_FAIL(FILO_ERR_FORMAT, "%s:%" PRId64 ": %s", r->t->path, line, what);
}

/* A bad row: an error, or with skip_bad counted and left out (the caller returns FILO_OK and keeps
 * nothing of the row). A bad header is always an error. */
static filo_status reject(reader *r, int64_t line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static filo_status reject(reader *r, int64_t line, const char *fmt, ...)
{
    if (r->skip_bad && !r->in_header) {
        r->t->skipped++;
        return FILO_OK;
    }
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return fail_at(r, line, what);
}

/* Index of the first byte of s[0, n) that is not part of well-formed UTF-8 (overlong forms,
 * surrogates and code points past U+10FFFF included) or is a NUL, which C strings cannot hold;
 * n when there is none. */
static size_t utf8_invalid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c == 0)
            return i;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            k = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            lo = c == 0xE0 ? 0xA0 : lo;
            hi = c == 0xED ? 0x9F : hi;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            lo = c == 0xF0 ? 0x90 : lo;
            hi = c == 0xF4 ? 0x8F : hi;
        } else
            return i;
        if (n - i <= k || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return i;
        i += k + 1;
    }
    return n;
}

/* Sets *ok = 0 after rejecting the record whose raw text is b[0, n), starting on `line`, when it
 * is not valid UTF-8; the message names the line of the bad byte. */
static filo_status check_utf8(reader *r, const char *b, size_t n, int64_t line, int *ok)
{
    size_t bad = utf8_invalid((const unsigned char *)b, n);
    *ok = bad == n;
    if (*ok)
        return FILO_OK;
    for (size_t i = 0; i < bad; i++)
        line += b[i] == '\n';
    if (b[bad] == 0)
        return reject(r, line, "a NUL byte");
    return reject(r, line, "invalid UTF-8 (byte 0x%02X)", (unsigned char)b[bad]);
}

/* ---- building the table ---- */

static filo_status add_row(reader *r, int64_t line)
{
    filo_table *t = r->t;
    if (!grow((void **)&t->lines, &r->cap_rows, (size_t)t->n_rows + 1, sizeof(int64_t)))
        return oom();
    t->lines[t->n_rows++] = line;
    return FILO_OK;
}

/* Takes ownership of *cell (for the last row added). */
static filo_status add_cell(reader *r, int col, filo_cell *cell)
{
    if (!grow((void **)&r->e, &r->cap_e, r->n_e + 1, sizeof(entry))) {
        cell_free(cell);
        return oom();
    }
    r->e[r->n_e++] = (entry){r->t->n_rows - 1, col, *cell};
    *cell = missing_cell;
    return FILO_OK;
}

static filo_status add_text_cell(reader *r, int col, const char *s)
{
    filo_cell c = {strdup(s), NULL, 0};
    if (!c.text)
        return oom();
    return add_cell(r, col, &c);
}

static filo_status add_column(reader *r, const char *name, int64_t line)
{
    filo_table *t = r->t;
    if (filo_table_column(t, name) >= 0) {
        char what[200];
        snprintf(what, sizeof what, "the column name '%.120s' is repeated", name);
        return fail_at(r, line, what);
    }
    char **c = realloc(t->columns, ((size_t)t->n_cols + 1) * sizeof *c);
    if (!c)
        return oom();
    t->columns = c;
    if (!(c[t->n_cols] = strdup(name)))
        return oom();
    t->n_cols++;
    return FILO_OK;
}

/* The decoded fields of a TSV or CSV record: the header, or a row of exactly n_cols fields. */
static filo_status add_fields(reader *r, int64_t line)
{
    if (r->in_header) {
        for (int i = 0; i < r->n_fields; i++)
            FILO_TRY(add_column(r, field_text(r, i), line));
        r->in_header = 0;
        return FILO_OK;
    }
    if (r->n_fields != r->t->n_cols)
        return reject(r, line, "%d field%s, the header has %d", r->n_fields, r->n_fields == 1 ? "" : "s",
                      r->t->n_cols);
    FILO_TRY(add_row(r, line));
    for (int i = 0; i < r->n_fields; i++)
        FILO_TRY(add_text_cell(r, i, field_text(r, i)));
    return FILO_OK;
}

/* ---- line-based formats: TSV, JSONL, TEXT ---- */

/* The next line, without its line ending, NUL-terminated in place; NULL at the end. */
static char *next_line(reader *r, size_t *n, int64_t *line)
{
    if (r->pos >= r->len)
        return NULL;
    char *b = r->buf + r->pos;
    char *nl = memchr(b, '\n', r->len - r->pos);
    size_t k = nl ? (size_t)(nl - b) : r->len - r->pos;
    r->pos += nl ? k + 1 : k;
    *line = r->line++;
    if (k && b[k - 1] == '\r')
        k--;
    b[k] = '\0';
    *n = k;
    return b;
}

/* Splits on tabs, decoding \t, \n and \\ (any other backslash stays as it is). */
static filo_status tsv_record(reader *r, const char *b, int64_t line)
{
    r->n_fields = 0;
    r->text_len = 0;
    FILO_TRY(begin_field(r));
    for (const char *p = b; *p; p++) {
        char c = *p;
        if (c == '\t') {
            FILO_TRY(put_char(r, '\0'));
            FILO_TRY(begin_field(r));
            continue;
        }
        if (c == '\\' && (p[1] == 't' || p[1] == 'n' || p[1] == '\\')) {
            p++;
            c = *p == 't' ? '\t' : *p == 'n' ? '\n' : '\\';
        }
        FILO_TRY(put_char(r, c));
    }
    FILO_TRY(put_char(r, '\0'));
    return add_fields(r, line);
}

/* A JSON value as a new string: strings as they are, anything else as its JSON text. */
static char *json_string(const cJSON *v)
{
    if (cJSON_IsString(v))
        return strdup(v->valuestring);
    char *p = cJSON_PrintUnformatted(v);
    char *s = p ? strdup(p) : NULL;
    cJSON_free(p);
    return s;
}

static filo_status json_cell(const cJSON *v, filo_cell *c)
{
    *c = missing_cell;
    if (!(c->text = json_string(v)))
        return oom();
    if (!cJSON_IsArray(v))
        return FILO_OK;
    int n = cJSON_GetArraySize(v);
    for (const cJSON *x = v->child; x; x = x->next)
        if (!cJSON_IsString(x) && !cJSON_IsNumber(x) && !cJSON_IsBool(x))
            return FILO_OK;
    /* one slot more, so that an empty list is still a non-NULL list */
    if ((c->items = calloc((size_t)n + 1, sizeof *c->items)))
        for (const cJSON *x = v->child; x; x = x->next, c->n_items++)
            if (!(c->items[c->n_items] = json_string(x)))
                break;
    if (c->n_items == n && c->items)
        return FILO_OK;
    cell_free(c);
    return oom();
}

static filo_status jsonl_record(reader *r, const char *b, int64_t line)
{
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithOpts(b, &end, 1);
    if (!obj)
        return reject(r, line, "JSON does not parse (at column %td)", (end ? end - b : 0) + 1);
    filo_status s = FILO_OK;
    if (!cJSON_IsObject(obj)) {
        s = reject(r, line, "not a JSON object (JSONL wants one object a line)");
        goto done;
    }
    for (const cJSON *k = obj->child; k; k = k->next)
        for (const cJSON *prev = obj->child; prev != k; prev = prev->next)
            if (strcmp(k->string, prev->string) == 0) {
                s = reject(r, line, "the key '%.120s' is repeated", k->string);
                goto done;
            }
    if ((s = add_row(r, line)) != FILO_OK)
        goto done;
    for (const cJSON *v = obj->child; v && s == FILO_OK; v = v->next) {
        if (cJSON_IsNull(v))
            continue;
        int col = filo_table_column(r->t, v->string);
        if (col < 0) {
            if ((s = add_column(r, v->string, line)) != FILO_OK)
                break;
            col = r->t->n_cols - 1;
        }
        filo_cell c;
        if ((s = json_cell(v, &c)) == FILO_OK)
            s = add_cell(r, col, &c);
    }
done:
    cJSON_Delete(obj);
    return s;
}

static filo_status read_lines(reader *r, filo_table_format format)
{
    if (format == FILO_TABLE_TEXT)
        FILO_TRY(add_column(r, "text", 1));
    size_t n;
    int64_t line;
    char *b;
    while ((b = next_line(r, &n, &line))) {
        int ok;
        if (n == 0)
            continue;
        FILO_TRY(check_utf8(r, b, n, line, &ok));
        if (!ok)
            continue;
        if (format == FILO_TABLE_TSV)
            FILO_TRY(tsv_record(r, b, line));
        else if (format == FILO_TABLE_JSONL)
            FILO_TRY(jsonl_record(r, b, line));
        else {
            FILO_TRY(add_row(r, line));
            FILO_TRY(add_text_cell(r, 0, b));
        }
    }
    return FILO_OK;
}

/* ---- CSV ---- */

/* Parses the record at r->pos into the fields and moves past it. *problem is set (and the line it
 * is on) for text after a closing quote; the rest of that field is then kept as it is, so the
 * record still ends where it should. */
static filo_status csv_record(reader *r, size_t *raw_end, const char **problem, int64_t *problem_line)
{
    const char *s = r->buf;
    size_t n = r->len, i = r->pos;
    int64_t line = r->line;
    r->n_fields = 0;
    r->text_len = 0;
    *problem = NULL;
    for (;;) {
        FILO_TRY(begin_field(r));
        int quoted = i < n && s[i] == '"';
        if (quoted) {
            int64_t open_line = line;
            for (i++;; i++) {
                if (i >= n)
                    return fail_at(r, open_line, "a quoted field is not closed before the end of the file");
                if (s[i] == '"' && !(i + 1 < n && s[i + 1] == '"'))
                    break;
                i += s[i] == '"';
                line += s[i] == '\n';
                FILO_TRY(put_char(r, s[i]));
            }
            i++;
        }
        size_t start = r->text_len;
        for (; i < n && s[i] != ',' && s[i] != '\n'; i++)
            FILO_TRY(put_char(r, s[i]));
        /* the \r of a \r\n (or of a last line's \r) is no part of the field */
        if ((i >= n || s[i] == '\n') && r->text_len > start && r->text[r->text_len - 1] == '\r')
            r->text_len--;
        if (quoted && r->text_len > start && !*problem) {
            *problem = "text after a closing quote";
            *problem_line = line;
        }
        FILO_TRY(put_char(r, '\0'));
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        break;
    }
    *raw_end = i;
    if (i < n) {
        i++;
        line++;
    }
    r->pos = i;
    r->line = line;
    return FILO_OK;
}

static filo_status read_csv(reader *r)
{
    while (r->pos < r->len) {
        const char *b = r->buf + r->pos;
        if (b[0] == '\n' || (b[0] == '\r' && (r->pos + 1 == r->len || b[1] == '\n'))) {
            r->pos += b[0] == '\n' ? 1 : 2;
            r->line++;
            continue;
        }
        int64_t line = r->line;
        size_t raw_end = 0;
        const char *problem;
        int64_t problem_line = line;
        FILO_TRY(csv_record(r, &raw_end, &problem, &problem_line));
        int ok;
        FILO_TRY(check_utf8(r, b, (size_t)(r->buf + raw_end - b), line, &ok));
        if (ok && problem)
            FILO_TRY(reject(r, problem_line, "%s", problem));
        if (ok && !problem)
            FILO_TRY(add_fields(r, line));
    }
    return FILO_OK;
}

/* ---- reading ---- */

static filo_status slurp(FILE *fp, const char *path, char **buf, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (;;) {
        if (!b)
            return oom();
        n += fread(b + n, 1, cap - n - 1, fp);
        if (n < cap - 1)
            break;
        char *q = cap <= SIZE_MAX / 2 ? realloc(b, cap * 2) : NULL;
        if (!q)
            free(b);
        b = q;
        cap *= 2;
    }
    if (ferror(fp)) {
        free(b);
        return TABLE_FAIL(FILO_ERR_IO, "reading %s failed: %s", path, strerror(errno));
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return FILO_OK;
}

static filo_status layout_cells(reader *r)
{
    filo_table *t = r->t;
    if (t->n_rows == 0) {
        if (t->skipped)
            return TABLE_FAIL(FILO_ERR_FORMAT, "%s: no rows left: all %" PRId64 " were bad (skip_bad)", t->path,
                             t->skipped);
        return TABLE_FAIL(FILO_ERR_FORMAT, "%s has no rows", t->path);
    }
    if (t->n_cols == 0)
        return TABLE_FAIL(FILO_ERR_FORMAT, "%s: no object has a key", t->path);
    if ((uint64_t)t->n_rows > SIZE_MAX / sizeof(filo_cell) / (uint64_t)t->n_cols ||
        !(t->cells = calloc((size_t)t->n_rows * (size_t)t->n_cols, sizeof(filo_cell))))
        return oom();
    for (size_t i = 0; i < r->n_e; i++)
        t->cells[r->e[i].row * t->n_cols + r->e[i].col] = r->e[i].cell;
    r->n_e = 0;
    return FILO_OK;
}

static filo_status read_table(reader *r, const char *path, filo_table_format format)
{
    int is_stdin = strcmp(path, "-") == 0;
    if (format == FILO_TABLE_AUTO)
        format = is_stdin ? FILO_TABLE_TEXT : format_from_extension(path);
    if (!(r->t->path = strdup(is_stdin ? "<stdin>" : path)))
        return oom();
    FILE *fp = is_stdin ? stdin : fopen(path, "rb");
    if (!fp)
        return TABLE_FAIL(FILO_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    filo_status s = slurp(fp, r->t->path, &r->buf, &r->len);
    if (!is_stdin)
        fclose(fp);
    FILO_TRY(s);
    if (r->len >= 3 && memcmp(r->buf, "\xEF\xBB\xBF", 3) == 0)
        r->pos = 3;
    if (r->len == r->pos)
        return TABLE_FAIL(FILO_ERR_FORMAT, "%s is empty", r->t->path);
    r->in_header = format == FILO_TABLE_TSV || format == FILO_TABLE_CSV;
    FILO_TRY(format == FILO_TABLE_CSV ? read_csv(r) : read_lines(r, format));
    return layout_cells(r);
}

filo_status filo_table_read(const char *path, filo_table_format format, int skip_bad, filo_table *out)
{
    if (!out)
        return TABLE_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    memset(out, 0, sizeof *out);
    if (!path)
        return TABLE_FAIL(FILO_ERR_INVALID_ARG, "path is NULL");
    if (format < FILO_TABLE_AUTO || format > FILO_TABLE_TEXT)
        return TABLE_FAIL(FILO_ERR_INVALID_ARG, "unknown table format %d", (int)format);
    reader r = {.t = out, .skip_bad = skip_bad, .line = 1};
    filo_status s = read_table(&r, path, format);
    for (size_t i = 0; i < r.n_e; i++)
        cell_free(&r.e[i].cell);
    free(r.e);
    free(r.buf);
    free(r.text);
    free(r.field);
    if (s != FILO_OK)
        filo_table_free(out);
    return s;
}
