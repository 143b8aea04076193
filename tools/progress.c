#define _POSIX_C_SOURCE 200809L
/* Training progress (progress.h): a self-rewriting line on a terminal ("\r", the text, then
 * "ESC[K" to clear what a longer previous line left), plain lines elsewhere. No curses: the
 * carriage return and the one ANSI erase sequence are all any terminal since the VT100 needs. */
#include "progress.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define EMA_BETA 0.95
#define REDRAW_S 0.1
#define MAX_BAR 40

static double monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now(const progress *p)
{
    return p->opt.clock ? p->opt.clock() : monotonic_s();
}

/* "mm:ss", or "h:mm:ss" from an hour on; "--:--" when unknown. */
static const char *format_time(double s, char *buf, size_t size)
{
    if (!(s >= 0 && s < 1e8)) {
        snprintf(buf, size, "--:--");
        return buf;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, size, "%02ld:%02ld", t / 60, t % 60);
    return buf;
}

/* sum / weight, or "-" with no weight. */
static const char *format_loss(double sum, double weight, char *buf, size_t size)
{
    if (weight > 0)
        snprintf(buf, size, "%.4f", sum / weight);
    else
        snprintf(buf, size, "-");
    return buf;
}

static int terminal_width(FILE *out)
{
#ifdef TIOCGWINSZ
    struct winsize ws;
    if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
#endif
    const char *c = getenv("COLUMNS");
    int w = c ? atoi(c) : 0;
    return w > 0 ? w : 80;
}

/* "epoch e/E " when the run has epochs, else "". */
static const char *format_epoch(const progress *p, char *buf, size_t size)
{
    int64_t spe = p->opt.steps_per_epoch;
    buf[0] = '\0';
    if (spe > 0 && p->step > 0)
        snprintf(buf, size, "epoch %lld/%lld ", (long long)((p->step - 1) / spe + 1),
                 (long long)((p->total + spe - 1) / spe));
    return buf;
}

static double rate(const progress *p, double t)
{
    return t > p->t_begin ? (double)p->tokens / (t - p->t_begin) : 0.0;
}

static void draw(progress *p, double t)
{
    char epoch[48], loss[32], el[48], eta[48], tail[200], line[512];
    int64_t done = p->step - p->first;
    double frac = p->total > 0 ? (double)p->step / (double)p->total : 0;
    frac = frac < 0 ? 0 : frac > 1 ? 1 : frac;
    /* the bias correction: the average so far weighs 1 - beta^n in all */
    format_loss(p->ema, p->ema_weight, loss, sizeof loss);
    snprintf(tail, sizeof tail, " %3d%% %lld/%lld loss %s %.0f tok/s %s<%s", (int)(frac * 100), (long long)p->step,
             (long long)p->total, loss, rate(p, t), format_time(t - p->t_begin, el, sizeof el),
             format_time(done > 0 ? (t - p->t_begin) / (double)done * (double)(p->total - p->step) : -1, eta,
                         sizeof eta));
    int n = snprintf(line, sizeof line, "%s %s", p->label, format_epoch(p, epoch, sizeof epoch));
    /* the last column is left free: writing there makes some terminals wrap */
    int width = p->opt.width > 0 ? p->opt.width : terminal_width(p->opt.out);
    int bar = width - 1 - n - (int)strlen(tail) - 2;
    bar = bar > MAX_BAR ? MAX_BAR : bar;
    if (bar >= 5 && n + bar + 2 < (int)sizeof line) {
        int fill = (int)(frac * bar);
        line[n++] = '[';
        for (int i = 0; i < bar; i++)
            line[n++] = i < fill ? '#' : '-';
        line[n++] = ']';
        line[n] = '\0';
    }
    snprintf(line + n, sizeof line - (size_t)n, "%s", tail);
    int len = (int)strlen(line);
    fprintf(p->opt.out, "\r%.*s\033[K", len < width - 1 ? len : width - 1, line);
    fflush(p->opt.out);
    p->drawn = 1;
    p->t_drawn = t;
}

static void plain_line(progress *p, double t, int epoch_done)
{
    char epoch[48], loss[32], el[48], eta[48];
    int64_t done = p->step - p->first;
    format_epoch(p, epoch, sizeof epoch);
    if (epoch_done)
        format_loss(p->epoch_loss, (double)p->epoch_steps, loss, sizeof loss);
    else
        format_loss(p->line_loss, (double)p->line_steps, loss, sizeof loss);
    fprintf(p->opt.out, "%s: %s%sstep %lld/%lld loss %s %.0f tok/s elapsed %s", p->label, epoch,
            epoch_done ? "done: " : "", (long long)p->step, (long long)p->total, loss, rate(p, t),
            format_time(t - p->t_begin, el, sizeof el));
    if (!epoch_done && p->step < p->total && done > 0)
        fprintf(p->opt.out, " eta %s",
                format_time((t - p->t_begin) / (double)done * (double)(p->total - p->step), eta, sizeof eta));
    fputc('\n', p->opt.out);
    fflush(p->opt.out);
    p->line_loss = 0;
    p->line_steps = 0;
    p->logged = p->step;
}

void progress_begin(progress *p, int64_t total_steps, const char *label, const progress_options *opt)
{
    memset(p, 0, sizeof *p);
    if (opt)
        p->opt = *opt;
    if (!p->opt.out)
        p->opt.out = stderr;
    if (p->opt.log_every <= 0)
        p->opt.log_every = 50;
    snprintf(p->label, sizeof p->label, "%s", label ? label : "progress");
    p->bar = p->opt.mode == PROGRESS_BAR || (p->opt.mode == PROGRESS_AUTO && isatty(fileno(p->opt.out)));
    p->total = total_steps;
    p->first = -1;
    p->t_begin = now(p);
}

void progress_update(progress *p, int64_t step, double loss, int64_t tokens)
{
    double t = now(p);
    if (p->first < 0)
        p->first = step - 1;
    p->step = step;
    p->tokens += tokens;
    if (!isnan(loss)) {
        p->ema = EMA_BETA * p->ema + (1 - EMA_BETA) * loss;
        p->ema_weight = EMA_BETA * p->ema_weight + (1 - EMA_BETA);
        p->line_loss += loss;
        p->line_steps++;
        p->epoch_loss += loss;
        p->epoch_steps++;
    }
    int64_t spe = p->opt.steps_per_epoch;
    int epoch_end = spe > 0 && (step % spe == 0 || step == p->total);
    if (p->bar) {
        if (!p->drawn || epoch_end || step == p->total || t - p->t_drawn >= REDRAW_S)
            draw(p, t);
    } else if (epoch_end)
        plain_line(p, t, 1);
    else if (step % p->opt.log_every == 0 || step == p->total)
        plain_line(p, t, 0);
    if (epoch_end) {
        p->epoch_loss = 0;
        p->epoch_steps = 0;
    }
}

void progress_note(progress *p, const char *fmt, ...)
{
    FILE *out = p ? p->opt.out : stderr;
    int bar = p && p->bar && p->drawn;
    if (bar)
        fputs("\r\033[K", out);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fputc('\n', out);
    if (bar)
        draw(p, now(p));
    fflush(out);
}

void progress_end(progress *p)
{
    double t = now(p);
    char el[48];
    if (p->bar && p->drawn) {
        draw(p, t);
        fputc('\n', p->opt.out);
    } else if (!p->bar && p->step > p->logged)
        plain_line(p, t, 0);
    fprintf(p->opt.out, "%s: %lld steps in %s, %.0f tok/s\n", p->label,
            (long long)(p->first < 0 ? 0 : p->step - p->first), format_time(t - p->t_begin, el, sizeof el), rate(p, t));
    fflush(p->opt.out);
    p->bar = 0;
    p->drawn = 0;
}
