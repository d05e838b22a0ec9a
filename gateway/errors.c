/*
 * errors: the one table that turns a gateway failure into a status, a code and a message.
 * Upstream failures are split by what failed (name lookup, TCP, TLS, HTTP) so an operator can
 * tell a certificate problem from a dead host, while bots only need the status.
 */
#include "errors.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const struct gw_err_info table[GW_ERR__COUNT] = {
    [GW_ERR_BAD_REQUEST] = {400, "request.malformed", "the request is malformed"},
    [GW_ERR_BAD_FRAMING] = {400, "request.ambiguous_framing",
                            "the request's message framing is ambiguous (Content-Length / "
                            "Transfer-Encoding); refused and the connection closed"},
    [GW_ERR_BAD_HEADER] = {400, "request.invalid_header", "a request header is invalid"},
    [GW_ERR_BAD_TARGET] = {400, "request.invalid_target",
                           "the request target must be a path starting with /"},
    [GW_ERR_NOT_FOUND] = {404, "route.not_found",
                          "no such endpoint: the gateway serves /connect/token and /api/..."},
    [GW_ERR_METHOD] = {405, "route.method_not_allowed", "method not allowed for this endpoint"},
    [GW_ERR_CLIENT_TIMEOUT] = {408, "request.timeout", "the request was not received in time"},
    [GW_ERR_LENGTH_REQUIRED] = {411, "request.length_required",
                                "a request body needs Content-Length or chunked encoding"},
    [GW_ERR_BODY_TOO_LARGE] = {413, "request.body_too_large",
                               "the request body is larger than the gateway allows"},
    [GW_ERR_HEADERS_TOO_LARGE] = {431, "request.headers_too_large",
                                  "the request headers are larger than the gateway allows"},
    [GW_ERR_INTERNAL] = {500, "gateway.internal", "internal gateway error"},
    [GW_ERR_UPSTREAM_DNS] = {502, "upstream.dns", "the Anymate host name could not be resolved"},
    [GW_ERR_UPSTREAM_CONNECT] = {502, "upstream.connect", "could not connect to Anymate"},
    [GW_ERR_UPSTREAM_TLS] = {502, "upstream.tls",
                             "TLS with Anymate failed (certificate or handshake)"},
    [GW_ERR_UPSTREAM_PROTOCOL] = {502, "upstream.protocol",
                                  "Anymate closed the connection or sent an invalid response"},
    [GW_ERR_QUEUE_FULL] = {503, "upstream.queue_full",
                           "too many requests are waiting for an Anymate connection"},
    [GW_ERR_SHUTTING_DOWN] = {503, "gateway.shutting_down", "the gateway is shutting down"},
    [GW_ERR_UPSTREAM_TIMEOUT] = {504, "upstream.timeout", "Anymate did not answer in time"},
    [GW_ERR_REQUEST_TIMEOUT] = {504, "request.deadline",
                                "the request did not complete within the gateway's deadline"},
    [GW_ERR_TOO_LARGE] = {413, "request.too_large", "the request is too large (retired code)"},
    [GW_ERR_UNPARSABLE] = {400, "request.unparsable", "the request is malformed (retired code)"},
    [GW_ERR_BAD_CHUNK] = {400, "request.invalid_chunked_body",
                          "the chunked request body is malformed; refused and the connection "
                          "closed"},
    [GW_ERR_BAD_HOST] = {400, "request.invalid_host",
                         "the Host header is missing, repeated or malformed"},
    [GW_ERR_EXPECTATION] = {417, "request.expectation_failed",
                            "the only Expect the gateway meets is 100-continue"},
    [GW_ERR_OVERLOADED] = {503, "gateway.overloaded",
                           "the gateway is out of connections or buffer memory for the moment; "
                           "try again"},
    [GW_ERR_QUEUE_TIMEOUT] = {503, "upstream.queue_timeout",
                              "no Anymate connection became free in time"},
    [GW_ERR_CLIENT_CLOSED] = {499, "client.closed",
                              "the bot closed its connection before the answer"},
};

const struct gw_err_info *errors_info(enum gw_err err)
{
    if ((int)err < 0 || err >= GW_ERR__COUNT)
        err = GW_ERR_INTERNAL;
    return &table[err];
}

const char *errors_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

char *errors_body(const char *code, const char *message, const char *request_id)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "succeeded", json_false());
    json_object_set_new(o, "message", json_string(message ? message : ""));
    json_object_set_new(o, "error", json_string(code ? code : "gateway.internal"));
    json_object_set_new(o, "requestId", request_id ? json_string(request_id) : json_null());
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}
