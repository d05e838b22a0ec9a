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
        out[i].nlen = f->name.len;
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
    size_t len = strlen(name);
    for (unsigned i = 0; i < n; i++)
        if (f[i].nlen == len && strcasecmp(f[i].name, name) == 0)
            return f[i].value;
    return NULL;
}

unsigned headers_count(const struct hfield *f, unsigned n, const char *name)
{
    size_t len = strlen(name);
    unsigned c = 0;
    for (unsigned i = 0; i < n; i++)
        c += f[i].nlen == len && strcasecmp(f[i].name, name) == 0;
    return c;
}

bool headers_is_hop_by_hop(const char *name, bool request)
{
    /* A switch on the first letter keeps this to one or two comparisons per header. */
    switch (name[0] | 0x20) {
    case 'c':
        return strcasecmp(name, "Connection") == 0 || strcasecmp(name, "Content-Length") == 0;
    case 'k':
        return strcasecmp(name, "Keep-Alive") == 0;
    case 't':
        return strcasecmp(name, "TE") == 0 || strcasecmp(name, "Trailer") == 0 ||
               strcasecmp(name, "Transfer-Encoding") == 0;
    case 'u':
        return strcasecmp(name, "Upgrade") == 0;
    case 'p':
        return strncasecmp(name, "Proxy-", 6) == 0;
    case 'x':
        return strcasecmp(name, "X-Request-Id") == 0 ||
               (request && strcasecmp(name, "X-Forwarded-For") == 0);
    case 'h':
        return request && strcasecmp(name, "Host") == 0;
    case 'e':
        return request && strcasecmp(name, "Expect") == 0;
    default:
        return false;
    }
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

/* Does a Connection value name anything but the usual close / keep-alive? */
static bool names_fields(const char *v)
{
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *start = v;
        while (*v && *v != ',' && *v != ' ' && *v != '\t')
            v++;
        size_t len = (size_t)(v - start);
        if (len > 0 && !(len == 5 && strncasecmp(start, "close", 5) == 0) &&
            !(len == 10 && strncasecmp(start, "keep-alive", 10) == 0))
            return true;
    }
    return false;
}

void headers_forward_all(const struct hfield *f, unsigned n, bool request, bool *keep)
{
    bool named = false;
    for (unsigned i = 0; i < n; i++) {
        keep[i] = !headers_is_hop_by_hop(f[i].name, request);
        if (!keep[i] && (f[i].name[0] | 0x20) == 'c' && strcasecmp(f[i].name, "Connection") == 0)
            named = named || names_fields(f[i].value);
    }
    if (named)
        for (unsigned i = 0; i < n; i++)
            if (keep[i] && named_by_connection(f, n, f[i].name))
                keep[i] = false;
}
