/*
 * http1: llhttp glue and the proxy's own RFC 9112 checks (see http1.h).
 *
 * How the head is found in place: llhttp is fed the head's bytes as they arrive and pauses in
 * on_headers_complete (or, for a message without a body, in on_message_complete); the pause
 * position is the end of the head. Spans are recorded as offsets from the head's first byte,
 * which the caller passes on every call, so the caller may move its buffer between calls.
 *
 * How obs-fold is seen: llhttp reports a folded value as a second value span for the same
 * field, with the line break and the leading whitespace left out. A value that continues
 * where the previous piece ended is one value split across calls; anything else is a fold.
 */
#include "http1.h"

#include <string.h>
#include <strings.h>

enum { P_HEAD, P_BODY, P_DONE, P_ERROR };

/* Where the glue is in a chunk-size line (L_OFF: llhttp has the bytes). */
enum {
    L_OFF,
    L_SIZE,       /* hex digits, passed to llhttp */
    L_AFTER_SIZE, /* right after the last digit */
    L_WS,         /* whitespace that must be followed by ';' */
    L_NAME0,      /* after ';' (and whitespace): a name must start */
    L_NAME,       /* in a name */
    L_NAME_WS,    /* whitespace after a name: '=' or ';' must follow */
    L_VALUE0,     /* after '=' (and whitespace): a value must start */
    L_TOKEN,      /* in a token value */
    L_QUOTED,     /* in a quoted-string value */
    L_QPAIR,      /* after a backslash in a quoted-string */
    L_QEND,       /* after the closing quote */
    L_LF          /* after the line's CR, passed to llhttp */
};

static void fail(struct http1_parser *p, enum gw_err err, const char *why)
{
    /* Whatever is wrong with a response, for the bot it is the upstream's fault. */
    if (p->type == HTTP1_RESPONSE && err != GW_ERR_INTERNAL)
        err = GW_ERR_UPSTREAM_PROTOCOL;
    if (p->state != P_ERROR) {
        p->err = err;
        p->why = why;
        p->state = P_ERROR;
    }
}

void http1_fail(struct http1_parser *p, enum gw_err err, const char *why)
{
    fail(p, err, why);
}

bool http1_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool http1_span_ieq(const char *buf, struct http1_span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && strncasecmp(buf + s.off, lit, n) == 0;
}

int http1_find(const struct http1_head *h, const char *buf, const char *name)
{
    for (unsigned i = 0; i < h->nfields; i++)
        if (http1_span_ieq(buf, h->fields[i].name, name))
            return (int)i;
    return -1;
}

unsigned http1_count(const struct http1_head *h, const char *buf, const char *name)
{
    unsigned n = 0;
    for (unsigned i = 0; i < h->nfields; i++)
        n += http1_span_ieq(buf, h->fields[i].name, name);
    return n;
}

static bool digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

bool http1_host_ok(const char *v, size_t len)
{
    size_t i = 0;
    if (len > 0 && v[0] == '[') { /* IP-literal: hex digits, ':' and '.' (v4-mapped) */
        for (i = 1; i < len && v[i] != ']'; i++) {
            unsigned char c = (unsigned char)v[i];
            bool hex = (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
            if (!hex && c != ':' && c != '.')
                return false;
        }
        if (i >= len || i == 1)
            return false;
        i++;
    } else { /* reg-name or IPv4: unreserved / pct-encoded / sub-delims */
        for (; i < len && v[i] != ':'; i++) {
            unsigned char c = (unsigned char)v[i];
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      strchr("-._~%!$&'()*+,;=", c) != NULL;
            if (!ok || c == '\0')
                return false;
        }
    }
    if (i == len)
        return true;
    if (v[i] != ':')
        return false;
    return len - i - 1 <= 5 && digits(v + i + 1, len - i - 1);
}

/* ---- llhttp callbacks ---- */

static struct http1_parser *P(llhttp_t *ll)
{
    return ll->data;
}

/* Offset of AT in the head, or UINT32_MAX outside the head phase. */
static uint32_t off_of(struct http1_parser *p, const char *at)
{
    return (uint32_t)(at - p->base);
}

static int on_method(llhttp_t *ll, const char *at, size_t n)
{
    struct http1_parser *p = P(ll);
    if (p->head->method.len == 0)
        p->head->method.off = off_of(p, at);
    p->head->method.len += (uint32_t)n;
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t n)
{
    struct http1_parser *p = P(ll);
    if (p->head->target.len == 0)
        p->head->target.off = off_of(p, at);
    p->head->target.len += (uint32_t)n;
    return 0;
}

static int trailer_bytes(struct http1_parser *p, size_t n)
{
    p->trailer_bytes += n;
    if (p->trailer_bytes > HTTP1_MAX_TRAILERS) {
        fail(p, GW_ERR_BAD_CHUNK, "the trailer fields after the chunked body are too large");
        return -1;
    }
    return 0;
}

/* Fields after a chunked body (trailers) are checked like head fields, counted and dropped. */
static int on_header_field(llhttp_t *ll, const char *at, size_t n)
{
    struct http1_parser *p = P(ll);
    if (p->state == P_BODY && trailer_bytes(p, n) != 0)
        return -1;
    if (!p->in_name) {
        p->in_name = true;
        p->name_off = p->state == P_HEAD ? off_of(p, at) : 0;
        p->name_len = 0;
    }
    p->name_len += (uint32_t)n;
    return 0;
}

static int on_header_field_complete(llhttp_t *ll)
{
    struct http1_parser *p = P(ll);
    if (p->name_len == 0) {
        fail(p, GW_ERR_BAD_HEADER, "a header field has an empty name");
        return -1;
    }
    p->in_name = false;
    p->value_seen = false;
    p->value_len = 0;
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t n)
{
    struct http1_parser *p = P(ll);
    if (p->value_seen) {
        /* A continuation is legitimate only where the previous piece ended (same call), or at
         * the start of a new call's data when the previous piece ended its call's data;
         * anything else skipped a line break: obs-fold. */
        bool contiguous = at == p->last_value_end;
        bool resumed = at == p->exec_start && p->value_ended_call;
        if (!contiguous && !resumed) {
            fail(p, GW_ERR_BAD_HEADER,
                 "a header field is folded over several lines (obs-fold is not accepted)");
            return -1;
        }
    }
    p->last_value_end = at + n;
    p->value_ended_call = at + n == p->exec_end;
    if (p->state == P_BODY) {
        p->value_seen = true;
        return trailer_bytes(p, n);
    }
    if (!p->value_seen) {
        p->value_seen = true;
        p->value_off = off_of(p, at);
        p->value_len = 0;
    }
    p->value_len += (uint32_t)n;
    return 0;
}

static int on_header_value_complete(llhttp_t *ll)
{
    struct http1_parser *p = P(ll);
    if (p->state == P_BODY) {
        p->name_len = 0;
        p->in_name = false;
        return 0;
    }
    struct http1_head *h = p->head;
    if (h->nfields >= HTTP1_MAX_FIELDS) {
        fail(p, GW_ERR_HEADERS_TOO_LARGE, "more than 100 header fields");
        return -1;
    }
    uint32_t vlen = p->value_seen ? p->value_len : 0;
    uint32_t voff = p->value_seen ? p->value_off : p->name_off + p->name_len;
    while (vlen > 0 && (p->base[voff + vlen - 1] == ' ' || p->base[voff + vlen - 1] == '\t'))
        vlen--;
    h->fields[h->nfields].name = (struct http1_span){p->name_off, p->name_len};
    h->fields[h->nfields].value = (struct http1_span){voff, vlen};
    h->nfields++;
    p->name_len = 0;
    return 0;
}

/* The checks on a complete request head. Returns 0 or fails P. */
static int check_request(struct http1_parser *p, struct http1_head *h)
{
    const char *b = p->base;
    if (h->major != 1 || h->minor > 1) {
        fail(p, GW_ERR_BAD_REQUEST, "only HTTP/1.0 and HTTP/1.1 are supported");
        return -1;
    }
    /* "METHOD SP target SP HTTP/x.y": llhttp lets more spaces through. */
    uint32_t t_end = h->target.off + h->target.len;
    if (h->target.len == 0 || h->target.off != h->method.off + h->method.len + 1 ||
        b[t_end] != ' ' || b[t_end + 1] != 'H') {
        fail(p, GW_ERR_BAD_REQUEST,
             "the request line must be METHOD, one space, the target, one space, the version");
        return -1;
    }
    if (h->method_id == HTTP_CONNECT) {
        fail(p, GW_ERR_BAD_TARGET, "CONNECT is not supported");
        return -1;
    }
    unsigned hosts = 0;
    for (unsigned i = 0; i < h->nfields; i++) {
        const struct http1_field *f = &h->fields[i];
        if (http1_span_ieq(b, f->name, "Host")) {
            if (hosts++ == 0)
                h->host = (int)i;
            if (!http1_host_ok(b + f->value.off, f->value.len)) {
                fail(p, GW_ERR_BAD_HOST,
                     "the Host header is not a host name or address with "
                     "an optional port");
                return -1;
            }
        } else if (http1_span_ieq(b, f->name, "Transfer-Encoding")) {
            if (!http1_span_ieq(b, f->value, "chunked")) {
                fail(p, GW_ERR_BAD_FRAMING,
                     "Transfer-Encoding other than a single \"chunked\" is not accepted");
                return -1;
            }
        } else if (http1_span_ieq(b, f->name, "Expect")) {
            if (!http1_span_ieq(b, f->value, "100-continue")) {
                fail(p, GW_ERR_EXPECTATION,
                     "the only expectation the gateway meets is "
                     "100-continue");
                return -1;
            }
            h->expect_continue = true;
        }
    }
    if (hosts > 1) {
        fail(p, GW_ERR_BAD_HOST, "more than one Host header");
        return -1;
    }
    if (hosts == 0 && h->minor == 1) {
        fail(p, GW_ERR_BAD_HOST, "an HTTP/1.1 request needs a Host header");
        return -1;
    }
    /* Upgrade (e.g. h2c, websocket) is never performed: the request is served as HTTP/1.1
     * and Upgrade is not forwarded, so llhttp must not switch protocols. */
    p->ll.upgrade = 0;
    return 0;
}

static int check_response(struct http1_parser *p, struct http1_head *h)
{
    if (h->major != 1 || h->minor > 1) {
        fail(p, GW_ERR_UPSTREAM_PROTOCOL,
             "the upstream answered with an HTTP version other "
             "than 1.0 or 1.1");
        return -1;
    }
    if (h->status < 100 || h->status > 599 || h->status == 101) {
        fail(p, GW_ERR_UPSTREAM_PROTOCOL, "the upstream answered with an invalid status code");
        return -1;
    }
    for (unsigned i = 0; i < h->nfields; i++) {
        const struct http1_field *f = &h->fields[i];
        if (http1_span_ieq(p->base, f->name, "Transfer-Encoding") &&
            !http1_span_ieq(p->base, f->value, "chunked")) {
            fail(p, GW_ERR_UPSTREAM_PROTOCOL,
                 "the upstream used a Transfer-Encoding other than chunked");
            return -1;
        }
    }
    return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
    struct http1_parser *p = P(ll);
    struct http1_head *h = p->head;
    h->major = ll->http_major;
    h->minor = ll->http_minor;
    if (p->type == HTTP1_REQUEST) {
        h->method_id = ll->method;
        if (check_request(p, h) != 0)
            return -1;
    } else {
        h->status = ll->status_code;
        if (h->status >= 100 && h->status < 200 && h->status != 101) {
            /* An interim response: no body; on_message_complete starts over. */
            return 1;
        }
        if (check_response(p, h) != 0)
            return -1;
    }
    h->keep_alive = llhttp_should_keep_alive(ll);
    if (ll->flags & F_CHUNKED) {
        h->body = HTTP1_BODY_CHUNKED;
    } else if ((ll->flags & F_CONTENT_LENGTH) && ll->content_length > 0) {
        h->body = HTTP1_BODY_LENGTH;
        h->content_length = ll->content_length;
    } else if (p->type == HTTP1_RESPONSE && llhttp_message_needs_eof(ll)) {
        h->body = HTTP1_BODY_EOF;
    } else {
        h->body = HTTP1_BODY_NONE;
    }
    if (p->type == HTTP1_RESPONSE && (p->no_body || h->status == 304 || h->status == 204)) {
        h->body = HTTP1_BODY_NONE;
        h->content_length = 0;
        return 1; /* no body, whatever Content-Length says; on_message_complete pauses */
    }
    if (h->body == HTTP1_BODY_NONE)
        return 0; /* on_message_complete pauses */
    return HPE_PAUSED;
}

static int on_message_complete(llhttp_t *ll)
{
    struct http1_parser *p = P(ll);
    if (p->state == P_HEAD && p->type == HTTP1_RESPONSE && p->head->status >= 100 &&
        p->head->status < 200) {
        /* Interim response done: parse the final one into a clean head. */
        struct http1_head *h = p->head;
        h->nfields = 0;
        h->status = 0;
        h->host = -1;
        return 0;
    }
    p->msg_done = true;
    return HPE_PAUSED;
}

static int on_body_cb(llhttp_t *ll, const char *at, size_t n)
{
    struct http1_parser *p = P(ll);
    p->body_bytes += n;
    if (p->on_body && p->on_body(p->body_arg, at, n) != 0) {
        fail(p, GW_ERR_INTERNAL, "the body could not be taken");
        return -1;
    }
    return 0;
}

static int on_chunk_header(llhttp_t *ll)
{
    P(ll)->last_chunk = ll->content_length == 0;
    return 0;
}

/* A chunk's data and its CRLF are done: stop so that the glue reads the next size line. */
static int on_chunk_complete(llhttp_t *ll)
{
    struct http1_parser *p = P(ll);
    if (p->last_chunk)
        return 0; /* the last chunk completes just before the message */
    p->line = L_SIZE;
    p->chunk_line = 0;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_method = on_method,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body_cb,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
    .on_chunk_complete = on_chunk_complete,
};

/* ---- the parser ---- */

static void reset_head(struct http1_parser *p, struct http1_head *head)
{
    p->head = head;
    memset(head, 0, offsetof(struct http1_head, fields));
    head->host = -1;
    p->state = P_HEAD;
    p->fed = 0;
    p->in_name = p->value_seen = false;
    p->name_len = p->value_len = 0;
    p->body_bytes = p->chunk_line = p->trailer_bytes = 0;
    p->line = L_OFF;
    p->last_chunk = false;
    p->msg_done = false;
    memset(p->tail, 0, sizeof(p->tail));
    p->err = GW_ERR_INTERNAL;
    p->why = NULL;
}

void http1_init(struct http1_parser *p, enum http1_type type, struct http1_head *head,
                size_t max_head)
{
    memset(p, 0, sizeof(*p));
    p->type = type;
    p->max_head = max_head;
    llhttp_init(&p->ll, type == HTTP1_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
    p->ll.data = p;
    reset_head(p, head);
}

void http1_next(struct http1_parser *p, struct http1_head *head)
{
    llhttp_reset(&p->ll);
    p->ll.data = p;
    p->no_body = false;
    reset_head(p, head);
}

void http1_rebind(struct http1_parser *p, struct http1_head *head)
{
    p->head = head;
    p->ll.data = p; /* llhttp keeps no other pointer to the parser between calls */
}

void http1_set_no_body(struct http1_parser *p)
{
    p->no_body = true;
}

bool http1_idle(const struct http1_parser *p)
{
    return p->state == P_HEAD && p->fed == 0;
}

/* Map an llhttp error (not one of ours) to a gateway error. */
static void fail_llhttp(struct http1_parser *p, llhttp_errno_t e)
{
    const char *reason = llhttp_get_error_reason(&p->ll);
    enum gw_err err = p->type == HTTP1_RESPONSE ? GW_ERR_UPSTREAM_PROTOCOL : GW_ERR_BAD_REQUEST;
    if (p->type == HTTP1_REQUEST) {
        switch (e) {
        case HPE_UNEXPECTED_CONTENT_LENGTH:
        case HPE_INVALID_CONTENT_LENGTH:
        case HPE_INVALID_TRANSFER_ENCODING:
            err = GW_ERR_BAD_FRAMING;
            break;
        case HPE_INVALID_HEADER_TOKEN:
            err = GW_ERR_BAD_HEADER;
            break;
        default:
            if (p->state == P_BODY)
                err = GW_ERR_BAD_CHUNK;
            break;
        }
    }
    fail(p, err, reason ? reason : "the HTTP message is malformed");
}

static enum http1_rc execute(struct http1_parser *p, const char *data, size_t n, const char **stop)
{
    p->exec_start = data;
    p->exec_end = data + n;
    p->last_value_end = NULL;
    llhttp_errno_t e = llhttp_execute(&p->ll, data, n);
    if (p->state == P_ERROR)
        return HTTP1_ERROR;
    if (e == HPE_OK) {
        *stop = data + n;
        return HTTP1_AGAIN;
    }
    if (e == HPE_PAUSED) {
        *stop = llhttp_get_error_pos(&p->ll);
        llhttp_resume(&p->ll);
        return HTTP1_DONE;
    }
    fail_llhttp(p, e);
    return HTTP1_ERROR;
}

enum http1_rc http1_parse_head(struct http1_parser *p, const char *buf, size_t len)
{
    if (p->state == P_ERROR)
        return HTTP1_ERROR;
    if (p->state != P_HEAD)
        return HTTP1_DONE;
    p->base = buf;
    size_t limit = len < p->max_head ? len : p->max_head;
    if (limit > p->fed) {
        const char *stop = NULL;
        enum http1_rc rc = execute(p, buf + p->fed, limit - p->fed, &stop);
        if (rc == HTTP1_ERROR)
            return rc;
        p->fed = (uint32_t)(stop - buf);
        if (rc == HTTP1_DONE) {
            /* llhttp takes a bare LF for the empty line that ends a head. */
            if (p->fed < 4 || memcmp(stop - 4, "\r\n\r\n", 4) != 0) {
                fail(p, p->type == HTTP1_RESPONSE ? GW_ERR_UPSTREAM_PROTOCOL : GW_ERR_BAD_REQUEST,
                     "the head must end with CRLF CRLF");
                return HTTP1_ERROR;
            }
            /* obs-fold: a line that starts with whitespace continues the previous one.
             * llhttp joins such lines into one value; a proxy must refuse them. */
            for (const char *q = buf; (q = memchr(q, '\n', (size_t)(stop - q))) != NULL; q++) {
                if (q + 1 < stop && (q[1] == ' ' || q[1] == '\t')) {
                    fail(p, GW_ERR_BAD_HEADER,
                         "a header field is folded over several lines "
                         "(obs-fold is not accepted)");
                    return HTTP1_ERROR;
                }
            }
            p->head->len = p->fed;
            /* The body phase must not need the head: its caller may reuse that memory. */
            p->body_kind = p->head->body;
            if (p->body_kind == HTTP1_BODY_CHUNKED && !p->msg_done)
                p->line = L_SIZE;
            p->state = p->msg_done ? P_DONE : P_BODY;
            return HTTP1_DONE;
        }
    }
    if (p->fed >= p->max_head) {
        fail(p, GW_ERR_HEADERS_TOO_LARGE,
             p->type == HTTP1_RESPONSE ? "response head too large"
                                       : "the request line and headers are larger than the "
                                         "gateway accepts (max_header_size)");
        return HTTP1_ERROR;
    }
    return HTTP1_AGAIN;
}

/* Keep the last four bytes of the body phase (how a chunked body ended). */
static void remember_tail(struct http1_parser *p, const char *data, size_t n)
{
    if (n >= sizeof(p->tail)) {
        memcpy(p->tail, data + n - sizeof(p->tail), sizeof(p->tail));
    } else {
        memmove(p->tail, p->tail + n, sizeof(p->tail) - n);
        memcpy(p->tail + sizeof(p->tail) - n, data, n);
    }
}

static bool hexdigit(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* Give llhttp N bytes of a chunk-size line (digits, CR, LF): it only counts and checks them. */
static int pass_line(struct http1_parser *p, const char *data, size_t n)
{
    if (n == 0)
        return 0;
    llhttp_errno_t e = llhttp_execute(&p->ll, data, n);
    if (p->state == P_ERROR)
        return -1;
    if (e != HPE_OK) {
        fail_llhttp(p, e);
        return -1;
    }
    return 0;
}

/*
 * A chunk-size line, byte by byte (RFC 9112 7.1 and 7.1.1):
 *
 *   chunk-size [ chunk-ext ] CRLF
 *   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 *   chunk-ext-val = token / quoted-string
 *
 * llhttp 8.1 refuses valid extensions (a second one after a value, whitespace around ';' and
 * '=', quoted-pairs), so the glue checks the extensions itself and hands llhttp only the size
 * digits and the CRLF; the gateway never forwards extensions (it re-frames the bodies it
 * streams). Consumes bytes of DATA until the line ends or DATA does; returns how many, or -1
 * with P failed.
 */
static long chunk_line(struct http1_parser *p, const char *data, size_t len)
{
    size_t run = 0; /* start of bytes to pass to llhttp */
    size_t i = 0;
    const char *why = NULL;
    for (; i < len && why == NULL; i++) {
        unsigned char c = (unsigned char)data[i];
        bool ws = c == ' ' || c == '\t';
        if (++p->chunk_line > HTTP1_MAX_CHUNK_LINE) {
            why = "a chunk-size line with its extensions is longer than 1024 bytes";
            break;
        }
        switch (p->line) {
        case L_SIZE:
            if (hexdigit(c))
                continue;
            if (p->chunk_line == 1) {
                why = "a chunk size must start with a hex digit";
                break;
            }
            p->line = L_AFTER_SIZE;
            /* fall through */
        case L_AFTER_SIZE:
            if (c == '\r') {
                p->line = L_LF;
                continue; /* passed with the digits */
            }
            if (pass_line(p, data + run, i - run) != 0)
                return -1;
            p->line = c == ';' ? L_NAME0 : ws ? L_WS : L_OFF;
            if (p->line == L_OFF)
                why = "a chunk size has an invalid character";
            break;
        case L_WS:
            if (c == ';')
                p->line = L_NAME0;
            else if (!ws)
                why = "whitespace in a chunk-size line must be followed by ';'";
            break;
        case L_NAME0:
            if (http1_tchar(c))
                p->line = L_NAME;
            else if (!ws)
                why = "a chunk extension has an empty or invalid name";
            break;
        case L_NAME:
        case L_NAME_WS:
            if (http1_tchar(c) && p->line == L_NAME)
                break;
            if (c == '=')
                p->line = L_VALUE0;
            else if (c == ';')
                p->line = L_NAME0;
            else if (ws)
                p->line = L_NAME_WS;
            else if (c == '\r' && p->line == L_NAME)
                goto cr;
            else
                why = "a chunk extension name is followed by an invalid character";
            break;
        case L_VALUE0:
            if (c == '"')
                p->line = L_QUOTED;
            else if (http1_tchar(c))
                p->line = L_TOKEN;
            else if (!ws)
                why = "a chunk extension has '=' but no valid value";
            break;
        case L_TOKEN:
        case L_QEND:
            if (http1_tchar(c) && p->line == L_TOKEN)
                break;
            if (c == ';')
                p->line = L_NAME0;
            else if (ws)
                p->line = L_WS;
            else if (c == '\r')
                goto cr;
            else
                why = "a chunk extension value is followed by an invalid character";
            break;
        case L_QUOTED:
            if (c == '"')
                p->line = L_QEND;
            else if (c == '\\')
                p->line = L_QPAIR;
            else if (!(c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x7e) || c >= 0x80))
                why = "a chunk extension's quoted value has an invalid character";
            break;
        case L_QPAIR:
            if (c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f))
                p->line = L_QUOTED;
            else
                why = "a chunk extension's quoted value escapes an invalid character";
            break;
        case L_LF:
            if (c != '\n') {
                why = "a chunk-size line must end with CRLF";
                break;
            }
            if (pass_line(p, data + run, i + 1 - run) != 0)
                return -1;
            p->line = L_OFF;
            return (long)(i + 1);
        default:
            why = "internal: chunk line state";
            break;
        }
        continue;
    cr:
        /* the extensions end: llhttp sees the CR right after the digits */
        run = i;
        p->line = L_LF;
    }
    if (why != NULL) {
        fail(p, GW_ERR_BAD_CHUNK, why);
        return -1;
    }
    /* DATA ended inside the line: pass what llhttp must see, keep the state */
    if (p->line == L_SIZE || p->line == L_AFTER_SIZE || p->line == L_LF) {
        if (pass_line(p, data + run, len - run) != 0)
            return -1;
    }
    return (long)len;
}

enum http1_rc http1_parse_body(struct http1_parser *p, const char *data, size_t len, size_t *used,
                               http1_body_fn on_body, void *arg)
{
    *used = 0;
    if (p->state == P_ERROR)
        return HTTP1_ERROR;
    if (p->state == P_DONE)
        return HTTP1_DONE;
    if (p->state != P_BODY) {
        fail(p, GW_ERR_INTERNAL, "body parsed before the head");
        return HTTP1_ERROR;
    }
    p->on_body = on_body;
    p->body_arg = arg;
    size_t pos = 0;
    enum http1_rc rc = HTTP1_AGAIN;
    while (pos < len) {
        if (p->line != L_OFF) {
            long n = chunk_line(p, data + pos, len - pos);
            if (n < 0) {
                rc = HTTP1_ERROR;
                break;
            }
            pos += (size_t)n;
            continue;
        }
        const char *stop = NULL;
        rc = execute(p, data + pos, len - pos, &stop);
        if (rc == HTTP1_ERROR)
            break;
        pos = (size_t)(stop - data);
        if (p->msg_done)
            break;
        rc = HTTP1_AGAIN; /* paused before a chunk-size line, or all of DATA taken */
    }
    p->on_body = NULL;
    if (rc == HTTP1_ERROR)
        return rc;
    *used = pos;
    remember_tail(p, data, pos);
    if (rc == HTTP1_DONE) {
        /* llhttp takes a bare LF for the empty line that ends a chunked body. */
        if (p->body_kind == HTTP1_BODY_CHUNKED && memcmp(p->tail, "\r\n\r\n", 4) != 0) {
            fail(p, p->type == HTTP1_RESPONSE ? GW_ERR_UPSTREAM_PROTOCOL : GW_ERR_BAD_CHUNK,
                 "the chunked body must end with CRLF CRLF");
            return HTTP1_ERROR;
        }
        p->state = P_DONE;
        return HTTP1_DONE;
    }
    return HTTP1_AGAIN;
}

enum http1_rc http1_finish(struct http1_parser *p)
{
    if (p->state == P_DONE)
        return HTTP1_DONE;
    if (p->state == P_ERROR)
        return HTTP1_ERROR;
    if (p->state == P_BODY && p->body_kind == HTTP1_BODY_EOF) {
        llhttp_errno_t e = llhttp_finish(&p->ll);
        if (e == HPE_OK || e == HPE_PAUSED) {
            p->state = P_DONE;
            return HTTP1_DONE;
        }
    }
    fail(p, p->type == HTTP1_RESPONSE ? GW_ERR_UPSTREAM_PROTOCOL : GW_ERR_BAD_REQUEST,
         p->state == P_HEAD ? "the connection closed in the middle of a head"
                            : "the connection closed before the body was complete");
    return HTTP1_ERROR;
}
