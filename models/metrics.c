/* Evaluation metrics (include/filo/metrics.h), following the definitions of the libraries users
 * compare against:
 *   - scikit-learn: F1 = 2 TP / (2 TP + FP + FN), 0 where nothing was predicted or expected
 *     (its zero_division default); a multi-label micro F1 with no positive anywhere is 0;
 *   - scipy: Pearson's r, and Spearman's rho as Pearson's r of the ranks with ties given their
 *     mean rank; both NaN for a constant input or fewer than two values, as scipy returns;
 *   - seqeval 1.x default mode: get_entities() chunking with O/B/I tags, entities matched as
 *     (type, start, end) within a sentence, micro-averaged;
 *   - the SQuAD v1.1 evaluation script: normalize_answer() with Python's \b and \w (letters,
 *     numbers and '_') and str.split() whitespace; lower() is utf8proc's one-to-one mapping, which
 *     differs from Python's only for a few letters (a final sigma, a dotted capital I);
 *   - transformers' postprocess_qa_predictions: the top n_best start and end positions over the
 *     whole sequence (ties: the later position first, as numpy's stable argsort reversed), pairs in
 *     that order filtered to the context, then a stable sort by the float32 score. */
#include "filo/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "error.h"

static double f1_of(int64_t tp, int64_t fp, int64_t fn)
{
    return tp ? 2.0 * (double)tp / (double)(2 * tp + fp + fn) : 0.0;
}

/* ---- classification ---- */

filo_status filo_metrics_classify(const int32_t *pred, const int32_t *gold, int64_t n, int n_classes,
                                  filo_class_metrics *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!pred || !gold || !out || n <= 0 || n_classes <= 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "needs pred, gold and out, n > 0 and n_classes > 0 (n %lld, %d classes)",
                         (long long)n, n_classes);
    int64_t *counts = calloc(3 * (size_t)n_classes, sizeof *counts); /* tp, fp, fn per class */
    if (!counts)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t p = pred[i], g = gold[i];
        if (p < 0 || p >= n_classes || g < 0 || g >= n_classes) {
            free(counts);
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "example %lld: pred %d, gold %d, expected classes in [0, %d)",
                             (long long)i, p, g, n_classes);
        }
        if (p == g) {
            correct++;
            counts[3 * p]++;
        } else {
            counts[3 * p + 1]++;
            counts[3 * g + 2]++;
        }
    }
    double sum = 0;
    int present = 0;
    for (int c = 0; c < n_classes; c++) {
        const int64_t *k = counts + 3 * c;
        if (k[0] + k[1] + k[2] == 0)
            continue;
        sum += f1_of(k[0], k[1], k[2]);
        present++;
    }
    free(counts);
    out->accuracy = out->micro_f1 = (double)correct / (double)n;
    out->macro_f1 = sum / present;
    return FILO_OK;
}

filo_status filo_metrics_multilabel(const uint8_t *pred, const uint8_t *gold, int64_t n, int n_labels,
                                    filo_class_metrics *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!pred || !gold || !out || n <= 0 || n_labels <= 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "needs pred, gold and out, n > 0 and n_labels > 0 (n %lld, %d labels)",
                         (long long)n, n_labels);
    int64_t exact = 0, tp = 0, fp = 0, fn = 0;
    double sum = 0;
    int present = 0;
    for (int64_t i = 0; i < n; i++) {
        int same = 1;
        for (int l = 0; l < n_labels; l++) {
            uint8_t p = pred[i * n_labels + l], g = gold[i * n_labels + l];
            if (p > 1 || g > 1)
                return FILO_FAIL(FILO_ERR_INVALID_ARG, "example %lld, label %d: pred %u, gold %u, expected 0 or 1",
                                 (long long)i, l, p, g);
            same &= p == g;
        }
        exact += same;
    }
    for (int l = 0; l < n_labels; l++) {
        int64_t t = 0, f = 0, m = 0;
        for (int64_t i = 0; i < n; i++) {
            uint8_t p = pred[i * n_labels + l], g = gold[i * n_labels + l];
            t += p && g;
            f += p && !g;
            m += !p && g;
        }
        if (t + f + m) {
            sum += f1_of(t, f, m);
            present++;
        }
        tp += t;
        fp += f;
        fn += m;
    }
    out->accuracy = (double)exact / (double)n;
    out->macro_f1 = present ? sum / present : 0.0;
    out->micro_f1 = f1_of(tp, fp, fn);
    return FILO_OK;
}

/* ---- regression ---- */

static double pearson(const double *x, const double *y, int64_t n)
{
    double mx = 0, my = 0;
    for (int64_t i = 0; i < n; i++) {
        mx += x[i];
        my += y[i];
    }
    mx /= (double)n;
    my /= (double)n;
    double sxy = 0, sxx = 0, syy = 0;
    for (int64_t i = 0; i < n; i++) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    if (n < 2 || sxx == 0 || syy == 0)
        return NAN;
    double r = sxy / sqrt(sxx * syy);
    return r > 1 ? 1 : r < -1 ? -1 : r;
}

typedef struct ranked {
    double v;
    int64_t i;
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
    double x = ((const ranked *)a)->v, y = ((const ranked *)b)->v;
    return (x > y) - (x < y);
}

/* 1-based ranks, tied values sharing their mean rank (scipy's rankdata, method "average"). */
static void rank(const double *v, int64_t n, ranked *tmp, double *r)
{
    for (int64_t i = 0; i < n; i++)
        tmp[i] = (ranked){v[i], i};
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_ranked);
    for (int64_t a = 0, b; a < n; a = b) {
        for (b = a + 1; b < n && tmp[b].v == tmp[a].v;)
            b++;
        for (int64_t k = a; k < b; k++)
            r[tmp[k].i] = (double)(a + b + 1) / 2;
    }
}

filo_status filo_metrics_regression(const double *pred, const double *gold, int64_t n, filo_regression_metrics *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!pred || !gold || !out || n <= 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "needs pred, gold and out and n > 0 (n %lld)", (long long)n);
    int finite = 1;
    for (int64_t i = 0; i < n; i++) {
        double d = pred[i] - gold[i];
        out->mse += d * d;
        out->mae += fabs(d);
        finite &= isfinite(pred[i]) && isfinite(gold[i]);
    }
    out->mse /= (double)n;
    out->mae /= (double)n;
    out->pearson = out->spearman = NAN;
    if (!finite)
        return FILO_OK; /* a diverged model: its errors show in mse, no correlation means anything */
    out->pearson = pearson(pred, gold, n);
    ranked *tmp = malloc((size_t)n * sizeof *tmp);
    double *r = malloc(2 * (size_t)n * sizeof *r);
    if (!tmp || !r) {
        free(tmp);
        free(r);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    }
    rank(pred, n, tmp, r);
    rank(gold, n, tmp, r + n);
    out->spearman = pearson(r, r + n, n);
    free(tmp);
    free(r);
    return FILO_OK;
}

/* ---- entities (seqeval) ---- */

typedef struct tag_info {
    char kind;     /* 'O', 'B' or 'I' */
    int type;      /* the entity type as the index of the first name with the same type; -1 for O */
} tag_info;

typedef struct entity {
    int64_t start, end;
    int type;
} entity;

/* seqeval's get_entities() over one sentence, restricted to O/B/I: a chunk ends before a B or an
 * O, or where the type changes; it starts at a B, at an I after an O, or where the type changes. */
static int64_t sentence_entities(const int32_t *tags, int64_t len, const tag_info *info, entity *out)
{
    int64_t n = 0, begin = 0;
    char prev = 'O';
    int prev_type = -1;
    for (int64_t i = 0; i <= len; i++) {
        char kind = i < len ? info[tags[i]].kind : 'O';
        int type = i < len ? info[tags[i]].type : -1;
        if (prev != 'O' && (kind == 'B' || kind == 'O' || type != prev_type))
            out[n++] = (entity){begin, i - 1, prev_type};
        if (kind == 'B' || (kind == 'I' && (prev == 'O' || type != prev_type)))
            begin = i;
        prev = kind;
        prev_type = type;
    }
    return n;
}

static filo_status tag_infos(const char *const *names, int n_names, tag_info *info)
{
    for (int i = 0; i < n_names; i++) {
        const char *s = names[i];
        if (s && strcmp(s, "O") == 0) {
            info[i] = (tag_info){'O', -1};
            continue;
        }
        if (!s || (s[0] != 'B' && s[0] != 'I') || s[1] != '-' || !s[2])
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "tag %d is '%s'; tags are \"O\", \"B-X\" or \"I-X\" (IOB2)", i,
                             s ? s : "(null)");
        info[i] = (tag_info){s[0], i};
        for (int j = 0; j < i; j++)
            if (info[j].kind != 'O' && strcmp(names[j] + 2, s + 2) == 0) {
                info[i].type = info[j].type;
                break;
            }
    }
    return FILO_OK;
}

filo_status filo_metrics_entities(const int32_t *pred, const int32_t *gold, const int32_t *seq_len, int64_t n_seqs,
                                  const char *const *names, int n_names, filo_entity_metrics *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!pred || !gold || !seq_len || !names || !out || n_seqs < 0 || n_names <= 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "needs pred, gold, seq_len, names and out, n_seqs >= 0 and n_names > 0");
    tag_info *info = malloc((size_t)n_names * sizeof *info);
    if (!info)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    filo_status st = tag_infos(names, n_names, info);
    int64_t max_len = 0, total = 0;
    for (int64_t s = 0; st == FILO_OK && s < n_seqs; s++) {
        if (seq_len[s] < 0)
            st = FILO_FAIL(FILO_ERR_INVALID_ARG, "sentence %lld has length %d", (long long)s, seq_len[s]);
        max_len = seq_len[s] > max_len ? seq_len[s] : max_len;
        total += seq_len[s];
    }
    for (int64_t i = 0; st == FILO_OK && i < total; i++)
        if (pred[i] < 0 || pred[i] >= n_names || gold[i] < 0 || gold[i] >= n_names)
            st = FILO_FAIL(FILO_ERR_INVALID_ARG, "tag %lld: pred %d, gold %d, expected tags in [0, %d)", (long long)i,
                           pred[i], gold[i], n_names);
    entity *eg = malloc(((size_t)max_len + 1) * sizeof *eg), *ep = malloc(((size_t)max_len + 1) * sizeof *ep);
    if (st == FILO_OK && (!eg || !ep))
        st = FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    for (int64_t s = 0, off = 0; st == FILO_OK && s < n_seqs; off += seq_len[s++]) {
        int64_t ng = sentence_entities(gold + off, seq_len[s], info, eg);
        int64_t np = sentence_entities(pred + off, seq_len[s], info, ep);
        /* both lists run in order of position without overlaps: merge them */
        for (int64_t a = 0, b = 0; a < ng && b < np;) {
            if (eg[a].start == ep[b].start) {
                out->n_correct += eg[a].end == ep[b].end && eg[a].type == ep[b].type;
                a++;
                b++;
            } else if (eg[a].start < ep[b].start)
                a++;
            else
                b++;
        }
        out->n_gold += ng;
        out->n_pred += np;
    }
    free(info);
    free(eg);
    free(ep);
    if (st != FILO_OK) {
        memset(out, 0, sizeof *out);
        return st;
    }
    out->precision = out->n_pred ? (double)out->n_correct / (double)out->n_pred : 0.0;
    out->recall = out->n_gold ? (double)out->n_correct / (double)out->n_gold : 0.0;
    double pr = out->precision + out->recall;
    out->f1 = pr > 0 ? 2 * out->precision * out->recall / pr : 0.0;
    return FILO_OK;
}

/* ---- SQuAD v1.1 ---- */

static const char ascii_punctuation[] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

static int is_word(int32_t c)
{
    if (c == '_')
        return 1;
    utf8proc_category_t k = utf8proc_category(c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
           (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

/* Python's str.isspace(). */
static int is_space(int32_t c)
{
    if ((c >= 9 && c <= 13) || (c >= 28 && c <= 32) || c == 0x85)
        return 1;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ZS || k == UTF8PROC_CATEGORY_ZL || k == UTF8PROC_CATEGORY_ZP;
}

typedef struct answer {
    int32_t *cp;        /* the normalized text: its tokens joined by one space */
    int n_cp, n_tokens;
    int *start, *len;   /* token k is cp[start[k], start[k] + len[k]) */
} answer;

static int is_article(const int32_t *w, int n)
{
    return (n == 1 && w[0] == 'a') || (n == 2 && w[0] == 'a' && w[1] == 'n') ||
           (n == 3 && w[0] == 't' && w[1] == 'h' && w[2] == 'e');
}

static void answer_free(answer *a)
{
    free(a->cp);
    free(a->start);
    free(a->len);
}

/* Appends c to the current token, or ends it (c < 0). */
static void emit(answer *a, int32_t c, int *in_token)
{
    if (c < 0) {
        *in_token = 0;
        return;
    }
    if (!*in_token) {
        if (a->n_tokens)
            a->cp[a->n_cp++] = ' ';
        a->start[a->n_tokens] = a->n_cp;
        a->len[a->n_tokens++] = 0;
        *in_token = 1;
    }
    a->cp[a->n_cp++] = c;
    a->len[a->n_tokens - 1]++;
}

/* normalize_answer(): lower(), remove ASCII punctuation, replace the articles (whole runs of \w)
 * by a space, split on whitespace. Bytes that are not UTF-8 stay distinct as U+DC80..U+DCFF, as
 * Python's surrogateescape keeps them. Returns 0 when out of memory. */
static int normalize(const char *s, answer *a)
{
    memset(a, 0, sizeof *a);
    size_t len = s ? strlen(s) : 0;
    int32_t *t = malloc((len + 1) * sizeof *t);
    a->cp = malloc((len + 1) * sizeof *a->cp);
    a->start = malloc((len + 1) * sizeof *a->start);
    a->len = malloc((len + 1) * sizeof *a->len);
    if (!t || !a->cp || !a->start || !a->len) {
        free(t);
        answer_free(a);
        return 0;
    }
    int n = 0;
    for (size_t i = 0; i < len;) {
        int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &c);
        if (k <= 0) {
            c = 0xDC00 + (unsigned char)s[i];
            k = 1;
        } else
            c = utf8proc_tolower(c);
        i += (size_t)k;
        if (!(c < 128 && strchr(ascii_punctuation, (int)c)))
            t[n++] = c;
    }
    int in_token = 0;
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && is_word(t[j]))
            j++;
        if (j == i) { /* one character that is no \w */
            emit(a, is_space(t[i]) ? -1 : t[i], &in_token);
            i++;
            continue;
        }
        int article = is_article(t + i, j - i);
        for (; i < j; i++)
            emit(a, article ? -1 : t[i], &in_token);
    }
    free(t);
    return 1;
}

/* Over the gold answers, the best of score(pred, gold); 0 when there is none. */
static double best_over_gold(const char *pred, const char *const *gold, int n_gold,
                             double (*score)(const answer *, const answer *))
{
    answer p;
    double best = 0;
    if (!normalize(pred, &p))
        return 0;
    for (int i = 0; gold && i < n_gold; i++) {
        answer g;
        if (!gold[i] || !normalize(gold[i], &g))
            continue;
        double v = score(&p, &g);
        best = v > best ? v : best;
        answer_free(&g);
    }
    answer_free(&p);
    return best;
}

static double exact(const answer *p, const answer *g)
{
    return p->n_cp == g->n_cp && memcmp(p->cp, g->cp, (size_t)p->n_cp * sizeof *p->cp) == 0;
}

/* Token F1 over the multiset of tokens both share (v1.1: 0 when there is none, even if both are empty). */
static double token_f1(const answer *p, const answer *g)
{
    char *used = calloc((size_t)g->n_tokens + 1, 1);
    if (!used)
        return 0;
    int same = 0;
    for (int i = 0; i < p->n_tokens; i++)
        for (int j = 0; j < g->n_tokens; j++)
            if (!used[j] && p->len[i] == g->len[j] &&
                memcmp(p->cp + p->start[i], g->cp + g->start[j], (size_t)p->len[i] * sizeof *p->cp) == 0) {
                used[j] = 1;
                same++;
                break;
            }
    free(used);
    if (!same)
        return 0;
    double precision = (double)same / p->n_tokens, recall = (double)same / g->n_tokens;
    return 2 * precision * recall / (precision + recall);
}

double filo_squad_exact(const char *pred, const char *const *gold, int n_gold)
{
    return best_over_gold(pred, gold, n_gold, exact);
}

double filo_squad_f1(const char *pred, const char *const *gold, int n_gold)
{
    return best_over_gold(pred, gold, n_gold, token_f1);
}

/* ---- question answering spans ---- */

/* Position i before j in numpy's descending order: the larger logit, a NaN above all (numpy sorts
 * NaN last), the later position among equals. */
static int ranks_before(const float *v, int32_t i, int32_t j)
{
    int ni = isnan(v[i]) != 0, nj = isnan(v[j]) != 0;
    if (ni != nj)
        return ni;
    if (!ni && v[i] != v[j])
        return v[i] > v[j];
    return i > j;
}

/* The first k positions of the descending order of v (k <= len). */
static void top_k(const float *v, int32_t len, int k, int32_t *top)
{
    for (int r = 0; r < k; r++) {
        int32_t best = -1;
        for (int32_t i = 0; i < len; i++)
            if ((r == 0 || ranks_before(v, top[r - 1], i)) && (best < 0 || ranks_before(v, i, best)))
                best = i;
        top[r] = best;
    }
}

filo_status filo_qa_best_spans(const float *start_logits, const float *end_logits, int32_t len, int32_t ctx_begin,
                               int32_t ctx_end, int n_best, int max_answer_len, filo_span *spans, int *n_out)
{
    if (n_out)
        *n_out = 0;
    if (!start_logits || !end_logits || !spans || !n_out || len <= 0 || n_best <= 0 || max_answer_len <= 0 ||
        ctx_begin < 0 || ctx_begin > ctx_end || ctx_end > len)
        return FILO_FAIL(FILO_ERR_INVALID_ARG,
                         "needs logits, spans and n_out, len > 0, 0 <= ctx_begin <= ctx_end <= len, n_best > 0 and "
                         "max_answer_len > 0 (len %d, context [%d, %d), n_best %d, max_answer_len %d)",
                         len, ctx_begin, ctx_end, n_best, max_answer_len);
    int k = n_best < len ? n_best : len, n = 0;
    int32_t *top = malloc(2 * (size_t)k * sizeof *top);
    if (!top)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    top_k(start_logits, len, k, top);
    top_k(end_logits, len, k, top + k);
    for (int si = 0; si < k; si++)
        for (int ei = 0; ei < k; ei++) {
            int32_t s = top[si], e = top[k + ei];
            if (s < ctx_begin || s >= ctx_end || e < ctx_begin || e >= ctx_end || e < s || e - s + 1 > max_answer_len)
                continue;
            /* the score as numpy adds two float32 logits */
            filo_span c = {s, e, (double)(float)(start_logits[s] + end_logits[e])};
            /* insert after every span that scores as high: a stable sort, cut at n_best */
            int at = n;
            while (at > 0 && !(spans[at - 1].score >= c.score))
                at--;
            if (at >= n_best)
                continue;
            int last = n < n_best ? n : n_best - 1;
            memmove(spans + at + 1, spans + at, (size_t)(last - at) * sizeof *spans);
            spans[at] = c;
            n = last + 1;
        }
    free(top);
    *n_out = n;
    return FILO_OK;
}
