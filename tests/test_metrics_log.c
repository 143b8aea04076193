#define _POSIX_C_SOURCE 200809L
/* The metrics file and its plot (tools/metrics_log.h): the exact JSON lines (integers, shortest
 * round-trip doubles, null for NaN, escaped keys, append), a PNG rendered by gnuplot from a
 * training run's log (checked by its signature and size, with no temporary file left beside it),
 * and the failures: gnuplot missing from PATH, gnuplot reporting an error, nothing to plot, no
 * file. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "filo_test.h"
#include "metrics_log.h"

static char tmpdir[64];

static void remove_tmpdir(void) { filo_test_remove_dir(tmpdir); }

static void make_tmpdir(void) { filo_test_make_tmpdir(tmpdir, sizeof tmpdir, "mlog"); }

static int dir_entries(void)
{
    DIR *d = opendir(tmpdir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d)
        closedir(d);
    return n;
}

TestSuite(metrics_log, .init = make_tmpdir, .fini = remove_tmpdir);

static const char *tmp_path(const char *name)
{
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

static char *slurp(const char *path, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    cr_assert(fp, "cannot open %s", path);
    char *buf = malloc(1 << 20);
    *size = fread(buf, 1, (1 << 20) - 1, fp);
    buf[*size] = '\0';
    fclose(fp);
    return buf;
}

Test(metrics_log, json_lines)
{
    const char *path = tmp_path("m.jsonl");
    metrics_log log;
    char err[256];
    cr_assert_eq(metrics_log_open(&log, path, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(metrics_log_write(&log,
                                   (metrics_pair[]){{"step", 1}, {"epoch", 0.5}, {"loss", 0.1 + 0.2}, {"lr", 5e-05},
                                                    {"big", 1e20}, {"nan", NAN}, {"inf", -INFINITY}},
                                   7, err, sizeof err),
                 0, "%s", err);
    /* flushed at once: readable while the log is still open */
    size_t size;
    char *text = slurp(path, &size);
    cr_assert_str_eq(text, "{\"step\":1,\"epoch\":0.5,\"loss\":0.30000000000000004,\"lr\":5e-05,\"big\":1e+20,"
                           "\"nan\":null,\"inf\":null}\n");
    free(text);
    cr_assert_eq(metrics_log_write(&log, (metrics_pair[]){{"a\"b\\c\n", -3}}, 1, err, sizeof err), 0);
    metrics_log_close(&log);
    metrics_log_close(&log);
    cr_assert_eq(metrics_log_open(&log, path, 1, err, sizeof err), 0, "%s", err);
    cr_assert_eq(metrics_log_write(&log, (metrics_pair[]){{"step", 2}}, 1, err, sizeof err), 0);
    cr_assert_eq(metrics_log_write(&log, NULL, 0, err, sizeof err), 0);
    metrics_log_close(&log);
    text = slurp(path, &size);
    cr_assert(strstr(text, "}\n{\"a\\\"b\\\\c\\u000a\":-3}\n{\"step\":2}\n{}\n"), "%s", text);
    free(text);

    cr_assert_eq(metrics_log_write(&log, (metrics_pair[]){{"step", 3}}, 1, err, sizeof err), -1);
    cr_assert(strstr(err, "not open"));
    cr_assert_eq(metrics_log_open(&log, tmp_path("no/such/dir.jsonl"), 0, err, sizeof err), -1);
    cr_assert(strstr(err, "no/such/dir.jsonl"), "%s", err);
}

/* A fine-tuning run's log: 3 epochs of 40 steps, an evaluation after each (without "step": it
 * sits at the last step before it), a NaN loss, and keys the plot leaves out. */
static const char *write_run(void)
{
    const char *path = tmp_path("run.jsonl");
    metrics_log log;
    char err[256];
    cr_assert_eq(metrics_log_open(&log, path, 0, err, sizeof err), 0, "%s", err);
    for (int step = 1; step <= 120; step++) {
        double loss = step == 77 ? NAN : 0.1 + 0.6 * exp(-step / 30.0) + 0.02 * sin(step);
        metrics_log_write(&log,
                          (metrics_pair[]){{"step", step}, {"epoch", 1 + (step - 1) / 40}, {"loss", loss},
                                           {"lr", 5e-5 * (1 - step / 120.0)}, {"grad_norm", 1 + 1.0 / step}},
                          5, err, sizeof err);
        if (step % 40 == 0)
            metrics_log_write(&log,
                              (metrics_pair[]){{"epoch", step / 40}, {"eval_loss", 0.45 - 0.08 * step / 40},
                                               {"accuracy", 0.7 + 0.05 * step / 40}, {"f1", 0.65 + 0.06 * step / 40}},
                              4, err, sizeof err);
    }
    metrics_log_close(&log);
    return path;
}

Test(metrics_log, plot_png)
{
    const char *jsonl = write_run(), *png = tmp_path("plot.png");
    char err[512] = "";
    int entries = dir_entries();
    cr_assert_eq(metrics_plot_png(jsonl, png, "bert-base on 'SST-2' (dev)", err, sizeof err), 0, "%s", err);
    size_t size;
    char *bytes = slurp(png, &size);
    cr_assert(size > 10000 && memcmp(bytes, "\x89PNG\r\n\x1a\n", 8) == 0, "%zu bytes, not a PNG", size);
    free(bytes);
    cr_assert_eq(dir_entries(), entries + 1, "only the PNG is new beside it");
}

Test(metrics_log, plot_failures)
{
    const char *jsonl = write_run(), *png = tmp_path("fail.png");
    char err[512];
    int entries = dir_entries();

    const char *path = getenv("PATH");
    char *saved = strdup(path ? path : "");
    setenv("PATH", tmpdir, 1);
    cr_assert_eq(metrics_plot_png(jsonl, png, "t", err, sizeof err), -1);
    setenv("PATH", saved, 1);
    free(saved);
    cr_assert(strstr(err, "gnuplot is not installed"), "%s", err);

    cr_assert_eq(metrics_plot_png(jsonl, tmp_path("no/such/dir.png"), "t", err, sizeof err), -1);
    cr_assert(strstr(err, "gnuplot failed (exit status 1): line ") && strstr(err, "cannot open file"), "%s", err);

    const char *empty = tmp_path("epochs.jsonl");
    FILE *fp = fopen(empty, "w");
    fputs("{\"step\":1,\"epoch\":1}\n{\"step\":2,\"lr\":0.1,\"lo", fp);
    fclose(fp);
    cr_assert_eq(metrics_plot_png(empty, png, "t", err, sizeof err), -1);
    cr_assert(strstr(err, "epochs.jsonl has nothing to plot"), "%s", err);

    cr_assert_eq(metrics_plot_png(tmp_path("none.jsonl"), png, "t", err, sizeof err), -1);
    cr_assert(strstr(err, "none.jsonl"), "%s", err);
    struct stat st;
    cr_assert(stat(png, &st) != 0, "no PNG after a failure");
    cr_assert_eq(dir_entries(), entries + 1, "only epochs.jsonl is new");
}
