/*
 * router: the endpoint table of anymate-api.md §2.3 and the matcher over it.
 */
#include "router.h"

#include <event2/http.h>
#include <string.h>
#include <strings.h>

#define GET EVHTTP_REQ_GET
#define POST EVHTTP_REQ_POST
#define ANY 0xffffffffu

/* Order matters only for the catch-all, which is last. */
static const struct route table[] = {
    {"Token", "/connect/token", POST, "POST", false, ROUTE_UPSTREAM_AUTH, ROUTE_BODY_FORM,
     ROUTE_AUDIT_COUNT_ONLY},
    {"OkToRun", "/api/OkToRun", GET, "GET", true, ROUTE_UPSTREAM_API, ROUTE_BODY_NONE,
     ROUTE_AUDIT_COUNT_ONLY},
    {"StartOrGetRun", "/api/StartOrGetRun", GET, "GET", true, ROUTE_UPSTREAM_API, ROUTE_BODY_NONE,
     ROUTE_AUDIT_LEARN_RUN},
    {"StartRun", "/api/StartRun", GET, "GET", true, ROUTE_UPSTREAM_API, ROUTE_BODY_NONE,
     ROUTE_AUDIT_LEARN_RUN},
    {"FinishRun", "/api/FinishRun", POST, "POST", false, ROUTE_UPSTREAM_API, ROUTE_BODY_FINISHRUN,
     ROUTE_AUDIT_FINISHRUN},
    {"Failure", "/api/Failure", POST, "POST", false, ROUTE_UPSTREAM_API, ROUTE_BODY_JSON,
     ROUTE_AUDIT_COUNT_ONLY},
    {"GetRules", "/api/GetRules", GET, "GET", true, ROUTE_UPSTREAM_API, ROUTE_BODY_NONE,
     ROUTE_AUDIT_COUNT_ONLY},
    {"TakeNext", "/api/TakeNext", GET, "GET", true, ROUTE_UPSTREAM_API, ROUTE_BODY_NONE,
     ROUTE_AUDIT_LEARN_TASKS},
    {"TakeMany", "/api/TakeMany", GET, "GET", true, ROUTE_UPSTREAM_API, ROUTE_BODY_NONE,
     ROUTE_AUDIT_LEARN_TASKS},
    {"CreateTask", "/api/CreateTask", POST, "POST", true, ROUTE_UPSTREAM_API, ROUTE_BODY_JSON,
     ROUTE_AUDIT_LEARN_TASKS},
    {"CreateTasks", "/api/CreateTasks", POST, "POST", true, ROUTE_UPSTREAM_API, ROUTE_BODY_JSON,
     ROUTE_AUDIT_LEARN_TASKS},
    {"CreateAndTakeTask", "/api/CreateAndTakeTask", POST, "POST", true, ROUTE_UPSTREAM_API,
     ROUTE_BODY_JSON, ROUTE_AUDIT_LEARN_TASKS},
    {"UpdateTask", "/api/UpdateTask", POST, "POST", false, ROUTE_UPSTREAM_API, ROUTE_BODY_JSON,
     ROUTE_AUDIT_COUNT_ONLY},
    {"Solved", "/api/Solved", POST, "POST", false, ROUTE_UPSTREAM_API, ROUTE_BODY_TASK_ACTION,
     ROUTE_AUDIT_TASK_ACTION},
    {"Manual", "/api/Manual", POST, "POST", false, ROUTE_UPSTREAM_API, ROUTE_BODY_TASK_ACTION,
     ROUTE_AUDIT_TASK_ACTION},
    {"Retry", "/api/Retry", POST, "POST", false, ROUTE_UPSTREAM_API, ROUTE_BODY_RETRY_ACTION,
     ROUTE_AUDIT_TASK_ACTION},
    {"Error", "/api/Error", POST, "POST", false, ROUTE_UPSTREAM_API, ROUTE_BODY_TASK_ACTION,
     ROUTE_AUDIT_TASK_ACTION},
    {"SolvedAsync", "/api/SolvedAsync", POST, "POST", false, ROUTE_UPSTREAM_API,
     ROUTE_BODY_TASK_ACTION, ROUTE_AUDIT_TASK_ACTION},
    {"ManualAsync", "/api/ManualAsync", POST, "POST", false, ROUTE_UPSTREAM_API,
     ROUTE_BODY_TASK_ACTION, ROUTE_AUDIT_TASK_ACTION},
    {"RetryAsync", "/api/RetryAsync", POST, "POST", false, ROUTE_UPSTREAM_API,
     ROUTE_BODY_RETRY_ACTION, ROUTE_AUDIT_TASK_ACTION},
    {"ErrorAsync", "/api/ErrorAsync", POST, "POST", false, ROUTE_UPSTREAM_API,
     ROUTE_BODY_TASK_ACTION, ROUTE_AUDIT_TASK_ACTION},
    {"Return", "/api/Return", POST, "POST", false, ROUTE_UPSTREAM_API, ROUTE_BODY_JSON,
     ROUTE_AUDIT_COUNT_ONLY},
};

/* Anything else under /api/: forwarded unchanged (the allow-list of endpoints is policy). */
static const struct route api_other = {
    "api.other",           "/api", ANY, NULL, false, ROUTE_UPSTREAM_API, ROUTE_BODY_ANY,
    ROUTE_AUDIT_COUNT_ONLY};

const struct route *router_table(size_t *count)
{
    *count = sizeof(table) / sizeof(table[0]);
    return table;
}

int router_match(unsigned method, const char *target, struct route_match *m)
{
    memset(m, 0, sizeof(*m));
    size_t len = strcspn(target, "?#");

    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        const struct route *r = &table[i];
        size_t plen = strlen(r->path);
        if (len < plen || strncasecmp(target, r->path, plen) != 0)
            continue;
        const char *rest = target + plen;
        size_t rlen = len - plen;
        if (!r->process_key) {
            if (rlen == 0 || (rlen == 1 && rest[0] == '/'))
                goto found;
            continue;
        }
        /* "/{key}" or "/{key}/", key non-empty and without '/' */
        if (rlen < 2 || rest[0] != '/')
            continue;
        const char *key = rest + 1;
        size_t klen = rlen - 1;
        if (key[klen - 1] == '/')
            klen--;
        if (klen == 0 || memchr(key, '/', klen))
            continue;
        m->key = key;
        m->key_len = klen;
    found:
        m->route = r;
        m->method_ok = (r->methods & method) != 0;
        return 0;
    }
    if (len >= 5 && strncasecmp(target, "/api/", 5) == 0) {
        m->route = &api_other;
        m->method_ok = true;
        return 0;
    }
    return -1;
}
