/* Training metrics as JSON lines, and a PNG plot of them.
 *
 * A metrics file holds one JSON object a line, each line flushed when written, so the file of a
 * running or crashed job can be read (tail -f, or plotted) at any time:
 *     {"step":50,"epoch":1,"loss":0.6931,"lr":4.9e-05}
 *     {"step":120,"epoch":1,"eval_loss":0.51,"accuracy":0.83}
 * A record with a "loss" is a training record; any other is an evaluation record. Values are
 * numbers: integers print without a fraction, others with the digits that read back the same
 * double, and NaN or infinities as null.
 *
 *     metrics_log log;
 *     char err[256];
 *     if (metrics_log_open(&log, "out/metrics.jsonl", 0, err, sizeof err)) { print err; fail }
 *     metrics_log_write(&log, (metrics_pair[]){{"step", step}, {"epoch", e}, {"loss", loss}}, 3, err, sizeof err);
 *     metrics_log_close(&log);
 *     if (metrics_plot_png("out/metrics.jsonl", "out/metrics.png", "bert-base on SST-2", err, sizeof err))
 *         warn err (a missing gnuplot should not fail a training run)
 *
 * Every function returns 0, or -1 with a message in err (which names the file). */
#ifndef FILO_TOOLS_METRICS_LOG_H
#define FILO_TOOLS_METRICS_LOG_H

#include <stddef.h>
#include <stdio.h>

typedef struct metrics_pair {
    const char *key;
    double value;
} metrics_pair;

typedef struct metrics_log {
    FILE *fp;
    char *path;
} metrics_log;

/* Creates (or truncates) path; with append, adds to what is there (a resumed run). */
int metrics_log_open(metrics_log *log, const char *path, int append, char *err, size_t err_size);
/* Writes {"key":value,...} from n pairs, in their order, as one line and flushes it. */
int metrics_log_write(metrics_log *log, const metrics_pair *pairs, int n, char *err, size_t err_size);
/* Closes the file (safe on a zeroed or closed log). */
void metrics_log_close(metrics_log *log);

/* Plots a metrics file into a PNG with gnuplot (pngcairo when it has it, else png):
 *   - x: each record's "step"; a record without one sits at the last step before it in the file;
 *   - left axis: the training records' "loss" and every evaluation key ending in "loss";
 *   - right axis: the other evaluation keys (accuracy, f1, ...);
 *   - "epoch", and the keys training records carry besides "loss" (lr, grad_norm, ...), are not
 *     plotted.
 * Lines that are not JSON objects (a run killed mid-line) are skipped. The PNG is written beside
 * its final name and renamed there only when gnuplot succeeded. Fails with a message when
 * gnuplot is not installed (Debian package gnuplot-nox) or reports an error. */
int metrics_plot_png(const char *jsonl_path, const char *png_path, const char *title, char *err, size_t err_size);

#endif
