/*
 * router: the endpoint table of anymate-api.md §2.3 and the matcher over it.
 */
#include "router.h"

#include <string.h>
#include <strings.h>

#define GET ROUTE_GET
#define POST ROUTE_POST
#define ANY 0xffffffffu

unsigned router_method_bit(const char *method)
{
    static const struct {
        const char *name;
        unsigned bit;
    } m[] = {{"GET", ROUTE_GET},    {"POST", ROUTE_POST},     {"HEAD", ROUTE_HEAD},
             {"PUT", ROUTE_PUT},    {"DELETE", ROUTE_DELETE}, {"OPTIONS", ROUTE_OPTIONS},
             {"PATCH", ROUTE_PATCH}};
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        if (strcmp(method, m[i].name) == 0)
            return m[i].bit;
    return ROUTE_OTHER;
}

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
    {"Return", "/api/Return", POST, "POST", false, ROUTE_UPSTREAM_API, ROUTE_BODY_RETURN,
     ROUTE_AUDIT_TASK_ACTION},
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

_Static_assert(sizeof(table) / sizeof(table[0]) + 1 <= ROUTER_MAX_ROUTES, "ROUTER_MAX_ROUTES");

size_t router_index(const struct route *r)
{
    size_t n = sizeof(table) / sizeof(table[0]);
    return r == &api_other ? n : (size_t)(r - table);
}

const struct route *router_by_index(size_t i)
{
    size_t n = sizeof(table) / sizeof(table[0]);
    return i < n ? &table[i] : i == n ? &api_other : NULL;
}

const struct route *router_find(const char *name)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcasecmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Length of the well-formed UTF-8 sequence at S (N bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

int router_canonical_path(const char *target, char *out, size_t outlen, const char **why)
{
    size_t n = strcspn(target, "?");
    if (memchr(target, '#', n)) {
        *why = "the request target must not contain a fragment";
        return -1;
    }
    if (n + 1 > outlen) {
        *why = "the path is too long";
        return -1;
    }
    /* Decode, keeping %2F encoded. */
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)target[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval((unsigned char)target[i + 1]) : -1;
            int lo = i + 2 < n ? hexval((unsigned char)target[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                *why = "the path has a malformed percent-escape";
                return -1;
            }
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
            if (c == '/') {
                memcpy(out + o, "%2F", 3);
                o += 3;
                continue;
            }
        }
        if (c < 0x20 || c == 0x7f) {
            *why = "the path contains a control character";
            return -1;
        }
        if (c == '\\') {
            *why = "the path contains a backslash";
            return -1;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';

    const unsigned char *p = (const unsigned char *)out;
    for (size_t i = 0; i < o;) {
        size_t l = utf8_len(p + i, o - i);
        if (l == 0) {
            *why = "the path is not valid UTF-8 once percent-decoded";
            return -1;
        }
        i += l;
    }
    if (out[0] != '/') {
        *why = "the request target must be a path starting with /";
        return -1;
    }
    /* Segments: no "." or "..", no empty one except a single trailing slash; ASCII only in
     * the first two. */
    size_t seg = 0;
    for (const char *s = out; *s == '/';) {
        const char *start = s + 1;
        const char *end = strchr(start, '/');
        size_t len = end ? (size_t)(end - start) : strlen(start);
        seg++;
        if (len == 0 && end) {
            *why = "the path has an empty segment (//)";
            return -1;
        }
        if ((len == 1 && start[0] == '.') || (len == 2 && start[0] == '.' && start[1] == '.')) {
            *why = "the path has a dot segment (. or ..)";
            return -1;
        }
        if (seg <= 2)
            for (size_t k = 0; k < len; k++)
                if ((unsigned char)start[k] >= 0x80) {
                    *why = "the endpoint name in the path must be ASCII";
                    return -1;
                }
        if (!end)
            break;
        s = end;
    }
    return 0;
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
