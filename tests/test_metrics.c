/* Evaluation metrics (filo/metrics.h): small cases worked by hand, and larger ones whose inputs
 * come from an LCG and whose expected values a Python script computed once (PyTorch's Debian
 * python3 with numpy; no scikit-learn or seqeval there, so the script restates their definitions:
 * sklearn's accuracy and macro F1 over the labels present, scipy's pearsonr and spearmanr with
 * average ranks, seqeval 1.x get_entities() in default mode, the SQuAD v1.1 script's
 * normalize_answer/f1_score, transformers' postprocess_qa_predictions with np.argsort), plus
 * every argument check. */
#include <math.h>
#include <string.h>

#include "filo_test.h"

static uint32_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*s >> 32);
}

static void expect_near(const char *what, double got, double want)
{
    cr_assert(fabs(got - want) <= 1e-12 * (1 + fabs(want)), "%s: %.17g, expected %.17g", what, got, want);
}

/* ---- classification ---- */

Test(metrics, classify_by_hand)
{
    /* class 0: tp 2, fp 1 -> F1 4/5; class 1: tp 1 -> 1; class 2 only in gold -> 0; class 3 absent */
    const int32_t pred[] = {0, 0, 0, 1}, gold[] = {0, 0, 2, 1};
    filo_class_metrics m;
    FILO_CHECK(filo_metrics_classify(pred, gold, 4, 4, &m));
    expect_near("accuracy", m.accuracy, 0.75);
    expect_near("macro F1", m.macro_f1, (0.8 + 1 + 0) / 3);
    expect_near("micro F1", m.micro_f1, 0.75);
}

Test(metrics, classify_like_sklearn)
{
    /* gold in [0, 4), pred sometimes 4 (a class only predicted), class 5 never seen */
    enum { N = 200 };
    int32_t pred[N], gold[N];
    uint64_t s = 1;
    for (int i = 0; i < N; i++) {
        gold[i] = (int32_t)(lcg(&s) % 4);
        pred[i] = lcg(&s) % 10 < 6 ? gold[i] : (int32_t)(lcg(&s) % 5);
    }
    filo_class_metrics m;
    FILO_CHECK(filo_metrics_classify(pred, gold, N, 6, &m));
    expect_near("accuracy", m.accuracy, 0.665);
    expect_near("macro F1", m.macro_f1, 0.5445093695576454);
    expect_near("micro F1", m.micro_f1, 0.665);
}

Test(metrics, multilabel)
{
    /* by hand: label 0 F1 1, label 1 tp 1 fp 1 -> 2/3, label 2 fp 1 -> 0, label 3 never -> left out;
     * micro: tp 3, fp 2, fn 0 -> 6/8; only the second example matches exactly */
    const uint8_t pred[] = {1, 0, 1, 0, 0, 1, 0, 0, 1, 1, 0, 0}, gold[] = {1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0};
    filo_class_metrics m;
    FILO_CHECK(filo_metrics_multilabel(pred, gold, 3, 4, &m));
    expect_near("subset accuracy", m.accuracy, 1.0 / 3);
    expect_near("macro F1", m.macro_f1, 5.0 / 9);
    expect_near("micro F1", m.micro_f1, 0.75);

    enum { N = 50, L = 6 };
    uint8_t p[N * L], g[N * L];
    uint64_t s = 2;
    for (int i = 0; i < N; i++)
        for (int l = 0; l < L; l++) {
            g[i * L + l] = l < 5 && lcg(&s) % 3 == 0;
            p[i * L + l] = g[i * L + l] ^ (l < 5 && lcg(&s) % 5 == 0);
        }
    FILO_CHECK(filo_metrics_multilabel(p, g, N, L, &m));
    expect_near("subset accuracy", m.accuracy, 0.32);
    expect_near("macro F1", m.macro_f1, 0.6812881427515574);
    expect_near("micro F1", m.micro_f1, 0.6779661016949152);

    const uint8_t zeros[4] = {0};
    FILO_CHECK(filo_metrics_multilabel(zeros, zeros, 2, 2, &m));
    cr_assert(m.accuracy == 1 && m.macro_f1 == 0 && m.micro_f1 == 0,
              "no positive anywhere: F1 0 (sklearn's zero_division)");
}

/* ---- regression ---- */

Test(metrics, regression)
{
    /* by hand: errors 0, -1, 1, -1; r = 5.5 / sqrt(5 * 8.75); rho = 1 - 6 * 2 / (4 * 15) */
    const double p4[] = {1, 2, 3, 4}, g4[] = {1, 3, 2, 5};
    filo_regression_metrics m;
    FILO_CHECK(filo_metrics_regression(p4, g4, 4, &m));
    expect_near("mse", m.mse, 0.75);
    expect_near("mae", m.mae, 0.75);
    expect_near("pearson", m.pearson, 5.5 / sqrt(43.75));
    expect_near("spearman", m.spearman, 0.8);

    /* many ties on both sides */
    enum { N = 60 };
    double p[N], g[N];
    uint64_t s = 3;
    for (int i = 0; i < N; i++) {
        g[i] = (double)(lcg(&s) % 50) / 10.0;
        p[i] = g[i] + ((int)(lcg(&s) % 21) - 10) / 20.0;
    }
    FILO_CHECK(filo_metrics_regression(p, g, N, &m));
    expect_near("mse", m.mse, 0.07320833333333336);
    expect_near("mae", m.mae, 0.22749999999999995);
    expect_near("pearson", m.pearson, 0.9817611953372363);
    expect_near("spearman", m.spearman, 0.9766421333500314);

    /* undefined correlations are NaN, as scipy gives them */
    const double c[] = {2, 2, 2};
    FILO_CHECK(filo_metrics_regression(c, p4, 3, &m));
    cr_assert(isnan(m.pearson) && isnan(m.spearman));
    expect_near("mse", m.mse, (1 + 0 + 1) / 3.0);
    FILO_CHECK(filo_metrics_regression(p4, g4, 1, &m));
    cr_assert(m.mse == 0 && isnan(m.pearson) && isnan(m.spearman));
    const double bad[] = {1, NAN, 3, 4};
    FILO_CHECK(filo_metrics_regression(bad, g4, 4, &m));
    cr_assert(isnan(m.mse) && isnan(m.pearson) && isnan(m.spearman));
}

/* ---- entities ---- */

static const char *const ner_names[] = {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"};
enum { O, BP, IP, BL, IL, BM, IM };

static filo_entity_metrics entities(const int32_t *pred, const int32_t *gold, const int32_t *len, int64_t n)
{
    filo_entity_metrics m;
    FILO_CHECK(filo_metrics_entities(pred, gold, len, n, ner_names, 7, &m));
    return m;
}

Test(metrics, entities_by_hand)
{
    /* gold: PER(0,1) LOC(3,3) | MISC(0,0) PER(1,2)
     * pred: PER(0,1) LOC(3,3) from an I-LOC after O | MISC(0,0) LOC(1,1) PER(2,2), where the type
     * change splits I-LOC I-PER into two entities */
    const int32_t len[] = {4, 3};
    const int32_t gold[] = {BP, IP, O, BL, BM, BP, IP};
    const int32_t pred[] = {BP, IP, O, IL, IM, IL, IP};
    filo_entity_metrics m = entities(pred, gold, len, 2);
    cr_assert(m.n_gold == 4 && m.n_pred == 5 && m.n_correct == 3, "gold %lld pred %lld correct %lld",
              (long long)m.n_gold, (long long)m.n_pred, (long long)m.n_correct);
    expect_near("precision", m.precision, 0.6);
    expect_near("recall", m.recall, 0.75);
    expect_near("f1", m.f1, 2 * 0.6 * 0.75 / 1.35);

    /* an entity never runs from one sentence into the next; B B gives two entities */
    const int32_t len2[] = {2, 2};
    const int32_t g2[] = {O, BL, IL, IL}, p2[] = {BL, BL, IL, O};
    m = entities(p2, g2, len2, 2);
    cr_assert(m.n_gold == 2 && m.n_pred == 3 && m.n_correct == 1);

    /* nothing predicted, nothing expected */
    const int32_t zo[] = {O, O, O};
    const int32_t len3[] = {3};
    m = entities(zo, zo, len3, 1);
    cr_assert(m.n_gold == 0 && m.n_pred == 0 && m.precision == 0 && m.recall == 0 && m.f1 == 0);
    m = entities(zo, zo, len3, 0);
    cr_assert(m.n_gold == 0 && m.f1 == 0);
}

Test(metrics, entities_like_seqeval)
{
    enum { SEQS = 40 };
    int32_t len[SEQS], gold[SEQS * 12], pred[SEQS * 12];
    uint64_t s = 4;
    int n = 0;
    for (int q = 0; q < SEQS; q++) {
        len[q] = (int32_t)(lcg(&s) % 13);
        for (int i = 0; i < len[q]; i++, n++) {
            gold[n] = (int32_t)(lcg(&s) % 7);
            pred[n] = lcg(&s) % 10 < 7 ? gold[n] : (int32_t)(lcg(&s) % 7);
        }
    }
    filo_entity_metrics m = entities(pred, gold, len, SEQS);
    cr_assert(m.n_gold == 158 && m.n_pred == 160 && m.n_correct == 111, "gold %lld pred %lld correct %lld",
              (long long)m.n_gold, (long long)m.n_pred, (long long)m.n_correct);
    expect_near("precision", m.precision, 0.69375);
    expect_near("recall", m.recall, 0.7025316455696202);
    expect_near("f1", m.f1, 0.6981132075471699);
}

/* ---- SQuAD ---- */

Test(metrics, squad_like_the_v1_1_script)
{
    struct {
        const char *pred, *gold[2];
        double em, f1;
    } cases[] = {
        {"The Eiffel Tower!", {"eiffel tower", "Tower"}, 1, 1},
        {"the the cat sat on a mat", {"cat sat on the mat mat", NULL}, 0, 0.888888888888889},
        {"Ångström's ÉCOLE, Paris", {"angstrom ecole paris", "ångströms école"}, 0, 0.8},
        /* \b around the articles: « and » are no \w, _ is ASCII punctuation */
        {"x«the»y and an_apple", {"x« »y and anapple", NULL}, 1, 1},
        {"banana\u00a0an\u2003apple\u3000THE end", {"banana apple end", NULL}, 1, 1},
        {"1,000 km (approx.)", {"1000 km approx", "1 000 km"}, 1, 1},
        {"U.S.A. — the best", {"usa best", "the usa"}, 0, 0.8},
        /* empty after normalization: equal, but v1.1's F1 is 0 */
        {"a an the", {"the", ""}, 1, 0},
        {"Straße ΔΈΛΤΑ", {"straße δέλτα", NULL}, 1, 1},
        {"l'été à-la-carte ½ _the_", {"lété alacarte ½ the", NULL}, 0, 0.6666666666666666},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n = cases[i].gold[1] ? 2 : 1;
        cr_assert_eq(filo_squad_exact(cases[i].pred, cases[i].gold, n), cases[i].em, "EM of '%s'", cases[i].pred);
        expect_near(cases[i].pred, filo_squad_f1(cases[i].pred, cases[i].gold, n), cases[i].f1);
    }
    /* by hand: tokens quick brown fox / quick fox jumps share 2 of 3 */
    const char *g[] = {"a quick fox jumps"};
    expect_near("token F1", filo_squad_f1("the quick brown fox", g, 1), 2.0 / 3);
    /* repeated tokens count as often as both have them */
    const char *g2[] = {"b b c"};
    expect_near("multiset F1", filo_squad_f1("b b b", g2, 1), 2.0 / 3);
    /* no gold answer, or bytes that are not UTF-8 (kept distinct, not dropped) */
    cr_assert_eq(filo_squad_f1("x", NULL, 0), 0);
    const char *g3[] = {"ab\xFF"};
    cr_assert_eq(filo_squad_exact("ab\xFE", g3, 1), 0);
    cr_assert_eq(filo_squad_exact("AB\xFF!", g3, 1), 1);
}

/* ---- question answering spans ---- */

static void expect_spans(const filo_span *got, int n_got, const filo_span *want, int n_want)
{
    cr_assert_eq(n_got, n_want, "%d spans, expected %d", n_got, n_want);
    for (int i = 0; i < n_want; i++)
        cr_assert(got[i].start == want[i].start && got[i].end == want[i].end && got[i].score == want[i].score,
                  "span %d: (%d, %d, %g), expected (%d, %d, %g)", i, got[i].start, got[i].end, got[i].score,
                  want[i].start, want[i].end, want[i].score);
}

Test(metrics, qa_spans_by_hand)
{
    /* top starts: 0 (outside the context), then 3 before 2 (equal logits: the later first);
     * top ends: 4 before 3; both pairs score 12 and keep their loop order */
    const float start[] = {9, 1, 5, 5, 0, 2}, end[] = {0, 1, 2, 7, 7, 3};
    filo_span spans[2];
    int n;
    FILO_CHECK(filo_qa_best_spans(start, end, 6, 1, 5, 2, 30, spans, &n));
    expect_spans(spans, n, (const filo_span[]){{3, 4, 12}, {3, 3, 12}}, 2);
    /* the 2-token span is too long for max_answer_len 1 */
    FILO_CHECK(filo_qa_best_spans(start, end, 6, 1, 5, 2, 1, spans, &n));
    expect_spans(spans, n, (const filo_span[]){{3, 3, 12}}, 1);
    /* n_best past len */
    filo_span many[10];
    FILO_CHECK(filo_qa_best_spans(start, end, 6, 0, 6, 10, 30, many, &n));
    cr_assert_eq(n, 10);
    cr_assert(many[0].start == 0 && many[0].end == 4 && many[0].score == 16);
}

Test(metrics, qa_spans_like_transformers)
{
    enum { N = 48 };
    float start[N], end[N];
    uint64_t s = 5;
    float *logits[2] = {start, end};
    for (int k = 0; k < 2; k++) {
        int perm[N];
        for (int i = 0; i < N; i++)
            perm[i] = i;
        for (int i = N - 1; i > 0; i--) {
            int j = (int)(lcg(&s) % (uint32_t)(i + 1)), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (int i = 0; i < N; i++)
            logits[k][i] = (float)perm[i] / 8 - 3;
    }
    const filo_span want20[] = {
        {31, 43, 5.75},  {39, 43, 5.625}, {19, 43, 5.5},   {19, 27, 5.375}, {31, 33, 5.25},
        {31, 31, 5.125}, {19, 33, 5.0},   {27, 43, 5.0},   {19, 31, 4.875}, {27, 27, 4.875},
        {26, 43, 4.875}, {26, 27, 4.75},  {38, 43, 4.75},  {31, 42, 4.625}, {43, 43, 4.625},
        {39, 42, 4.5},   {27, 33, 4.5},   {19, 42, 4.375}, {27, 31, 4.375}, {26, 33, 4.375}};
    const filo_span want7[] = {{31, 33, 5.25}, {31, 31, 5.125}, {27, 27, 4.875}};
    filo_span spans[20];
    int n;
    FILO_CHECK(filo_qa_best_spans(start, end, N, 9, 45, 20, 30, spans, &n));
    expect_spans(spans, n, want20, 20);
    FILO_CHECK(filo_qa_best_spans(start, end, N, 9, 45, 7, 4, spans, &n));
    expect_spans(spans, n, want7, 3);
    FILO_CHECK(filo_qa_best_spans(start, end, N, 9, 45, 3, 1, spans, &n));
    cr_assert_eq(n, 0);
}

/* ---- bad arguments ---- */

Test(metrics, bad_arguments)
{
    const int32_t a[] = {0, 1, 3}, b[] = {0, 1, 2};
    filo_class_metrics cm;
    FILO_CHECK_FAILS(filo_metrics_classify(a, b, 3, 3, &cm), FILO_ERR_INVALID_ARG, "example 2: pred 3");
    cr_assert(cm.accuracy == 0 && cm.macro_f1 == 0);
    FILO_CHECK_FAILS(filo_metrics_classify(a, b, 0, 3, &cm), FILO_ERR_INVALID_ARG, "n > 0");
    FILO_CHECK_FAILS(filo_metrics_classify(NULL, b, 3, 3, &cm), FILO_ERR_INVALID_ARG, "pred");
    const uint8_t u[] = {0, 2}, z[] = {0, 0};
    FILO_CHECK_FAILS(filo_metrics_multilabel(u, z, 1, 2, &cm), FILO_ERR_INVALID_ARG, "label 1: pred 2");
    filo_regression_metrics rm;
    FILO_CHECK_FAILS(filo_metrics_regression(NULL, NULL, 1, &rm), FILO_ERR_INVALID_ARG, "pred");

    filo_entity_metrics em;
    const int32_t len[] = {3}, badlen[] = {-1};
    const char *const odd[] = {"O", "B-PER", "PER"};
    FILO_CHECK_FAILS(filo_metrics_entities(b, b, len, 1, odd, 3, &em), FILO_ERR_INVALID_ARG, "tag 2 is 'PER'");
    const char *const empty_type[] = {"O", "B-"};
    FILO_CHECK_FAILS(filo_metrics_entities(b, b, len, 1, empty_type, 2, &em), FILO_ERR_INVALID_ARG, "'B-'");
    FILO_CHECK_FAILS(filo_metrics_entities(a, b, len, 1, ner_names, 3, &em), FILO_ERR_INVALID_ARG, "tag 2: pred 3");
    FILO_CHECK_FAILS(filo_metrics_entities(b, b, badlen, 1, ner_names, 7, &em), FILO_ERR_INVALID_ARG, "length -1");
    cr_assert(em.n_gold == 0 && em.f1 == 0);

    const float l[] = {1, 2, 3};
    filo_span sp[2];
    int n = 5;
    FILO_CHECK_FAILS(filo_qa_best_spans(l, l, 3, 2, 4, 2, 30, sp, &n), FILO_ERR_INVALID_ARG, "context [2, 4)");
    cr_assert_eq(n, 0);
    FILO_CHECK_FAILS(filo_qa_best_spans(l, l, 3, 0, 3, 0, 30, sp, &n), FILO_ERR_INVALID_ARG, "n_best 0");
    FILO_CHECK_FAILS(filo_qa_best_spans(l, l, 3, 0, 3, 2, 0, sp, &n), FILO_ERR_INVALID_ARG, "max_answer_len 0");
}
