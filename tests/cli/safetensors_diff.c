/* safetensors-diff A B [--tol X]: compares two safetensors files tensor by tensor, for the
 * command-line tests (two training runs that must end with the same parameters).
 *
 * Prints the largest absolute difference, the largest relative one (|a - b| / |b|, over elements
 * where b is not 0) and the tensor each was found in. Exits 1 when the files' tensor names,
 * dtypes or shapes differ, or when some element differs by more than X * max(1, |b|) (absolute
 * below 1, relative above: parameters near 0 and large ones are both held to X); 2 on bad usage
 * or an unreadable file. X defaults to 1e-5. */
#define _POSIX_C_SOURCE 200809L
#include <filo/filo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int load_f64(const filo_safetensors *f, const char *name, int64_t n, double **out)
{
    filo_tensor *t = NULL;
    *out = malloc(sizeof **out * (size_t)(n ? n : 1));
    if (!*out || filo_safetensors_load(f, name, filo_cpu(), FILO_DTYPE_COUNT, &t) != FILO_OK ||
        filo_tensor_to_host_as(t, FILO_F64, *out, sizeof **out * (size_t)n) != FILO_OK) {
        fprintf(stderr, "safetensors-diff: %s: %s\n", name, *out ? filo_last_error() : "out of memory");
        filo_tensor_free(t);
        free(*out);
        *out = NULL;
        return 2;
    }
    filo_tensor_free(t);
    return 0;
}

/* Names, dtypes and shapes equal in both files (in any order); prints the first difference. */
static int same_layout(const filo_safetensors *a, const filo_safetensors *b, const char *pa, const char *pb)
{
    if (filo_safetensors_count(a) != filo_safetensors_count(b)) {
        printf("%s has %d tensors, %s %d\n", pa, filo_safetensors_count(a), pb, filo_safetensors_count(b));
        return 0;
    }
    for (int i = 0; i < filo_safetensors_count(a); i++) {
        const char *name = filo_safetensors_name_at(a, i);
        if (!filo_safetensors_has(b, name)) {
            printf("%s has %s, %s does not\n", pa, name, pb);
            return 0;
        }
        filo_dtype da, db;
        int na, nb;
        int64_t sa[FILO_SAFETENSORS_MAX_DIMS], sb[FILO_SAFETENSORS_MAX_DIMS];
        const char *ta, *tb;
        filo_safetensors_info(a, name, &da, &na, sa, &ta);
        filo_safetensors_info(b, name, &db, &nb, sb, &tb);
        if (strcmp(ta, tb) != 0 || na != nb || memcmp(sa, sb, sizeof *sa * (size_t)na) != 0) {
            printf("%s: %s %d dims in %s, %s %d dims in %s (or other sizes)\n", name, ta, na, pa, tb, nb, pb);
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv)
{
    double tol = 1e-5;
    if (argc == 5 && strcmp(argv[3], "--tol") == 0) {
        char *end = NULL;
        tol = strtod(argv[4], &end);
        if (!*argv[4] || *end || !(tol >= 0)) {
            fprintf(stderr, "safetensors-diff: --tol needs a number >= 0, got '%s'\n", argv[4]);
            return 2;
        }
    } else if (argc != 3) {
        fprintf(stderr, "usage: safetensors-diff A.safetensors B.safetensors [--tol X]\n");
        return 2;
    }
    filo_safetensors *a = NULL, *b = NULL;
    if (filo_safetensors_open(argv[1], &a) != FILO_OK || filo_safetensors_open(argv[2], &b) != FILO_OK) {
        fprintf(stderr, "safetensors-diff: %s\n", filo_last_error());
        filo_safetensors_close(a);
        return 2;
    }
    int rc = same_layout(a, b, argv[1], argv[2]) ? 0 : 1;
    double max_abs = 0, max_rel = 0;
    const char *abs_at = "-", *rel_at = "-";
    int64_t elements = 0, over = 0;
    for (int i = 0; i < filo_safetensors_count(a) && !rc; i++) {
        const char *name = filo_safetensors_name_at(a, i);
        int nd;
        int64_t shape[FILO_SAFETENSORS_MAX_DIMS], n = 1;
        filo_safetensors_info(a, name, NULL, &nd, shape, NULL);
        for (int d = 0; d < nd; d++)
            n *= shape[d];
        double *x = NULL, *y = NULL;
        if ((rc = load_f64(a, name, n, &x)) == 0 && (rc = load_f64(b, name, n, &y)) == 0) {
            for (int64_t k = 0; k < n; k++) {
                double d = fabs(x[k] - y[k]);
                if (isnan(d) && isnan(x[k]) && isnan(y[k]))
                    continue;
                if (!(d <= tol * fmax(1.0, fabs(y[k]))))
                    over++;
                if (!(d <= max_abs))
                    max_abs = d, abs_at = name;
                if (y[k] != 0 && !(d / fabs(y[k]) <= max_rel))
                    max_rel = d / fabs(y[k]), rel_at = name;
            }
            elements += n;
        }
        free(x);
        free(y);
    }
    if (!rc) {
        printf("%lld elements in %d tensors: max abs diff %.3g (%s), max rel diff %.3g (%s); %lld over %g\n",
               (long long)elements, filo_safetensors_count(a), max_abs, abs_at, max_rel, rel_at, (long long)over, tol);
        rc = over ? 1 : 0;
    }
    filo_safetensors_close(a);
    filo_safetensors_close(b);
    return rc;
}
