/*
 * headers: what may cross the gateway in each direction, and the refusal of requests whose
 * framing two HTTP parsers could read differently (request smuggling).
 *
 * Pure: works on libevent header lists (struct evkeyvalq) and returns error codes; no I/O, no
 * logging. The header lists are borrowed for the duration of each call.
 */
#ifndef GW_HEADERS_H
#define GW_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

#include "errors.h"

struct evkeyvalq;

/*
 * Check an incoming request's head. Refuses (returns -1, *ERR and a static *WHY set):
 *   - a header name that is not an RFC 9110 token, a value with control characters
 *     (GW_ERR_BAD_HEADER);
 *   - more than one Content-Length, a Content-Length that is not 1..18 plain digits,
 *     any Transfer-Encoding other than exactly one "chunked", Transfer-Encoding together
 *     with Content-Length (GW_ERR_BAD_FRAMING);
 *   - head larger than MAX_HEADER_SIZE bytes counted as "Name: value\r\n" plus
 *     REQUEST_LINE_LEN (GW_ERR_HEADERS_TOO_LARGE).
 * Returns 0 when the head may be forwarded.
 */
int headers_check_request(const struct evkeyvalq *in, size_t request_line_len,
                          size_t max_header_size, enum gw_err *err, const char **why);

/* True for the hop-by-hop headers of RFC 9110 §7.6.1 and the ones the gateway always rebuilds
 * itself (Host, Content-Length, X-Request-Id, Expect, X-Forwarded-For). Case-insensitive. */
bool headers_is_hop_by_hop(const char *name);

/*
 * Copy end-to-end headers from IN to OUT: drops hop-by-hop headers, every header named in a
 * Connection header's tokens, and (REQUEST) the headers the gateway rebuilds. Returns 0, or
 * -1 when OUT refused a header (libevent rejects CR/LF in values).
 */
int headers_copy(const struct evkeyvalq *in, struct evkeyvalq *out, bool request);

/* Count the headers named NAME (case-insensitive) in IN. */
size_t headers_count(const struct evkeyvalq *in, const char *name);

#endif
