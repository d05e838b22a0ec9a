/*
 * HTTP layer of the mock Anymate server: one evhttp generic callback that logs each request,
 * applies the X-Mock-* test hooks, routes to the token endpoint, the Anymate API (endpoint
 * table in mock_state.c) or the /_mock/ control API, checks bearer tokens and sends exactly
 * one reply per request, from finish() (at once, or from a timer for X-Mock-Delay-Ms).
 *
 * Per request, an exchange (on the stack of mock_http_handle) owns the response body until
 * finish() hands it to evhttp or to a mock_reply. A mock_reply is owned by srv->replies until
 * its timer fires; the evhttp request it points to stays valid until evhttp_send_reply is
 * called, even if the client went away meanwhile (evhttp then only frees it).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "mock_server.h"
#include "mock_state.h"
#include "mock_token.h"
#include "mock_util.h"

#define MAX_DELAY_MS 600000LL
#define MAX_RESPONSE_BYTES (64LL * 1024 * 1024)
#define JSON_TYPE "application/json; charset=utf-8"

struct mock_reply {
    struct mock_server *srv;
    struct evhttp_request *req; /* evhttp's; valid until evhttp_send_reply */
    struct event *timer;        /* owned */
    int status;
    struct evbuffer *body; /* owned */
    TAILQ_ENTRY(mock_reply) link;
};

struct exchange {
    struct mock_server *srv;
    struct evhttp_request *req;
    struct mock_conn *conn; /* may be NULL (out of memory) */
    const char *path;       /* raw path of the request URI; evhttp's */
    const unsigned char *body;
    size_t body_len;

    int status;
    struct evbuffer *out; /* owned until finish() */
    bool json;            /* out holds JSON: send Content-Type */
    bool close;
    long long delay_ms;
};

/* ---- replies ------------------------------------------------------------------------------- */

static void reply_json(struct exchange *ex, int status, json_t *body)
{
    if (body == NULL) {
        status = 500;
        body = mock_response(false, "out of memory");
    }
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    evbuffer_drain(ex->out, evbuffer_get_length(ex->out));
    if (text != NULL) {
        evbuffer_add(ex->out, text, strlen(text));
        free(text);
    }
    ex->status = status;
    ex->json = true;
}

static void reply_error(struct exchange *ex, int status, const char *message)
{
    reply_json(ex, status, mock_response(false, "%s", message));
}

static void add_header(struct exchange *ex, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(ex->req), name, value);
}

static void send_now(struct evhttp_request *req, int status, struct evbuffer *body)
{
    evhttp_send_reply(req, status, mock_reason_phrase(status), body);
}

static void reply_free(struct mock_reply *r)
{
    event_free(r->timer);
    evbuffer_free(r->body);
    free(r);
}

static void reply_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mock_reply *r = arg;
    TAILQ_REMOVE(&r->srv->replies, r, link);
    send_now(r->req, r->status, r->body);
    reply_free(r);
}

void mock_http_drop_replies(struct mock_server *srv)
{
    struct mock_reply *r;
    while ((r = TAILQ_FIRST(&srv->replies)) != NULL) {
        TAILQ_REMOVE(&srv->replies, r, link);
        reply_free(r);
    }
}

/* Sends the response of ex, now or after its delay. The one place a reply leaves. */
static void finish(struct exchange *ex)
{
    char num[32];
    if (ex->json)
        add_header(ex, "Content-Type", JSON_TYPE);
    if (ex->conn != NULL) {
        snprintf(num, sizeof(num), "%lld", ex->conn->number);
        add_header(ex, "X-Mock-Connection", num);
        snprintf(num, sizeof(num), "%lld", ex->conn->lifetime_requests);
        add_header(ex, "X-Mock-Request", num);
    }
    if (ex->close)
        add_header(ex, "Connection", "close");

    if (ex->delay_ms > 0) {
        struct mock_reply *r = calloc(1, sizeof(*r));
        if (r != NULL) {
            r->timer = evtimer_new(ex->srv->base, reply_timer_cb, r);
            struct timeval tv = {(time_t)(ex->delay_ms / 1000),
                                 (suseconds_t)(ex->delay_ms % 1000 * 1000)};
            if (r->timer != NULL && evtimer_add(r->timer, &tv) == 0) {
                r->srv = ex->srv;
                r->req = ex->req;
                r->status = ex->status;
                r->body = ex->out;
                ex->out = NULL;
                TAILQ_INSERT_TAIL(&ex->srv->replies, r, link);
                return;
            }
            if (r->timer != NULL)
                event_free(r->timer);
            free(r);
        }
        /* Cannot delay (out of memory): answer now rather than never. */
    }
    send_now(ex->req, ex->status, ex->out);
    evbuffer_free(ex->out);
    ex->out = NULL;
}

/* ---- request log -------------------------------------------------------------------------- */

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "UNKNOWN";
}

/* Appends the request to the in-memory log and, with --log, writes it as one flushed line.
 * Header names and values are as evhttp received them (it trims surrounding white space). */
static void log_request(struct exchange *ex, const char *query)
{
    json_t *headers = json_array();
    struct evkeyval *h;
    TAILQ_FOREACH(h, evhttp_request_get_input_headers(ex->req), next)
    {
        json_array_append_new(headers,
                              json_pack("[o,o]", mock_json_text(h->key), mock_json_text(h->value)));
    }
    char *b64 = mock_base64(ex->body, ex->body_len, false);
    json_t *entry = json_object();
    json_object_set_new(entry, "conn",
                        ex->conn != NULL ? json_integer(ex->conn->number) : json_null());
    json_object_set_new(entry, "method",
                        json_string(method_name(evhttp_request_get_command(ex->req))));
    json_object_set_new(entry, "path", ex->path != NULL ? mock_json_text(ex->path) : json_null());
    json_object_set_new(entry, "query", query != NULL ? mock_json_text(query) : json_null());
    json_object_set_new(entry, "headers", headers);
    json_object_set_new(entry, "body_b64", b64 != NULL ? json_string(b64) : json_null());
    free(b64);

    if (ex->srv->log != NULL) {
        char *line = json_dumps(entry, JSON_COMPACT);
        if (line != NULL) {
            fprintf(ex->srv->log, "%s\n", line);
            fflush(ex->srv->log);
            free(line);
        }
    }
    json_array_append_new(ex->srv->requests, entry);
}

/* ---- test hooks --------------------------------------------------------------------------- */

/* Reads header name as an integer in [min, max]: 0 when absent, 1 when valid, -1 otherwise. */
static int hook_int(struct exchange *ex, const char *name, long long min, long long max,
                    long long *out)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(ex->req), name);
    if (v == NULL)
        return 0;
    if (!mock_parse_i64(v, min, max, out)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "%s must be an integer in %lld..%lld", name, min, max);
        reply_error(ex, 400, msg);
        return -1;
    }
    return 1;
}

/* {"succeeded":..,"message":"","padding":"xxx..."} of about total bytes. */
static void reply_padded(struct exchange *ex, int status, long long total)
{
    const char *head = status < 300 ? "{\"succeeded\":true,\"message\":\"\",\"padding\":\""
                                    : "{\"succeeded\":false,\"message\":\"\",\"padding\":\"";
    const char *tail = "\"}";
    long long pad = total - (long long)(strlen(head) + strlen(tail));
    evbuffer_drain(ex->out, evbuffer_get_length(ex->out));
    evbuffer_add(ex->out, head, strlen(head));
    char chunk[4096];
    memset(chunk, 'x', sizeof(chunk));
    while (pad > 0) {
        size_t n = pad > (long long)sizeof(chunk) ? sizeof(chunk) : (size_t)pad;
        evbuffer_add(ex->out, chunk, n);
        pad -= (long long)n;
    }
    evbuffer_add(ex->out, tail, strlen(tail));
    ex->status = status;
    ex->json = true;
}

/* Applies X-Mock-Delay-Ms and X-Mock-Close, and answers for X-Mock-Status and
 * X-Mock-Response-Bytes. Returns true when the request is answered (no routing, no state
 * change). */
static bool apply_hooks(struct exchange *ex)
{
    long long delay = 0, status = 0, bytes = 0;
    const char *close =
        evhttp_find_header(evhttp_request_get_input_headers(ex->req), "X-Mock-Close");
    ex->close = close != NULL && (strcmp(close, "1") == 0 || strcasecmp(close, "true") == 0);

    int rc_delay = hook_int(ex, "X-Mock-Delay-Ms", 0, MAX_DELAY_MS, &delay);
    if (rc_delay < 0)
        return true;
    ex->delay_ms = delay;
    int rc_status = hook_int(ex, "X-Mock-Status", 200, 599, &status);
    if (rc_status < 0)
        return true;
    int rc_bytes = hook_int(ex, "X-Mock-Response-Bytes", 0, MAX_RESPONSE_BYTES, &bytes);
    if (rc_bytes < 0)
        return true;
    if (rc_bytes == 1) {
        reply_padded(ex, rc_status == 1 ? (int)status : 200, bytes);
        return true;
    }
    if (rc_status == 1) {
        reply_json(ex, (int)status, mock_response(status < 300, "mock status %lld", status));
        return true;
    }
    return false;
}

/* ---- auth and token endpoint -------------------------------------------------------------- */

static bool authorized(struct exchange *ex)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(ex->req), "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    return *h != '\0' && mock_token_valid(ex->srv->tokens, h, time(NULL));
}

static void reply_unauthorized(struct exchange *ex)
{
    evbuffer_drain(ex->out, evbuffer_get_length(ex->out));
    ex->status = 401;
    ex->json = false;
    add_header(ex, "WWW-Authenticate", "Bearer");
}

static void oauth_error(struct exchange *ex, const char *error, const char *description)
{
    reply_json(ex, 400, json_pack("{s:s, s:s}", "error", error, "error_description", description));
}

static bool is_form(const char *content_type)
{
    static const char form[] = "application/x-www-form-urlencoded";
    if (content_type == NULL || strncasecmp(content_type, form, sizeof(form) - 1) != 0)
        return false;
    char next = content_type[sizeof(form) - 1];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

/* POST /connect/token: the resource owner password grant (anymate-api.md §1). */
static void token_endpoint(struct exchange *ex)
{
    struct evkeyvalq form;
    TAILQ_INIT(&form);
    const char *ctype =
        evhttp_find_header(evhttp_request_get_input_headers(ex->req), "Content-Type");
    char *text = malloc(ex->body_len + 1);
    if (text == NULL) {
        reply_json(ex, 500, NULL);
        return;
    }
    memcpy(text, ex->body, ex->body_len);
    text[ex->body_len] = '\0';

    if (!is_form(ctype) || memchr(ex->body, '\0', ex->body_len) != NULL ||
        evhttp_parse_query_str(text, &form) != 0) {
        oauth_error(ex, "unsupported_grant_type", "expected an x-www-form-urlencoded body");
        goto free_form;
    }
    const char *grant = evhttp_find_header(&form, "grant_type");
    const char *client = evhttp_find_header(&form, "client_id");
    const char *user = evhttp_find_header(&form, "username");
    const char *password = evhttp_find_header(&form, "password");
    if (grant == NULL || strcmp(grant, "password") != 0) {
        oauth_error(ex, "unsupported_grant_type", "grant_type must be password");
        goto free_form;
    }
    if (client == NULL || *client == '\0') {
        oauth_error(ex, "invalid_client", "client_id is required");
        goto free_form;
    }
    json_t *known = NULL;
    if (ex->srv->users != NULL)
        known = json_object_get(ex->srv->users, user != NULL ? user : "");
    if (user == NULL || *user == '\0' || password == NULL || strcmp(password, "wrong") == 0 ||
        (ex->srv->users != NULL &&
         (!json_is_string(known) || strcmp(json_string_value(known), password) != 0))) {
        oauth_error(ex, "invalid_grant", "invalid_username_or_password");
        goto free_form;
    }
    char *token = mock_token_issue(ex->srv->tokens, client, user, time(NULL), ex->srv->token_ttl);
    if (token == NULL) {
        reply_json(ex, 500, NULL);
        goto free_form;
    }
    /* Exactly these four keys: the Python SDK's AuthResponse rejects any other. */
    reply_json(ex, 200,
               json_pack("{s:s, s:I, s:s, s:s}", "access_token", token, "expires_in",
                         (json_int_t)ex->srv->token_ttl, "token_type", "Bearer", "scope",
                         "apimate"));
    add_header(ex, "Cache-Control", "no-store");
    add_header(ex, "Pragma", "no-cache");
    free(token);
free_form:
    evhttp_clear_headers(&form);
    free(text);
}

/* ---- Anymate API ---------------------------------------------------------------------------- */

static const struct mock_endpoint *find_endpoint(const char *name)
{
    for (size_t i = 0; i < mock_endpoint_count; i++) {
        if (strcasecmp(mock_endpoints[i].name, name) == 0)
            return &mock_endpoints[i];
    }
    return NULL;
}

static bool method_is(struct exchange *ex, enum evhttp_cmd_type cmd, const char *allow)
{
    if (evhttp_request_get_command(ex->req) == cmd)
        return true;
    reply_error(ex, 405, "method not allowed");
    add_header(ex, "Allow", allow);
    return false;
}

/* /api/{name}[/{key}] with key still percent-encoded. */
static void api_endpoint(struct exchange *ex, const struct mock_endpoint *ep, const char *raw_key)
{
    if (!method_is(ex, ep->post ? EVHTTP_REQ_POST : EVHTTP_REQ_GET, ep->post ? "POST" : "GET"))
        return;
    if (!authorized(ex)) {
        reply_unauthorized(ex);
        return;
    }
    char *key = NULL;
    json_t *body = NULL;
    if (raw_key != NULL) {
        size_t len = 0;
        key = evhttp_uridecode(raw_key, 0, &len);
        if (key == NULL || len != strlen(key)) {
            reply_error(ex, 400, "processKey must not contain NUL");
            goto free_key;
        }
    }
    if (ep->body != MOCK_BODY_NONE) {
        json_error_t err;
        if (ex->body_len == 0) {
            reply_error(ex, 400, "request body is empty");
            goto free_key;
        }
        body = json_loadb((const char *)ex->body, ex->body_len, 0, &err);
        if (body == NULL) {
            char msg[300];
            snprintf(msg, sizeof(msg), "invalid JSON body: %s (line %d, column %d)", err.text,
                     err.line, err.column);
            reply_error(ex, 400, msg);
            goto free_key;
        }
        if (ep->body == MOCK_BODY_OBJECT && !json_is_object(body)) {
            reply_error(ex, 400, "request body must be a JSON object");
            goto free_body;
        }
        if (ep->body == MOCK_BODY_ARRAY && !json_is_array(body)) {
            reply_error(ex, 400, "request body must be a JSON array");
            goto free_body;
        }
    }
    int status = 200;
    mock_state_set_request_id(
        ex->srv->state,
        evhttp_find_header(evhttp_request_get_input_headers(ex->req), "X-Request-Id"));
    json_t *res = mock_state_call(ex->srv->state, ep, key, body, time(NULL), &status);
    reply_json(ex, status, res);
free_body:
    json_decref(body);
free_key:
    free(key);
}

/* ---- control API -------------------------------------------------------------------------- */

static bool control_only(const struct mock_conn *c)
{
    return c->ever_control && !c->ever_api;
}

struct conn_counts {
    long long accepted; /* accepted since reset */
    long long open;     /* open now */
    long long api;      /* not /_mock/-only; accepted or used since reset */
    long long api_open; /* not /_mock/-only; open now */
};

static void add_conn_stats(json_t *list, const struct mock_conn_list *conns, struct conn_counts *n)
{
    const struct mock_conn *c;
    TAILQ_FOREACH(c, conns, link)
    {
        n->accepted += c->accepted_since_reset;
        n->open += c->open;
        if (!control_only(c) && (c->accepted_since_reset || c->requests > 0))
            n->api++;
        if (!control_only(c) && c->open)
            n->api_open++;
        json_array_append_new(list,
                              json_pack("{s:I, s:I, s:I, s:b, s:b}", "conn", (json_int_t)c->number,
                                        "requests", (json_int_t)c->requests, "control_requests",
                                        (json_int_t)c->control_requests, "open", c->open,
                                        "control_only", control_only(c)));
    }
}

static json_t *stats_json(struct mock_server *srv)
{
    struct conn_counts n = {0, 0, 0, 0};
    json_t *list = json_array();
    add_conn_stats(list, &srv->closed_conns, &n);
    add_conn_stats(list, &srv->open_conns, &n);
    return json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "connections", (json_int_t)n.accepted,
        "requests", (json_int_t)(srv->requests_total + srv->control_requests_total),
        "open_connections", (json_int_t)n.open, "api_connections", (json_int_t)n.api,
        "api_requests", (json_int_t)srv->requests_total, "api_open_connections",
        (json_int_t)n.api_open, "control_requests", (json_int_t)srv->control_requests_total,
        "tls_full_handshakes", (json_int_t)srv->tls_full, "tls_resumed_handshakes",
        (json_int_t)srv->tls_resumed, "per_connection", list);
}

static void control_endpoint(struct exchange *ex, const char *name)
{
    struct mock_server *srv = ex->srv;
    if (strcasecmp(name, "stats") == 0) {
        if (method_is(ex, EVHTTP_REQ_GET, "GET"))
            reply_json(ex, 200, stats_json(srv));
    } else if (strcasecmp(name, "ledger") == 0) {
        if (method_is(ex, EVHTTP_REQ_GET, "GET"))
            reply_json(ex, 200, json_incref(mock_state_ledger(srv->state)));
    } else if (strcasecmp(name, "requests") == 0) {
        if (method_is(ex, EVHTTP_REQ_GET, "GET"))
            reply_json(ex, 200, json_incref(srv->requests));
    } else if (strcasecmp(name, "reset") == 0) {
        if (method_is(ex, EVHTTP_REQ_POST, "POST")) {
            json_array_clear(srv->requests);
            mock_state_clear_ledger(srv->state);
            mock_conn_reset(srv);
            reply_json(ex, 200, mock_response(true, "%s", ""));
        }
    } else if (strcasecmp(name, "processes") == 0) {
        enum evhttp_cmd_type cmd = evhttp_request_get_command(ex->req);
        if (cmd == EVHTTP_REQ_GET) {
            reply_json(ex, 200, mock_state_dump(srv->state));
        } else if (cmd == EVHTTP_REQ_POST) {
            json_error_t jerr;
            char err[256];
            json_t *spec = json_loadb((const char *)ex->body, ex->body_len, 0, &jerr);
            if (spec == NULL) {
                snprintf(err, sizeof(err), "invalid JSON body: %s", jerr.text);
                reply_error(ex, 400, err);
            } else if (mock_state_configure(srv->state, spec, err, sizeof(err)) != 0) {
                reply_error(ex, 400, err);
            } else {
                reply_json(ex, 200, mock_response(true, "%s", ""));
            }
            json_decref(spec);
        } else {
            reply_error(ex, 405, "method not allowed");
            add_header(ex, "Allow", "GET, POST");
        }
    } else {
        reply_error(ex, 404, "not found");
    }
}

/* ---- routing ------------------------------------------------------------------------------ */

#define MAX_SEGMENTS 4

/* Routes on the raw path: ASCII case-insensitive, one optional trailing slash. */
static void route(struct exchange *ex, bool control)
{
    char *copy = ex->path != NULL ? strdup(ex->path) : NULL;
    if (copy == NULL || copy[0] != '/') {
        reply_error(ex, 404, "not found");
        free(copy);
        return;
    }
    size_t len = strlen(copy);
    if (len > 1 && copy[len - 1] == '/')
        copy[len - 1] = '\0';

    char *seg[MAX_SEGMENTS];
    size_t n = 0;
    char *p = copy + 1;
    for (;;) {
        if (n == MAX_SEGMENTS) {
            n = MAX_SEGMENTS + 1;
            break;
        }
        seg[n++] = p;
        char *slash = strchr(p, '/');
        if (slash == NULL)
            break;
        *slash = '\0';
        p = slash + 1;
    }

    if (control) {
        if (n == 2)
            control_endpoint(ex, seg[1]);
        else
            reply_error(ex, 404, "not found");
    } else if (n == 2 && strcasecmp(seg[0], "connect") == 0 && strcasecmp(seg[1], "token") == 0) {
        if (method_is(ex, EVHTTP_REQ_POST, "POST"))
            token_endpoint(ex);
    } else if ((n == 2 || n == 3) && strcasecmp(seg[0], "api") == 0) {
        const struct mock_endpoint *ep = find_endpoint(seg[1]);
        if (ep == NULL || ep->has_key != (n == 3) || (n == 3 && seg[2][0] == '\0'))
            reply_error(ex, 404, "not found");
        else
            api_endpoint(ex, ep, n == 3 ? seg[2] : NULL);
    } else {
        reply_error(ex, 404, "not found");
    }
    free(copy);
}

void mock_http_handle(struct evhttp_request *req, void *arg)
{
    struct mock_server *srv = arg;
    struct exchange ex = {.srv = srv, .req = req, .status = 500};
    ex.out = evbuffer_new();
    if (ex.out == NULL) {
        evhttp_send_reply(req, 500, "Internal Server Error", NULL);
        return;
    }

    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    ex.conn = evcon != NULL ? mock_conn_of(srv, evcon) : NULL;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    ex.path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    bool control = ex.path != NULL && strncasecmp(ex.path, "/_mock/", 7) == 0;

    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    ex.body_len = evbuffer_get_length(in);
    ex.body = ex.body_len != 0 ? evbuffer_pullup(in, -1) : (const unsigned char *)"";
    if (ex.body == NULL) {
        ex.body = (const unsigned char *)"";
        ex.body_len = 0;
    }

    if (ex.conn != NULL) {
        ex.conn->lifetime_requests++;
        if (control) {
            ex.conn->ever_control = true;
            ex.conn->control_requests++;
        } else {
            ex.conn->ever_api = true;
            ex.conn->requests++;
        }
    }
    log_request(&ex, query);
    if (control) {
        srv->control_requests_total++;
        route(&ex, true);
    } else {
        srv->requests_total++;
        if (!apply_hooks(&ex))
            route(&ex, false);
    }
    finish(&ex);
}
