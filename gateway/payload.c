/*
 * payload: strict validation of FinishRun and task-action bodies (see payload.h for the contract
 * and the error code table).
 *
 * Three layers, each run only when the previous one passed:
 *   1. JSON: one iterative pass over the raw bytes (explicit stack bounded by max_depth, so
 *      100000 '[' cost nothing but an early json.too_deep). It checks RFC 8259 grammar and UTF-8,
 *      pairs surrogate escapes, and records every key of every open object (raw text plus a
 *      hash of its ASCII-folded, unescaped form) so that an object's keys can be checked for
 *      duplicates when it closes. Keys and raw value tokens of the top-level object are kept.
 *   2. Keys of the top-level object: '$' metadata keys and Unicode confusables of known fields.
 *   3. Fields of the endpoint's contract, from the raw value tokens (so 1, 1.0 and 1e0 differ).
 *
 * Duplicate keys are refused in every object, not only at the top level where binding happens:
 * RFC 8259 leaves the meaning of repeated names open, parsers differ (first wins, last wins,
 * error), the upstream keeps the last one wherever it binds a nested object, and a document whose
 * meaning depends on the parser is exactly what the gateway must not forward. jansson's
 * JSON_REJECT_DUPLICATES also works at every level; the cost is the same. Keys are compared
 * after unescaping, ignoring ASCII case only: the fields that can be bound are ASCII, and
 * non-ASCII look-alikes of them are caught as confusable keys instead.
 *
 * '$' keys and confusable keys are refused at the top level only: that is where the upstream
 * binds fields. Nested objects are values of keys the gateway does not know; serializers skip
 * them without reading metadata, and templates may nest data of their own.
 *
 * Memory: the key table is the only heap allocation (freed before returning); the parse stack
 * is on the C stack (PAYLOAD_DEPTH_LIMIT entries).
 */
#include "payload.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERR_NONE SIZE_MAX

enum vtype {
    VT_NONE = 0,
    VT_OBJECT,
    VT_ARRAY,
    VT_STRING,
    VT_NUMBER,
    VT_TRUE,
    VT_FALSE,
    VT_NULL,
};

/* One key of an open object. For the top-level object also its value's raw token. */
struct member {
    const unsigned char *key; /* raw key text between the quotes (still escaped) */
    size_t key_len;
    const unsigned char *val; /* raw value text, top level only */
    size_t val_len;
    uint32_t hash; /* FNV-1a of the unescaped key with ASCII letters folded to lower case */
    uint8_t val_type;
};

struct scanner {
    const unsigned char *p;
    size_t len;
    size_t pos;
    size_t max_depth;
    bool reject_dups; /* record the keys of every object and refuse duplicates */
    bool record_top;  /* keep the members of a top-level object in m[] */
    struct member *m; /* keys of the open objects, innermost last; owned, freed by the caller */
    size_t n;
    size_t cap;
    uint8_t top_type;
    size_t top_pos; /* where the top-level value starts */
    struct payload_error *err;
};

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                     */

/* Cut S (NUL-terminated) so that it does not end inside a UTF-8 sequence. */
static void trim_partial_utf8(char *s)
{
    size_t n = strlen(s);
    size_t i = n;
    /* Walk back over at most 3 continuation bytes to the lead byte of the last sequence. */
    while (i > 0 && n - i < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t want = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (n - (i - 1) < want)
        s[i - 1] = '\0';
}

__attribute__((format(printf, 5, 6))) static int
fail(struct payload_error *err, const char *code, int status, size_t offset, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    if (n < 0)
        err->message[0] = '\0';
    else if ((size_t)n >= sizeof err->message)
        trim_partial_utf8(err->message);
    /* The pieces put in messages are raw JSON text, which has no bytes < 0x20; keep it so. */
    for (char *c = err->message; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7F)
            *c = '?';
    err->code = code;
    err->status = status;
    err->offset = offset;
    return -1;
}

/*
 * Copy at most MAXB bytes of raw JSON text S (valid UTF-8) into BUF for a message, cutting at a
 * character boundary and marking a cut with "...".
 */
static const char *show_raw(const unsigned char *s, size_t n, size_t maxb, char *buf, size_t size)
{
    if (maxb > size - 4)
        maxb = size - 4;
    size_t k = n;
    bool cut = false;
    if (k > maxb) {
        k = maxb;
        while (k > 0 && (s[k] & 0xC0) == 0x80)
            k--;
        cut = true;
    }
    memcpy(buf, s, k);
    if (cut)
        memcpy(buf + k, "...", 3), k += 3;
    buf[k] = '\0';
    return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* UTF-8                                                                                      */

/*
 * Length of the well-formed UTF-8 sequence at S (N bytes available), or 0 when it is not
 * well-formed: a stray continuation byte, an overlong form (C0, C1, E0 80-9F, F0 80-8F), a UTF-8
 * encoded surrogate (ED A0-BF), a code point above U+10FFFF (F4 90-, F5-FF), or truncated.
 * Table 3-7 of the Unicode Standard.
 */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    if (c < 0xE0)
        return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        if (n < 3 || s[1] < lo || s[1] > hi || (s[2] & 0xC0) != 0x80)
            return 0;
        return 3;
    }
    if (c < 0xF5) {
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        if (n < 4 || s[1] < lo || s[1] > hi || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

/* Code point of the well-formed sequence of length K at S. */
static uint32_t utf8_decode(const unsigned char *s, size_t k)
{
    switch (k) {
    case 1:
        return s[0];
    case 2:
        return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3:
        return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Reading validated string tokens                                                            */

static int hexval(unsigned c)
{
    if (c >= '0' && c <= '9')
        return (int)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F')
        return (int)(c - 'A' + 10);
    return -1;
}

/* The 16-bit value of 4 hex digits at S (N bytes available), or -1. */
static long hex4(const unsigned char *s, size_t n)
{
    if (n < 4)
        return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(s[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Iterates over the code points of a string token the scanner has already validated. */
struct str_iter {
    const unsigned char *p;
    const unsigned char *end;
};

static void str_iter_init(struct str_iter *it, const unsigned char *raw, size_t len)
{
    it->p = raw;
    it->end = raw + len;
}

/* Next code point (escapes decoded, surrogate pairs combined), or -1 at the end. */
static long str_next(struct str_iter *it)
{
    if (it->p >= it->end)
        return -1;
    unsigned c = *it->p;
    if (c == '\\') {
        unsigned e = it->p[1];
        it->p += 2;
        switch (e) {
        case 'b':
            return '\b';
        case 'f':
            return '\f';
        case 'n':
            return '\n';
        case 'r':
            return '\r';
        case 't':
            return '\t';
        case 'u': {
            long u = hex4(it->p, 4);
            it->p += 4;
            if (u >= 0xD800 && u <= 0xDBFF) {
                long lo = hex4(it->p + 2, 4);
                it->p += 6;
                return 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            }
            return u;
        }
        default: /* '"', '\\', '/' */
            return (long)e;
        }
    }
    size_t k = utf8_seq(it->p, (size_t)(it->end - it->p));
    uint32_t cp = utf8_decode(it->p, k);
    it->p += k;
    return (long)cp;
}

static long ascii_lower(long c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static uint32_t key_hash(const unsigned char *raw, size_t len)
{
    struct str_iter it;
    uint32_t h = 2166136261u;
    long c;
    str_iter_init(&it, raw, len);
    while ((c = str_next(&it)) >= 0) {
        h ^= (uint32_t)ascii_lower(c);
        h *= 16777619u;
    }
    return h;
}

/* Compare two keys after unescaping, ignoring ASCII case. */
static int key_cmp_folded(const struct member *a, const struct member *b)
{
    struct str_iter x, y;
    str_iter_init(&x, a->key, a->key_len);
    str_iter_init(&y, b->key, b->key_len);
    for (;;) {
        long cx = ascii_lower(str_next(&x)), cy = ascii_lower(str_next(&y));
        if (cx != cy)
            return cx < cy ? -1 : 1;
        if (cx < 0)
            return 0;
    }
}

/* Does key M equal the ASCII field name NAME after unescaping, ignoring ASCII case? */
static bool key_is(const struct member *m, const char *name)
{
    struct str_iter it;
    str_iter_init(&it, m->key, m->key_len);
    for (const char *q = name;; q++) {
        long c = str_next(&it);
        if (*q == '\0')
            return c < 0;
        if (c < 0 || ascii_lower(c) != ascii_lower((unsigned char)*q))
            return false;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The JSON layer                                                                             */

static int syntax(struct scanner *s, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int syntax(struct scanner *s, size_t at, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return fail(s->err, "json.syntax", 400, at, "invalid JSON at byte %zu: %s", at, what);
}

/* Describe the input at S->pos for a message: 'x', byte 0x01, U+00A0 or "end of input". */
static const char *describe_here(const struct scanner *s, char *buf, size_t size)
{
    if (s->pos >= s->len) {
        snprintf(buf, size, "end of input");
        return buf;
    }
    unsigned c = s->p[s->pos];
    if (c >= 0x21 && c < 0x7F) {
        snprintf(buf, size, "'%c'", (char)c);
    } else if (c < 0x80) {
        snprintf(buf, size, "byte 0x%02X", c);
    } else {
        size_t k = utf8_seq(s->p + s->pos, s->len - s->pos);
        if (k)
            snprintf(buf, size, "U+%04X", (unsigned)utf8_decode(s->p + s->pos, k));
        else
            snprintf(buf, size, "byte 0x%02X", c);
    }
    return buf;
}

static int invalid_utf8(struct scanner *s, size_t at)
{
    return fail(s->err, "json.invalid_utf8", 400, at,
                "invalid UTF-8 at byte %zu (byte 0x%02X): the body must be well-formed UTF-8", at,
                s->p[at]);
}

/* Something that cannot start what was expected (WANT) sits at S->pos. */
static int unexpected(struct scanner *s, const char *want)
{
    char got[32];
    size_t at = s->pos;
    if (at < s->len && s->p[at] >= 0x80 && !utf8_seq(s->p + at, s->len - at))
        return invalid_utf8(s, at);
    describe_here(s, got, sizeof got);
    if (at < s->len && (s->p[at] == 'N' || s->p[at] == 'I'))
        return syntax(s, at, "expected %s, got %s (NaN and Infinity are not JSON)", want, got);
    if (at < s->len && s->p[at] == '/')
        return syntax(s, at, "expected %s, got %s (comments are not JSON)", want, got);
    if (at < s->len && s->p[at] == '\'')
        return syntax(s, at, "expected %s, got %s (strings take double quotes)", want, got);
    return syntax(s, at, "expected %s, got %s", want, got);
}

static void skip_ws(struct scanner *s)
{
    while (s->pos < s->len) {
        unsigned char c = s->p[s->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        s->pos++;
    }
}

static int lone_surrogate(struct scanner *s, size_t at, long u)
{
    return fail(s->err, "json.lone_surrogate", 400, at,
                "invalid JSON at byte %zu: \\u%04lX is half of a surrogate pair without its "
                "other half",
                at, u);
}

/* A string token starting at the '"' at S->pos; leaves S->pos after the closing quote. */
static int scan_string(struct scanner *s)
{
    size_t start = s->pos;
    const unsigned char *p = s->p;
    s->pos++;
    for (;;) {
        if (s->pos >= s->len)
            return syntax(s, start, "unterminated string");
        unsigned c = p[s->pos];
        if (c == '"') {
            s->pos++;
            return 0;
        }
        if (c == '\\') {
            if (s->pos + 1 >= s->len)
                return syntax(s, start, "unterminated string");
            unsigned e = p[s->pos + 1];
            switch (e) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                s->pos += 2;
                continue;
            case 'u':
                break;
            default: {
                char got[32];
                s->pos++;
                describe_here(s, got, sizeof got);
                return syntax(s, s->pos - 1, "invalid escape: backslash followed by %s", got);
            }
            }
            long u = hex4(p + s->pos + 2, s->len - s->pos - 2);
            if (u < 0)
                return syntax(s, s->pos, "invalid \\u escape: four hex digits expected");
            if (u >= 0xDC00 && u <= 0xDFFF)
                return lone_surrogate(s, s->pos, u);
            if (u >= 0xD800 && u <= 0xDBFF) {
                size_t q = s->pos + 6;
                if (q + 1 < s->len && p[q] == '\\' && p[q + 1] == 'u') {
                    long lo = hex4(p + q + 2, s->len - q - 2);
                    if (lo < 0)
                        return syntax(s, q, "invalid \\u escape: four hex digits expected");
                    if (lo >= 0xDC00 && lo <= 0xDFFF) {
                        s->pos = q + 6;
                        continue;
                    }
                }
                return lone_surrogate(s, s->pos, u);
            }
            s->pos += 6;
            continue;
        }
        if (c < 0x20)
            return syntax(s, s->pos, "control character U+%04X in a string (must be escaped)", c);
        if (c < 0x80) {
            s->pos++;
            continue;
        }
        size_t k = utf8_seq(p + s->pos, s->len - s->pos);
        if (!k)
            return invalid_utf8(s, s->pos);
        s->pos += k;
    }
}

static bool is_digit(const struct scanner *s)
{
    return s->pos < s->len && s->p[s->pos] >= '0' && s->p[s->pos] <= '9';
}

/* number = [ minus ] int [ frac ] [ exp ] (RFC 8259 section 6), any magnitude. */
static int scan_number(struct scanner *s)
{
    size_t start = s->pos;
    if (s->p[s->pos] == '-')
        s->pos++;
    if (!is_digit(s))
        return syntax(s, start, "invalid number: '-' must be followed by a digit");
    if (s->p[s->pos] == '0') {
        s->pos++;
        if (is_digit(s))
            return syntax(s, start, "invalid number: leading zeros are not allowed");
    } else {
        while (is_digit(s))
            s->pos++;
    }
    if (s->pos < s->len && s->p[s->pos] == '.') {
        s->pos++;
        if (!is_digit(s))
            return syntax(s, start, "invalid number: a digit must follow the decimal point");
        while (is_digit(s))
            s->pos++;
    }
    if (s->pos < s->len && (s->p[s->pos] == 'e' || s->p[s->pos] == 'E')) {
        s->pos++;
        if (s->pos < s->len && (s->p[s->pos] == '+' || s->p[s->pos] == '-'))
            s->pos++;
        if (!is_digit(s))
            return syntax(s, start, "invalid number: the exponent has no digits");
        while (is_digit(s))
            s->pos++;
    }
    return 0;
}

static int scan_literal(struct scanner *s, const char *word)
{
    size_t n = strlen(word);
    if (s->len - s->pos < n || memcmp(s->p + s->pos, word, n) != 0)
        return syntax(s, s->pos, "invalid literal (expected %s)", word);
    s->pos += n;
    return 0;
}

static int push_member(struct scanner *s, size_t key_start, size_t key_end)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        struct member *m = NULL;
        if (cap <= SIZE_MAX / sizeof *m)
            m = realloc(s->m, cap * sizeof *m);
        if (!m)
            return fail(s->err, "internal.no_memory", 503, ERR_NONE,
                        "out of memory while checking object keys");
        s->m = m;
        s->cap = cap;
    }
    struct member *m = &s->m[s->n++];
    memset(m, 0, sizeof *m);
    m->key = s->p + key_start;
    m->key_len = key_end - key_start;
    m->hash = key_hash(m->key, m->key_len);
    return 0;
}

static int cmp_member_key(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    int c = key_cmp_folded(x, y);
    if (c)
        return c;
    return x->key < y->key ? -1 : x->key > y->key;
}

static int cmp_member_pos(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    return x->key < y->key ? -1 : x->key > y->key;
}

/*
 * An object closes: its keys are m[from..n). Sort them by folded key (ties by position), so
 * equal keys are adjacent; report the earliest second occurrence. Sorting keeps this
 * O(k log k) even against keys crafted to collide in the hash. The top-level object's members
 * are kept, back in body order; a nested object's keys are dropped.
 */
static int close_object(struct scanner *s, size_t from, bool top)
{
    size_t k = s->n - from;
    struct member *m = s->m + from;
    if (k >= 2) {
        const struct member *first = NULL, *dup = NULL;
        size_t g = 0; /* start of the current group of equal keys */
        qsort(m, k, sizeof *m, cmp_member_key);
        for (size_t i = 1; i < k; i++) {
            if (m[i].hash != m[g].hash || key_cmp_folded(&m[i], &m[g]) != 0) {
                g = i;
                continue;
            }
            /* Equal keys are ordered by position: m[g] is the first occurrence and m[g + 1]
             * the first duplicate of it. */
            if (i == g + 1 && (!dup || m[i].key < dup->key)) {
                dup = &m[i];
                first = &m[g];
            }
        }
        if (dup) {
            char a[80], b[80];
            size_t at = (size_t)(dup->key - s->p) - 1;
            return fail(s->err, "json.duplicate_key", 400, at,
                        "duplicate key \"%s\" at byte %zu: same as \"%s\" at byte %zu (keys are "
                        "compared ignoring ASCII case)",
                        show_raw(dup->key, dup->key_len, 64, a, sizeof a), at,
                        show_raw(first->key, first->key_len, 64, b, sizeof b),
                        (size_t)(first->key - s->p) - 1);
        }
        if (top)
            qsort(m, k, sizeof *m, cmp_member_pos);
    }
    if (!top)
        s->n = from;
    return 0;
}

static uint8_t value_type_of(unsigned c)
{
    switch (c) {
    case '{':
        return VT_OBJECT;
    case '[':
        return VT_ARRAY;
    case '"':
        return VT_STRING;
    case 't':
        return VT_TRUE;
    case 'f':
        return VT_FALSE;
    case 'n':
        return VT_NULL;
    default:
        return (c == '-' || (c >= '0' && c <= '9')) ? VT_NUMBER : VT_NONE;
    }
}

/*
 * The whole document: one value with optional whitespace around it. Iterative: KIND[d] is the
 * container open at depth d (1 = top level), KSTART[d] where its keys start in s->m.
 */
static int scan_document(struct scanner *s)
{
    uint8_t kind[PAYLOAD_DEPTH_LIMIT + 1];
    size_t kstart[PAYLOAD_DEPTH_LIMIT + 1];
    size_t depth = 0;
    enum { ST_VALUE, ST_KEY, ST_AFTER } st = ST_VALUE;
    bool after_comma = false;
    char got[32];

    if (s->len >= 3 && memcmp(s->p, "\xEF\xBB\xBF", 3) == 0)
        return fail(s->err, "json.bom", 400, 0,
                    "the body starts with a UTF-8 byte order mark, which JSON does not allow");
    skip_ws(s);
    if (s->pos == s->len)
        return fail(s->err, "json.empty", 400, ERR_NONE,
                    "the body is empty, a JSON object was expected");
    for (;;) {
        switch (st) {
        case ST_VALUE: {
            skip_ws(s);
            if (s->pos >= s->len)
                return unexpected(s, "a value");
            unsigned c = s->p[s->pos];
            uint8_t vt = value_type_of(c);
            if (depth == 0) {
                s->top_type = vt;
                s->top_pos = s->pos;
            } else if (depth == 1 && kind[1] == VT_OBJECT && s->record_top) {
                s->m[s->n - 1].val = s->p + s->pos;
                s->m[s->n - 1].val_type = vt;
            }
            switch (vt) {
            case VT_OBJECT:
            case VT_ARRAY:
                if (depth >= s->max_depth)
                    return fail(s->err, "json.too_deep", 400, s->pos,
                                "JSON nested too deep at byte %zu: at most %zu levels of arrays "
                                "and objects are allowed",
                                s->pos, s->max_depth);
                depth++;
                kind[depth] = vt;
                kstart[depth] = s->n;
                s->pos++;
                skip_ws(s);
                after_comma = false;
                if (s->pos < s->len && s->p[s->pos] == (vt == VT_OBJECT ? '}' : ']')) {
                    s->pos++;
                    depth--;
                    st = ST_AFTER;
                } else {
                    st = vt == VT_OBJECT ? ST_KEY : ST_VALUE;
                }
                continue;
            case VT_STRING:
                if (scan_string(s))
                    return -1;
                break;
            case VT_NUMBER:
                if (scan_number(s))
                    return -1;
                break;
            case VT_TRUE:
                if (scan_literal(s, "true"))
                    return -1;
                break;
            case VT_FALSE:
                if (scan_literal(s, "false"))
                    return -1;
                break;
            case VT_NULL:
                if (scan_literal(s, "null"))
                    return -1;
                break;
            default:
                if (after_comma && c == ']')
                    return syntax(s, s->pos, "trailing comma before ']'");
                return unexpected(s, "a value");
            }
            st = ST_AFTER;
            continue;
        }
        case ST_KEY: {
            skip_ws(s);
            if (s->pos >= s->len || s->p[s->pos] != '"') {
                if (after_comma && s->pos < s->len && s->p[s->pos] == '}')
                    return syntax(s, s->pos, "trailing comma before '}'");
                return unexpected(s, after_comma ? "a string key" : "a string key or '}'");
            }
            size_t kpos = s->pos;
            if (scan_string(s))
                return -1;
            if ((s->reject_dups || (depth == 1 && s->record_top)) &&
                push_member(s, kpos + 1, s->pos - 1))
                return -1;
            skip_ws(s);
            if (s->pos >= s->len || s->p[s->pos] != ':')
                return unexpected(s, "':' after the key");
            s->pos++;
            after_comma = false;
            st = ST_VALUE;
            continue;
        }
        case ST_AFTER:
            if (depth == 0)
                break;
            if (depth == 1 && kind[1] == VT_OBJECT && s->record_top) {
                struct member *m = &s->m[s->n - 1];
                m->val_len = (size_t)(s->p + s->pos - m->val);
            }
            skip_ws(s);
            if (s->pos < s->len && s->p[s->pos] == ',') {
                s->pos++;
                after_comma = true;
                st = kind[depth] == VT_OBJECT ? ST_KEY : ST_VALUE;
                continue;
            }
            if (s->pos < s->len && s->p[s->pos] == (kind[depth] == VT_OBJECT ? '}' : ']')) {
                s->pos++;
                if (kind[depth] == VT_OBJECT && s->reject_dups &&
                    close_object(s, kstart[depth], depth == 1))
                    return -1;
                depth--;
                continue;
            }
            return unexpected(s, kind[depth] == VT_OBJECT ? "',' or '}'" : "',' or ']'");
        }
        break; /* ST_AFTER at depth 0: the value is complete */
    }
    skip_ws(s);
    if (s->pos < s->len) {
        if (s->p[s->pos] >= 0x80 && !utf8_seq(s->p + s->pos, s->len - s->pos))
            return invalid_utf8(s, s->pos);
        return fail(s->err, "json.trailing_data", 400, s->pos,
                    "unexpected %s at byte %zu after the end of the JSON value",
                    describe_here(s, got, sizeof got), s->pos);
    }
    return 0;
}

static size_t effective_depth(size_t max_depth)
{
    if (max_depth == 0)
        return PAYLOAD_DEFAULT_MAX_DEPTH;
    return max_depth > PAYLOAD_DEPTH_LIMIT ? PAYLOAD_DEPTH_LIMIT : max_depth;
}

static void clear_error(struct payload_error *err)
{
    err->code = NULL;
    err->status = 0;
    err->offset = ERR_NONE;
    err->message[0] = '\0';
}

int payload_json_check(const char *text, size_t len, size_t max_depth, unsigned flags,
                       struct payload_error *err)
{
    if (!err)
        return -1;
    clear_error(err);
    if (!text && len)
        return fail(err, "internal.bad_argument", 500, ERR_NONE, "no body buffer");
    struct scanner s = {
        .p = (const unsigned char *)(text ? text : ""),
        .len = len,
        .max_depth = effective_depth(max_depth),
        .reject_dups = (flags & PAYLOAD_JSON_REJECT_DUPLICATES) != 0,
        .err = err,
    };
    int rc = scan_document(&s);
    free(s.m);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Keys of the top-level object                                                               */

enum field { F_ID, F_SECONDS, F_ENTRIES, F_REASON, F_COMMENT, F_ACTIVATION, F_ACTION, F_COUNT };

static const char *field_name(enum payload_kind kind, int f)
{
    static const char *const names[F_COUNT] = {
        NULL,      "overwriteSecondsSaved", "overwriteEntries", "reason",
        "comment", "activationDate",        "action",
    };
    if (f == F_ID)
        return kind == PAYLOAD_FINISHRUN ? "runId" : "taskId";
    return names[f];
}

/* Fields each kind interprets; keys other than these are forwarded without a look. */
static int field_count(enum payload_kind kind)
{
    return kind == PAYLOAD_FINISHRUN           ? F_REASON
           : kind == PAYLOAD_TASK_ACTION       ? F_ACTIVATION
           : kind == PAYLOAD_RETRY_TASK_ACTION ? F_ACTION
                                               : F_COUNT;
}

/*
 * Unicode confusables of ASCII letters, for json.confusable_key.
 *
 * Anymate binds body keys to its models case-insensitively. Newtonsoft.Json's
 * JsonPropertyCollection.GetClosestMatchProperty tries an Ordinal match, then OrdinalIgnoreCase;
 * System.Text.Json with PropertyNameCaseInsensitive (the ASP.NET Core web default) looks
 * properties up with StringComparer.OrdinalIgnoreCase. OrdinalIgnoreCase compares UTF-16 units
 * after a simple (1:1) uppercase mapping, and what that mapping does to non-ASCII characters
 * has changed between runtimes:
 *   - .NET 5+ with ICU builds its ordinal table from u_toupper but deliberately keeps U+0131
 *     and U+017F unchanged (pal_casing.c, GlobalizationNative_InitOrdinalCasingPage), so no
 *     non-ASCII character matches an ASCII one;
 *   - .NET Core 3.x on Linux matched U+017F with 's' and U+212A with 'k'
 *     (dotnet/runtime#32247: "admini\u017Ftrator" equal to "administrator" on Linux only);
 *   - ToUpperInvariant/ToLowerInvariant, which hand-written binding code uses, still map U+017F
 *     to 'S' and U+212A to 'k' (dotnet/runtime#67873).
 * We do not know which runtime Anymate runs on, so we refuse the union. The characters whose
 * Unicode simple case mappings (UnicodeData.txt) or simple/Turkic case foldings
 * (CaseFolding.txt C, S, T) land on an ASCII letter are exactly four (checked with Python's
 * Unicode 14 tables and glibc's towupper/towlower over all code points): U+0130 (lower: i), U+0131
 * (upper: I), U+017F (upper: S, fold: s) and U+212A (lower and fold: k). U+212B ANGSTROM SIGN folds
 * to U+00E5, not to ASCII, so it cannot spell a known field. Full case mappings and full foldings
 * (SpecialCasing.txt, CaseFolding F) are not 1:1 and .NET's ordinal comparison never uses them, but
 * culture-aware IgnoreCase comparisons (ICU collation) equate U+00DF with "ss"; they are cheap to
 * cover, so the ASCII expansions are refused too: U+00DF and U+1E9E (ss), U+FB00-FB06 (ff fi fl ffi
 * ffl st st). Full-width letters (U+FF21...) are not refused: they have no case mapping to ASCII,
 * and .NET matches them only with CompareOptions.IgnoreWidth, which no serializer uses.
 */
static const char *confusable_ascii(long cp)
{
    switch (cp) {
    case 0x00DF:
    case 0x1E9E:
        return "ss";
    case 0x0130:
    case 0x0131:
        return "i";
    case 0x017F:
        return "s";
    case 0x212A:
        return "k";
    case 0xFB00:
        return "ff";
    case 0xFB01:
        return "fi";
    case 0xFB02:
        return "fl";
    case 0xFB03:
        return "ffi";
    case 0xFB04:
        return "ffl";
    case 0xFB05:
    case 0xFB06:
        return "st";
    default:
        return NULL;
    }
}

/* ASCII-only, locale-independent case-insensitive equality of two NUL-terminated strings. */
static bool ascii_ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (ascii_lower((unsigned char)*a) != ascii_lower((unsigned char)*b))
            return false;
    return *a == *b;
}

/* The field of KIND that key M spells with at least one confusable character, or -1. */
static int confusable_field(enum payload_kind kind, const struct member *m)
{
    char folded[32]; /* longer than any field name */
    size_t n = 0;
    bool any = false;
    struct str_iter it;
    long c;
    str_iter_init(&it, m->key, m->key_len);
    while ((c = str_next(&it)) >= 0) {
        const char *exp;
        char one[2] = {0, 0};
        if (c < 0x80) {
            one[0] = (char)ascii_lower(c);
            exp = one;
        } else {
            exp = confusable_ascii(c);
            if (!exp)
                return -1;
            any = true;
        }
        size_t k = strlen(exp);
        if (k == 0 || n + k >= sizeof folded) /* k == 0: a NUL code point */
            return -1;
        memcpy(folded + n, exp, k);
        n += k;
    }
    if (!any)
        return -1;
    folded[n] = '\0';
    for (int f = 0; f < field_count(kind); f++)
        if (ascii_ieq(folded, field_name(kind, f)))
            return f;
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Field rules                                                                                */

/* Classifies an integer literal -?(0|[1-9][0-9]*) fed one code point at a time. */
struct intlit {
    enum { IL_START, IL_MINUS, IL_ZERO, IL_DIGITS, IL_FRAC, IL_BAD } st;
    bool neg;
    bool overflow;
    uint64_t mag;
};

static void intlit_feed(struct intlit *l, long c)
{
    bool digit = c >= '0' && c <= '9';
    switch (l->st) {
    case IL_START:
    case IL_MINUS:
        if (l->st == IL_START && c == '-') {
            l->neg = true;
            l->st = IL_MINUS;
        } else if (c == '0') {
            l->st = IL_ZERO;
        } else if (digit) {
            l->mag = (uint64_t)(c - '0');
            l->st = IL_DIGITS;
        } else {
            l->st = IL_BAD;
        }
        break;
    case IL_ZERO:
    case IL_DIGITS:
        if (c == '.' || c == 'e' || c == 'E') {
            l->st = IL_FRAC;
        } else if (digit && l->st == IL_DIGITS) {
            uint64_t d = (uint64_t)(c - '0');
            if (l->mag > (UINT64_MAX - d) / 10)
                l->overflow = true;
            else
                l->mag = l->mag * 10 + d;
        } else {
            l->st = IL_BAD;
        }
        break;
    case IL_FRAC:
    case IL_BAD:
        break;
    }
}

enum int_verdict { INT_OK, INT_NOT_INTEGER, INT_OUT_OF_RANGE };

/* Verdict of a fed literal against MIN..MAX (MIN >= 0); *OUT gets the value when INT_OK. */
static enum int_verdict intlit_range(const struct intlit *l, uint64_t min, uint64_t max,
                                     uint64_t *out)
{
    if (l->st != IL_ZERO && l->st != IL_DIGITS)
        return INT_NOT_INTEGER;
    if (l->overflow || (l->neg && l->mag != 0)) /* -0 is 0 */
        return INT_OUT_OF_RANGE;
    if (l->mag < min || l->mag > max)
        return INT_OUT_OF_RANGE;
    *out = l->mag;
    return INT_OK;
}

static void intlit_from_raw(struct intlit *l, const unsigned char *s, size_t n)
{
    memset(l, 0, sizeof *l);
    for (size_t i = 0; i < n; i++)
        intlit_feed(l, s[i]);
}

/* A string value's content: its raw token without the quotes. */
static void intlit_from_string(struct intlit *l, const struct member *m)
{
    struct str_iter it;
    long c;
    memset(l, 0, sizeof *l);
    str_iter_init(&it, m->val + 1, m->val_len - 2);
    while ((c = str_next(&it)) >= 0)
        intlit_feed(l, c);
}

/* "1.0", "\"abc\"", "an object", ... for a message. */
static const char *describe_value(const struct member *m, char *buf, size_t size)
{
    if (m->val_type == VT_OBJECT || m->val_type == VT_ARRAY) {
        snprintf(buf, size, "%s", m->val_type == VT_OBJECT ? "an object" : "an array");
        return buf;
    }
    return show_raw(m->val, m->val_len, 48, buf, size);
}

struct ctx {
    enum payload_kind kind;
    const unsigned char *body;
    const struct payload_options *opts;
    struct payload_result *res;
    struct payload_error *err;
};

static size_t val_offset(const struct ctx *c, const struct member *m)
{
    return (size_t)(m->val - c->body);
}

static const char *key_text(const struct member *m, char *buf, size_t size)
{
    return show_raw(m->key, m->key_len, 64, buf, size);
}

static int check_id(struct ctx *c, const struct member *m)
{
    bool fr = c->kind == PAYLOAD_FINISHRUN;
    const char *missing = fr ? "finishrun.runid_missing" : "task.taskid_missing";
    const char *not_int = fr ? "finishrun.runid_not_integer" : "task.taskid_not_integer";
    const char *range = fr ? "finishrun.runid_out_of_range" : "task.taskid_out_of_range";
    const char *want = c->opts->numeric_string_ids
                           ? "a JSON integer (or a string holding one) from 1 to "
                             "9223372036854775807"
                           : "a JSON integer from 1 to 9223372036854775807";
    char key[80], val[64];
    struct intlit l;
    uint64_t v = 0;

    if (!m)
        return fail(c->err, missing, 422, ERR_NONE, "%s is required", field_name(c->kind, F_ID));
    key_text(m, key, sizeof key);
    describe_value(m, val, sizeof val);
    if (m->val_type == VT_NULL)
        return fail(c->err, missing, 422, val_offset(c, m), "%s is required, got null", key);
    if (m->val_type == VT_STRING && !c->opts->numeric_string_ids)
        return fail(c->err, not_int, 422, val_offset(c, m),
                    "%s must be %s, got the string %s (numeric strings are not accepted)", key,
                    want, val);
    if (m->val_type == VT_NUMBER)
        intlit_from_raw(&l, m->val, m->val_len);
    else if (m->val_type == VT_STRING)
        intlit_from_string(&l, m);
    else
        return fail(c->err, not_int, 422, val_offset(c, m), "%s must be %s, got %s", key, want,
                    val);
    switch (intlit_range(&l, 1, INT64_MAX, &v)) {
    case INT_NOT_INTEGER:
        return fail(c->err, not_int, 422, val_offset(c, m), "%s must be %s, got %s", key, want,
                    val);
    case INT_OUT_OF_RANGE:
        return fail(c->err, range, 422, val_offset(c, m), "%s must be %s, got %s", key, want, val);
    case INT_OK:
        break;
    }
    c->res->id = (int64_t)v;
    c->res->id_from_string = m->val_type == VT_STRING;
    return 0;
}

/* overwriteSecondsSaved / overwriteEntries: absent, null or an integer literal 0..INT32_MAX. */
static int check_override(struct ctx *c, const struct member *m, bool seconds)
{
    enum payload_presence *state = seconds ? &c->res->seconds_state : &c->res->entries_state;
    int32_t *out = seconds ? &c->res->seconds : &c->res->entries;
    const char *not_int = seconds ? "kpi.seconds_not_integer" : "kpi.entries_not_integer";
    const char *range = seconds ? "kpi.seconds_out_of_range" : "kpi.entries_out_of_range";
    char key[80], val[64];
    struct intlit l;
    uint64_t v = 0;

    if (!m) {
        *state = PAYLOAD_ABSENT;
        return 0;
    }
    if (m->val_type == VT_NULL) {
        *state = PAYLOAD_NULL;
        return 0;
    }
    key_text(m, key, sizeof key);
    describe_value(m, val, sizeof val);
    if (m->val_type != VT_NUMBER)
        return fail(c->err, not_int, 422, val_offset(c, m),
                    "%s must be null or a JSON integer from 0 to 2147483647, got %s", key, val);
    intlit_from_raw(&l, m->val, m->val_len);
    switch (intlit_range(&l, 0, INT32_MAX, &v)) {
    case INT_NOT_INTEGER:
        return fail(c->err, not_int, 422, val_offset(c, m),
                    "%s must be null or a JSON integer from 0 to 2147483647, got %s", key, val);
    case INT_OUT_OF_RANGE:
        return fail(c->err, range, 422, val_offset(c, m),
                    "%s must be null or a JSON integer from 0 to 2147483647, got %s", key, val);
    case INT_OK:
        break;
    }
    *state = PAYLOAD_VALUE;
    *out = (int32_t)v;
    return 0;
}

static int check_text(struct ctx *c, const struct member *m, const char *code,
                      enum payload_presence *state)
{
    char key[80], val[64];
    if (!m) {
        *state = PAYLOAD_ABSENT;
    } else if (m->val_type == VT_NULL) {
        *state = PAYLOAD_NULL;
    } else if (m->val_type == VT_STRING) {
        *state = PAYLOAD_VALUE;
    } else {
        return fail(c->err, code, 422, val_offset(c, m), "%s must be a string or null, got %s",
                    key_text(m, key, sizeof key), describe_value(m, val, sizeof val));
    }
    return 0;
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/*
 * ISO-8601 in the forms the SDKs send: YYYY-MM-DD, optionally followed by THH:MM[:SS[.f]]
 * (1 to 7 fraction digits, .NET's tick precision) and then optionally Z or +HH:MM / -HH:MM
 * (at most 14:00, .NET's DateTimeOffset bound). The date must exist (leap years included);
 * year 0001 to 9999 (.NET DateTime).
 */
static bool iso8601_valid(const char *s, size_t n)
{
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, oh, om;
    size_t i;

    if (n < 10 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d))
        return false;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1])
        return false;
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return false;
    if (n == 10)
        return true;
    if (n < 16 || s[10] != 'T' || !digits(s + 11, 2, &h) || s[13] != ':' ||
        !digits(s + 14, 2, &mi) || h > 23 || mi > 59)
        return false;
    i = 16;
    if (i < n && s[i] == ':') {
        if (n < i + 3 || !digits(s + i + 1, 2, &sec) || sec > 59)
            return false;
        i += 3;
        if (i < n && s[i] == '.') {
            size_t f = ++i;
            while (i < n && s[i] >= '0' && s[i] <= '9')
                i++;
            if (i == f || i - f > 7)
                return false;
        }
    }
    if (i == n)
        return true;
    if (s[i] == 'Z')
        return i + 1 == n;
    if ((s[i] == '+' || s[i] == '-') && n == i + 6 && digits(s + i + 1, 2, &oh) &&
        s[i + 3] == ':' && digits(s + i + 4, 2, &om))
        return om <= 59 && oh * 60 + om <= 14 * 60;
    return false;
}

static int check_activation_date(struct ctx *c, const struct member *m)
{
    struct payload_result *r = c->res;
    char key[80], val[64];
    if (!m) {
        r->activation_date_state = PAYLOAD_ABSENT;
        return 0;
    }
    if (m->val_type == VT_NULL) {
        r->activation_date_state = PAYLOAD_NULL;
        return 0;
    }
    if (m->val_type == VT_STRING) {
        char buf[PAYLOAD_DATE_MAX + 1];
        size_t n = 0;
        struct str_iter it;
        long ch;
        bool ok = true;
        str_iter_init(&it, m->val + 1, m->val_len - 2);
        while ((ch = str_next(&it)) >= 0) {
            if (ch == 0 || ch >= 0x80 || n == PAYLOAD_DATE_MAX) {
                ok = false;
                break;
            }
            buf[n++] = (char)ch;
        }
        buf[n] = '\0';
        if (ok && iso8601_valid(buf, n)) {
            memcpy(r->activation_date, buf, n + 1);
            r->activation_date_state = PAYLOAD_VALUE;
            return 0;
        }
    }
    return fail(c->err, "task.activation_date_invalid", 422, val_offset(c, m),
                "%s must be null or an ISO-8601 date or date-time string (2030-01-01, "
                "2030-01-01T00:00:00, 2030-01-01T00:00:00+00:00), got %s",
                key_text(m, key, sizeof key), describe_value(m, val, sizeof val));
}

const char *payload_action_name(enum payload_action a)
{
    static const char *const names[] = {NULL, "Solved", "Manual", "Retry", "Error"};
    return (unsigned)a < sizeof(names) / sizeof(names[0]) ? names[a] : NULL;
}

/* A Return item's action: one of the four names as a JSON string, ASCII case ignored (.NET
 * binds enum names case-insensitively; numbers, which it might also bind, are refused). */
static int check_action(struct ctx *c, const struct member *m)
{
    char key[80], val[64];
    if (!m || m->val_type == VT_NULL)
        return fail(c->err, "task.action_missing", 422, m ? val_offset(c, m) : ERR_NONE,
                    "action is required: one of Solved, Manual, Retry, Error");
    if (m->val_type == VT_STRING) {
        char name[16];
        size_t n = 0;
        struct str_iter it;
        str_iter_init(&it, m->val + 1, m->val_len >= 2 ? m->val_len - 2 : 0);
        long ch;
        while ((ch = str_next(&it)) >= 0 && n < sizeof(name) - 1)
            name[n++] = (char)(ch < 0x80 ? ch : '?');
        name[n] = '\0';
        if (ch < 0) {
            for (int a = PAYLOAD_ACTION_SOLVED; a <= PAYLOAD_ACTION_ERROR; a++) {
                if (ascii_ieq(name, payload_action_name((enum payload_action)a))) {
                    c->res->action = (enum payload_action)a;
                    return 0;
                }
            }
        }
    }
    return fail(c->err, "task.action_invalid", 422, val_offset(c, m),
                "%s must be one of \"Solved\", \"Manual\", \"Retry\", \"Error\", got %s",
                key_text(m, key, sizeof key), describe_value(m, val, sizeof val));
}

static int check_fields(struct ctx *c, const struct member *m, size_t n)
{
    const struct member *slot[F_COUNT] = {NULL};
    int nf = field_count(c->kind);
    char key[80];

    /* Keys first, in body order: they decide what the upstream would bind. */
    for (size_t i = 0; i < n; i++) {
        size_t at = (size_t)(m[i].key - c->body) - 1;
        int f;
        if (m[i].key_len > 0) {
            struct str_iter it;
            str_iter_init(&it, m[i].key, m[i].key_len);
            if (str_next(&it) == '$')
                return fail(c->err, "json.metadata_key", 400, at,
                            "key \"%s\" at byte %zu: keys starting with '$' are serializer "
                            "metadata and are not accepted",
                            key_text(&m[i], key, sizeof key), at);
        }
        for (f = 0; f < nf; f++)
            if (key_is(&m[i], field_name(c->kind, f)))
                break;
        if (f < nf) {
            slot[f] = &m[i];
            continue;
        }
        f = confusable_field(c->kind, &m[i]);
        if (f >= 0)
            return fail(c->err, "json.confusable_key", 400, at,
                        "key \"%s\" at byte %zu is not %s but equals it under Unicode case "
                        "mapping, and the upstream may bind it to %s",
                        key_text(&m[i], key, sizeof key), at, field_name(c->kind, f),
                        field_name(c->kind, f));
    }

    if (check_id(c, slot[F_ID]) || check_override(c, slot[F_SECONDS], true) ||
        check_override(c, slot[F_ENTRIES], false))
        return -1;
    if (c->kind == PAYLOAD_FINISHRUN)
        return 0;
    if (check_text(c, slot[F_REASON], "task.reason_not_string", &c->res->reason_state) ||
        check_text(c, slot[F_COMMENT], "task.comment_not_string", &c->res->comment_state))
        return -1;
    if (c->kind == PAYLOAD_RETRY_TASK_ACTION)
        return check_activation_date(c, slot[F_ACTIVATION]);
    if (c->kind == PAYLOAD_RETURN_ITEM)
        return check_activation_date(c, slot[F_ACTIVATION]) || check_action(c, slot[F_ACTION]);
    return 0;
}

static const char *vtype_name(uint8_t vt)
{
    switch (vt) {
    case VT_ARRAY:
        return "an array";
    case VT_STRING:
        return "a string";
    case VT_NUMBER:
        return "a number";
    case VT_TRUE:
        return "true";
    case VT_FALSE:
        return "false";
    case VT_NULL:
        return "null";
    default:
        return "an object";
    }
}

int payload_validate(enum payload_kind kind, const char *body, size_t len,
                     const struct payload_options *opts, struct payload_result *result,
                     struct payload_error *err)
{
    static const struct payload_options defaults = {.numeric_string_ids = false, .max_depth = 0};
    struct payload_result res;

    if (!err)
        return -1;
    clear_error(err);
    memset(&res, 0, sizeof res);
    if (result)
        memset(result, 0, sizeof *result);
    if (kind != PAYLOAD_FINISHRUN && kind != PAYLOAD_TASK_ACTION &&
        kind != PAYLOAD_RETRY_TASK_ACTION && kind != PAYLOAD_RETURN_ITEM)
        return fail(err, "internal.bad_argument", 500, ERR_NONE, "unknown payload kind %d",
                    (int)kind);
    if (!body && len)
        return fail(err, "internal.bad_argument", 500, ERR_NONE, "no body buffer");
    if (!opts)
        opts = &defaults;

    struct scanner s = {
        .p = (const unsigned char *)(body ? body : ""),
        .len = len,
        .max_depth = effective_depth(opts->max_depth),
        .reject_dups = true,
        .record_top = true,
        .err = err,
    };
    struct ctx c = {.kind = kind, .body = s.p, .opts = opts, .res = &res, .err = err};
    int rc = scan_document(&s);
    if (rc == 0 && s.top_type != VT_OBJECT)
        rc = fail(err, "json.not_object", 400, s.top_pos, "the body must be a JSON object, got %s",
                  vtype_name(s.top_type));
    if (rc == 0)
        rc = check_fields(&c, s.m, s.n);
    free(s.m);
    if (rc == 0 && result)
        *result = res;
    return rc;
}

/* ---- Return: an array of items ---- */

/* End (one past) of the JSON object starting at S[POS] == '{' (the text is valid JSON). */
static size_t object_end(const unsigned char *s, size_t len, size_t pos)
{
    size_t depth = 0;
    bool in_str = false;
    for (; pos < len; pos++) {
        unsigned char c = s[pos];
        if (in_str) {
            if (c == '\\')
                pos++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0)
                return pos + 1;
        }
    }
    return len;
}

int payload_validate_return(const char *body, size_t len, const struct payload_options *opts,
                            size_t max_items, struct payload_result **items, size_t *nitems,
                            struct payload_error *err)
{
    *items = NULL;
    *nitems = 0;
    if (!err)
        return -1;
    if (!body && len)
        return fail(err, "internal.bad_argument", 500, ERR_NONE, "no body buffer");
    if (payload_json_check(body ? body : "", len, opts ? opts->max_depth : 0,
                           PAYLOAD_JSON_REJECT_DUPLICATES, err) != 0)
        return -1;
    const unsigned char *s = (const unsigned char *)body;
    size_t pos = 0;
    while (pos < len && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n' || s[pos] == '\r'))
        pos++;
    if (pos >= len || s[pos] != '[')
        return fail(err, "json.not_array", 400, pos,
                    "the body must be a JSON array of task actions");
    pos++;
    struct payload_result *out = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        while (pos < len && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n' || s[pos] == '\r' ||
                             s[pos] == ','))
            pos++;
        if (pos >= len || s[pos] == ']')
            break;
        if (n >= max_items) {
            free(out);
            return fail(err, "task.too_many_items", 422, pos,
                        "a Return may carry at most %zu task actions", max_items);
        }
        if (s[pos] != '{') {
            free(out);
            return fail(err, "task.item_not_object", 422, pos,
                        "item %zu at byte %zu: each task action must be a JSON object", n, pos);
        }
        size_t end = object_end(s, len, pos);
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct payload_result *no = realloc(out, sizeof(*no) * ncap);
            if (!no) {
                free(out);
                return fail(err, "internal.no_memory", 503, ERR_NONE, "out of memory");
            }
            out = no;
            cap = ncap;
        }
        struct payload_error e;
        if (payload_validate(PAYLOAD_RETURN_ITEM, body + pos, end - pos, opts, &out[n], &e) != 0) {
            free(out);
            return fail(err, e.code, e.status, e.offset == ERR_NONE ? pos : pos + e.offset,
                        "item %zu: %s", n, e.message);
        }
        n++;
        pos = end;
    }
    *items = out;
    *nitems = n;
    return 0;
}
