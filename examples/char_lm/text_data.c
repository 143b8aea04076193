#define _POSIX_C_SOURCE 200809L
#include "text_data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"

void text_load(const char *path, int64_t min_len, text_data *t)
{
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!f)
        ex_die("cannot read --text %s: %s", path, strerror(errno));
    int64_t cap = 1 << 16;
    unsigned char *bytes = malloc((size_t)cap);
    size_t got;
    while (bytes && (got = fread(bytes + t->n, 1, (size_t)(cap - t->n), f)) > 0) {
        t->n += (int64_t)got;
        if (t->n == cap) {
            cap *= 2;
            unsigned char *grown = realloc(bytes, (size_t)cap);
            if (!grown)
                free(bytes);
            bytes = grown;
        }
    }
    int failed = ferror(f);
    fclose(f);
    if (!bytes)
        ex_die("out of host memory reading %s", path);
    if (failed)
        ex_die("error reading --text %s", path);
    if (t->n < min_len)
        ex_die("--text %s has %lld bytes; these settings need at least %lld (lower --batch or --seq-len)", path,
               (long long)t->n, (long long)min_len);

    int64_t count[256] = {0};
    for (int64_t i = 0; i < t->n; i++)
        count[bytes[i]]++;
    for (int b = 0; b < 256; b++) {
        t->id_of[b] = -1;
        if (count[b]) {
            t->id_of[b] = t->vocab;
            t->byte_of[t->vocab++] = (unsigned char)b;
            double p = (double)count[b] / (double)t->n;
            t->unigram_bits -= p * log2(p);
        }
    }
    t->ids = malloc(sizeof *t->ids * (size_t)t->n);
    if (!t->ids)
        ex_die("out of host memory for %lld ids", (long long)t->n);
    for (int64_t i = 0; i < t->n; i++)
        t->ids[i] = t->id_of[bytes[i]];
    free(bytes);
}

void text_free(text_data *t)
{
    free(t->ids);
    t->ids = NULL;
    t->n = 0;
}
