/*
 * headers: framing checks and end-to-end header copying for both directions of the proxy.
 *
 * Why the gateway checks what libevent already parsed: evhttp picks the first of several
 * Content-Length headers, accepts "+5" and " 5" (strtoll), and prefers chunked when both
 * framings are present. An upstream server may pick differently, so any such request is
 * refused and its connection closed, and every forwarded request gets framing rebuilt from the
 * body the gateway actually read.
 */
#include "headers.h"

#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <string.h>
#include <strings.h>

static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

static bool value_ok(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static bool all_digits(const char *s, size_t maxlen)
{
    size_t n = 0;
    for (; *s; s++, n++)
        if (*s < '0' || *s > '9')
            return false;
    return n >= 1 && n <= maxlen;
}

size_t headers_count(const struct evkeyvalq *in, const char *name)
{
    size_t n = 0;
    const struct evkeyval *h;
    TAILQ_FOREACH(h, in, next)
    if (strcasecmp(h->key, name) == 0)
        n++;
    return n;
}

int headers_check_request(const struct evkeyvalq *in, size_t request_line_len,
                          size_t max_header_size, enum gw_err *err, const char **why)
{
    const struct evkeyval *h;
    size_t total = request_line_len;
    size_t n_cl = 0, n_te = 0;
    const char *cl = NULL, *te = NULL;

    TAILQ_FOREACH(h, in, next)
    {
        total += strlen(h->key) + strlen(h->value) + 4;
        if (!is_token(h->key)) {
            *err = GW_ERR_BAD_HEADER;
            *why = "a header name is not a valid token (spaces, separators or control "
                   "characters)";
            return -1;
        }
        if (!value_ok(h->value)) {
            *err = GW_ERR_BAD_HEADER;
            *why = "a header value contains control characters";
            return -1;
        }
        if (strcasecmp(h->key, "Content-Length") == 0) {
            n_cl++;
            cl = h->value;
        } else if (strcasecmp(h->key, "Transfer-Encoding") == 0) {
            n_te++;
            te = h->value;
        }
    }
    if (total > max_header_size) {
        *err = GW_ERR_HEADERS_TOO_LARGE;
        *why = NULL;
        return -1;
    }
    *err = GW_ERR_BAD_FRAMING;
    if (n_cl > 1) {
        *why = "more than one Content-Length header";
        return -1;
    }
    if (cl && !all_digits(cl, 18)) {
        *why = "Content-Length must be 1 to 18 decimal digits";
        return -1;
    }
    if (n_te > 1) {
        *why = "more than one Transfer-Encoding header";
        return -1;
    }
    if (te && strcasecmp(te, "chunked") != 0) {
        *why = "Transfer-Encoding other than a single \"chunked\" is not accepted";
        return -1;
    }
    if (te && cl) {
        *why = "Transfer-Encoding and Content-Length together";
        return -1;
    }
    return 0;
}

bool headers_is_hop_by_hop(const char *name)
{
    static const char *const names[] = {
        "Connection",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "X-Request-Id",
        "Expect",
        "X-Forwarded-For",
        "Proxy-Connection",
        "Proxy-Authorization",
        "Proxy-Authenticate",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return strncasecmp(name, "Proxy-", 6) == 0;
}

/* True when NAME appears as a comma-separated token in any Connection header of IN. */
static bool named_by_connection(const struct evkeyvalq *in, const char *name)
{
    const struct evkeyval *h;
    size_t nlen = strlen(name);
    TAILQ_FOREACH(h, in, next)
    {
        if (strcasecmp(h->key, "Connection") != 0)
            continue;
        const char *p = h->value;
        while (*p) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            const char *start = p;
            while (*p && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if ((size_t)(p - start) == nlen && strncasecmp(start, name, nlen) == 0)
                return true;
        }
    }
    return false;
}

int headers_copy(const struct evkeyvalq *in, struct evkeyvalq *out, bool request)
{
    const struct evkeyval *h;
    TAILQ_FOREACH(h, in, next)
    {
        if (request) {
            if (headers_is_hop_by_hop(h->key))
                continue;
        } else if (strcasecmp(h->key, "Connection") == 0 || strcasecmp(h->key, "Keep-Alive") == 0 ||
                   strcasecmp(h->key, "Transfer-Encoding") == 0 ||
                   strcasecmp(h->key, "Content-Length") == 0 ||
                   strcasecmp(h->key, "Trailer") == 0 || strcasecmp(h->key, "Upgrade") == 0 ||
                   strcasecmp(h->key, "TE") == 0 || strncasecmp(h->key, "Proxy-", 6) == 0 ||
                   strcasecmp(h->key, "X-Request-Id") == 0) {
            continue;
        }
        if (named_by_connection(in, h->key))
            continue;
        if (evhttp_add_header(out, h->key, h->value) != 0)
            return -1;
    }
    return 0;
}
