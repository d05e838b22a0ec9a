/*
 * Unit tests for http1.c (llhttp glue and the proxy's RFC 9112 checks), with no sockets: every
 * case is delivered whole, byte by byte, and split in two at every offset, and must give the
 * same messages (heads, bodies) or the same refusal each time. Requests are the shapes the
 * SDKs and the end-to-end suites send plus every framing the gateway must refuse; responses
 * cover every way a body can be framed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

#define MAX_MSGS 4
#define OUT_MAX 16384

/* What a delivery produced, rendered as text so deliveries compare with one strcmp. */
struct outcome {
    int rc;          /* HTTP1_DONE when every message completed, else HTTP1_ERROR / AGAIN */
    enum gw_err err; /* on ERROR */
    char text[OUT_MAX];
    size_t len;
};

static void out(struct outcome *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct outcome *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->text + o->len, sizeof(o->text) - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n < sizeof(o->text) - o->len ? (size_t)n : sizeof(o->text) - o->len - 1;
}

static void render_head(struct outcome *o, const struct http1_head *h, const char *b)
{
    if (h->method.len)
        out(o, "%.*s %.*s ", (int)h->method.len, b + h->method.off, (int)h->target.len,
            b + h->target.off);
    else
        out(o, "status %d ", h->status);
    out(o, "HTTP/%d.%d body=%d cl=%llu ka=%d expect=%d host=%d\n", h->major, h->minor, h->body,
        (unsigned long long)h->content_length, h->keep_alive, h->expect_continue, h->host);
    for (unsigned i = 0; i < h->nfields; i++)
        out(o, "  [%.*s]=[%.*s]\n", (int)h->fields[i].name.len, b + h->fields[i].name.off,
            (int)h->fields[i].value.len, b + h->fields[i].value.off);
}

static int collect(void *arg, const char *data, size_t len)
{
    struct outcome *o = arg;
    out(o, "%.*s", (int)len, data);
    return 0;
}

/*
 * Feed RAW (LEN bytes) in pieces ending at the offsets CUTS[0..NCUTS) (then the rest), the way a
 * connection would: the unparsed bytes stay in one buffer, each message's head parsed in place.
 * NO_BODY marks a response to HEAD. EOF calls http1_finish after the last byte.
 */
static void deliver(enum http1_type type, const char *raw, size_t len, const size_t *cuts,
                    size_t ncuts, bool no_body, bool eof, size_t max_head, struct outcome *o)
{
    static char buf[65536];
    struct http1_parser p;
    struct http1_head head;
    memset(o, 0, sizeof(*o));
    http1_init(&p, type, &head, max_head);
    if (no_body)
        http1_set_no_body(&p);
    size_t avail = 0, start = 0, body_pos = 0;
    bool in_body = false;
    int msgs = 0;
    for (size_t piece = 0; piece <= ncuts; piece++) {
        size_t end = piece < ncuts ? cuts[piece] : len;
        memcpy(buf + avail, raw + avail, end - avail);
        avail = end;
        for (;;) {
            if (!in_body) {
                if (avail == start)
                    break;
                enum http1_rc rc = http1_parse_head(&p, buf + start, avail - start);
                if (rc == HTTP1_ERROR)
                    goto failed;
                if (rc == HTTP1_AGAIN)
                    break;
                render_head(o, &head, buf + start);
                in_body = true;
                body_pos = start + head.len;
                out(o, "  body:");
            }
            size_t used = 0;
            enum http1_rc rc =
                http1_parse_body(&p, buf + body_pos, avail - body_pos, &used, collect, o);
            if (rc == HTTP1_ERROR)
                goto failed;
            body_pos += used;
            if (rc == HTTP1_AGAIN)
                break;
            out(o, "\n");
            msgs++;
            if (!head.keep_alive || msgs == MAX_MSGS) {
                o->rc = HTTP1_DONE;
                return;
            }
            http1_next(&p, &head);
            if (no_body)
                http1_set_no_body(&p);
            in_body = false;
            start = body_pos;
        }
    }
    if (eof && in_body) {
        if (http1_finish(&p) == HTTP1_ERROR)
            goto failed;
        out(o, "\n");
        msgs++;
        in_body = false;
        start = avail;
    }
    o->rc = msgs > 0 && !in_body && avail == start ? HTTP1_DONE : HTTP1_AGAIN;
    return;
failed:
    o->rc = HTTP1_ERROR;
    o->err = p.err;
    out(o, "ERROR %d %s", p.err, p.why ? p.why : "");
}

struct tcase {
    const char *name;
    const char *raw;
    int rc;             /* expected: HTTP1_DONE, HTTP1_ERROR */
    enum gw_err err;    /* when ERROR */
    const char *expect; /* substring of the rendered outcome (DONE), or NULL */
    bool no_body, eof;
};

/* Whole, byte by byte and every two-piece split must agree with each other and the case. */
static void check_case(enum http1_type type, const struct tcase *c, size_t max_head)
{
    size_t len = strlen(c->raw);
    static struct outcome whole, other;
    deliver(type, c->raw, len, NULL, 0, c->no_body, c->eof, max_head, &whole);
    if (whole.rc != c->rc || (c->rc == HTTP1_ERROR && whole.err != c->err) ||
        (c->expect && !strstr(whole.text, c->expect))) {
        print_error("case '%s': rc %d err %d, expected rc %d err %d%s%s\n--- got:\n%s\n", c->name,
                    whole.rc, whole.err, c->rc, c->err, c->expect ? " containing: " : "",
                    c->expect ? c->expect : "", whole.text);
        fail();
    }
    size_t *cuts = malloc(sizeof(size_t) * (len + 1));
    for (size_t i = 0; i + 1 < len; i++)
        cuts[i] = i + 1;
    deliver(type, c->raw, len, cuts, len > 0 ? len - 1 : 0, c->no_body, c->eof, max_head, &other);
    if (other.rc != whole.rc || other.err != whole.err ||
        (whole.rc != HTTP1_ERROR && strcmp(other.text, whole.text) != 0)) {
        print_error("case '%s' byte by byte differs:\n%s\n--- whole:\n%s\n", c->name, other.text,
                    whole.text);
        fail();
    }
    for (size_t k = 1; k < len; k++) {
        deliver(type, c->raw, len, &k, 1, c->no_body, c->eof, max_head, &other);
        if (other.rc != whole.rc || other.err != whole.err ||
            (whole.rc != HTTP1_ERROR && strcmp(other.text, whole.text) != 0)) {
            print_error("case '%s' split at %zu differs:\n%s\n--- whole:\n%s\n", c->name, k,
                        other.text, whole.text);
            fail();
        }
    }
    free(cuts);
}

#define OK(name, raw, expect)                                                                      \
    {                                                                                              \
        name, raw, HTTP1_DONE, 0, expect, false, false                                             \
    }
#define BAD(name, raw, err)                                                                        \
    {                                                                                              \
        name, raw, HTTP1_ERROR, err, NULL, false, false                                            \
    }

#define FINISHRUN_BODY "{\"runId\": 501, \"overwriteSecondsSaved\": null, \"overwriteEntries\": 5}"

static const struct tcase requests[] = {
    /* What the SDKs send (anymate-api.md: Python requests, .NET HttpClient). */
    OK("python FinishRun",
       "POST /api/FinishRun/ HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: python-requests/2.31.0"
       "\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n"
       "Authorization: Bearer aaa.bbb.ccc\r\nContent-type: application/json\r\n"
       "Content-Length: 68\r\n\r\n" FINISHRUN_BODY,
       "POST /api/FinishRun/ HTTP/1.1 body=1 cl=68 ka=1 expect=0 host=0\n"),
    OK("python FinishRun body",
       "POST /api/FinishRun/ HTTP/1.1\r\nHost: g\r\n"
       "Content-Length: 68\r\n\r\n" FINISHRUN_BODY,
       "body:" FINISHRUN_BODY "\n"),
    OK(".NET Solved",
       "POST /api/Solved/ HTTP/1.1\r\nHost: gateway.internal:8080\r\nAccept: application/json\r\n"
       "Authorization: Bearer aaa.bbb.ccc\r\nContent-Type: application/json; charset=utf-8\r\n"
       "Content-Length: 92\r\n\r\n{\"TaskId\":7,\"Reason\":null,\"Comment\":\"\","
       "\"OverwriteSecondsSaved\":null,\"OverwriteEntries\":null}",
       "[Content-Type]=[application/json; charset=utf-8]"),
    OK("GET without body", "GET /api/OkToRun/pk1/ HTTP/1.1\r\nHost: g\r\nAccept: */*\r\n\r\n",
       "GET /api/OkToRun/pk1/ HTTP/1.1 body=0 cl=0 ka=1"),
    OK("HTTP/1.0 without Host", "GET /api/OkToRun/pk1 HTTP/1.0\r\n\r\n",
       "HTTP/1.0 body=0 cl=0 ka=0"),
    OK("HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "ka=1"),
    OK("connection close", "GET / HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n", "ka=0"),
    OK("a leading empty line", "\r\nGET / HTTP/1.1\r\nHost: g\r\n\r\n", "GET / HTTP/1.1"),
    OK("chunked",
       "POST /api/CreateTask/pk HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
       "body=2 cl=0 ka=1 expect=0 host=0\n  [Host]=[g]\n  [Transfer-Encoding]=[chunked]\n"
       "  body:hello world\n"),
    OK("chunked, tab before the value",
       "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: \tchunked"
       "\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
       "body:abc\n"),
    OK("chunked, capital C and trailing space",
       "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: Chunked \r\n\r\n0\r\n\r\n",
       "[Transfer-Encoding]=[Chunked]"),
    OK("chunk extension token",
       "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
       "3;name=value\r\nabc\r\n0\r\n\r\n",
       "body:abc\n"),
    OK("chunk extension quoted",
       "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
       "3;name=\"a quoted value\"\r\nabc\r\n0;last\r\n\r\n",
       "body:abc\n"),
    OK("chunk extension without value",
       "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
       "\r\n\r\n3;flag\r\nabc\r\n0\r\n\r\n",
       "body:abc\n"),
    /* RFC 9112 7.1.1 allows what llhttp 8.1 refuses: the glue checks extensions itself. */
    OK("two chunk extensions with values",
       "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
       "3;a=b;c=d\r\nabc\r\n0;e=f;g\r\n\r\n",
       "body:abc\n"),
    OK("chunk extensions with whitespace around ';' and '='",
       "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
       "3 ;a = b\t; c\r\nabc\r\n2\t; x=\"y\"\r\nde\r\n0\r\n\r\n",
       "body:abcde\n"),
    OK("chunk extension quoted-pair and obs-text",
       "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
       "3;q=\"a\\\"b\\\\c \xe2\x82\xac\"\r\nabc\r\n0\r\n\r\n",
       "body:abc\n"),
    OK("chunk extension empty quoted value",
       "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
       "3;q=\"\"\r\nabc\r\n0\r\n\r\n",
       "body:abc\n"),
    OK("chunk size with leading zeros",
       "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0003\r\nabc\r\n000\r\n\r\n",
       "body:abc\n"),
    OK("trailers are dropped",
       "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
       "3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n",
       "  [Transfer-Encoding]=[chunked]\n  body:abc\n"),
    OK("uppercase hex chunk size",
       "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
       "A\r\n0123456789\r\n0\r\n\r\n",
       "body:0123456789\n"),
    OK("expect 100-continue",
       "POST / HTTP/1.1\r\nHost: g\r\nExpect: 100-Continue\r\n"
       "Content-Length: 2\r\n\r\nok",
       "expect=1"),
    OK("OWS around values",
       "GET / HTTP/1.1\r\nHost:g\r\nX-A:   v w \t\r\nX-Empty:\r\nX-E2: \r\n\r\n",
       "  [X-A]=[v w]\n  [X-Empty]=[]\n  [X-E2]=[]\n"),
    OK("obs-text in a value", "GET / HTTP/1.1\r\nHost: g\r\nX-A: caf\xc3\xa9\r\n\r\n",
       "[X-A]=[caf\xc3\xa9]"),
    OK("host with port and IPv6", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
       "[Host]=[[::1]:8080]"),
    OK("empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", "host=0"),
    OK("host name case", "GET / HTTP/1.1\r\nhOsT: g\r\n\r\n", "host=0"),
    OK("upgrade is not performed",
       "GET / HTTP/1.1\r\nHost: g\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
       "GET /next HTTP/1.1\r\nHost: g\r\n\r\n",
       "GET /next HTTP/1.1"),
    OK("pipelined",
       "GET /a HTTP/1.1\r\nHost: g\r\n\r\nPOST /b HTTP/1.1\r\nHost: g\r\n"
       "Content-Length: 3\r\n\r\nxyzPOST /c HTTP/1.1\r\nHost: g\r\n"
       "Transfer-Encoding: chunked\r\n\r\n1\r\nq\r\n0\r\n\r\nGET /d HTTP/1.1\r\n"
       "Host: g\r\n\r\n",
       "GET /a HTTP/1.1 body=0 cl=0 ka=1 expect=0 host=0\n  [Host]=[g]\n  body:\n"
       "POST /b HTTP/1.1 body=1 cl=3 ka=1 expect=0 host=0\n  [Host]=[g]\n  [Content-Length]=[3]\n"
       "  body:xyz\nPOST /c HTTP/1.1 body=2 cl=0 ka=1 expect=0 host=0\n  [Host]=[g]\n"
       "  [Transfer-Encoding]=[chunked]\n  body:q\nGET /d HTTP/1.1 body=0 cl=0 ka=1"),
    OK("content-length with leading zeros",
       "POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 003\r\n"
       "\r\nabc",
       "cl=3"),
    OK("content-length zero", "POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\n\r\n", "body=0"),
    OK("query string", "GET /api/x?a=1&b=%20 HTTP/1.1\r\nHost: g\r\n\r\n", "GET /api/x?a=1&b=%20"),

    /* Chunked framing a strict proxy must refuse (evhttp forwarded these). */
    BAD("chunk size 0x",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0x5\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk size +",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
        "+5\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk size empty",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
        "\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk size leading space",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n"
        "\r\n 5\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk size overflow",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
        "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk data without CRLF",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n"
        "\r\n5\r\nhelloXX0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk data with bare LF",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n"
        "\r\n5\r\nhello\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk size with bare LF",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n"
        "\r\n5\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension bare CR",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n"
        "\r\n5;na\rme\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension bare LF",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n"
        "\r\n5;na\nme\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension CR in quotes",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5;n=\"a\rb\"\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk size followed by whitespace only",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension name followed by whitespace only",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5;a \r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension value with a space in it",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5;a=b c\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension quote not closed",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5;a=\"b\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension quoted-pair of a control character",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5;a=\"\\\x01\"\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension DEL in quotes",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5;a=\"\x7f\"\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension after a quoted value without ';'",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5;a=\"b\"c\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk line CR without LF",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5;a\rXhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension ';' without name at the end",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5;\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension empty name",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5;=x\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension empty value",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5;n=\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("chunk extension not a token",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n5;n@x=1\r\nhello\r\n0\r\n\r\n",
        GW_ERR_BAD_CHUNK),
    BAD("last chunk without CRLF",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n"
        "\r\n5\r\nhello\r\n0\r\n\n",
        GW_ERR_BAD_CHUNK),
    BAD("trailers end with bare LF",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
        "\r\n\r\n0\r\nX: 1\r\n\n",
        GW_ERR_BAD_CHUNK),
    BAD("folded trailer",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\nX-T: 1\r\n 2\r\n\r\n",
        GW_ERR_BAD_HEADER),

    /* Framing and headers. */
    BAD("content-length and chunked",
        "POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        GW_ERR_BAD_FRAMING),
    BAD("two content-lengths",
        "POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n"
        "Content-Length: 5\r\n\r\nhello",
        GW_ERR_BAD_FRAMING),
    BAD("content-length +", "POST / HTTP/1.1\r\nHost: g\r\nContent-Length: +5\r\n\r\nhello",
        GW_ERR_BAD_FRAMING),
    BAD("content-length list", "POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 5, 5\r\n\r\nhello",
        GW_ERR_BAD_FRAMING),
    BAD("content-length empty", "POST / HTTP/1.1\r\nHost: g\r\nContent-Length:\r\n\r\n",
        GW_ERR_BAD_FRAMING),
    BAD("content-length overflow",
        "POST / HTTP/1.1\r\nHost: g\r\n"
        "Content-Length: 99999999999999999999999\r\n\r\n",
        GW_ERR_BAD_FRAMING),
    BAD("gzip, chunked",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        "0\r\n\r\n",
        GW_ERR_BAD_FRAMING),
    BAD("chunked, gzip", "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        GW_ERR_BAD_FRAMING),
    BAD("chunked twice",
        "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        GW_ERR_BAD_FRAMING),
    BAD("identity", "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: identity\r\n\r\n",
        GW_ERR_BAD_FRAMING),
    BAD("space before colon", "POST / HTTP/1.1\r\nHost: g\r\nContent-Length : 5\r\n\r\nhello",
        GW_ERR_BAD_HEADER),
    BAD("tab before colon", "GET / HTTP/1.1\r\nHost: g\r\nX-A\t: b\r\n\r\n", GW_ERR_BAD_HEADER),
    BAD("space before Host colon", "GET / HTTP/1.1\r\nHost : g\r\n\r\n", GW_ERR_BAD_HEADER),
    BAD("obs-fold", "GET / HTTP/1.1\r\nHost: g\r\nX-A: a\r\n b\r\n\r\n", GW_ERR_BAD_HEADER),
    BAD("obs-fold with tab", "GET / HTTP/1.1\r\nHost: g\r\nX-A: a\r\n\tb\r\n\r\n",
        GW_ERR_BAD_HEADER),
    BAD("obs-fold of an empty value", "GET / HTTP/1.1\r\nHost: g\r\nX-A:\r\n b\r\n\r\n",
        GW_ERR_BAD_HEADER),
    BAD("first field folded", "GET / HTTP/1.1\r\n Host: g\r\n\r\n", GW_ERR_BAD_REQUEST),
    BAD("empty field name", "GET / HTTP/1.1\r\nHost: g\r\n: x\r\n\r\n", GW_ERR_BAD_HEADER),
    BAD("field name not a token", "GET / HTTP/1.1\r\nHost: g\r\nX(y): a\r\n\r\n",
        GW_ERR_BAD_HEADER),
    BAD("control character in a value", "GET / HTTP/1.1\r\nHost: g\r\nX: a\001b\r\n\r\n",
        GW_ERR_BAD_HEADER),
    BAD("DEL in a value", "GET / HTTP/1.1\r\nHost: g\r\nX: a\177b\r\n\r\n", GW_ERR_BAD_HEADER),
    BAD("bare LF lines", "GET / HTTP/1.1\nHost: g\n\n", GW_ERR_BAD_HEADER),
    BAD("head ends with bare LF", "GET / HTTP/1.1\r\nHost: g\r\n\n", GW_ERR_BAD_REQUEST),
    BAD("head ends with CR CR LF", "GET / HTTP/1.1\r\nHost: g\r\n\r\r\n", GW_ERR_BAD_REQUEST),
    BAD("bare CR after a value", "GET / HTTP/1.1\r\nHost: g\rX: b\r\n\r\n", GW_ERR_BAD_REQUEST),

    /* Host. */
    BAD("no Host on HTTP/1.1", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", GW_ERR_BAD_HOST),
    BAD("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", GW_ERR_BAD_HOST),
    BAD("two Hosts on HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", GW_ERR_BAD_HOST),
    BAD("Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", GW_ERR_BAD_HOST),
    BAD("Host with a path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", GW_ERR_BAD_HOST),
    BAD("Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", GW_ERR_BAD_HOST),
    BAD("Host port not digits", "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", GW_ERR_BAD_HOST),
    BAD("Host unclosed IPv6", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", GW_ERR_BAD_HOST),

    /* Request line. */
    BAD("HTTP/1.15", "GET / HTTP/1.15\r\nHost: g\r\n\r\n", GW_ERR_BAD_REQUEST),
    BAD("HTTP/2.0", "GET / HTTP/2.0\r\nHost: g\r\n\r\n", GW_ERR_BAD_REQUEST),
    BAD("HTTP/0.9 style", "GET /\r\n\r\n", GW_ERR_BAD_REQUEST),
    BAD("two spaces after the method", "GET  / HTTP/1.1\r\nHost: g\r\n\r\n", GW_ERR_BAD_REQUEST),
    BAD("two spaces before the version", "GET /  HTTP/1.1\r\nHost: g\r\n\r\n", GW_ERR_BAD_REQUEST),
    BAD("space after the version", "GET / HTTP/1.1 \r\nHost: g\r\n\r\n", GW_ERR_BAD_REQUEST),
    BAD("extra word", "GET /api/OkToRun/pk1 HTTP/1.1 extra\r\nHost: g\r\n\r\n", GW_ERR_BAD_REQUEST),
    BAD("lowercase method", "get / HTTP/1.1\r\nHost: g\r\n\r\n", GW_ERR_BAD_REQUEST),
    BAD("space in the target", "GET /a b HTTP/1.1\r\nHost: g\r\n\r\n", GW_ERR_BAD_REQUEST),
    BAD("raw UTF-8 in the target", "GET /a\xc3\xa4 HTTP/1.1\r\nHost: g\r\n\r\n",
        GW_ERR_BAD_REQUEST),
    BAD("CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", GW_ERR_BAD_TARGET),
    BAD("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", GW_ERR_BAD_REQUEST),
    BAD("expect other",
        "POST / HTTP/1.1\r\nHost: g\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n"
        "ok",
        GW_ERR_EXPECTATION),
};

static const struct tcase responses[] = {
    OK("content-length",
       "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2"
       "\r\n\r\n{}",
       "status 200 HTTP/1.1 body=1 cl=2 ka=1"),
    OK("content-length body", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "body:hello\n"),
    OK("no reason phrase", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", "body:ok"),
    OK("chunked",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n!\r\n"
       "0\r\n\r\n",
       "body=2 cl=0 ka=1 expect=0 host=-1\n  [Transfer-Encoding]=[chunked]\n  body:hello!\n"),
    {"close-delimited", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
     HTTP1_DONE, 0,
     "body=3 cl=0 ka=0 expect=0 host=-1\n  [Content-Type]=[text/plain]\n"
     "  body:until the end\n",
     false, true},
    OK("204", "HTTP/1.1 204 No Content\r\n\r\n", "status 204 HTTP/1.1 body=0"),
    OK("304 with a length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
       "status 304 HTTP/1.1 body=0"),
    {"HEAD response", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", HTTP1_DONE, 0,
     "status 200 HTTP/1.1 body=0 cl=0", true, false},
    OK("100 continue first",
       "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2"
       "\r\n\r\nok",
       "status 200 HTTP/1.1 body=1 cl=2 ka=1 expect=0 host=-1\n  [Content-Length]=[2]\n  "
       "body:ok\n"),
    OK("HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "HTTP/1.0 body=1 cl=2 ka=0"),
    OK("connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
       "ka=0"),
    OK("two responses",
       "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\n"
       "Content-Length: 1\r\n\r\nb",
       "body:a\nstatus 404"),
    BAD("status 99", "HTTP/1.1 99 Low\r\nContent-Length: 0\r\n\r\n", GW_ERR_UPSTREAM_PROTOCOL),
    BAD("status 600", "HTTP/1.1 600 High\r\nContent-Length: 0\r\n\r\n", GW_ERR_UPSTREAM_PROTOCOL),
    BAD("101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        GW_ERR_UPSTREAM_PROTOCOL),
    BAD("gzip transfer-encoding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        GW_ERR_UPSTREAM_PROTOCOL),
    BAD("two content-lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        GW_ERR_UPSTREAM_PROTOCOL),
    BAD("length and chunked",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
        "Content-Length: 5\r\n\r\n0\r\n\r\n",
        GW_ERR_UPSTREAM_PROTOCOL),
    BAD("obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        GW_ERR_UPSTREAM_PROTOCOL),
    BAD("chunk extension without a name",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "1;=x\r\na\r\n0\r\n\r\n",
        GW_ERR_UPSTREAM_PROTOCOL),
    OK("chunk extensions",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 ; a=1 ; b=\"x y\"\r\nhello\r\n"
       "0;c\r\n\r\n",
       "body:hello\n"),
    BAD("bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", GW_ERR_UPSTREAM_PROTOCOL),
    BAD("head ends with bare LF", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n",
        GW_ERR_UPSTREAM_PROTOCOL),
    BAD("chunked ends with bare LF",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\n",
        GW_ERR_UPSTREAM_PROTOCOL),
    BAD("HTTP/2", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", GW_ERR_UPSTREAM_PROTOCOL),
    BAD("bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        GW_ERR_UPSTREAM_PROTOCOL),
};

static void test_requests(void **state)
{
    for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++)
        check_case(HTTP1_REQUEST, &requests[i], 16384);
}

static void test_responses(void **state)
{
    for (size_t i = 0; i < sizeof(responses) / sizeof(responses[0]); i++)
        check_case(HTTP1_RESPONSE, &responses[i], 65536);
}

static void test_truncated_messages_are_errors_at_eof(void **state)
{
    const struct tcase cut[] = {
        {"cut in the head", "HTTP/1.1 200 OK\r\nContent-Len", HTTP1_ERROR, GW_ERR_UPSTREAM_PROTOCOL,
         NULL, false, true},
        {"cut in a sized body", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", HTTP1_ERROR,
         GW_ERR_UPSTREAM_PROTOCOL, NULL, false, true},
        {"cut in a chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
         HTTP1_ERROR, GW_ERR_UPSTREAM_PROTOCOL, NULL, false, true},
    };
    for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
        static struct outcome o;
        memset(&o, 0, sizeof(o));
        struct http1_parser p;
        struct http1_head h;
        http1_init(&p, HTTP1_RESPONSE, &h, 65536);
        size_t len = strlen(cut[i].raw);
        enum http1_rc rc = http1_parse_head(&p, cut[i].raw, len);
        if (rc == HTTP1_DONE) {
            size_t used;
            rc = http1_parse_body(&p, cut[i].raw + h.len, len - h.len, &used, collect, &o);
            assert_int_equal(rc, HTTP1_AGAIN);
        } else {
            assert_int_equal(rc, HTTP1_AGAIN);
        }
        assert_int_equal(http1_finish(&p), HTTP1_ERROR);
        assert_int_equal(p.err, GW_ERR_UPSTREAM_PROTOCOL);
    }
}

static void test_head_limits(void **state)
{
    char raw[8192];
    /* The limit counts the request line and every field line. */
    int n = snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: g\r\nX-Big: %0*d\r\n\r\n", 1000, 0);
    const struct tcase fits = {"fits", raw, HTTP1_DONE, 0, NULL, false, false};
    check_case(HTTP1_REQUEST, &fits, (size_t)n);
    const struct tcase over = {"over by one", raw,   HTTP1_ERROR, GW_ERR_HEADERS_TOO_LARGE,
                               NULL,          false, false};
    check_case(HTTP1_REQUEST, &over, (size_t)n - 1);
    /* 431 at any size: a head far over the limit is not a different error. */
    check_case(HTTP1_REQUEST, &over, 64);

    size_t o = (size_t)snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: g\r\n");
    for (int i = 0; i < HTTP1_MAX_FIELDS; i++)
        o += (size_t)snprintf(raw + o, sizeof(raw) - o, "X-%d: v\r\n", i);
    snprintf(raw + o, sizeof(raw) - o, "\r\n");
    const struct tcase many = {"101 fields", raw,   HTTP1_ERROR, GW_ERR_HEADERS_TOO_LARGE,
                               NULL,         false, false};
    check_case(HTTP1_REQUEST, &many, 65536);
}

static void test_chunk_lines_and_trailers_are_bounded(void **state)
{
    static char raw[40000];
    int o = snprintf(raw, sizeof(raw),
                     "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
                     "\r\n\r\n1;n=");
    memset(raw + o, 'v', 2000);
    o += 2000;
    o += snprintf(raw + o, sizeof(raw) - (size_t)o, "\r\na\r\n0\r\n\r\n");
    struct outcome res;
    deliver(HTTP1_REQUEST, raw, (size_t)o, NULL, 0, false, false, 16384, &res);
    assert_int_equal(res.rc, HTTP1_ERROR);
    assert_int_equal(res.err, GW_ERR_BAD_CHUNK);

    /* The bound counts the whole line with its CRLF: 1024 bytes pass, 1025 do not. */
    for (int extra = 0; extra <= 1; extra++) {
        o = snprintf(raw, sizeof(raw),
                     "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
                     "\r\n\r\n1;n=");
        int v = HTTP1_MAX_CHUNK_LINE - 6 + extra;
        memset(raw + o, 'v', (size_t)v);
        o += v;
        o += snprintf(raw + o, sizeof(raw) - (size_t)o, "\r\na\r\n0\r\n\r\n");
        deliver(HTTP1_REQUEST, raw, (size_t)o, NULL, 0, false, false, 16384, &res);
        assert_int_equal(res.rc, extra ? HTTP1_ERROR : HTTP1_DONE);
    }

    o = snprintf(raw, sizeof(raw),
                 "POST / HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked"
                 "\r\n\r\n0\r\n");
    for (int i = 0; i < 2000; i++)
        o += snprintf(raw + o, sizeof(raw) - (size_t)o, "X-T%d: %d\r\n", i, i);
    o += snprintf(raw + o, sizeof(raw) - (size_t)o, "\r\n");
    deliver(HTTP1_REQUEST, raw, (size_t)o, NULL, 0, false, false, 16384, &res);
    assert_int_equal(res.rc, HTTP1_ERROR);
    assert_int_equal(res.err, GW_ERR_BAD_CHUNK);
}

static int refuse_body(void *arg, const char *data, size_t len)
{
    http1_fail(arg, GW_ERR_BODY_TOO_LARGE, "too large");
    return -1;
}

static void test_body_callback_can_refuse(void **state)
{
    const char *raw = "POST / HTTP/1.1\r\nHost: g\r\nContent-Length: 3\r\n\r\nabc";
    struct http1_parser p;
    struct http1_head h;
    http1_init(&p, HTTP1_REQUEST, &h, 1024);
    assert_int_equal(http1_parse_head(&p, raw, strlen(raw)), HTTP1_DONE);
    assert_true(!http1_idle(&p));
    size_t used;
    assert_int_equal(http1_parse_body(&p, raw + h.len, 3, &used, refuse_body, &p), HTTP1_ERROR);
    assert_int_equal(p.err, GW_ERR_BODY_TOO_LARGE);
    assert_string_equal(p.why, "too large");
}

static void test_helpers(void **state)
{
    const char *raw = "GET / HTTP/1.1\r\nHost: g\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
    struct http1_parser p;
    struct http1_head h;
    http1_init(&p, HTTP1_REQUEST, &h, 1024);
    assert_true(http1_idle(&p));
    assert_int_equal(http1_parse_head(&p, raw, strlen(raw)), HTTP1_DONE);
    assert_int_equal(http1_find(&h, raw, "x-A"), 1);
    assert_int_equal(http1_find(&h, raw, "X-B"), -1);
    assert_int_equal(http1_count(&h, raw, "X-A"), 2);
    assert_true(http1_host_ok("example.com", 11));
    assert_true(http1_host_ok("10.0.0.1:443", 12));
    assert_true(http1_host_ok("", 0));
    assert_true(http1_host_ok("a:", 2)); /* port = *DIGIT */
    assert_false(http1_host_ok("a:123456", 8));
    assert_false(http1_host_ok("[]", 2));
    assert_false(http1_host_ok("a\"b", 3));
    assert_true(http1_tchar('!'));
    assert_false(http1_tchar('('));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_truncated_messages_are_errors_at_eof),
        cmocka_unit_test(test_head_limits),
        cmocka_unit_test(test_chunk_lines_and_trailers_are_bounded),
        cmocka_unit_test(test_body_callback_can_refuse),
        cmocka_unit_test(test_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
