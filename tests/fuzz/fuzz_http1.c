/*
 * fuzz_http1: libFuzzer target for the HTTP layer's parsing (gateway/http1.c over llhttp, with
 * the gateway's own RFC 9112 checks), for requests and responses.
 *
 * The first input byte picks the message type, the head limit and a seed for how the rest is
 * cut into pieces; the rest is the byte stream. Each input is parsed the way a connection does
 * (head in place from the buffer, body after it, messages one after another on keep-alive),
 * once delivered whole and once in the seeded pieces. Beyond "no crash, no sanitizer report":
 *   - the two deliveries agree exactly: same messages, heads, bodies, same refusal code
 *     (a parser whose verdict depends on where the reads split is a desync waiting to happen);
 *   - every span of a parsed head lies inside it; names are non-empty tokens; values have no
 *     CR, LF or NUL; a request has exactly one Host on HTTP/1.1; no head is over the limit;
 *   - a refusal carries a reason and a gateway error code of the right direction.
 * Any violation aborts with a message, which libFuzzer reports as a crash.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OUT_MAX 65536

struct outcome {
    int rc;
    int err;
    size_t len;
    char text[OUT_MAX];
};

static void out(struct outcome *o, const char *p, size_t n)
{
    if (n > sizeof(o->text) - o->len)
        n = sizeof(o->text) - o->len;
    memcpy(o->text + o->len, p, n);
    o->len += n;
}

static int collect(void *arg, const char *p, size_t n)
{
    out(arg, p, n);
    return 0;
}

static void check_head(const struct http1_head *h, const char *b, enum http1_type type,
                       size_t max_head)
{
    CHECK(h->len <= max_head);
    CHECK(h->nfields <= HTTP1_MAX_FIELDS);
    for (unsigned i = 0; i < h->nfields; i++) {
        const struct http1_field *f = &h->fields[i];
        CHECK(f->name.len > 0);
        CHECK(f->name.off + f->name.len <= h->len && f->value.off + f->value.len <= h->len);
        for (uint32_t k = 0; k < f->name.len; k++)
            CHECK(http1_tchar((unsigned char)b[f->name.off + k]));
        for (uint32_t k = 0; k < f->value.len; k++) {
            char c = b[f->value.off + k];
            CHECK(c != '\r' && c != '\n' && c != '\0');
        }
    }
    if (type == HTTP1_REQUEST) {
        CHECK(h->major == 1 && h->minor <= 1);
        CHECK(h->target.len > 0 && h->target.off + h->target.len <= h->len);
        unsigned hosts = http1_count(h, b, "Host");
        CHECK(h->minor == 1 ? hosts == 1 : hosts <= 1);
        CHECK(h->body != HTTP1_BODY_EOF);
    } else {
        CHECK(h->status >= 100 && h->status <= 599 && h->status != 101);
    }
}

/* Parse STREAM as a connection would, in pieces of the lengths the seed gives (0: whole). */
static void run(enum http1_type type, const char *stream, size_t len, size_t max_head,
                uint32_t seed, struct outcome *o)
{
    static char buf[1 << 16];
    struct http1_parser p;
    struct http1_head h;
    memset(o, 0, offsetof(struct outcome, text));
    if (len > sizeof(buf))
        len = sizeof(buf);
    http1_init(&p, type, &h, max_head);
    size_t avail = 0, start = 0, body = 0;
    bool in_body = false;
    int msgs = 0;
    while (avail < len) {
        size_t piece = len - avail;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            piece = 1 + (seed >> 16) % 17;
            if (piece > len - avail)
                piece = len - avail;
        }
        memcpy(buf + avail, stream + avail, piece);
        avail += piece;
        for (;;) {
            if (!in_body) {
                if (avail == start)
                    break;
                enum http1_rc rc = http1_parse_head(&p, buf + start, avail - start);
                if (rc == HTTP1_AGAIN)
                    break;
                if (rc == HTTP1_ERROR)
                    goto refused;
                check_head(&h, buf + start, type, max_head);
                char line[64];
                int n = snprintf(line, sizeof(line), "[%d %d %u %d %llu]", h.status, h.body,
                                 h.nfields, h.keep_alive, (unsigned long long)h.content_length);
                out(o, line, (size_t)n);
                out(o, buf + start, h.len);
                in_body = true;
                body = start + h.len;
            }
            size_t used = 0;
            enum http1_rc rc = http1_parse_body(&p, buf + body, avail - body, &used, collect, o);
            if (rc == HTTP1_ERROR)
                goto refused;
            body += used;
            if (rc == HTTP1_AGAIN)
                break;
            CHECK(body <= avail);
            out(o, "|", 1);
            if (!h.keep_alive || ++msgs == 8) {
                o->rc = HTTP1_DONE;
                return;
            }
            http1_next(&p, &h);
            in_body = false;
            start = body;
        }
    }
    o->rc = HTTP1_AGAIN;
    return;
refused:
    o->rc = HTTP1_ERROR;
    o->err = p.err;
    CHECK(p.why != NULL && p.why[0] != '\0');
    if (type == HTTP1_RESPONSE)
        CHECK(p.err == GW_ERR_UPSTREAM_PROTOCOL);
    else
        CHECK(p.err == GW_ERR_BAD_REQUEST || p.err == GW_ERR_BAD_FRAMING ||
              p.err == GW_ERR_BAD_HEADER || p.err == GW_ERR_BAD_TARGET ||
              p.err == GW_ERR_BAD_CHUNK || p.err == GW_ERR_BAD_HOST ||
              p.err == GW_ERR_EXPECTATION || p.err == GW_ERR_HEADERS_TOO_LARGE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum http1_type type = (data[0] & 1) ? HTTP1_RESPONSE : HTTP1_REQUEST;
    size_t max_head = (data[0] & 2) ? 64 + (data[0] >> 2) * 8 : 16384;
    uint32_t seed = 1u + data[0];
    static struct outcome whole, split;
    run(type, (const char *)data + 1, size - 1, max_head, 0, &whole);
    run(type, (const char *)data + 1, size - 1, max_head, seed, &split);
    CHECK(whole.rc == split.rc);
    if (whole.rc == HTTP1_ERROR) {
        CHECK(whole.err == split.err);
    } else {
        CHECK(whole.len == split.len && memcmp(whole.text, split.text, whole.len) == 0);
    }
    return 0;
}
