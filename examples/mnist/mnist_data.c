#define _POSIX_C_SOURCE 200809L
#include "mnist_data.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "example.h"

static char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)len + 1);
        if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    if (!buf)
        return NULL;
    buf[len] = '\0';
    *size = (size_t)len;
    return buf;
}

/* One digit's images: *images (malloc'ed) and their count. */
static void load_digit(const char *dir, int digit, float **images, int64_t *count)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%d.json", dir, digit);
    size_t size = 0;
    char *text = read_file(path, &size);
    if (!text)
        ex_die("cannot read %s: %s", path, strerror(errno));
    cJSON *root = cJSON_ParseWithLength(text, size);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= text && at <= text + size ? (long)(at - text) : -1;
        free(text);
        ex_die("%s is not valid JSON (parse error near byte %ld)", path, off);
    }
    free(text);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    if (!cJSON_IsArray(data))
        ex_die("%s: expected an object with a \"data\" array of pixel values", path);
    int64_t len = cJSON_GetArraySize(data);
    if (len == 0 || len % MNIST_PIXELS != 0)
        ex_die("%s: \"data\" has %lld values, not a positive multiple of %d (28x28 images)", path, (long long)len,
               MNIST_PIXELS);
    float *px = malloc(sizeof *px * (size_t)len);
    if (!px)
        ex_die("out of host memory for %s", path);
    int64_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, data)
    {
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > 1)
            ex_die("%s: \"data\"[%lld] (image %lld, pixel %lld) is not a number in [0, 1]", path, (long long)i,
                   (long long)(i / MNIST_PIXELS), (long long)(i % MNIST_PIXELS));
        px[i++] = (float)v->valuedouble;
    }
    cJSON_Delete(root);
    *images = px;
    *count = len / MNIST_PIXELS;
}

static void set_alloc(mnist_set *s, int64_t n)
{
    s->n = 0;
    s->images = malloc(sizeof *s->images * (size_t)(n * MNIST_PIXELS));
    s->labels = malloc(sizeof *s->labels * (size_t)n);
    if (!s->images || !s->labels)
        ex_die("out of host memory for %lld images", (long long)n);
}

static void set_append(mnist_set *s, const float *px, int64_t n, int64_t label)
{
    memcpy(s->images + s->n * MNIST_PIXELS, px, sizeof *px * (size_t)(n * MNIST_PIXELS));
    for (int64_t i = 0; i < n; i++)
        s->labels[s->n + i] = label;
    s->n += n;
}

void mnist_load(const char *dir, mnist_set *train, mnist_set *test)
{
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        ex_die("no MNIST folder at %s: run scripts/fetch-mnist (or pass --data DIR)", dir);
    float *px[MNIST_CLASSES];
    int64_t count[MNIST_CLASSES], total = 0;
    for (int d = 0; d < MNIST_CLASSES; d++) {
        load_digit(dir, d, &px[d], &count[d]);
        if (count[d] < 2)
            ex_die("%s/%d.json holds %lld image(s): the split needs at least 2 per digit", dir, d,
                   (long long)count[d]);
        total += count[d];
    }
    set_alloc(train, total);
    set_alloc(test, total);
    for (int d = 0; d < MNIST_CLASSES; d++) {
        int64_t n_test = (count[d] + 4) / 5; /* ceil(20%): at least one test image per digit */
        set_append(train, px[d], count[d] - n_test, d);
        set_append(test, px[d] + (count[d] - n_test) * MNIST_PIXELS, n_test, d);
        free(px[d]);
    }
}

void mnist_set_free(mnist_set *s)
{
    free(s->images);
    free(s->labels);
    s->images = NULL;
    s->labels = NULL;
    s->n = 0;
}

void mnist_batch(const mnist_set *s, const int64_t *idx, int64_t n, int shift, filo_generator *gen, float *x,
                 int64_t *y)
{
    uint32_t *r = NULL;
    if (shift > 0) {
        r = malloc(sizeof *r * (size_t)n);
        if (!r)
            ex_die("out of host memory for a batch of %lld", (long long)n);
        ex_random_u32(gen, r, n);
    }
    const int span = 2 * shift + 1;
    for (int64_t i = 0; i < n; i++) {
        const float *src = s->images + idx[i] * MNIST_PIXELS;
        float *dst = x + i * MNIST_PIXELS;
        y[i] = s->labels[idx[i]];
        if (!r) {
            memcpy(dst, src, sizeof *dst * MNIST_PIXELS);
            continue;
        }
        int dx = (int)(r[i] % (uint32_t)span) - shift;
        int dy = (int)(r[i] / (uint32_t)span % (uint32_t)span) - shift;
        for (int h = 0; h < MNIST_SIDE; h++) {
            int sh = h - dy;
            for (int w = 0; w < MNIST_SIDE; w++) {
                int sw = w - dx;
                int inside = sh >= 0 && sh < MNIST_SIDE && sw >= 0 && sw < MNIST_SIDE;
                dst[h * MNIST_SIDE + w] = inside ? src[sh * MNIST_SIDE + sw] : 0.0f;
            }
        }
    }
    free(r);
}
