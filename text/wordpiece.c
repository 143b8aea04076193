/* Text to WordPiece ids in one pass: specials written in the text are cut out first (leftmost,
 * longest), then each character is cleaned, normalized (accents, case) and sorted into words —
 * whitespace ends a word, punctuation and CJK ideographs are words of their own — and each
 * finished word goes through greedy longest-match-first. Every normalized character remembers
 * the original bytes it came from, which give the pieces their offsets. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "utf8_text.h"
#include "vocab.h"

/* The word being built: its normalized characters, each with its original byte range. */
typedef struct word {
    int32_t *cp, *ob, *oe;
    uint32_t *bstart; /* byte offset of each character in bytes, n + 1 of them */
    char *bytes;
    int n, cap;
} word;

static void word_free(word *w)
{
    free(w->cp);
    free(w->ob);
    free(w->oe);
    free(w->bstart);
    free(w->bytes);
}

static int word_reserve(word *w, int n)
{
    if (n <= w->cap)
        return 0;
    int cap = w->cap ? w->cap * 2 : 64;
    while (cap < n)
        cap *= 2;
    int32_t *cp = realloc(w->cp, sizeof *cp * (size_t)cap);
    if (cp)
        w->cp = cp;
    int32_t *ob = realloc(w->ob, sizeof *ob * (size_t)cap);
    if (ob)
        w->ob = ob;
    int32_t *oe = realloc(w->oe, sizeof *oe * (size_t)cap);
    if (oe)
        w->oe = oe;
    uint32_t *bs = realloc(w->bstart, sizeof *bs * ((size_t)cap + 1));
    if (bs)
        w->bstart = bs;
    char *bytes = realloc(w->bytes, 4 * (size_t)cap);
    if (bytes)
        w->bytes = bytes;
    if (!cp || !ob || !oe || !bs || !bytes)
        return -1;
    w->cap = cap;
    return 0;
}

static int pieces_push(filo_pieces *p, int32_t id, int32_t begin, int32_t end)
{
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        int32_t *ids = realloc(p->ids, sizeof *ids * (size_t)cap);
        if (ids)
            p->ids = ids;
        int32_t *b = realloc(p->begin, sizeof *b * (size_t)cap);
        if (b)
            p->begin = b;
        int32_t *e = realloc(p->end, sizeof *e * (size_t)cap);
        if (e)
            p->end = e;
        if (!ids || !b || !e)
            return -1;
        p->cap = cap;
    }
    p->ids[p->n] = id;
    p->begin[p->n] = begin;
    p->end[p->n] = end;
    p->n++;
    return 0;
}

void filo_pieces_free(filo_pieces *p)
{
    if (!p)
        return;
    free(p->ids);
    free(p->begin);
    free(p->end);
    memset(p, 0, sizeof *p);
}

/* Appends a normalized character. After accent stripping the text is in NFD, whose canonical
 * order puts a run of combining characters in ascending combining class: the few spacing marks
 * with a class (Mn ones are gone) move back to their place. Their original ranges stay where they
 * were, as Hugging Face's aligned NFD keeps them by position. */
static int word_add(word *w, int strip, int32_t cp, int32_t ob, int32_t oe)
{
    if (word_reserve(w, w->n + 1))
        return -1;
    int i = w->n++;
    w->ob[i] = ob;
    w->oe[i] = oe;
    int ccc = strip && cp >= 0x300 ? text_combining_class(cp) : 0;
    for (; ccc && i > 0 && text_combining_class(w->cp[i - 1]) > ccc; i--)
        w->cp[i] = w->cp[i - 1];
    w->cp[i] = cp;
    return 0;
}

/* Greedy longest-match-first over the finished word; a word too long or with a part no token
 * matches becomes one [UNK] over the whole word. Empties the word. */
static int word_flush(const filo_tokenizer *tok, word *w, filo_pieces *out)
{
    int n = w->n;
    if (n == 0)
        return 0;
    w->n = 0;
    int32_t begin = w->ob[0], end = w->oe[n - 1];
    if (n > tok->opts.max_chars_per_word)
        return pieces_push(out, tok->sp.unk, begin, end);
    uint32_t len = 0;
    for (int i = 0; i < n; i++) {
        w->bstart[i] = len;
        len += (uint32_t)text_utf8_encode(w->cp[i], w->bytes + len);
    }
    w->bstart[n] = len;
    int mark = out->n;
    for (int sc = 0; sc < n;) {
        int cont = sc > 0;
        uint32_t longest = cont ? tok->max_cont_piece : tok->max_word_piece;
        int ec = n;
        while (ec > sc && w->bstart[ec] - w->bstart[sc] > longest)
            ec--;
        int32_t id = -1;
        for (; ec > sc; ec--) {
            id = vocab_lookup(tok, cont, w->bytes + w->bstart[sc], w->bstart[ec] - w->bstart[sc]);
            if (id >= 0)
                break;
        }
        if (id < 0) {
            out->n = mark;
            return pieces_push(out, tok->sp.unk, begin, end);
        }
        if (pieces_push(out, id, w->ob[sc], w->oe[ec - 1]))
            return -1;
        sc = ec;
    }
    return 0;
}

/* One stretch of text between specials: [b, e) of text. */
static int segment(const filo_tokenizer *tok, const char *text, size_t b, size_t e, word *w, filo_pieces *out)
{
    const unsigned char *u = (const unsigned char *)text;
    int lower = tok->opts.lowercase, strip = tok->strip;
    int32_t norm[TEXT_NORM_MAX];
    for (size_t i = b; i < e;) {
        int32_t cp;
        int len = text_utf8_decode(u + i, e - i, &cp);
        int32_t ob = (int32_t)i, oe = (int32_t)(i + (size_t)len);
        i += (size_t)len;
        text_clean_class cls = text_clean_classify(cp);
        if (cls == TEXT_CLEAN_DROP)
            continue;
        if (cls == TEXT_CLEAN_SPACE) {
            if (word_flush(tok, w, out))
                return -1;
            continue;
        }
        int alone = cls == TEXT_CLEAN_CJK && tok->opts.split_cjk;
        if (alone && word_flush(tok, w, out))
            return -1;
        int m = text_normalize_char(cp, lower, strip, norm);
        for (int k = 0; k < m; k++) {
            int punct = !alone && text_is_punct(norm[k]);
            if (punct && word_flush(tok, w, out))
                return -1;
            if (word_add(w, strip, norm[k], ob, oe) || (punct && word_flush(tok, w, out)))
                return -1;
        }
        if (alone && word_flush(tok, w, out))
            return -1;
    }
    return word_flush(tok, w, out);
}

/* The longest special token that starts at text[i], or -1. */
static int32_t special_at(const filo_tokenizer *tok, const char *text, size_t i, size_t len)
{
    int32_t best = -1;
    for (int k = 0; k < tok->n_never_split; k++) {
        int32_t id = tok->never_split[k];
        uint32_t n = tok->lens[id];
        if (n <= len - i && memcmp(text + i, tok->tokens[id], n) == 0 && (best < 0 || n > tok->lens[best]))
            best = id;
    }
    return best;
}

filo_status filo_tokenizer_pieces(const filo_tokenizer *tok, const char *text, size_t len, filo_pieces *out)
{
    if (!tok || !out || (!text && len > 0))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "tokenizer, text or out is NULL");
    if (len > INT32_MAX)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "text of %zu bytes: offsets are 32-bit", len);
    size_t bad = text_utf8_check(text, len);
    if (bad < len)
        return FILO_FAIL(FILO_ERR_FORMAT, "invalid UTF-8 at byte %zu (0x%02X)", bad, (unsigned char)text[bad]);
    int mark = out->n;
    word w = {0};
    int failed = 0;
    size_t start = 0;
    for (size_t i = 0; i < len && !failed;) {
        const char *open = tok->n_never_split ? memchr(text + i, '[', len - i) : NULL;
        if (!open)
            break;
        i = (size_t)(open - text);
        int32_t id = special_at(tok, text, i, len);
        if (id < 0) {
            i++;
            continue;
        }
        failed = segment(tok, text, start, i, &w, out) ||
                 pieces_push(out, id, (int32_t)i, (int32_t)(i + tok->lens[id]));
        i += tok->lens[id];
        start = i;
    }
    if (!failed)
        failed = segment(tok, text, start, len, &w, out);
    word_free(&w);
    if (failed) {
        out->n = mark;
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory tokenizing %zu bytes", len);
    }
    return FILO_OK;
}
