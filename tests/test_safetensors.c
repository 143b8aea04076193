#define _POSIX_C_SOURCE 200809L
/* safetensors files (filo/safetensors.h): a round trip of every dtype and of 0-dim, empty and
 * strided tensors from every backend; the header's 8-byte alignment; hand-written malformed files
 * for every rejection the header lists; loads with dtype conversion (rounding to nearest even,
 * also from f64 to bf16); load_into with a shape mismatch; bad writer arguments. No Python. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filo_test.h"

static char tmpdir[64];

static void remove_tmpdir(void) { filo_test_remove_dir(tmpdir); }

static void make_tmpdir(void) { filo_test_make_tmpdir(tmpdir, sizeof tmpdir, "st"); }

TestSuite(safetensors, .init = make_tmpdir, .fini = remove_tmpdir);

static const char *tmp_path(const char *name)
{
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

/* Writes an 8-byte length (hlen_override >= 0 replaces the true one), the header text and
 * data_len bytes of data (counting 0, 1, 2, ...). */
static void write_raw(const char *path, const char *header, long long hlen_override, size_t data_len)
{
    FILE *fp = fopen(path, "wb");
    cr_assert(fp);
    uint64_t n = hlen_override >= 0 ? (uint64_t)hlen_override : strlen(header);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)(n >> (8 * i));
    fwrite(len8, 1, 8, fp);
    fwrite(header, 1, strlen(header), fp);
    for (size_t i = 0; i < data_len; i++)
        fputc((int)(i & 0xff), fp);
    fclose(fp);
}

static int count_tmp_files(void)
{
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

/* ---- round trip ---- */

typedef struct rt_shape {
    int ndim;
    int64_t shape[3];
} rt_shape;

static unsigned char *host_bytes(const filo_tensor *t, size_t *n)
{
    *n = filo_tensor_nbytes(t);
    unsigned char *b = malloc(*n + 1);
    FILO_CHECK(filo_tensor_to_host(t, b, *n));
    return b;
}

Test(safetensors, round_trip_every_dtype_shape_and_backend)
{
    const filo_dtype dts[7] = {FILO_F64, FILO_F32, FILO_BF16, FILO_F16, FILO_I64, FILO_I32, FILO_U8};
    const rt_shape shapes[5] = {{0, {0}}, {1, {0}}, {3, {3, 0, 2}}, {1, {5}}, {3, {2, 3, 5}}};
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        enum { N = 7 * 5 + 1 };
        filo_tensor *ts[N];
        char namebuf[N][32];
        const char *names[N];
        int n = 0;
        for (int k = 0; k < 7; k++)
            for (int s = 0; s < 5; s++, n++) {
                int64_t numel = 1;
                for (int i = 0; i < shapes[s].ndim; i++)
                    numel *= shapes[s].shape[i];
                double v[30];
                filo_test_fill_random(v, numel, (uint64_t)(k * 10 + s), dts[k] == FILO_U8 ? 1.0 : -100.0, 100.0);
                ts[n] = filo_test_upload(devs[d], dts[k], shapes[s].ndim, shapes[s].shape, v);
                snprintf(namebuf[n], sizeof namebuf[n], "t.%s.%d", filo_dtype_name(dts[k]), s);
                names[n] = namebuf[n];
            }
        /* A transposed (strided) view is stored contiguous. */
        const int64_t s2[2] = {3, 4};
        double v12[12];
        filo_test_fill_random(v12, 12, 77, -1.0, 1.0);
        filo_tensor *base = filo_test_upload(devs[d], FILO_F32, 2, s2, v12);
        FILO_CHECK(filo_tensor_transpose(base, 0, 1, &ts[n]));
        names[n++] = "transposed";
        const char *keys[2] = {"format", "note"}, *values[2] = {"pt", "snowman \xe2\x98\x83 and \"quotes\""};
        const char *path = tmp_path("rt.safetensors");
        FILO_CHECK(filo_safetensors_write(path, n, names, (const filo_tensor *const *)ts, 2, keys, values));
        cr_assert_eq(count_tmp_files(), 0);

        /* The data region starts 8-byte aligned; the header ends in spaces only. */
        FILE *fp = fopen(path, "rb");
        unsigned char len8[8];
        cr_assert_eq(fread(len8, 1, 8, fp), 8u);
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | len8[i];
        cr_assert_eq(hlen % 8, 0u);
        char *h = malloc(hlen + 1);
        cr_assert_eq(fread(h, 1, hlen, fp), hlen);
        h[hlen] = 0;
        fclose(fp);
        char *close = strrchr(h, '}');
        for (char *p = close + 1; *p; p++)
            cr_assert_eq(*p, ' ');
        free(h);

        filo_safetensors *f;
        FILO_CHECK(filo_safetensors_open(path, &f));
        cr_assert_eq(filo_safetensors_count(f), n);
        cr_assert_str_eq(filo_safetensors_metadata(f, "note"), values[1]);
        cr_assert_str_eq(filo_safetensors_metadata(f, "format"), "pt");
        cr_assert_null(filo_safetensors_metadata(f, "absent"));
        for (int i = 0; i < n; i++) {
            cr_assert_str_eq(filo_safetensors_name_at(f, i), names[i]);
            cr_assert(filo_safetensors_has(f, names[i]));
            filo_dtype dt;
            int ndim;
            int64_t shape[FILO_SAFETENSORS_MAX_DIMS];
            const char *sd;
            FILO_CHECK(filo_safetensors_info(f, names[i], &dt, &ndim, shape, &sd));
            cr_assert_eq(dt, ts[i]->dtype);
            cr_assert_eq(ndim, ts[i]->ndim);
            for (int k = 0; k < ndim; k++)
                cr_assert_eq(shape[k], ts[i]->shape[k]);
            filo_tensor *back;
            FILO_CHECK(filo_safetensors_load(f, names[i], devs[d], FILO_DTYPE_COUNT, &back));
            cr_assert(filo_device_equal(back->device, devs[d]));
            size_t na, nb;
            unsigned char *a = host_bytes(ts[i], &na), *b = host_bytes(back, &nb);
            cr_assert_eq(na, nb);
            cr_assert(memcmp(a, b, na) == 0, "%s on %s differs", names[i], filo_test_backend_name(devs[d]));
            free(a);
            free(b);
            filo_tensor_free(back);
        }
        cr_assert(!filo_safetensors_has(f, "nope"));
        FILO_CHECK_FAILS(filo_safetensors_info(f, "nope", NULL, NULL, NULL, NULL), FILO_ERR_INVALID_ARG, "no tensor 'nope'");
        filo_safetensors_close(f);
        for (int i = 0; i < n; i++)
            filo_tensor_free(ts[i]);
        filo_tensor_free(base);
    }
}

/* A file with no tensors at all, and one with metadata only. */
Test(safetensors, empty_files)
{
    const char *path = tmp_path("empty.safetensors");
    FILO_CHECK(filo_safetensors_write(path, 0, NULL, NULL, 0, NULL, NULL));
    filo_safetensors *f;
    FILO_CHECK(filo_safetensors_open(path, &f));
    cr_assert_eq(filo_safetensors_count(f), 0);
    filo_safetensors_close(f);
    const char *k = "a", *v = "b";
    FILO_CHECK(filo_safetensors_write(path, 0, NULL, NULL, 1, &k, &v));
    FILO_CHECK(filo_safetensors_open(path, &f));
    cr_assert_str_eq(filo_safetensors_metadata(f, "a"), "b");
    filo_safetensors_close(f);
}

/* ---- malformed files ---- */

typedef struct bad_file {
    const char *header;
    size_t data_len;
    const char *needle;
    long long hlen; /* -1: the header's length */
} bad_file;

Test(safetensors, malformed_files_are_rejected)
{
    const bad_file cases[] = {
        {"{\"a\":", 0, "not valid JSON", -1},
        {"[1, 2]", 0, "not a JSON object", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "'a': data_offsets [0, 8] run past", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "header length 999 runs past", 999},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"extra\":1}}", 8, "'a': unknown key 'extra'", -1},
        {"{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'a': dtype is not a string", -1},
        {"{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'a': unknown dtype \"F33\"", -1},
        {"{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'a': no dtype", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "'a': dim 0 is not a non-negative", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", 10, "'a': dim 0 is not a non-negative", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8, "'a': shape is not an array", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "'a': data_offsets must be two", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "'a': data_offsets [8, 0] are reversed", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "'a': data_offsets [0, 8] hold 8 bytes, but F32", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[4,12]}}",
         12, "'b': data_offsets [4, 12] overlap", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[12,20]}}",
         20, "'b': data_offsets [12, 20] leave a gap after byte 8", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12, "cover 8 bytes of a data region of 12", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[8,16]}}",
         16, "tensor 'a' appears twice", -1},
        {"{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         "__metadata__ value of 'k' is not a string", -1},
        {"{\"__metadata__\":[\"k\"]}", 0, "__metadata__ is not an object", -1},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", 8, "bytes after the header", -1},
        {"{\"a\":[1]}", 0, "'a': the entry is not an object", -1},
        {"", 0, "cannot hold a JSON object", -1},
    };
    const char *path = tmp_path("bad.safetensors");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw(path, cases[i].header, cases[i].hlen, cases[i].data_len);
        filo_safetensors *f = (filo_safetensors *)1;
        filo_status s = filo_safetensors_open(path, &f);
        cr_assert_eq(s, FILO_ERR_FORMAT, "case %zu (%s): got %s: %s", i, cases[i].needle, filo_status_name(s),
                     filo_last_error());
        cr_assert(strstr(filo_last_error(), cases[i].needle), "case %zu: '%s' lacks '%s'", i, filo_last_error(),
                  cases[i].needle);
        cr_assert(strstr(filo_last_error(), path), "case %zu: '%s' does not name the file", i, filo_last_error());
        cr_assert_null(f);
    }
    /* Shorter than the length field itself. */
    FILE *fp = fopen(path, "wb");
    fwrite("\x10\0\0", 1, 3, fp);
    fclose(fp);
    filo_safetensors *f;
    FILO_CHECK_FAILS(filo_safetensors_open(path, &f), FILO_ERR_FORMAT, "truncated: 3 bytes");
    /* A real file cut short. */
    const int64_t shape[1] = {16};
    double v[16];
    filo_test_fill_random(v, 16, 1, -1, 1);
    filo_tensor *t = filo_test_upload(filo_cpu(), FILO_F32, 1, shape, v);
    const char *name = "weight";
    FILO_CHECK(filo_safetensors_write(path, 1, &name, (const filo_tensor *const *)&t, 0, NULL, NULL));
    fp = fopen(path, "rb");
    unsigned char len8[8];
    cr_assert_eq(fread(len8, 1, 8, fp), 8u);
    fclose(fp);
    long long hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | len8[i];
    cr_assert_eq(truncate(path, 8 + hlen + 40), 0);
    FILO_CHECK_FAILS(filo_safetensors_open(path, &f), FILO_ERR_FORMAT, "'weight': data_offsets [0, 64] run past");
    filo_tensor_free(t);
    FILO_CHECK_FAILS(filo_safetensors_open(tmp_path("missing.safetensors"), &f), FILO_ERR_IO, "cannot open");
}

/* Dtypes filo has no type for may be listed; loading one is FILO_ERR_UNSUPPORTED. */
Test(safetensors, foreign_dtypes)
{
    const char *path = tmp_path("i8.safetensors");
    write_raw(path,
              "{\"q\":{\"dtype\":\"I8\",\"shape\":[2,2],\"data_offsets\":[0,4]},"
              "\"m\":{\"dtype\":\"BOOL\",\"shape\":[4],\"data_offsets\":[4,8]}}",
              -1, 8);
    filo_safetensors *f;
    FILO_CHECK(filo_safetensors_open(path, &f));
    filo_dtype dt;
    const char *sd;
    FILO_CHECK(filo_safetensors_info(f, "q", &dt, NULL, NULL, &sd));
    cr_assert_eq(dt, FILO_DTYPE_COUNT);
    cr_assert_str_eq(sd, "I8");
    filo_tensor *t;
    FILO_CHECK_FAILS(filo_safetensors_load(f, "q", filo_cpu(), FILO_DTYPE_COUNT, &t), FILO_ERR_UNSUPPORTED, "I8");
    /* BOOL is read as u8: the raw bytes 4..7 written by write_raw. */
    FILO_CHECK(filo_safetensors_load(f, "m", filo_cpu(), FILO_DTYPE_COUNT, &t));
    cr_assert_eq(t->dtype, FILO_U8);
    unsigned char b[4];
    FILO_CHECK(filo_tensor_to_host(t, b, 4));
    cr_assert(b[0] == 4 && b[3] == 7);
    filo_tensor_free(t);
    filo_safetensors_close(f);
}

/* ---- loads with conversion ---- */

static uint16_t bf16_bits_of(const filo_tensor *t, int i)
{
    uint16_t b[8];
    FILO_CHECK(filo_tensor_to_host(t, b, filo_tensor_nbytes(t)));
    return b[i];
}

Test(safetensors, load_with_dtype_conversion)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    /* f64 values: 1 + 2^-8 + 2^-40 lies just above the bf16 midpoint 1 + 2^-8 (rounds up to
     * 1 + 2^-7; a double rounding through f32 would land on the tie and give 1); 1 + 2^-8 is the
     * tie itself (even: 1); 3 is exact. */
    const double v64[3] = {1.0 + ldexp(1, -8) + ldexp(1, -40), 1.0 + ldexp(1, -8), 3.0};
    const double vi[4] = {-7, 0, 123456, 2};
    const int64_t s3 = 3, s4 = 4;
    filo_tensor *a = filo_test_upload(filo_cpu(), FILO_F64, 1, &s3, v64);
    filo_tensor *b = filo_test_upload(filo_cpu(), FILO_I32, 1, &s4, vi);
    const char *names[2] = {"a", "b"};
    const filo_tensor *ts[2] = {a, b};
    const char *path = tmp_path("conv.safetensors");
    FILO_CHECK(filo_safetensors_write(path, 2, names, ts, 0, NULL, NULL));
    filo_safetensors *f;
    FILO_CHECK(filo_safetensors_open(path, &f));
    for (int d = 0; d < nd; d++) {
        filo_tensor *t;
        FILO_CHECK(filo_safetensors_load(f, "a", devs[d], FILO_BF16, &t));
        cr_assert_eq(t->dtype, FILO_BF16);
        cr_assert_eq(bf16_bits_of(t, 0), 0x3f81, "%s: 0x%04x", filo_test_backend_name(devs[d]), bf16_bits_of(t, 0));
        cr_assert_eq(bf16_bits_of(t, 1), 0x3f80);
        cr_assert_eq(bf16_bits_of(t, 2), 0x4040);
        filo_tensor_free(t);
        FILO_CHECK(filo_safetensors_load(f, "a", devs[d], FILO_F32, &t));
        float f32[4];
        FILO_CHECK(filo_tensor_to_host(t, f32, 3 * sizeof(float)));
        cr_assert(f32[0] == (float)v64[0] && f32[2] == 3.0f);
        filo_tensor_free(t);
        FILO_CHECK(filo_safetensors_load(f, "b", devs[d], FILO_I64, &t));
        int64_t i64[4];
        FILO_CHECK(filo_tensor_to_host(t, i64, sizeof i64));
        cr_assert(i64[0] == -7 && i64[2] == 123456);
        filo_tensor_free(t);
        FILO_CHECK(filo_safetensors_load(f, "b", devs[d], FILO_F32, &t));
        FILO_CHECK(filo_tensor_to_host(t, f32, sizeof f32));
        cr_assert(f32[0] == -7.0f && f32[2] == 123456.0f);
        filo_tensor_free(t);
    }
    filo_safetensors_close(f);
    filo_tensor_free(a);
    filo_tensor_free(b);
}

Test(safetensors, load_into)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    const int64_t s23[2] = {2, 3}, s32[2] = {3, 2};
    double v[6] = {1, 2, 3, 4, 5, 6};
    filo_tensor *src = filo_test_upload(filo_cpu(), FILO_F32, 2, s23, v);
    const char *name = "w";
    const char *path = tmp_path("into.safetensors");
    FILO_CHECK(filo_safetensors_write(path, 1, &name, (const filo_tensor *const *)&src, 0, NULL, NULL));
    filo_safetensors *f;
    FILO_CHECK(filo_safetensors_open(path, &f));
    for (int d = 0; d < nd; d++) {
        /* A strided f64 destination: the transpose of a [3, 2] tensor. */
        filo_tensor *base, *dst, *wrong;
        FILO_CHECK(filo_tensor_zeros(devs[d], FILO_F64, 2, s32, &base));
        FILO_CHECK(filo_tensor_transpose(base, 0, 1, &dst));
        FILO_CHECK(filo_safetensors_load_into(f, "w", dst));
        double *got = filo_test_download(dst);
        for (int i = 0; i < 6; i++)
            cr_assert_eq(got[i], v[i]);
        free(got);
        FILO_CHECK(filo_tensor_zeros(devs[d], FILO_F32, 2, s32, &wrong));
        FILO_CHECK_FAILS(filo_safetensors_load_into(f, "w", wrong), FILO_ERR_SHAPE, "stored with shape [2, 3]");
        FILO_CHECK_FAILS(filo_safetensors_load_into(f, "w", wrong), FILO_ERR_SHAPE, "has shape [3, 2]");
        FILO_CHECK_FAILS(filo_safetensors_load_into(f, "v", wrong), FILO_ERR_INVALID_ARG, "no tensor 'v'");
        filo_tensor_free(wrong);
        filo_tensor_free(dst);
        filo_tensor_free(base);
    }
    filo_safetensors_close(f);
    filo_tensor_free(src);
}

Test(safetensors, bad_writer_arguments)
{
    const int64_t s = 2;
    filo_tensor *t;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 1, &s, &t));
    const filo_tensor *ts[2] = {t, t};
    const char *dup[2] = {"x", "x"}, *empty[1] = {""}, *meta[1] = {"__metadata__"};
    const char *path = tmp_path("w.safetensors");
    FILO_CHECK_FAILS(filo_safetensors_write(path, 2, dup, ts, 0, NULL, NULL), FILO_ERR_INVALID_ARG, "'x' is given twice");
    FILO_CHECK_FAILS(filo_safetensors_write(path, 1, empty, ts, 0, NULL, NULL), FILO_ERR_INVALID_ARG, "empty name");
    FILO_CHECK_FAILS(filo_safetensors_write(path, 1, meta, ts, 0, NULL, NULL), FILO_ERR_INVALID_ARG, "reserved");
    FILO_CHECK_FAILS(filo_safetensors_write("/nonexistent-dir/x.safetensors", 1, dup, ts, 0, NULL, NULL), FILO_ERR_IO,
                     "temporary file");
    const filo_tensor *nul[1] = {NULL};
    FILO_CHECK_FAILS(filo_safetensors_write(path, 1, dup, nul, 0, NULL, NULL), FILO_ERR_INVALID_ARG, "is NULL");
    cr_assert(access(path, F_OK) != 0);
    cr_assert_eq(count_tmp_files(), 0);
    filo_tensor_free(t);
}
