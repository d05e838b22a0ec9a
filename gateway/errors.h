/*
 * errors: every failure the gateway itself answers, mapped in one place to an HTTP status, a
 * stable machine-readable code and a human message, and rendered in the JSON shape Anymate
 * uses: {"succeeded":false,"message":...,"error":...,"requestId":...}.
 *
 * Codes are part of the interface bots and dashboards see; never rename one, add new ones.
 */
#ifndef GW_ERRORS_H
#define GW_ERRORS_H

#include <stddef.h>

enum gw_err {
    GW_ERR_BAD_REQUEST,       /* 400 request.malformed */
    GW_ERR_BAD_FRAMING,       /* 400 request.ambiguous_framing */
    GW_ERR_BAD_HEADER,        /* 400 request.invalid_header */
    GW_ERR_BAD_TARGET,        /* 400 request.invalid_target */
    GW_ERR_NOT_FOUND,         /* 404 route.not_found */
    GW_ERR_METHOD,            /* 405 route.method_not_allowed */
    GW_ERR_CLIENT_TIMEOUT,    /* 408 request.timeout */
    GW_ERR_LENGTH_REQUIRED,   /* 411 request.length_required */
    GW_ERR_BODY_TOO_LARGE,    /* 413 request.body_too_large */
    GW_ERR_HEADERS_TOO_LARGE, /* 431 request.headers_too_large */
    GW_ERR_INTERNAL,          /* 500 gateway.internal */
    GW_ERR_UPSTREAM_DNS,      /* 502 upstream.dns */
    GW_ERR_UPSTREAM_CONNECT,  /* 502 upstream.connect */
    GW_ERR_UPSTREAM_TLS,      /* 502 upstream.tls */
    GW_ERR_UPSTREAM_PROTOCOL, /* 502 upstream.protocol */
    GW_ERR_QUEUE_FULL,        /* 503 upstream.queue_full */
    GW_ERR_SHUTTING_DOWN,     /* 503 gateway.shutting_down */
    GW_ERR_UPSTREAM_TIMEOUT,  /* 504 upstream.timeout */
    GW_ERR_REQUEST_TIMEOUT,   /* 504 request.deadline */
    /* Retired with libevent's HTTP parser: no longer sent, kept so the codes stay reserved. */
    GW_ERR_TOO_LARGE,     /* 413 request.too_large */
    GW_ERR_UNPARSABLE,    /* 400 request.unparsable */
    GW_ERR_BAD_CHUNK,     /* 400 request.invalid_chunked_body */
    GW_ERR_BAD_HOST,      /* 400 request.invalid_host */
    GW_ERR_EXPECTATION,   /* 417 request.expectation_failed */
    GW_ERR_OVERLOADED,    /* 503 gateway.overloaded */
    GW_ERR_QUEUE_TIMEOUT, /* 503 upstream.queue_timeout */
    GW_ERR_CLIENT_CLOSED, /* 499 client.closed: never sent, for logs and the ledger */
    GW_ERR__COUNT
};

struct gw_err_info {
    int status;          /* HTTP status */
    const char *code;    /* stable, dotted, e.g. "upstream.timeout" */
    const char *message; /* default human message */
};

/* The mapping; ERR out of range yields the GW_ERR_INTERNAL row. Static storage. */
const struct gw_err_info *errors_info(enum gw_err err);

/* Reason phrase for STATUS ("Bad Gateway"), or "Unknown" (static). */
const char *errors_reason(int status);

/*
 * Render the JSON error body into a new NUL-terminated heap string (caller frees with free()).
 * MESSAGE NULL means the row's default message; REQUEST_ID may be NULL. Returns NULL only when
 * out of memory.
 */
char *errors_body(const char *code, const char *message, const char *request_id);

#endif
