#define _POSIX_C_SOURCE 200809L
/* The data-parallel sampler (tools/dist_data.h) on hand-made datasets: the shares of every size
 * against every world cover each example once, in order, as evenly as possible; the loss
 * weights average to 1 over the ranks and equal each share's part of what the loss averages
 * over (examples; labelled tokens for NER); an empty share runs one stand-in example with weight
 * 0; QA shares keep the global batch's padded length. Summing over ranks with no communicator
 * leaves the values as they are. */
#include <stdlib.h>
#include <string.h>

#include "dist_data.h"
#include "filo_test.h"

Test(dist_data, shares_cover_every_example_once)
{
    for (int64_t n = 0; n <= 37; n++) {
        for (int world = 1; world <= 7; world++) {
            int64_t next = 0, smallest = n, largest = 0;
            for (int r = 0; r < world; r++) {
                int64_t lo, hi;
                dp_share(n, r, world, &lo, &hi);
                cr_assert_eq(lo, next, "n %lld world %d rank %d starts at %lld", (long long)n, world, r, (long long)lo);
                cr_assert(hi >= lo);
                next = hi;
                smallest = hi - lo < smallest ? hi - lo : smallest;
                largest = hi - lo > largest ? hi - lo : largest;
            }
            cr_assert_eq(next, n);
            cr_assert(largest - smallest <= 1, "n %lld world %d: shares of %lld and %lld", (long long)n, world,
                      (long long)smallest, (long long)largest);
        }
    }
}

/* n examples of lengths 3 + (i * 7) % 11; NER: token k of example i labelled when (i + k) % 3 != 0
 * (the others -100, as [CLS], [SEP] and continuation pieces are). */
typedef struct fixture {
    ft_dataset d;
    ft_example ex[40];
    int32_t labels[40][16];
    int64_t idx[40];
} fixture;

static void make(fixture *f, ft_task task, int n)
{
    memset(f, 0, sizeof *f);
    f->d.task = task;
    f->d.ex = f->ex;
    f->d.n = n;
    for (int i = 0; i < n; i++) {
        f->ex[i].len = 3 + (i * 7) % 11;
        f->ex[i].token_labels = f->labels[i];
        for (int k = 0; k < f->ex[i].len; k++)
            f->labels[i][k] = (i + k) % 3 ? (i + k) % 5 : -100;
        /* a batch in an order that is not the dataset's */
        f->idx[i] = (i * 13 + 5) % n;
    }
}

static ft_batch global_batch(const fixture *f, int n)
{
    ft_batch g = {.idx = f->idx, .n = n, .len = 0};
    for (int i = 0; i < n; i++)
        if (f->ex[f->idx[i]].len > g.len)
            g.len = f->ex[f->idx[i]].len;
    return g;
}

static double labelled(const fixture *f, const ft_batch *b)
{
    double c = 0;
    for (int i = 0; i < b->n; i++)
        for (int k = 0; k < f->ex[b->idx[i]].len; k++)
            c += f->labels[b->idx[i]][k] != -100;
    return c;
}

Test(dist_data, weights_average_to_one_and_follow_the_shares)
{
    static const ft_task tasks[] = {FT_CLASSIFY, FT_NER, FT_QA};
    fixture *f = malloc(sizeof *f);
    for (size_t t = 0; t < sizeof tasks / sizeof tasks[0]; t++) {
        for (int n = 1; n <= 29; n += 4) {
            make(f, tasks[t], n);
            ft_batch g = global_batch(f, n);
            for (int world = 1; world <= 5; world++) {
                double sum = 0;
                int covered = 0;
                for (int r = 0; r < world; r++) {
                    dp_slice s;
                    dp_slice_batch(&f->d, &g, r, world, &s);
                    sum += s.weight;
                    cr_assert(s.b.n >= 1);
                    int len = 0;
                    for (int i = 0; i < s.b.n; i++)
                        len = f->ex[s.b.idx[i]].len > len ? f->ex[s.b.idx[i]].len : len;
                    cr_assert_eq(s.b.len, tasks[t] == FT_QA ? g.len : len, "padded length");
                    if (s.repeat) {
                        cr_assert(n < world, "a stand-in example with %d examples for %d ranks", n, world);
                        cr_assert_eq(s.b.n, 1);
                        cr_assert_eq(s.weight, 0.0);
                        continue;
                    }
                    cr_assert_eq(s.b.idx, g.idx + covered, "shares are contiguous and in order");
                    covered += s.b.n;
                    double want = tasks[t] == FT_NER ? labelled(f, &s.b) / labelled(f, &g) : (double)s.b.n / n;
                    cr_assert_float_eq(s.weight, world * want, 1e-12, "task %d n %d world %d rank %d", (int)t, n,
                                       world, r);
                }
                cr_assert_eq(covered, n);
                cr_assert_float_eq(sum / world, 1.0, 1e-12, "task %d n %d world %d", (int)t, n, world);
            }
        }
    }
    free(f);
}

Test(dist_data, sum_without_a_communicator_keeps_the_values)
{
    double v[3] = {1.5, -2, 7};
    cr_assert_eq(dp_sum(NULL, v, 3), 0);
    cr_assert_eq(v[0], 1.5);
    cr_assert_eq(v[1], -2);
    cr_assert_eq(v[2], 7);
}
