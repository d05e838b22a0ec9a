/*
 * policy: the POLICY phase. Decides, before anything is audited or forwarded, whether a
 * request may go on: the endpoint allow-list, the bearer-token requirement, the body limit of
 * the endpoint, and for FinishRun and the task actions the strict payload contract
 * (payload.c) plus the configured KPI override bounds.
 *
 * A refusal replies at once with the gateway's JSON error and a stable code; the request is
 * never forwarded, is counted, and reaches the audit through the done hooks with its code and
 * message (r->error_code, r->error_message).
 *
 * Two hooks. Before the body is read (HEAD phase): endpoint known and enabled (404) -> bearer
 * token (401) -> declared body size (413) -> media type (415) -> body present (411/400), so
 * that a request refused on its head is never read further. After the body (POLICY phase):
 * JSON and fields (400/422) -> KPI bounds (422). The cheapest and least revealing answer
 * comes first.
 */
#include "policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "errors.h"
#include "request.h"
#include "stats.h"

/* Task actions one Return may carry (each becomes a ledger row before it is forwarded). */
#define POLICY_MAX_RETURN_ITEMS 1000

/* Status and code of a refusal the error table already defines, so both stay in one place. */
#define ERR(e) errors_info(e)->status, errors_info(e)->code

static bool validated(const struct route *rt)
{
    return rt->body == ROUTE_BODY_FINISHRUN || rt->body == ROUTE_BODY_TASK_ACTION ||
           rt->body == ROUTE_BODY_RETRY_ACTION || rt->body == ROUTE_BODY_RETURN;
}

static enum payload_kind kind_of(const struct route *rt)
{
    switch (rt->body) {
    case ROUTE_BODY_FINISHRUN:
        return PAYLOAD_FINISHRUN;
    case ROUTE_BODY_RETRY_ACTION:
        return PAYLOAD_RETRY_TASK_ACTION;
    default:
        return PAYLOAD_TASK_ACTION;
    }
}

bool policy_bearer_ok(const char *value)
{
    /* RFC 6750: "Bearer" 1*SP token68, the scheme case-insensitive. */
    if (!value || strncasecmp(value, "Bearer ", 7) != 0)
        return false;
    const char *t = value + 7;
    while (*t == ' ')
        t++;
    size_t n = 0;
    for (; t[n]; n++) {
        unsigned char c = (unsigned char)t[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
        if (!ok)
            break;
    }
    if (n == 0)
        return false;
    while (t[n] == '=')
        n++;
    return t[n] == '\0';
}

bool policy_media_type_json(const char *ct)
{
    /* application/json, optionally with parameters; a charset, if given, must be UTF-8 (the
     * validator reads UTF-8 and Anymate's serializer does too). */
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    if (strncasecmp(ct, "application/json", 16) != 0)
        return false;
    const char *p = ct + 16;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0')
        return true;
    if (*p != ';')
        return false;
    /* parameters: only charset is interpreted */
    while (*p == ';') {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        const char *name = p;
        size_t nlen = strcspn(p, "=;");
        p += nlen;
        if (*p != '=')
            return false;
        p++;
        const char *val = p;
        size_t vlen = strcspn(p, ";");
        p += vlen;
        while (vlen > 0 && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t'))
            vlen--;
        if (vlen >= 2 && val[0] == '"' && val[vlen - 1] == '"') {
            val++;
            vlen -= 2;
        }
        if (nlen == 7 && strncasecmp(name, "charset", 7) == 0 &&
            !((vlen == 5 && strncasecmp(val, "utf-8", 5) == 0) ||
              (vlen == 4 && strncasecmp(val, "utf8", 4) == 0)))
            return false;
    }
    return *p == '\0';
}

static enum request_next refuse(struct gw_request *r, int status, const char *code, const char *fmt,
                                ...) __attribute__((format(printf, 4, 5)));

static enum request_next refuse(struct gw_request *r, int status, const char *code, const char *fmt,
                                ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    STAT_INC(r->ctx->stats, refusals);
    request_reply_refusal(r, status, code, msg);
    return REQUEST_DONE;
}

/* Before the body: what the head alone decides. Sets the body's limit and whether it is read
 * whole (validated endpoints) or streamed through. */
static enum request_next policy_head(struct gw_request *r)
{
    const struct config *cfg = r->cfg;
    const struct route *rt = r->match.route;

    if (strcmp(rt->name, "api.other") == 0 && !cfg->policy.forward_unknown_api)
        return refuse(r, 404, "route.unknown_endpoint",
                      "%.200s is not an Anymate endpoint the gateway knows; the operator can "
                      "forward unknown endpoints with [policy] forward_unknown_api = on",
                      r->path);
    const struct config_endpoint *ce = config_endpoint_find(cfg, rt->name);
    if (ce && !ce->enabled)
        return refuse(r, 404, "route.disabled", "the endpoint %s is disabled on this gateway",
                      rt->name);

    if (rt->upstream == ROUTE_UPSTREAM_API && cfg->policy.require_bearer) {
        const char *auth = request_header(r, "Authorization");
        if (request_header_count(r, "Authorization") != 1 || !policy_bearer_ok(auth)) {
            request_reply_header(r, "WWW-Authenticate", "Bearer");
            return refuse(r, 401, "auth.bearer_required",
                          "an Authorization: Bearer <token> header is required on /api/ "
                          "endpoints (get a token from POST /connect/token)");
        }
    }

    size_t limit = cfg->server.max_body_size;
    if (validated(rt))
        limit = cfg->policy.validated_body_size;
    if (ce && ce->has_max_body_size)
        limit = ce->max_body_size;
    r->body_limit = limit;
    if (r->has_length && r->content_length > limit)
        return refuse(r, ERR(GW_ERR_BODY_TOO_LARGE),
                      "the %s body is %llu bytes; this gateway accepts at most %zu", rt->name,
                      (unsigned long long)r->content_length, limit);

    if (!validated(rt))
        return REQUEST_NEXT; /* streamed through */
    r->body_whole = true;
    const char *ct = request_header(r, "Content-Type");
    if (request_header_count(r, "Content-Type") > 1 || !policy_media_type_json(ct))
        return refuse(r, 415, "request.unsupported_media_type",
                      "%s needs Content-Type: application/json (UTF-8); got %.80s", rt->name,
                      ct ? ct : "none");
    if (!r->has_length && !r->chunked) {
        if (!request_header(r, "Content-Length"))
            return refuse(r, ERR(GW_ERR_LENGTH_REQUIRED),
                          "%s needs a JSON body with Content-Length", rt->name);
        return refuse(r, 400, "request.body_missing", "%s needs a JSON body; it was empty",
                      rt->name);
    }
    return REQUEST_NEXT;
}

/* After the body (read whole): the payload contract and the KPI bounds. */
static enum request_next policy_body(struct gw_request *r)
{
    const struct config *cfg = r->cfg;
    const struct route *rt = r->match.route;
    if (!validated(rt))
        return REQUEST_NEXT;
    if (r->body.len == 0)
        return refuse(r, 400, "request.body_missing", "%s needs a JSON body; it was empty",
                      rt->name);
    struct payload_options opts = {.numeric_string_ids = cfg->policy.numeric_string_ids};
    struct payload_error perr;
    if (rt->body == ROUTE_BODY_RETURN) {
        if (payload_validate_return(r->body.data, r->body.len, &opts, POLICY_MAX_RETURN_ITEMS,
                                    &r->items, &r->nitems, &perr) != 0)
            return refuse(r, perr.status, perr.code, "%s", perr.message);
    } else if (payload_validate(kind_of(rt), r->body.data, r->body.len, &opts, &r->payload,
                                &perr) != 0) {
        return refuse(r, perr.status, perr.code, "%s", perr.message);
    }
    /* The gateway's own bounds, for every task action of a Return (the first refused) */
    size_t n = rt->body == ROUTE_BODY_RETURN ? r->nitems : 1;
    for (size_t i = 0; i < n; i++) {
        const struct payload_result *p = rt->body == ROUTE_BODY_RETURN ? &r->items[i] : &r->payload;
        char item[32] = "";
        if (rt->body == ROUTE_BODY_RETURN)
            snprintf(item, sizeof(item), "item %zu: ", i);
        if (p->seconds_state == PAYLOAD_VALUE &&
            (uint32_t)p->seconds > cfg->policy.max_overwrite_seconds_saved)
            return refuse(r, 422, "policy.seconds_above_limit",
                          "%soverwriteSecondsSaved %d is above this gateway's limit of %u", item,
                          p->seconds, cfg->policy.max_overwrite_seconds_saved);
        if (p->entries_state == PAYLOAD_VALUE &&
            (uint32_t)p->entries > cfg->policy.max_overwrite_entries)
            return refuse(r, 422, "policy.entries_above_limit",
                          "%soverwriteEntries %d is above this gateway's limit of %u", item,
                          p->entries, cfg->policy.max_overwrite_entries);
    }
    r->payload_valid = true;
    return REQUEST_NEXT;
}

int policy_init(void)
{
    if (request_hook_add(REQUEST_PHASE_HEAD, "policy-head", policy_head) != 0 ||
        request_hook_add(REQUEST_PHASE_POLICY, "policy", policy_body) != 0)
        return -1;
    return 0;
}
