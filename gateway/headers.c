/*
 * headers: copies of heads with C-string fields, and the hop-by-hop rules (see headers.h).
 *
 * Why the copy can NUL-terminate in place: every name is followed by its ':' and every value
 * by whitespace or the line's CR, all inside the head, so overwriting that byte with NUL
 * turns the copied head into strings without another allocation. The request line's method
 * and target are each followed by a space.
 */
#include "headers.h"

#include <string.h>
#include <strings.h>

void headers_copy_head(const struct http1_head *h, const char *hbuf, char *dst, struct hfield *out,
                       const char **method, const char **target)
{
    memcpy(dst, hbuf, h->len);
    dst[h->len] = '\0';
    for (unsigned i = 0; i < h->nfields; i++) {
        const struct http1_field *f = &h->fields[i];
        dst[f->name.off + f->name.len] = '\0';
        out[i].name = dst + f->name.off;
        if (f->value.len == 0) {
            out[i].value = "";
        } else {
            dst[f->value.off + f->value.len] = '\0';
            out[i].value = dst + f->value.off;
        }
    }
    if (method) {
        dst[h->method.off + h->method.len] = '\0';
        *method = dst + h->method.off;
    }
    if (target) {
        dst[h->target.off + h->target.len] = '\0';
        *target = dst + h->target.off;
    }
}

const char *headers_get(const struct hfield *f, unsigned n, const char *name)
{
    for (unsigned i = 0; i < n; i++)
        if (strcasecmp(f[i].name, name) == 0)
            return f[i].value;
    return NULL;
}

unsigned headers_count(const struct hfield *f, unsigned n, const char *name)
{
    unsigned c = 0;
    for (unsigned i = 0; i < n; i++)
        c += strcasecmp(f[i].name, name) == 0;
    return c;
}

bool headers_is_hop_by_hop(const char *name, bool request)
{
    static const char *const both[] = {
        "Connection", "Keep-Alive",     "TE",           "Trailer", "Transfer-Encoding",
        "Upgrade",    "Content-Length", "X-Request-Id",
    };
    static const char *const upward[] = {"Host", "Expect", "X-Forwarded-For"};
    for (size_t i = 0; i < sizeof(both) / sizeof(both[0]); i++)
        if (strcasecmp(name, both[i]) == 0)
            return true;
    if (request)
        for (size_t i = 0; i < sizeof(upward) / sizeof(upward[0]); i++)
            if (strcasecmp(name, upward[i]) == 0)
                return true;
    return strncasecmp(name, "Proxy-", 6) == 0;
}

/* Is NAME one of the comma-separated tokens of any Connection field of F? */
static bool named_by_connection(const struct hfield *f, unsigned n, const char *name)
{
    size_t nlen = strlen(name);
    for (unsigned i = 0; i < n; i++) {
        if (strcasecmp(f[i].name, "Connection") != 0)
            continue;
        const char *p = f[i].value;
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

bool headers_forward(const struct hfield *f, unsigned n, unsigned i, bool request)
{
    return !headers_is_hop_by_hop(f[i].name, request) && !named_by_connection(f, n, f[i].name);
}
