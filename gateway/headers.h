/*
 * headers: header fields as the request and call objects keep them (NUL-terminated name and
 * value, copied out of the head they arrived in), and what may cross the gateway in each
 * direction.
 *
 * Pure: no I/O, no logging, no allocation.
 */
#ifndef GW_HEADERS_H
#define GW_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

#include "http1.h"

struct hfield {
    const char *name;
    const char *value; /* leading and trailing whitespace removed */
    size_t nlen;       /* strlen(name): lookups compare lengths first */
};

/*
 * Copy the head H (its bytes at HBUF) into DST (at least h->len + 1 bytes) and describe its
 * fields in OUT (h->nfields entries), NUL-terminating every name and value inside the copy.
 * *METHOD and *TARGET (requests; may be NULL) point into the copy too.
 */
void headers_copy_head(const struct http1_head *h, const char *hbuf, char *dst, struct hfield *out,
                       const char **method, const char **target);

/* The first value of NAME (ASCII case-insensitive), or NULL. */
const char *headers_get(const struct hfield *f, unsigned n, const char *name);
/* How many fields are named NAME. */
unsigned headers_count(const struct hfield *f, unsigned n, const char *name);

/*
 * Does field I of F travel on? Never: the hop-by-hop fields of RFC 9110 §7.6.1 (Connection
 * and every field it names, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*),
 * Content-Length (framing is rebuilt) and X-Request-Id (the gateway sets its own). Towards the
 * upstream (REQUEST) also not Host, Expect and X-Forwarded-For, which the gateway handles.
 */
bool headers_forward(const struct hfield *f, unsigned n, unsigned i, bool request);

/* True for the fixed names above (case-insensitive); REQUEST as for headers_forward. */
bool headers_is_hop_by_hop(const char *name, bool request);

/* headers_forward for every field at once, into KEEP[0..N): one pass, plus one more only when
 * a Connection header names other fields. */
void headers_forward_all(const struct hfield *f, unsigned n, bool request, bool *keep);

#endif
