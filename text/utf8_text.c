/* UTF-8 decoding and BERT's character classes. ASCII goes through a table built once; the rest
 * asks utf8proc (Unicode categories, canonical decompositions, simple lowercase mappings). */
#include "utf8_text.h"

#include <utf8proc.h>

int text_utf8_decode(const unsigned char *s, size_t n, int32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = (int32_t)c;
        return 1;
    }
    int len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if ((size_t)len > n)
        return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = (int32_t)v;
    return len;
}

int text_utf8_encode(int32_t cp, char *out)
{
    uint32_t v = (uint32_t)cp;
    if (v < 0x80) {
        out[0] = (char)v;
        return 1;
    }
    if (v < 0x800) {
        out[0] = (char)(0xC0 | (v >> 6));
        out[1] = (char)(0x80 | (v & 0x3F));
        return 2;
    }
    if (v < 0x10000) {
        out[0] = (char)(0xE0 | (v >> 12));
        out[1] = (char)(0x80 | ((v >> 6) & 0x3F));
        out[2] = (char)(0x80 | (v & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (v >> 18));
    out[1] = (char)(0x80 | ((v >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((v >> 6) & 0x3F));
    out[3] = (char)(0x80 | (v & 0x3F));
    return 4;
}

size_t text_utf8_check(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int32_t cp;
        int n = text_utf8_decode(u + i, len - i, &cp);
        if (n == 0)
            return i;
        i += (size_t)n;
    }
    return len;
}

/* The CJK Unified Ideographs blocks as the Rust tokenizers library lists them: its range for
 * Extension E starts at U+2B920 where Google's BERT (and Python's BertTokenizer) says U+2B820,
 * so U+2B820..U+2B91F are ordinary letters there. */
static int is_cjk(int32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
           (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) ||
           (cp >= 0x2B920 && cp <= 0x2CEAF) || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

text_clean_class text_clean_classify(int32_t cp)
{
    if (cp < 0x80) {
        if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r')
            return TEXT_CLEAN_SPACE;
        return cp < 0x20 || cp == 0x7F ? TEXT_CLEAN_DROP : TEXT_CLEAN_KEEP;
    }
    if (cp == 0xFFFD)
        return TEXT_CLEAN_DROP;
    switch (utf8proc_get_property(cp)->category) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS:
        return TEXT_CLEAN_DROP;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
        return TEXT_CLEAN_SPACE;
    default:
        return is_cjk(cp) ? TEXT_CLEAN_CJK : TEXT_CLEAN_KEEP;
    }
}

int text_is_punct(int32_t cp)
{
    if (cp < 0x80)
        return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126);
    int cat = utf8proc_get_property(cp)->category;
    return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

int text_combining_class(int32_t cp)
{
    return cp < 0x300 ? 0 : utf8proc_get_property(cp)->combining_class;
}

/* Full lowercase mapping: the simple one, except U+0130 (I with dot above), the one character
 * whose unconditional lowercase is two (i + U+0307). Final sigma stays σ, as in Rust's
 * char::to_lowercase. */
static int lower_into(int32_t cp, int32_t *out)
{
    if (cp < 0x80) {
        out[0] = cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
        return 1;
    }
    if (cp == 0x130) {
        out[0] = 'i';
        out[1] = 0x307;
        return 2;
    }
    out[0] = utf8proc_tolower(cp);
    return 1;
}

int text_normalize_char(int32_t cp, int lower, int strip, int32_t *out)
{
    if (cp < 0x80 || (!lower && !strip)) {
        if (lower)
            return lower_into(cp, out);
        out[0] = cp;
        return 1;
    }
    int32_t dec[TEXT_NORM_MAX];
    int n = 1;
    dec[0] = cp;
    if (strip) {
        int last_boundclass = 0;
        utf8proc_ssize_t got = utf8proc_decompose_char(cp, dec, TEXT_NORM_MAX, UTF8PROC_DECOMPOSE, &last_boundclass);
        /* no canonical decomposition is longer than 4; a failure keeps the character as is */
        if (got < 1 || got > TEXT_NORM_MAX)
            got = 1, dec[0] = cp;
        n = 0;
        for (utf8proc_ssize_t i = 0; i < got; i++)
            if (utf8proc_get_property(dec[i])->category != UTF8PROC_CATEGORY_MN)
                dec[n++] = dec[i];
    }
    if (!lower) {
        for (int i = 0; i < n; i++)
            out[i] = dec[i];
        return n;
    }
    int m = 0;
    for (int i = 0; i < n && m + 2 <= TEXT_NORM_MAX; i++)
        m += lower_into(dec[i], out + m);
    return m;
}
