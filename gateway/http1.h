/*
 * http1: HTTP/1.1 message parsing for both directions, on llhttp (Node's parser, compiled in
 * strict mode from Debian's node-llhttp sources), plus the checks RFC 9112 asks of a proxy that
 * llhttp 8.1 does not make itself.
 *
 * llhttp tokenises; this module assembles a head out of its callbacks and refuses, with a
 * gateway error code and a static reason:
 *   - anything llhttp refuses (bad tokens, bare CR or LF, duplicate or malformed
 *     Content-Length, Transfer-Encoding with Content-Length, bad chunk sizes, chunk data not
 *     followed by CRLF, ...);
 *   - a request line that is not exactly "METHOD SP target SP HTTP/x.y", a version other than
 *     HTTP/1.0 or HTTP/1.1;
 *   - an empty field name, obs-fold (a field line continued on the next line), more than
 *     HTTP1_MAX_FIELDS fields, a head over the caller's limit (431);
 *   - HTTP/1.1 without exactly one Host, HTTP/1.0 with more than one, a Host value that is not
 *     host[:port];
 *   - a Transfer-Encoding other than a single "chunked" (the gateway decodes nothing else);
 *   - chunk extensions that do not follow RFC 9112's grammar (checked here, since llhttp 8.1
 *     refuses some valid ones: the glue takes chunk-size lines itself and hands llhttp only the
 *     size and the CRLF), chunk lines or trailers that grow without bound;
 *   - an Expect other than 100-continue (417);
 *   - responses: a status outside 100..599, 101 (no upgrades through the gateway).
 *
 * Pure: no I/O, no allocation, no logging. The head is parsed in place: the caller keeps the
 * head's bytes contiguous from its first byte, and every span in struct http1_head is an offset
 * into them. Once the head is done the parser no longer touches struct http1_head, so the
 * caller may reuse its memory while the body is parsed. Body bytes are handed to a callback as they
 * are decoded, pointing into the caller's data for the duration of the call.
 */
#ifndef GW_HTTP1_H
#define GW_HTTP1_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

#define HTTP1_MAX_FIELDS 100           /* header fields in one head; more is 431 */
#define HTTP1_MAX_CHUNK_LINE 1024      /* bytes of one chunk-size line with its extensions */
#define HTTP1_MAX_TRAILERS (16 * 1024) /* bytes of trailer fields after a chunked body */

enum http1_type { HTTP1_REQUEST, HTTP1_RESPONSE };

/* Bytes [off, off + len) of the head. */
struct http1_span {
    uint32_t off, len;
};

struct http1_field {
    struct http1_span name;  /* never empty */
    struct http1_span value; /* leading and trailing whitespace excluded; may be empty */
};

enum http1_body {
    HTTP1_BODY_NONE,    /* no body follows the head */
    HTTP1_BODY_LENGTH,  /* content_length bytes (more than 0) */
    HTTP1_BODY_CHUNKED, /* chunked */
    HTTP1_BODY_EOF      /* responses only: everything until the connection closes */
};

struct http1_head {
    uint32_t len;             /* bytes of the head, up to and including its empty line */
    struct http1_span method; /* requests */
    struct http1_span target; /* requests */
    int method_id;            /* requests: llhttp_method_t */
    int status;               /* responses */
    uint8_t major, minor;     /* HTTP version */
    enum http1_body body;     /* how the body is framed */
    uint64_t content_length;  /* HTTP1_BODY_LENGTH */
    bool keep_alive;          /* the connection may carry another message after this one */
    bool expect_continue;     /* requests: Expect: 100-continue */
    int host;                 /* requests: index of the Host field, or -1 */
    unsigned nfields;
    struct http1_field fields[HTTP1_MAX_FIELDS];
};

enum http1_rc {
    HTTP1_AGAIN, /* needs more bytes */
    HTTP1_DONE,  /* the head (or the message) is complete */
    HTTP1_ERROR  /* refused: see http1_parser.err and .why */
};

/* Decoded body bytes, valid during the call. Return 0, or -1 to stop parsing (the parser then
 * fails with GW_ERR_INTERNAL unless the callback set an error with http1_fail). */
typedef int (*http1_body_fn)(void *arg, const char *data, size_t len);

struct http1_parser {
    llhttp_t ll;
    enum http1_type type;
    int state;                 /* internal */
    struct http1_head *head;   /* being filled; the caller's; not used after the head is done */
    enum http1_body body_kind; /* of the message whose body is being parsed */
    const char *base;          /* start of the head during a parse_head call */
    uint32_t fed;              /* head bytes already given to llhttp */
    size_t max_head;
    bool no_body; /* responses: to a HEAD request (the head says nothing about a body then) */
    bool in_name, value_seen;
    const char *exec_start, *exec_end; /* data of the current llhttp_execute call */
    const char *last_value_end;        /* where the last field value piece ended */
    bool value_ended_call;             /* ... and whether that was the end of its call's data */
    uint32_t name_off, name_len, value_off, value_len;
    /* body */
    http1_body_fn on_body;
    void *body_arg;
    uint64_t body_bytes; /* decoded */
    uint64_t chunk_line; /* bytes of the current chunk-size line and extensions */
    uint64_t trailer_bytes;
    int line;        /* internal: where in a chunk-size line */
    bool last_chunk; /* the chunk being parsed has size 0 */
    char tail[4];    /* the last bytes of the body phase */
    bool msg_done;
    /* the refusal */
    enum gw_err err;
    const char *why; /* static */
};

/* Ready P for a first message of TYPE into HEAD. MAX_HEAD bounds the head in bytes (431). */
void http1_init(struct http1_parser *p, enum http1_type type, struct http1_head *head,
                size_t max_head);

/* After a complete message on a kept-alive connection: parse the next one into HEAD. */
void http1_next(struct http1_parser *p, struct http1_head *head);

/* P and the head it fills were moved (realloc'd together with the caller's buffer): P is the
 * parser at its new place, HEAD the head's. */
void http1_rebind(struct http1_parser *p, struct http1_head *head);

/* Responses: the request was HEAD, so no body follows whatever the head says. Set before the
 * head is parsed; http1_next clears it. */
void http1_set_no_body(struct http1_parser *p);

/*
 * Parse a head. BUF holds the head from its first byte, LEN bytes of it so far (and maybe body
 * bytes or the next message after it). Call again with the same start and a larger LEN as bytes
 * arrive; only the bytes not seen before are looked at. DONE: the head is in *HEAD, its length
 * in head->len. A message without a body is then complete already (head->body NONE). On ERROR
 * err/why say why; the parser stays failed.
 */
enum http1_rc http1_parse_head(struct http1_parser *p, const char *buf, size_t len);

/*
 * Parse body bytes after a DONE head. Decoded bytes go to ON_BODY(ARG, ...). Returns DONE when
 * the message ended (*USED bytes of DATA were its; the rest is the next message), AGAIN when
 * all of DATA was consumed and more is needed, ERROR when refused (*USED undefined).
 */
enum http1_rc http1_parse_body(struct http1_parser *p, const char *data, size_t len, size_t *used,
                               http1_body_fn on_body, void *arg);

/* The peer closed the connection: DONE when that ends the message (a close-delimited
 * response), ERROR when the message is cut short. */
enum http1_rc http1_finish(struct http1_parser *p);

/* Set the refusal from a body callback (which then returns -1). */
void http1_fail(struct http1_parser *p, enum gw_err err, const char *why);

/* True while no byte of a head was seen since init/next (idle keep-alive connection). */
bool http1_idle(const struct http1_parser *p);

/* Helpers over a parsed head whose bytes start at BUF. */

/* Index of the first field named NAME (ASCII case-insensitive), or -1. */
int http1_find(const struct http1_head *h, const char *buf, const char *name);

/* Number of fields named NAME. */
unsigned http1_count(const struct http1_head *h, const char *buf, const char *name);

/* Does span S of BUF equal the NUL-terminated LIT, ignoring ASCII case? */
bool http1_span_ieq(const char *buf, struct http1_span s, const char *lit);

/* Is C an RFC 9110 tchar? */
bool http1_tchar(unsigned char c);

/* Is the Host value V (LEN bytes) "host[:port]" (reg-name, IPv4 or [IPv6]; may be empty)? */
bool http1_host_ok(const char *v, size_t len);

#endif
