#define _POSIX_C_SOURCE 200809L
/* The training progress reporter (tools/progress.h) on a fake clock: the plain lines' exact text
 * (means since the last line, epoch lines, ETA, a resumed run), no bar and no escape sequence on
 * a pipe, and in bar mode the redraw limit, the bar's shape and width, the smoothed loss, and a
 * note that clears the bar and draws it again below. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filo_test.h"
#include "progress.h"

static double fake_now;

static double fake_clock(void)
{
    return fake_now;
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

Test(progress, plain_lines)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    progress p;
    fake_now = 100;
    progress_begin(&p, 10, "run",
                   &(progress_options){.out = out, .steps_per_epoch = 4, .log_every = 3, .clock = fake_clock});
    for (int step = 1; step <= 10; step++) {
        fake_now += 1;
        progress_update(&p, step, step, 100);
        if (step == 4)
            progress_note(&p, "eval accuracy %.2f", 0.5);
    }
    fake_now += 0.5;
    progress_end(&p);
    fclose(out);
    const char *want = "run: epoch 1/3 step 3/10 loss 2.0000 100 tok/s elapsed 00:03 eta 00:07\n"
                       "run: epoch 1/3 done: step 4/10 loss 2.5000 100 tok/s elapsed 00:04\n"
                       "eval accuracy 0.50\n"
                       "run: epoch 2/3 step 6/10 loss 5.5000 100 tok/s elapsed 00:06 eta 00:04\n"
                       "run: epoch 2/3 done: step 8/10 loss 6.5000 100 tok/s elapsed 00:08\n"
                       "run: epoch 3/3 step 9/10 loss 9.0000 100 tok/s elapsed 00:09 eta 00:01\n"
                       "run: epoch 3/3 done: step 10/10 loss 9.5000 100 tok/s elapsed 00:10\n"
                       "run: 10 steps in 00:11, 95 tok/s\n";
    cr_assert_str_eq(text, want);
    free(text);
}

Test(progress, plain_resumed_without_epochs)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    progress p;
    fake_now = 0;
    progress_begin(&p, 5000, "ft", &(progress_options){.out = out, .mode = PROGRESS_PLAIN, .clock = fake_clock});
    /* resumed at step 4001: the ETA counts the steps done in this run only */
    for (int step = 4001; step <= 4120; step++) {
        fake_now += 2;
        progress_update(&p, step, step == 4050 ? NAN : 1.0, 512);
    }
    progress_end(&p); /* stopped early: a last line for the steps since the one before */
    fclose(out);
    const char *want = "ft: step 4050/5000 loss 1.0000 256 tok/s elapsed 01:40 eta 31:40\n"
                       "ft: step 4100/5000 loss 1.0000 256 tok/s elapsed 03:20 eta 30:00\n"
                       "ft: step 4120/5000 loss 1.0000 256 tok/s elapsed 04:00 eta 29:20\n"
                       "ft: 120 steps in 04:00, 256 tok/s\n";
    cr_assert_str_eq(text, want);
    free(text);
}

Test(progress, no_bar_on_a_pipe)
{
    int fd[2];
    cr_assert(pipe(fd) == 0);
    FILE *out = fdopen(fd[1], "w");
    progress p;
    progress_begin(&p, 120, "pipe", &(progress_options){.out = out, .steps_per_epoch = 60});
    for (int step = 1; step <= 120; step++)
        progress_update(&p, step, 0.5, 10);
    progress_note(&p, "a note");
    progress_end(&p);
    fclose(out);
    char text[4096];
    ssize_t n = read(fd[0], text, sizeof text - 1);
    close(fd[0]);
    cr_assert(n > 0);
    text[n] = '\0';
    cr_assert(!strchr(text, '\r') && !strchr(text, '\033'), "terminal codes on a pipe: %s", text);
    /* lines at steps 50, 60 (epoch), 100 and 120 (epoch), the note, the summary */
    cr_assert_eq(count(text, "\n"), 6, "%s", text);
    cr_assert(strstr(text, "pipe: epoch 1/2 step 50/120 loss 0.5000"), "%s", text);
    cr_assert(strstr(text, "pipe: epoch 2/2 done: step 120/120"), "%s", text);
}

Test(progress, bar)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    progress p;
    fake_now = 0;
    progress_begin(&p, 8, "bert", &(progress_options){.out = out, .mode = PROGRESS_BAR, .steps_per_epoch = 4,
                                                        .width = 100, .clock = fake_clock});
    /* drawn: the first update, step 3 (0.2 s later), step 4 (an epoch ends); not steps 2 and 5 */
    const double t[] = {1.0, 1.05, 1.2, 1.25, 1.26};
    for (int step = 1; step <= 5; step++) {
        fake_now = t[step - 1];
        progress_update(&p, step, step == 1 ? 2.0 : 1.0, 1000);
    }
    fflush(out);
    cr_assert_eq(count(text, "\r"), 3, "%s", text);
    cr_assert_eq(count(text, "\033[K"), 3);
    cr_assert(!strchr(text, '\n'), "the bar stays on one line");
    /* the last drawing: step 4 of 8, half the bar filled, the smoothed loss */
    const char *last = strrchr(text, '\r') + 1;
    size_t len = strstr(last, "\033[K") - last;
    cr_assert(len <= 99, "%zu columns", len);
    cr_assert(strncmp(last, "bert epoch 1/2 [", 16) == 0, "%s", last);
    int hashes = count(last, "#"), dashes = (int)strspn(last + 16 + hashes, "-");
    cr_assert(hashes == dashes && hashes >= 10, "%d filled, %d empty: %s", hashes, dashes, last);
    /* losses 2, 1, 1, 1 in a 0.95 moving average, bias-corrected */
    double ema = 0, w = 0;
    for (int i = 0; i < 4; i++) {
        ema = 0.95 * ema + 0.05 * (i == 0 ? 2.0 : 1.0);
        w = 0.95 * w + 0.05;
    }
    char want[128];
    snprintf(want, sizeof want, "]  50%% 4/8 loss %.4f 3200 tok/s 00:01<00:01\033[K", ema / w);
    cr_assert(strncmp(last + 16 + hashes + dashes, want, strlen(want)) == 0, "'%s', expected '%s'",
              last + 16 + hashes + dashes, want);

    /* a note clears the bar, prints its line and draws the bar again */
    size_t before = strlen(text);
    progress_note(&p, "checkpoint saved");
    fflush(out);
    cr_assert(strncmp(text + before, "\r\033[Kcheckpoint saved\n\rbert epoch 2/2 [", 38) == 0, "%s", text + before);
    fake_now = 3;
    progress_end(&p);
    fclose(out);
    cr_assert(strstr(text, "\033[K\nbert: 5 steps in 00:03, 1667 tok/s\n"), "%s", text);
    free(text);
}

Test(progress, narrow_terminal)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    progress p;
    progress_begin(&p, 100000, "a-rather-long-label",
                   &(progress_options){.out = out, .mode = PROGRESS_BAR, .width = 40});
    progress_update(&p, 5, 1.0, 10);
    fclose(out);
    size_t len = strstr(text, "\033[K") - text - 1;
    cr_assert(len == 39 && strcspn(text, "[") > len, "a line of %zu columns without a bar: %s", len, text);
    free(text);
}
