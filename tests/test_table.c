#define _POSIX_C_SOURCE 200809L
/* Data tables (filo/table.h): TSV with escapes, CSV with quoted commas, doubled quotes and
 * newlines (rows after them keep their true line numbers), JSONL with every kind of value, TEXT;
 * a byte-order mark, CRLF, blank lines and a last line without a newline; format detection; every
 * error with the file:line it names, and the same rows counted and left out with skip_bad. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filo_test.h"

static char tmpdir[64];

static void remove_tmpdir(void) { filo_test_remove_dir(tmpdir); }

static void make_tmpdir(void) { filo_test_make_tmpdir(tmpdir, sizeof tmpdir, "table"); }

TestSuite(table, .init = make_tmpdir, .fini = remove_tmpdir);

/* Writes n bytes (n < 0: strlen) to tmpdir/name; returns the path. */
static const char *write_file(const char *name, const char *text, long n)
{
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *fp = fopen(p, "wb");
    cr_assert(fp);
    fwrite(text, 1, n < 0 ? strlen(text) : (size_t)n, fp);
    fclose(fp);
    return p;
}

static const char *text_at(const filo_table *t, int64_t row, const char *col)
{
    return filo_table_cell(t, row, filo_table_column(t, col))->text;
}

static void expect_text(const filo_table *t, int64_t row, const char *col, const char *want)
{
    const char *got = text_at(t, row, col);
    if (!want)
        cr_assert_null(got, "row %lld %s: expected a missing cell, got '%s'", (long long)row, col, got);
    else
        cr_assert(got && strcmp(got, want) == 0, "row %lld %s: '%s', expected '%s'", (long long)row, col,
                  got ? got : "(missing)", want);
}

static void expect_lines(const filo_table *t, int64_t n, const int64_t *lines)
{
    cr_assert_eq(t->n_rows, n, "%lld rows, expected %lld", (long long)t->n_rows, (long long)n);
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(t->lines[i], lines[i], "row %lld on line %lld, expected %lld", (long long)i,
                     (long long)t->lines[i], (long long)lines[i]);
}

Test(table, tsv_escapes_crlf_bom_blank_lines)
{
    const char *p = write_file("a.tsv",
                               "\xEF\xBB\xBFtext\tlabel\r\n"
                               "hello world\tpos\r\n"
                               "\r\n"
                               "tab\\there\\nnewline \\\\ and \\x\tneg\r\n"
                               "\n"
                               "\tempty\n"
                               "caf\xC3\xA9 \xF0\x9F\x98\x80\tpos",
                               -1);
    filo_table t;
    FILO_CHECK(filo_table_read(p, FILO_TABLE_AUTO, 0, &t));
    cr_assert_eq(t.n_cols, 2);
    cr_assert_str_eq(t.columns[0], "text");
    cr_assert_str_eq(t.columns[1], "label");
    expect_lines(&t, 4, (const int64_t[]){2, 4, 6, 7});
    expect_text(&t, 0, "text", "hello world");
    expect_text(&t, 0, "label", "pos");
    expect_text(&t, 1, "text", "tab\there\nnewline \\ and \\x");
    expect_text(&t, 2, "text", "");
    expect_text(&t, 2, "label", "empty");
    expect_text(&t, 3, "text", "caf\xC3\xA9 \xF0\x9F\x98\x80");
    cr_assert_eq(t.skipped, 0);
    cr_assert_null(filo_table_cell(&t, 0, 0)->items);
    char where[300], want[300];
    snprintf(want, sizeof want, "%s:6", p);
    cr_assert_str_eq(filo_table_where(&t, 2, where, sizeof where), want);
    filo_table_free(&t);
    cr_assert_null(t.cells);
}

Test(table, csv_quoting_and_line_numbers)
{
    const char *p = write_file("b.csv",
                               "id,\"the text\",label\n"
                               "1,plain,a\n"
                               "2,\"with, comma\",b\n"
                               "3,\"say \"\"hi\"\"\",c\n"
                               "4,\"two\nlines\r\nand three\",d\n"
                               "\n"
                               "5,,\"\"\r\n"
                               "6,5\" screen,e\r\n"
                               "7,\"\",\"x\"",
                               -1);
    filo_table t;
    FILO_CHECK(filo_table_read(p, FILO_TABLE_AUTO, 0, &t));
    cr_assert_eq(t.n_cols, 3);
    cr_assert_str_eq(t.columns[1], "the text");
    expect_lines(&t, 7, (const int64_t[]){2, 3, 4, 5, 9, 10, 11});
    expect_text(&t, 0, "the text", "plain");
    expect_text(&t, 1, "the text", "with, comma");
    expect_text(&t, 2, "the text", "say \"hi\"");
    expect_text(&t, 3, "the text", "two\nlines\r\nand three");
    expect_text(&t, 3, "label", "d");
    expect_text(&t, 4, "the text", "");
    expect_text(&t, 4, "label", "");
    /* a quote inside an unquoted field is an ordinary character (as in Python's csv) */
    expect_text(&t, 5, "the text", "5\" screen");
    expect_text(&t, 5, "label", "e");
    expect_text(&t, 6, "id", "7");
    expect_text(&t, 6, "label", "x");
    filo_table_free(&t);
}

Test(table, jsonl_values)
{
    const char *p = write_file("c.jsonl",
                               "{\"text\": \"caf\\u00e9 \\\"q\\\"\", \"label\": 1, \"score\": 0.25}\n"
                               "\n"
                               "{\"label\": 1.0, \"ok\": true, \"text\": \"second\", \"extra\": null}\r\n"
                               "{\"tokens\": [\"EU\", \"rejects\", 3, false], \"tags\": [], "
                               "\"meta\": {\"a\": [1, 2]}}\n"
                               "{\"mixed\": [\"a\", [\"b\"]], \"neg\": -3e2}  \n",
                               -1);
    filo_table t;
    FILO_CHECK(filo_table_read(p, FILO_TABLE_AUTO, 0, &t));
    const char *cols[] = {"text", "label", "score", "ok", "tokens", "tags", "meta", "mixed", "neg"};
    cr_assert_eq(t.n_cols, 9, "columns: %d", t.n_cols);
    for (int i = 0; i < 9; i++)
        cr_assert_str_eq(t.columns[i], cols[i]);
    cr_assert_eq(filo_table_column(&t, "extra"), -1, "a key only ever null makes no column");
    expect_lines(&t, 4, (const int64_t[]){1, 3, 4, 5});
    expect_text(&t, 0, "text", "caf\xC3\xA9 \"q\"");
    expect_text(&t, 0, "label", "1");
    expect_text(&t, 0, "score", "0.25");
    expect_text(&t, 0, "ok", NULL);
    expect_text(&t, 1, "label", "1");
    expect_text(&t, 1, "ok", "true");
    expect_text(&t, 1, "score", NULL);
    expect_text(&t, 2, "text", NULL);
    expect_text(&t, 2, "tokens", "[\"EU\",\"rejects\",3,false]");
    const filo_cell *tok = filo_table_cell(&t, 2, filo_table_column(&t, "tokens"));
    cr_assert_eq(tok->n_items, 4);
    cr_assert_str_eq(tok->items[0], "EU");
    cr_assert_str_eq(tok->items[1], "rejects");
    cr_assert_str_eq(tok->items[2], "3");
    cr_assert_str_eq(tok->items[3], "false");
    const filo_cell *tags = filo_table_cell(&t, 2, filo_table_column(&t, "tags"));
    cr_assert(tags->items != NULL && tags->n_items == 0, "an empty array is an empty list");
    cr_assert_str_eq(tags->text, "[]");
    expect_text(&t, 2, "meta", "{\"a\":[1,2]}");
    cr_assert_null(filo_table_cell(&t, 2, filo_table_column(&t, "meta"))->items);
    expect_text(&t, 3, "mixed", "[\"a\",[\"b\"]]");
    cr_assert_null(filo_table_cell(&t, 3, filo_table_column(&t, "mixed"))->items, "a nested array is no list");
    expect_text(&t, 3, "neg", "-300");
    filo_table_free(&t);
}

Test(table, text_lines)
{
    const char *p = write_file("d.txt", "\xEF\xBB\xBF" "first line\r\n\r\n  second\t\"x\",y  \n\nthird", -1);
    filo_table t;
    FILO_CHECK(filo_table_read(p, FILO_TABLE_AUTO, 0, &t));
    cr_assert_eq(t.n_cols, 1);
    cr_assert_str_eq(t.columns[0], "text");
    expect_lines(&t, 3, (const int64_t[]){1, 3, 5});
    expect_text(&t, 0, "text", "first line");
    expect_text(&t, 1, "text", "  second\t\"x\",y  ");
    expect_text(&t, 2, "text", "third");
    filo_table_free(&t);
}

Test(table, format_names_and_detection)
{
    filo_table_format f;
    const char *names[] = {"auto", "tsv", "csv", "jsonl", "text"};
    const filo_table_format want[] = {FILO_TABLE_AUTO, FILO_TABLE_TSV, FILO_TABLE_CSV, FILO_TABLE_JSONL,
                                      FILO_TABLE_TEXT};
    for (int i = 0; i < 5; i++) {
        FILO_CHECK(filo_table_format_parse(names[i], &f));
        cr_assert_eq(f, want[i]);
    }
    FILO_CHECK_FAILS(filo_table_format_parse("xlsx", &f), FILO_ERR_INVALID_ARG, "'xlsx'");
    FILO_CHECK_FAILS(filo_table_format_parse(NULL, &f), FILO_ERR_INVALID_ARG, "format");

    /* the same bytes read by extension, or as the format named */
    const char *body = "a,b\n1,2\n";
    const char *files[] = {"e.CSV", "e.tsv", "e.ndjson", "e.json", "e.data"};
    const int cols[] = {2, 1, -1, -1, 1};
    for (int i = 0; i < 5; i++) {
        filo_table t;
        filo_status s = filo_table_read(write_file(files[i], body, -1), FILO_TABLE_AUTO, 0, &t);
        if (cols[i] < 0) {
            cr_assert_eq(s, FILO_ERR_FORMAT, "%s is read as JSONL", files[i]);
            continue;
        }
        FILO_CHECK(s);
        cr_assert_eq(t.n_cols, cols[i], "%s: %d columns", files[i], t.n_cols);
        filo_table_free(&t);
    }
    filo_table t;
    FILO_CHECK(filo_table_read(write_file("f.txt", body, -1), FILO_TABLE_CSV, 0, &t));
    cr_assert_eq(t.n_cols, 2);
    expect_text(&t, 0, "b", "2");
    filo_table_free(&t);
}

Test(table, accessors_out_of_range)
{
    filo_table t;
    FILO_CHECK(filo_table_read(write_file("g.tsv", "x\n1\n", -1), FILO_TABLE_AUTO, 0, &t));
    cr_assert_eq(filo_table_column(&t, "y"), -1);
    cr_assert_null(filo_table_cell(&t, 0, -1)->text);
    cr_assert_null(filo_table_cell(&t, 5, 0)->text);
    cr_assert_str_eq(filo_table_cell(&t, 0, 0)->text, "1");
    filo_table_free(&t);
    filo_table_free(&t);
    filo_table_free(NULL);
}

/* Reading `body` as `format` fails with FILO_ERR_FORMAT naming "<file>:<line>: what"; with
 * skip_bad it keeps `rows` rows and counts `skipped` (no rows left is an error; skipped < 0: the
 * same error as without skip_bad). */
static void expect_bad(const char *name, const char *body, long n, filo_table_format format, int line,
                       const char *what, int64_t skipped, int64_t rows)
{
    const char *p = write_file(name, body, n);
    char want[400];
    snprintf(want, sizeof want, "%s:%d: %s", p, line, what);
    filo_table t;
    FILO_CHECK_FAILS(filo_table_read(p, format, 0, &t), FILO_ERR_FORMAT, want);
    cr_assert(t.n_rows == 0 && t.cells == NULL && t.path == NULL, "a failed read leaves the table zeroed");
    if (skipped < 0) {
        FILO_CHECK_FAILS(filo_table_read(p, format, 1, &t), FILO_ERR_FORMAT, want);
        return;
    }
    if (rows == 0) {
        snprintf(want, sizeof want, "no rows left: all %lld were bad", (long long)skipped);
        FILO_CHECK_FAILS(filo_table_read(p, format, 1, &t), FILO_ERR_FORMAT, want);
        return;
    }
    FILO_CHECK(filo_table_read(p, format, 1, &t));
    cr_assert_eq(t.skipped, skipped, "%s: %lld skipped, expected %lld", name, (long long)t.skipped,
                 (long long)skipped);
    cr_assert_eq(t.n_rows, rows, "%s: %lld rows, expected %lld", name, (long long)t.n_rows, (long long)rows);
    filo_table_free(&t);
}

Test(table, bad_rows)
{
    expect_bad("h1.tsv", "a\tb\n1\t2\n3\n4\t5\n", -1, FILO_TABLE_AUTO, 3, "1 field, the header has 2", 1, 2);
    expect_bad("h2.tsv", "a\tb\n1\t2\t3\n\n4\t5\n6\n", -1, FILO_TABLE_AUTO, 2, "3 fields, the header has 2", 2, 1);
    expect_bad("h3.csv", "a,b\n\"x\ny\",1\n2\n3,4\n", -1, FILO_TABLE_AUTO, 4, "1 field, the header has 2", 1, 2);
    expect_bad("h4.csv", "a,b\n1,2\n\"q\"x,3\n4,5\n", -1, FILO_TABLE_AUTO, 3, "text after a closing quote", 1, 2);
    expect_bad("h5.jsonl", "{\"a\": 1}\n{\"a\": }\n{\"a\": 2}\n", -1, FILO_TABLE_AUTO, 2,
               "JSON does not parse (at column 7)", 1, 2);
    expect_bad("h6.jsonl", "{\"a\": 1}\n\n[1, 2]\n", -1, FILO_TABLE_AUTO, 3, "not a JSON object", 1, 1);
    expect_bad("h7.jsonl", "{\"a\": 1} {\"a\": 2}\n{\"a\": 3}\n", -1, FILO_TABLE_AUTO, 1, "JSON does not parse", 1, 1);
    expect_bad("h8.jsonl", "{\"a\": 1}\n{\"a\": 1, \"b\": 2, \"a\": 3}\n", -1, FILO_TABLE_AUTO, 2,
               "the key 'a' is repeated", 1, 1);
    expect_bad("h9.jsonl", "\"just a string\"\n", -1, FILO_TABLE_AUTO, 1, "not a JSON object", 1, 0);
}

Test(table, invalid_utf8)
{
    /* a stray continuation byte, an overlong form, a surrogate, a code point past U+10FFFF, a
     * truncated sequence at the end of a line */
    const char *bad[] = {"\x80", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "ok\xE2\x82"};
    const char *byte[] = {"0x80", "0xC0", "0xED", "0xF4", "0xE2"};
    for (int i = 0; i < 5; i++) {
        char body[64], what[64];
        snprintf(body, sizeof body, "t\tl\nfine\t1\n%s\t2\nfine\t3\n", bad[i]);
        snprintf(what, sizeof what, "invalid UTF-8 (byte %s)", byte[i]);
        expect_bad("u.tsv", body, -1, FILO_TABLE_AUTO, 3, what, 1, 2);
    }
    expect_bad("u.txt", "one\ntwo\0three\nfour\n", 19, FILO_TABLE_AUTO, 2, "a NUL byte", 1, 2);
    /* in a CSV record over several lines, the line of the bad byte */
    expect_bad("u.csv", "a,b\n1,\"line\nli\xFFne\",x\n2,y\n", -1, FILO_TABLE_AUTO, 3, "invalid UTF-8 (byte 0xFF)", 1,
               1);
    expect_bad("u.jsonl", "{\"a\": \"\xC3\x28\"}\n", -1, FILO_TABLE_AUTO, 1, "invalid UTF-8 (byte 0xC3)", 1, 0);
}

Test(table, bad_files)
{
    /* errors in the header or the whole file stay errors with skip_bad */
    expect_bad("i1.csv", "a,b\n1,\"open\n2,3\n", -1, FILO_TABLE_AUTO, 2,
               "a quoted field is not closed before the end of the file", -1, 0);
    expect_bad("i2.tsv", "a\tb\ta\n1\t2\t3\n", -1, FILO_TABLE_AUTO, 1, "the column name 'a' is repeated", -1, 0);
    expect_bad("i3.tsv", "\n\xFF\tb\n1\t2\n", -1, FILO_TABLE_AUTO, 2, "invalid UTF-8", -1, 0);
    expect_bad("i4.csv", "\"a\"b,c\n1,2\n", -1, FILO_TABLE_AUTO, 1, "text after a closing quote", -1, 0);

    struct {
        const char *name, *body, *what;
        int skip_bad;
    } cases[] = {
        {"j1.tsv", "", "j1.tsv is empty", 0},
        {"j2.txt", "\xEF\xBB\xBF", "j2.txt is empty", 0},
        {"j3.txt", "\n\r\n\n", "j3.txt has no rows", 0},
        {"j4.csv", "a,b\r\n\r\n", "j4.csv has no rows", 0},
        {"j5.tsv", "a\tb\n1\n2\n", "j5.tsv: no rows left: all 2 were bad (skip_bad)", 1},
        {"j6.jsonl", "{}\n{\"a\": null}\n", "j6.jsonl: no object has a key", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        filo_table t;
        FILO_CHECK_FAILS(filo_table_read(write_file(cases[i].name, cases[i].body, -1), FILO_TABLE_AUTO,
                                         cases[i].skip_bad, &t),
                         FILO_ERR_FORMAT, cases[i].what);
    }
    filo_table t;
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope.tsv", tmpdir);
    FILO_CHECK_FAILS(filo_table_read(missing, FILO_TABLE_AUTO, 0, &t), FILO_ERR_IO, "nope.tsv");
    FILO_CHECK_FAILS(filo_table_read(tmpdir, FILO_TABLE_TSV, 0, &t), FILO_ERR_IO, tmpdir);
    FILO_CHECK_FAILS(filo_table_read(NULL, FILO_TABLE_TSV, 0, &t), FILO_ERR_INVALID_ARG, "path");
    FILO_CHECK_FAILS(filo_table_read(missing, (filo_table_format)9, 0, &t), FILO_ERR_INVALID_ARG, "format");
    FILO_CHECK_FAILS(filo_table_read(missing, FILO_TABLE_TSV, 0, NULL), FILO_ERR_INVALID_ARG, "out");
}
