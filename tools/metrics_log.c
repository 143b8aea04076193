#define _POSIX_C_SOURCE 200809L
/* Metrics files (metrics_log.h). The writer prints JSON itself (flat objects of numbers need no
 * library); the plot reads the file back through filo's JSONL table reader, writes the series to
 * one gnuplot data file (one block each, picked by `index`) and runs gnuplot on a script file
 * with posix_spawnp, its output captured for the error message. */
#include "metrics_log.h"

#include <errno.h>
#include <fcntl.h>
#include <filo/table.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int failf(char *err, size_t err_size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failf(char *err, size_t err_size, const char *fmt, ...)
{
    if (err && err_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_size, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int metrics_log_open(metrics_log *log, const char *path, int append, char *err, size_t err_size)
{
    memset(log, 0, sizeof *log);
    if (!(log->fp = fopen(path, append ? "a" : "w")))
        return failf(err, err_size, "cannot open %s: %s", path, strerror(errno));
    if (!(log->path = strdup(path))) {
        metrics_log_close(log);
        return failf(err, err_size, "out of memory");
    }
    return 0;
}

/* A JSON number: integers without a fraction, others with the fewest digits (15 to 17) that read
 * back as the same double; JSON has no NaN or infinity, so those are null. */
static void write_number(FILE *fp, double v)
{
    if (!isfinite(v)) {
        fputs("null", fp);
        return;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        fprintf(fp, "%.0f", v);
        return;
    }
    char buf[32];
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    fputs(buf, fp);
}

static void write_key(FILE *fp, const char *key)
{
    fputc('"', fp);
    for (const unsigned char *c = (const unsigned char *)key; *c; c++)
        if (*c == '"' || *c == '\\')
            fprintf(fp, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(fp, "\\u%04x", *c);
        else
            fputc(*c, fp);
    fputc('"', fp);
}

int metrics_log_write(metrics_log *log, const metrics_pair *pairs, int n, char *err, size_t err_size)
{
    if (!log->fp)
        return failf(err, err_size, "the metrics log is not open");
    fputc('{', log->fp);
    for (int i = 0; i < n; i++) {
        if (i)
            fputc(',', log->fp);
        write_key(log->fp, pairs[i].key ? pairs[i].key : "");
        fputc(':', log->fp);
        write_number(log->fp, pairs[i].value);
    }
    fputs("}\n", log->fp);
    if (fflush(log->fp) || ferror(log->fp))
        return failf(err, err_size, "writing %s failed: %s", log->path, strerror(errno));
    return 0;
}

void metrics_log_close(metrics_log *log)
{
    if (log->fp)
        fclose(log->fp);
    free(log->path);
    memset(log, 0, sizeof *log);
}

/* ---- the plot ---- */

/* A cell's number; 0 when the cell is missing or not a number. */
static int cell_number(const filo_cell *c, double *v)
{
    char *end;
    if (!c->text || c->items)
        return 0;
    *v = strtod(c->text, &end);
    return end != c->text && !*end;
}

static int ends_with_loss(const char *key)
{
    size_t n = strlen(key);
    return n >= 4 && strcmp(key + n - 4, "loss") == 0;
}

/* Writes s as a gnuplot single-quoted string (a quote is doubled; nothing else is special);
 * control characters, which would end the line, become spaces. */
static void write_quoted(FILE *fp, const char *s)
{
    fputc('\'', fp);
    for (; *s; s++)
        if (*s == '\'')
            fputs("''", fp);
        else
            fputc((unsigned char)*s < 0x20 ? ' ' : *s, fp);
    fputc('\'', fp);
}

typedef struct series {
    int col, index, y2;
} series;

/* Whether a training record (one with a loss) has column c. A training step whose loss was NaN
 * (null in the file) reads as an evaluation record: this keeps its lr out of the metrics. */
static int in_training(const filo_table *t, int c, int c_loss)
{
    for (int64_t r = 0; r < t->n_rows; r++)
        if (filo_table_cell(t, r, c_loss)->text && filo_table_cell(t, r, c)->text)
            return 1;
    return 0;
}

/* Writes each plotted column's points as a block of the data file; returns how many, or -1. */
static int write_series(const filo_table *t, FILE *data, series *out)
{
    int c_step = filo_table_column(t, "step"), c_loss = filo_table_column(t, "loss");
    double *x = malloc((size_t)t->n_rows * sizeof *x);
    if (!x)
        return -1;
    double last = 0, v;
    for (int64_t r = 0; r < t->n_rows; r++) {
        if (cell_number(filo_table_cell(t, r, c_step), &v))
            last = v;
        x[r] = last;
    }
    int n = 0, any_y1 = 0;
    for (int c = 0; c < t->n_cols; c++) {
        if (c == c_step || strcmp(t->columns[c], "epoch") == 0 || (c != c_loss && in_training(t, c, c_loss)))
            continue;
        int points = 0;
        for (int64_t r = 0; r < t->n_rows; r++) {
            double y;
            if (cell_number(filo_table_cell(t, r, c), &y)) {
                fprintf(data, "%.17g %.17g\n", x[r], y);
                points++;
            }
        }
        if (!points)
            continue;
        fputs("\n\n", data);
        out[n] = (series){c, n, !ends_with_loss(t->columns[c])};
        any_y1 |= !out[n].y2;
        n++;
    }
    /* with nothing on the left axis, the metrics take it */
    for (int i = 0; i < n && !any_y1; i++)
        out[i].y2 = 0;
    free(x);
    return n;
}

static void write_script(FILE *fp, const filo_table *t, const series *s, int n, const char *data_path,
                         const char *png_tmp, const char *title)
{
    int y2 = 0, losses = 0;
    for (int i = 0; i < n; i++) {
        y2 |= s[i].y2;
        losses |= ends_with_loss(t->columns[s[i].col]);
    }
    fputs("if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
          "    set terminal pngcairo size 1000,600 noenhanced\n"
          "} else {\n"
          "    set terminal png size 1000,600 noenhanced\n"
          "}\n"
          "set output ", fp);
    write_quoted(fp, png_tmp);
    fputs("\nset title ", fp);
    write_quoted(fp, title ? title : "");
    fprintf(fp, "\nset xlabel 'step'\nset ylabel '%s'\nset ytics nomirror\nset grid\nset key below\n",
            losses ? "loss" : "metric");
    if (y2)
        fputs("set y2label 'metric'\nset y2tics\n", fp);
    fputs("plot ", fp);
    for (int i = 0; i < n; i++) {
        write_quoted(fp, data_path);
        fprintf(fp, " index %d using 1:2 with %s title ", s[i].index,
                strcmp(t->columns[s[i].col], "loss") == 0 ? "lines lw 2" : "linespoints pt 7");
        write_quoted(fp, t->columns[s[i].col]);
        fprintf(fp, " axes x1y%d%s", s[i].y2 ? 2 : 1, i + 1 < n ? ", \\\n     " : "\n");
    }
}

/* Runs gnuplot on the script with its output to log_fd; 0, or -1 with the message in err. */
static int run_gnuplot(const char *script, int log_fd, char *err, size_t err_size)
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    char *argv[] = {"gnuplot", (char *)script, NULL};
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, log_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, log_fd, 2);
    int rc = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc == ENOENT)
        return failf(err, err_size, "gnuplot is not installed (Debian package gnuplot-nox)");
    if (rc)
        return failf(err, err_size, "cannot run gnuplot: %s", strerror(rc));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return failf(err, err_size, "waiting for gnuplot failed: %s", strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    /* gnuplot echoes the script line, marks it with a caret, then says `"script" line N: what`,
     * sometimes with a system error on the next line: keep from "line N" on, on one line */
    char out[2048] = "";
    ssize_t k = pread(log_fd, out, sizeof out - 1, 0);
    out[k > 0 ? k : 0] = '\0';
    const char *what = strstr(out, "\" line ");
    char msg[2 * sizeof out]; /* each newline becomes two characters */
    size_t m = 0;
    for (what = what ? what + 2 : out; *what; what++)
        if (*what != '\n')
            msg[m++] = *what;
        else if (what[1]) {
            msg[m++] = ';';
            msg[m++] = ' ';
        }
    msg[m] = '\0';
    return failf(err, err_size, "gnuplot failed (%s %d): %s", WIFEXITED(status) ? "exit status" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), msg);
}

/* The plot's files: three temporary ones and the PNG as gnuplot writes it, beside its final name. */
typedef struct plot_files {
    char data[512], script[512], log[512], png[4096];
    FILE *data_fp, *script_fp;
    int log_fd;
} plot_files;

static FILE *temp_stream(char *pattern)
{
    int fd = mkstemp(pattern);
    FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (fd >= 0 && !fp)
        close(fd);
    if (!fp)
        pattern[0] = '\0';
    return fp;
}

static int plot_files_open(plot_files *f, const char *png_path, char *err, size_t err_size)
{
    int n = snprintf(f->png, sizeof f->png, "%s.tmp.%ld", png_path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof f->png) {
        f->png[0] = '\0';
        return failf(err, err_size, "the PNG path is too long");
    }
    const char *dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(f->data, sizeof f->data, "%s/filo-plot-data-XXXXXX", dir);
    snprintf(f->script, sizeof f->script, "%s/filo-plot-script-XXXXXX", dir);
    snprintf(f->log, sizeof f->log, "%s/filo-plot-log-XXXXXX", dir);
    f->data_fp = temp_stream(f->data);
    f->script_fp = temp_stream(f->script);
    f->log_fd = mkstemp(f->log);
    if (f->log_fd < 0)
        f->log[0] = '\0';
    if (!f->data_fp || !f->script_fp || f->log_fd < 0)
        return failf(err, err_size, "cannot create a temporary file in %s: %s", dir, strerror(errno));
    return 0;
}

/* Removes the temporary files, and the PNG's unless it was renamed. */
static void plot_files_close(plot_files *f)
{
    if (f->data_fp)
        fclose(f->data_fp);
    if (f->script_fp)
        fclose(f->script_fp);
    if (f->log_fd >= 0)
        close(f->log_fd);
    const char *paths[] = {f->data, f->script, f->log, f->png};
    for (int i = 0; i < 4; i++)
        if (paths[i][0])
            unlink(paths[i]);
}

int metrics_plot_png(const char *jsonl_path, const char *png_path, const char *title, char *err, size_t err_size)
{
    filo_table t;
    if (filo_table_read(jsonl_path, FILO_TABLE_JSONL, 1, &t) != FILO_OK)
        return failf(err, err_size, "%s", filo_last_error());
    plot_files f = {.log_fd = -1};
    series *s = malloc((size_t)t.n_cols * sizeof *s);
    int n = 0, rc = -1;
    if (!s)
        failf(err, err_size, "out of memory");
    else if (plot_files_open(&f, png_path, err, err_size) == 0) {
        if ((n = write_series(&t, f.data_fp, s)) <= 0)
            failf(err, err_size, n < 0 ? "out of memory" : "%s has nothing to plot", jsonl_path);
        else {
            write_script(f.script_fp, &t, s, n, f.data, f.png, title);
            int bad = fclose(f.data_fp) != 0;
            bad |= fclose(f.script_fp) != 0;
            f.data_fp = f.script_fp = NULL;
            struct stat st;
            if (bad)
                failf(err, err_size, "writing a temporary file for gnuplot failed");
            else if (run_gnuplot(f.script, f.log_fd, err, err_size) == 0) {
                if (stat(f.png, &st) || st.st_size == 0)
                    failf(err, err_size, "gnuplot wrote no %s", f.png);
                else if (rename(f.png, png_path))
                    failf(err, err_size, "cannot rename %s to %s: %s", f.png, png_path, strerror(errno));
                else
                    rc = 0;
            }
        }
    }
    if (rc == 0)
        f.png[0] = '\0';
    plot_files_close(&f);
    free(s);
    filo_table_free(&t);
    return rc;
}
