/*
 * Unit tests for gateway/config.c: the value parsers, every key's bounds and default, the shape
 * of error messages (FILE:LINE, all errors, not only the first), upstream derivation, named
 * sections ([endpoint "NAME"], [process "KEY"]), that the audit database never appears in a
 * message, and that the shipped config/gateway.conf and config/minimal.conf load and document
 * the real defaults.
 *
 * Run from the repository root, or set SRCDIR to it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "router.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KIB UINT64_C(1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)

/* ---------------------------------------------------------------- helpers */

static void print_errors(const struct config_errors *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        print_message("  error[%zu]: %s\n", i, errs->msgs[i]);
}

static void expect_count(const struct config_errors *errs, size_t n)
{
    if (errs->count != n)
        print_errors(errs);
    assert_int_equal(errs->count, n);
}

/* Message I contains NEEDLE. */
static void expect_msg(const struct config_errors *errs, size_t i, const char *needle)
{
    assert_true(i < errs->count);
    if (!strstr(errs->msgs[i], needle)) {
        print_message("  want substring: %s\n", needle);
        print_errors(errs);
        fail();
    }
}

/* Message I is exactly WANT. */
static void expect_exact(const struct config_errors *errs, size_t i, const char *want)
{
    assert_true(i < errs->count);
    if (strcmp(errs->msgs[i], want) != 0) {
        print_message("  want: %s\n", want);
        print_errors(errs);
        fail();
    }
}

/* Load TEXT as "t.conf"; it must succeed. */
static struct config *load_ok(const char *text)
{
    struct config_errors errs = {0};
    struct config *cfg = config_load_string("t.conf", text, &errs);

    if (!cfg || errs.count) {
        print_message("  config:\n%s\n", text);
        print_errors(&errs);
    }
    assert_non_null(cfg);
    expect_count(&errs, 0);
    return cfg;
}

/* Load TEXT as "t.conf"; it must fail. The caller frees ERRS. */
static void load_fail(const char *text, struct config_errors *errs)
{
    struct config *cfg = config_load_string("t.conf", text, errs);

    if (cfg)
        print_message("  config unexpectedly valid:\n%s\n", text);
    assert_null(cfg);
    assert_true(errs->count > 0);
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

static const char *srcdir(void)
{
    const char *d = getenv("SRCDIR");

    return d && *d ? d : ".";
}

/* Read a whole file into a NUL-terminated heap string. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long len;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    buf[len] = '\0';
    fclose(f);
    return buf;
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* ---------------------------------------------------------------- value parsers */

struct num_case {
    const char *in;
    int rc;
    uint64_t out;
};

static const struct num_case size_cases[] = {
    {"0", 0, 0},
    {"16384", 0, 16384},
    {"007", 0, 7},
    {"16k", 0, 16 * KIB},
    {"16K", 0, 16 * KIB},
    {"1m", 0, MIB},
    {"64M", 0, 64 * MIB},
    {"1g", 0, GIB},
    {"2G", 0, 2 * GIB},
    {"18446744073709551615", 0, UINT64_MAX},
    {"17179869183g", 0, UINT64_C(17179869183) * GIB},
    {"", -1, 0},
    {"k", -1, 0},
    {"-1", -1, 0},
    {"+1", -1, 0},
    {"1.5k", -1, 0},
    {"1kb", -1, 0},
    {"1 k", -1, 0},
    {" 1", -1, 0},
    {"1 ", -1, 0},
    {"1t", -1, 0},
    {"0x10", -1, 0},
    {"18446744073709551616", -1, 0}, /* 2^64 */
    {"17179869184g", -1, 0},         /* 2^34 GiB = 2^64 */
};

static void test_parse_size(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(size_cases) / sizeof(size_cases[0]); i++) {
        const struct num_case *c = &size_cases[i];
        uint64_t out = 12345;
        const char *why = NULL;
        int rc = config_parse_size(c->in, &out, &why);
        if (rc != c->rc || (rc == 0 && out != c->out))
            print_message("  size '%s': rc %d, %llu\n", c->in, rc, (unsigned long long)out);
        assert_int_equal(rc, c->rc);
        if (rc == 0)
            assert_int_equal(out, c->out);
        else
            assert_non_null(why);
    }
}

static const struct num_case duration_cases[] = {
    {"0", 0, 0},
    {"0ms", 0, 0},
    {"250ms", 0, 250},
    {"1MS", 0, 1},
    {"5", 0, 5000},
    {"5s", 0, 5000},
    {"5S", 0, 5000},
    {"2m", 0, 120000},
    {"1h", 0, 3600000},
    {"24H", 0, 86400000},
    {"5124095576030h", 0, UINT64_C(5124095576030) * 3600000},
    {"", -1, 0},
    {"ms", -1, 0},
    {"s", -1, 0},
    {"5d", -1, 0},
    {"-5s", -1, 0},
    {"+5s", -1, 0},
    {"5 s", -1, 0},
    {"1.5s", -1, 0},
    {"5sec", -1, 0},
    {"5mss", -1, 0},
    {"18446744073709551615", -1, 0}, /* bare seconds: overflows as milliseconds */
    {"5124095576031h", -1, 0},
    {"99999999999999999999ms", -1, 0},
};

static void test_parse_duration(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(duration_cases) / sizeof(duration_cases[0]); i++) {
        const struct num_case *c = &duration_cases[i];
        uint64_t out = 12345;
        const char *why = NULL;
        int rc = config_parse_duration_ms(c->in, &out, &why);
        if (rc != c->rc || (rc == 0 && out != c->out))
            print_message("  duration '%s': rc %d, %llu\n", c->in, rc, (unsigned long long)out);
        assert_int_equal(rc, c->rc);
        if (rc == 0)
            assert_int_equal(out, c->out);
        else
            assert_non_null(why);
    }
}

static void test_parse_bool(void **state)
{
    static const char *const yes[] = {"on", "ON", "yes", "Yes", "true", "TRUE", "1"};
    static const char *const no[] = {"off", "Off", "no", "NO", "false", "False", "0"};
    static const char *const bad[] = {"", "2", "onn", "y", "n", "enable", "01", " on"};
    const char *why;
    bool b;

    (void)state;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        b = false;
        assert_int_equal(config_parse_bool(yes[i], &b, &why), 0);
        assert_true(b);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        b = true;
        assert_int_equal(config_parse_bool(no[i], &b, &why), 0);
        assert_false(b);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        assert_int_equal(config_parse_bool(bad[i], &b, &why), -1);
        assert_string_equal(why, "not a boolean");
    }
}

struct hostport_case {
    const char *in;
    int rc;
    const char *host; /* or a substring of why */
    uint16_t port;
};

static const struct hostport_case hostport_cases[] = {
    {"127.0.0.1:8080", 0, "127.0.0.1", 8080},
    {"0.0.0.0:80", 0, "0.0.0.0", 80},
    {"localhost:0", 0, "localhost", 0},
    {"gw.example.com:65535", 0, "gw.example.com", 65535},
    {"[::1]:8080", 0, "::1", 8080},
    {"[::]:0", 0, "::", 0},
    {"[2001:db8::1:2]:1", 0, "2001:db8::1:2", 1},
    {"", -1, "empty", 0},
    {":80", -1, "missing host", 0},
    {"host", -1, "missing ':PORT'", 0},
    {"host:", -1, "port is not a number", 0},
    {"host:65536", -1, "port out of range (0..65535)", 0},
    {"host:-1", -1, "port is not a number", 0},
    {"host:+80", -1, "port is not a number", 0},
    {"host:8a", -1, "port is not a number", 0},
    {"host:80:81", -1, "brackets", 0},
    {"::1:80", -1, "brackets", 0},
    {"[::1]", -1, "missing ':PORT'", 0},
    {"[::1]80", -1, "expected ':PORT'", 0},
    {"[::1:80", -1, "missing ']'", 0},
    {"[]:80", -1, "invalid IPv6", 0},
    {"[zz::1]:80", -1, "invalid IPv6", 0},
    {"[127.0.0.1]:80", -1, "invalid IPv6", 0},
    {"ho st:80", -1, "invalid host name", 0},
    {"http://host:80", -1, "a URL, not HOST:PORT", 0},
    {"host/x:80", -1, "invalid host name", 0},
};

static void test_parse_hostport(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(hostport_cases) / sizeof(hostport_cases[0]); i++) {
        const struct hostport_case *c = &hostport_cases[i];
        struct config_hostport hp = {NULL, 7};
        const char *why = NULL;
        int rc = config_parse_hostport(c->in, &hp, &why);
        if (rc != c->rc || (rc && !strstr(why, c->host)))
            print_message("  hostport '%s': %s\n", c->in, rc ? why : "ok");
        assert_int_equal(rc, c->rc);
        if (rc == 0) {
            assert_string_equal(hp.host, c->host);
            assert_int_equal(hp.port, c->port);
            free(hp.host);
        } else {
            assert_null(hp.host);
            assert_non_null(strstr(why, c->host));
        }
    }
}

struct url_case {
    const char *in;
    int rc;
    const char *host; /* or a substring of why */
    uint16_t port;
    bool tls;
};

static const struct url_case url_cases[] = {
    {"https://acme.anymate.app", 0, "acme.anymate.app", 443, true},
    {"https://acme.anymate.app/", 0, "acme.anymate.app", 443, true},
    {"http://127.0.0.1", 0, "127.0.0.1", 80, false},
    {"http://localhost:8080/", 0, "localhost", 8080, false},
    {"HTTPS://X.Example:1", 0, "X.Example", 1, true},
    {"https://[::1]:8443", 0, "::1", 8443, true},
    {"http://[2001:db8::1]/", 0, "2001:db8::1", 80, false},
    {"", -1, "empty", 0, false},
    {"acme.anymate.app", -1, "missing scheme", 0, false},
    {"ftp://acme", -1, "unsupported scheme", 0, false},
    {"https://", -1, "missing host", 0, false},
    {"https:///", -1, "missing host", 0, false},
    {"https://:443", -1, "missing host", 0, false},
    {"https://a/foo", -1, "must not have a path", 0, false},
    {"https://a//", -1, "must not have a path", 0, false},
    {"https://a:8080/x:y", -1, "must not have a path", 0, false},
    {"https://a?x=1", -1, "must not have a query", 0, false},
    {"https://a/?x=1", -1, "must not have a query", 0, false},
    {"https://a#top", -1, "must not have a fragment", 0, false},
    {"https://u@a", -1, "userinfo", 0, false},
    {"https://u:p@a/", -1, "userinfo", 0, false},
    {"https://a:0", -1, "port out of range (1..65535)", 0, false},
    {"https://a:65536", -1, "port out of range (1..65535)", 0, false},
    {"https://a:123456789", -1, "port out of range (1..65535)", 0, false},
    {"https://a:", -1, "port is not a number", 0, false},
    {"https://a:x", -1, "port is not a number", 0, false},
    {"https://::1", -1, "brackets", 0, false},
    {"https://[::1", -1, "missing ']'", 0, false},
    {"https://a b", -1, "invalid host name", 0, false},
};

static void test_parse_url(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(url_cases) / sizeof(url_cases[0]); i++) {
        const struct url_case *c = &url_cases[i];
        struct config_url u = {0};
        const char *why = NULL;
        int rc = config_parse_url(c->in, &u, &why);
        if (rc != c->rc || (rc && !strstr(why, c->host)))
            print_message("  url '%s': %s\n", c->in, rc ? why : "ok");
        assert_int_equal(rc, c->rc);
        if (rc == 0) {
            assert_string_equal(u.text, c->in);
            assert_string_equal(u.host, c->host);
            assert_int_equal(u.port, c->port);
            assert_int_equal(u.tls, c->tls);
        } else {
            assert_null(u.text);
            assert_null(u.host);
            assert_non_null(strstr(why, c->host));
        }
        config_url_clear(&u);
        assert_null(u.text);
    }
    config_url_clear(NULL);
}

/* ---------------------------------------------------------------- defaults and bounds */

static void test_defaults(void **state)
{
    struct config *cfg = load_ok("[upstream]\nclient_id = acme\n");

    (void)state;
    assert_string_equal(cfg->path, "t.conf");
    assert_string_equal(cfg->server.listen.host, "127.0.0.1");
    assert_int_equal(cfg->server.listen.port, 8080);
    assert_int_equal(cfg->server.threads, online_cpus());
    assert_int_equal(cfg->server.max_header_size, 16 * KIB);
    assert_int_equal(cfg->server.max_body_size, MIB);
    assert_int_equal(cfg->server.client_timeout_ms, 30000);
    assert_int_equal(cfg->server.request_timeout_ms, 60000);
    assert_int_equal(cfg->server.shutdown_timeout_ms, 10000);
    assert_false(cfg->server.x_forwarded_for);
    assert_int_equal(cfg->server.client_header_timeout_ms, 10000);
    assert_int_equal(cfg->server.max_connections, 10000);
    assert_string_equal(cfg->admin.listen.host, "127.0.0.1");
    assert_int_equal(cfg->admin.listen.port, 9090);
    assert_string_equal(cfg->upstream.client_id, "acme");
    assert_string_equal(cfg->upstream.api.text, "https://acme.anymate.app");
    assert_string_equal(cfg->upstream.auth.text, "https://acme.auth.anymate.app");
    assert_null(cfg->upstream.ca_file);
    assert_int_equal(cfg->upstream.connect_timeout_ms, 5000);
    assert_int_equal(cfg->upstream.tls_handshake_timeout_ms, 5000);
    assert_int_equal(cfg->upstream.response_timeout_ms, 30000);
    assert_int_equal(cfg->upstream.idle_timeout_ms, 30000);
    assert_int_equal(cfg->upstream.pool_size, 64);
    assert_int_equal(cfg->upstream.max_requests_per_conn, 1000);
    assert_int_equal(cfg->upstream.queue_size, 0);
    assert_int_equal(cfg->upstream.pool_max, 256);
    assert_int_equal(cfg->upstream.queue_timeout_ms, 10000);
    assert_int_equal(cfg->server.client_body_timeout_ms, 30000);
    assert_int_equal(cfg->server.max_buffered_body, 256 * MIB);
    assert_null(cfg->server.tls_cert);
    assert_null(cfg->server.tls_key);
    assert_int_equal(cfg->upstream.dns_refresh_ms, 60000);
    assert_int_equal(cfg->log.level, LOG_LEVEL_INFO);
    assert_true(cfg->log.access_log);

    assert_true(cfg->policy.require_bearer);
    assert_false(cfg->policy.forward_unknown_api);
    assert_false(cfg->policy.numeric_string_ids);
    assert_int_equal(cfg->policy.max_overwrite_seconds_saved, 2147483647);
    assert_int_equal(cfg->policy.max_overwrite_entries, 2147483647);
    assert_int_equal(cfg->policy.validated_body_size, 64 * KIB);

    assert_null(cfg->audit.database);
    assert_false(cfg->audit.auto_migrate);
    assert_int_equal(cfg->audit.commit_timeout_ms, 2000);
    assert_int_equal(cfg->audit.batch_size, 512);
    assert_null(cfg->audit.spool_dir);
    assert_int_equal(cfg->audit.spool_max_bytes, 1024 * 1024 * 1024);
    assert_int_equal(cfg->audit.spool_replay_rate, 5000);
    assert_int_equal(cfg->audit.refusal_records_per_second, 100);
    assert_int_equal(cfg->audit.batch_delay_ms, 0);
    assert_int_equal(cfg->audit.queue_size, 10000);
    assert_int_equal(cfg->audit.pipeline_depth, 4);
    assert_non_null(cfg->audit.instance); /* the host name: test_audit_instance */
    assert_int_equal(cfg->audit.reconnect_max_ms, 5000);
    assert_int_equal(cfg->audit.settings_refresh_ms, 30000);
    assert_int_equal(cfg->audit.partitions_ahead, 7);
    assert_int_equal(cfg->audit.map_cache_size, 100000);

    assert_int_equal(cfg->nendpoints, 0);
    assert_null(cfg->endpoints);
    assert_int_equal(cfg->nprocesses, 0);
    assert_null(cfg->processes);
    assert_null(config_endpoint_find(cfg, "FinishRun"));
    assert_null(config_process_find(cfg, "invoice-bot"));
    config_unref(cfg);
}

#define ANY UINT64_MAX /* the value is not checked (threads = 0 resolves to the CPU count) */
#define INT32_MAX_S "2147483647"
#define INT32_MAX_V UINT64_C(2147483647)

/* Where a bound case's field is: struct config, or the first named section's object. */
enum field_base { IN_CONFIG, IN_ENDPOINT, IN_PROCESS };

#define AT(m) offsetof(struct config, m), sizeof(((struct config *)0)->m), IN_CONFIG
#define EP_AT(m)                                                                                   \
    offsetof(struct config_endpoint, m), sizeof(((struct config_endpoint *)0)->m), IN_ENDPOINT
#define PR_AT(m)                                                                                   \
    offsetof(struct config_process, m), sizeof(((struct config_process *)0)->m), IN_PROCESS

struct bound_case {
    const char *section, *key;
    const char *min, *max;     /* accepted */
    uint64_t min_v, max_v;     /* stored */
    const char *below, *above; /* rejected as out of range; NULL: cannot be written */
    const char *range;         /* how the message states the range */
    size_t offset, size;
    enum field_base base;
};

static const struct bound_case bound_cases[] = {
    {"server", "threads", "0", "256", ANY, 256, NULL, "257",
     "an integer 0..256, 0 = one per "
     "CPU the process may use",
     AT(server.threads)},
    {"server", "max_header_size", "1k", "1m", KIB, MIB, "1023", "1048577", "a size 1k..1m",
     AT(server.max_header_size)},
    {"server", "max_body_size", "1024", "64m", KIB, 64 * MIB, "1023", "67108865", "a size 1k..64m",
     AT(server.max_body_size)},
    {"server", "client_timeout", "100ms", "1h", 100, 3600000, "99ms", "3600001ms",
     "a duration 100ms..1h", AT(server.client_timeout_ms)},
    {"server", "request_timeout", "100ms", "60m", 100, 3600000, "99ms", "3601s",
     "a duration 100ms..1h", AT(server.request_timeout_ms)},
    {"server", "shutdown_timeout", "0", "10m", 0, 600000, NULL, "600001ms", "a duration 0..10m",
     AT(server.shutdown_timeout_ms)},
    {"upstream", "connect_timeout", "10ms", "5m", 10, 300000, "9ms", "300001ms",
     "a duration 10ms..5m", AT(upstream.connect_timeout_ms)},
    {"upstream", "tls_handshake_timeout", "10ms", "300s", 10, 300000, "9ms", "6m",
     "a duration 10ms..5m", AT(upstream.tls_handshake_timeout_ms)},
    {"upstream", "response_timeout", "100ms", "1h", 100, 3600000, "99ms", "2h",
     "a duration 100ms..1h", AT(upstream.response_timeout_ms)},
    {"upstream", "idle_timeout", "1", "1h", 1000, 3600000, "999ms", "3600001ms",
     "a duration 1s..1h", AT(upstream.idle_timeout_ms)},
    {"upstream", "pool_size", "1", "10000", 1, 10000, "0", "10001", "an integer 1..10000",
     AT(upstream.pool_size)},
    {"upstream", "max_requests_per_conn", "1", "1000000", 1, 1000000, "0", "1000001",
     "an integer 1..1000000", AT(upstream.max_requests_per_conn)},
    {"upstream", "queue_size", "0", "1000000", 0, 1000000, NULL, "1000001", "an integer 0..1000000",
     AT(upstream.queue_size)},
    {"upstream", "pool_max", "1", "100000", 1, 100000, "0", "100001", "an integer 1..100000",
     AT(upstream.pool_max)},
    {"upstream", "queue_timeout", "10ms", "1h", 10, 3600000, "9ms", "3600001ms",
     "a duration 10ms..1h", AT(upstream.queue_timeout_ms)},
    {"server", "client_body_timeout", "100ms", "1h", 100, 3600000, "99ms", "3600001ms",
     "a duration 100ms..1h", AT(server.client_body_timeout_ms)},
    {"upstream", "dns_refresh", "1s", "24h", 1000, 86400000, "999ms", "86400001ms",
     "a duration 1s..24h", AT(upstream.dns_refresh_ms)},

    {"policy", "max_overwrite_seconds_saved", "0", INT32_MAX_S, 0, INT32_MAX_V, NULL, "2147483648",
     "an integer 0..2147483647", AT(policy.max_overwrite_seconds_saved)},
    {"policy", "max_overwrite_entries", "0", INT32_MAX_S, 0, INT32_MAX_V, NULL, "2147483648",
     "an integer 0..2147483647", AT(policy.max_overwrite_entries)},
    {"policy", "validated_body_size", "1k", "64m", KIB, 64 * MIB, "1023", "65537k",
     "a size 1k..64m", AT(policy.validated_body_size)},

    {"audit", "commit_timeout", "10ms", "60s", 10, 60000, "9ms", "60001ms", "a duration 10ms..1m",
     AT(audit.commit_timeout_ms)},
    {"audit", "batch_size", "1", "10000", 1, 10000, "0", "10001", "an integer 1..10000",
     AT(audit.batch_size)},
    {"audit", "batch_delay", "0", "1s", 0, 1000, NULL, "1001ms", "a duration 0..1s",
     AT(audit.batch_delay_ms)},
    {"audit", "pipeline_depth", "1", "16", 1, 16, "0", "17", "an integer 1..16",
     AT(audit.pipeline_depth)},
    {"audit", "queue_size", "1", "1000000", 1, 1000000, "0", "1000001", "an integer 1..1000000",
     AT(audit.queue_size)},
    {"audit", "reconnect_max", "100ms", "5m", 100, 300000, "99ms", "301s", "a duration 100ms..5m",
     AT(audit.reconnect_max_ms)},
    {"audit", "settings_refresh", "1s", "1h", 1000, 3600000, "999ms", "61m", "a duration 1s..1h",
     AT(audit.settings_refresh_ms)},
    {"audit", "partitions_ahead", "1", "366", 1, 366, "0", "367", "an integer 1..366",
     AT(audit.partitions_ahead)},
    {"audit", "map_cache_size", "0", "100000000", 0, 100000000, NULL, "100000001",
     "an integer 0..100000000", AT(audit.map_cache_size)},

    {"endpoint \"FinishRun\"", "max_body_size", "1", "64m", 1, 64 * MIB, "0", "67108865",
     "a size 1..64m", EP_AT(max_body_size)},
    {"process \"p\"", "seconds_per_run", "0", INT32_MAX_S, 0, INT32_MAX_V, NULL, "2147483648",
     "an integer 0..2147483647", PR_AT(seconds_per_run)},
    {"process \"p\"", "seconds_per_task", "0", INT32_MAX_S, 0, INT32_MAX_V, NULL, "2147483648",
     "an integer 0..2147483647", PR_AT(seconds_per_task)},
    {"process \"p\"", "default_entries", "0", INT32_MAX_S, 0, INT32_MAX_V, NULL, "2147483648",
     "an integer 0..2147483647", PR_AT(default_entries)},
    {"process \"p\"", "seconds_per_entry", "0", INT32_MAX_S, 0, INT32_MAX_V, NULL, "2147483648",
     "an integer 0..2147483647", PR_AT(seconds_per_entry)},
    {"process \"p\"", "max_overwrite_seconds_saved", "0", INT32_MAX_S, 0, INT32_MAX_V, NULL,
     "4294967296", "an integer 0..2147483647", PR_AT(max_overwrite_seconds_saved)},
    {"process \"p\"", "max_overwrite_entries", "0", INT32_MAX_S, 0, INT32_MAX_V, NULL,
     "99999999999", "an integer 0..2147483647", PR_AT(max_overwrite_entries)},
};

static uint64_t read_field(const struct config *cfg, const struct bound_case *c)
{
    const char *p = (const char *)cfg;
    size_t size = c->size;
    uint32_t x;
    size_t y;

    if (c->base == IN_ENDPOINT) {
        assert_int_equal(cfg->nendpoints, 1);
        assert_true(cfg->endpoints[0].has_max_body_size);
        p = (const char *)&cfg->endpoints[0];
    } else if (c->base == IN_PROCESS) {
        assert_int_equal(cfg->nprocesses, 1);
        p = (const char *)&cfg->processes[0];
    }
    p += c->offset;

    if (size == sizeof(uint32_t)) {
        memcpy(&x, p, sizeof(x));
        return x;
    }
    assert_int_equal(size, sizeof(size_t));
    memcpy(&y, p, sizeof(y));
    return y;
}

static void bound_text(char *buf, size_t size, const struct bound_case *c, const char *value)
{
    /*
     * The key is on line 4; a second [upstream] header is allowed. The largest server body
     * limit lets the other body limits reach their own maximum.
     */
    snprintf(buf, size, "[upstream]\nclient_id = acme\n[%s]\n%s = %s\n%s", c->section, c->key,
             value, strcmp(c->section, "server") ? "[server]\nmax_body_size = 64m\n" : "");
}

static void test_bounds(void **state)
{
    char text[256], want[512];

    (void)state;
    for (size_t i = 0; i < sizeof(bound_cases) / sizeof(bound_cases[0]); i++) {
        const struct bound_case *c = &bound_cases[i];
        const char *accepted[2] = {c->min, c->max};
        const char *rejected[2] = {c->below, c->above};
        uint64_t stored[2] = {c->min_v, c->max_v};

        for (int j = 0; j < 2; j++) {
            struct config *cfg;
            bound_text(text, sizeof(text), c, accepted[j]);
            cfg = load_ok(text);
            if (stored[j] != ANY)
                assert_int_equal(read_field(cfg, c), stored[j]);
            config_unref(cfg);
        }
        for (int j = 0; j < 2; j++) {
            struct config_errors errs = {0};
            if (!rejected[j])
                continue;
            bound_text(text, sizeof(text), c, rejected[j]);
            load_fail(text, &errs);
            expect_count(&errs, 1);
            snprintf(want, sizeof(want), "t.conf:4: [%s] %s: '%s': out of range (expected %s",
                     c->section, c->key, rejected[j], c->range);
            expect_msg(&errs, 0, want);
            config_errors_free(&errs);
        }
    }
}

/* A value that does not parse, for each type; the whole message where it matters. */
struct bad_case {
    const char *section, *line, *msg;
};

static const struct bad_case bad_cases[] = {
    {"server", "threads = 300",
     "t.conf:4: [server] threads: '300': out of range (expected an integer 0..256, 0 = one per "
     "CPU the process may use)"},
    {"server", "threads = -1", "t.conf:4: [server] threads: '-1': not a number (expected"},
    {"server", "threads = 4 # four",
     "t.conf:4: [server] threads: '4 # four': not a whole non-negative number (expected an "
     "integer 0..256, 0 = one per CPU the process may use; inline comments start with ' ;', not "
     "'#')"},
    {"upstream", "pool_size = 1.5", "[upstream] pool_size: '1.5': not a whole non-negative"},
    {"upstream", "pool_size = ten", "[upstream] pool_size: 'ten': not a number"},
    {"upstream", "queue_size = 99999999999999999999", "'99999999999999999999': number too large"},
    {"server", "max_body_size = 100g",
     "t.conf:4: [server] max_body_size: '100g': out of range (expected a size 1k..64m; bytes, or "
     "with suffix k, m or g)"},
    {"server", "max_body_size = 1x", "[server] max_body_size: '1x': unknown unit (use k, m or g"},
    {"server", "max_header_size = 16 k", "[server] max_header_size: '16 k': unknown unit"},
    {"server", "client_timeout = 5d",
     "t.conf:4: [server] client_timeout: '5d': unknown unit (use ms, s, m or h; a bare number is "
     "seconds) (expected a duration 100ms..1h; with suffix ms, s, m or h, bare number = "
     "seconds)"},
    {"server", "request_timeout = soon", "[server] request_timeout: 'soon': not a number"},
    {"server", "x_forwarded_for = maybe",
     "t.conf:4: [server] x_forwarded_for: 'maybe': not a boolean (expected on/off, yes/no, "
     "true/false or 1/0)"},
    {"log", "access_log = 2", "[log] access_log: '2': not a boolean"},
    {"log", "level = verbose",
     "t.conf:4: [log] level: 'verbose': unknown value (expected one of debug, info, warn, error)"},
    {"server", "listen = 8080",
     "t.conf:4: [server] listen: '8080': missing ':PORT' (expected HOST:PORT or [IPV6]:PORT, "
     "port 0..65535)"},
    {"admin", "listen = ::1:9090", "[admin] listen: '::1:9090': an IPv6 address must be in"},
    {"admin", "listen = 127.0.0.1:99999", "port out of range (0..65535)"},
    {"upstream", "api_url = https://acme.anymate.app/foo",
     "t.conf:4: [upstream] api_url: 'https://acme.anymate.app/foo': must not have a path: "
     "'/foo' (expected http(s)://HOST[:PORT] with at most a trailing '/', no path, query or "
     "user; default https://CLIENT_ID.anymate.app)"},
    {"upstream", "auth_url = https://a.b/?x=1",
     "[upstream] auth_url: 'https://a.b/?x=1': must "
     "not have a query: '?x=1'"},
    {"upstream", "auth_url = ftp://a.b", "unsupported scheme (use http:// or https://)"},
    {"upstream", "api_url = https://u:pw@a.b", "must not have userinfo"},
    {"upstream", "threads = 1",
     "t.conf:4: [upstream] threads: unknown key in this section (it "
     "belongs in [server])"},
    {"server", "max_body_size =",
     "t.conf:4: [server] max_body_size: missing value (expected a size 1k..64m; bytes, or with "
     "suffix k, m or g; comment the line out for the default)"},

    {"policy", "require_bearer = sometimes",
     "t.conf:4: [policy] require_bearer: 'sometimes': not a boolean (expected on/off"},
    {"policy", "forward_unknown_api = 2", "[policy] forward_unknown_api: '2': not a boolean"},
    {"policy", "numeric_string_ids = y", "[policy] numeric_string_ids: 'y': not a boolean"},
    {"policy", "max_overwrite_entries = -1",
     "t.conf:4: [policy] max_overwrite_entries: '-1': not a number (expected an integer "
     "0..2147483647)"},
    {"policy", "max_overwrite_seconds_saved = 1e6",
     "[policy] max_overwrite_seconds_saved: '1e6': not a whole non-negative number"},
    {"policy", "validated_body_size = 64kb",
     "[policy] validated_body_size: '64kb': unknown unit (use k, m or g"},
    {"audit", "auto_migrate = later", "t.conf:4: [audit] auto_migrate: 'later': not a boolean"},
    {"audit", "commit_timeout = 2 s", "[audit] commit_timeout: '2 s': unknown unit"},
    {"audit", "batch_delay = 1.5ms", "[audit] batch_delay: '1.5ms': unknown unit"},
    {"audit", "batch_size = many", "[audit] batch_size: 'many': not a number"},
    {"audit", "map_cache_size = 1k", "[audit] map_cache_size: '1k': not a whole non-negative"},
    {"audit", "instance =",
     "t.conf:4: [audit] instance: missing value (expected a name of 1..128 characters for this "
     "gateway in audit records; default: the host name; comment the line out)"},
    {"audit", "database =",
     "t.conf:4: [audit] database: missing value (expected a libpq connection string (host=... "
     "dbname=...) or a postgresql:// URI, 1..4096 characters; leave unset to turn the audit "
     "ledger off; comment the line out)"},
    {"endpoint \"Solved\"", "enabled = nope",
     "t.conf:4: [endpoint \"Solved\"] enabled: 'nope': not a boolean (expected on/off"},
    {"endpoint \"Solved\"", "max_body_size = 1x",
     "t.conf:4: [endpoint \"Solved\"] max_body_size: '1x': unknown unit"},
    {"endpoint \"Solved\"", "enabled =",
     "t.conf:4: [endpoint \"Solved\"] enabled: missing value (expected on/off, yes/no, "
     "true/false or 1/0; comment the line out for the default)"},
    {"process \"p\"", "tasks_enabled = 01",
     "t.conf:4: [process \"p\"] tasks_enabled: '01': not "
     "a boolean"},
    {"process \"p\"", "advanced_mode = enabled", "[process \"p\"] advanced_mode: 'enabled': not"},
    {"process \"p\"", "seconds_per_run = -5",
     "t.conf:4: [process \"p\"] seconds_per_run: '-5': not a number (expected an integer "
     "0..2147483647)"},
    {"process \"p\"", "default_entries = 1 # one",
     "[process \"p\"] default_entries: '1 # one': not a whole non-negative number (expected an "
     "integer 0..2147483647; inline comments start with ' ;', not '#')"},
    {"process \"p\"", "seconds_per_entry = 99999999999999999999", "number too large"},
    {"process \"p\"", "seconds_per_task =",
     "t.conf:4: [process \"p\"] seconds_per_task: missing value (expected an integer "
     "0..2147483647; comment the line out)"},
};

static void test_bad_values(void **state)
{
    char text[512];

    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *c = &bad_cases[i];
        struct config_errors errs = {0};
        snprintf(text, sizeof(text), "[upstream]\nclient_id = acme\n[%s]\n%s\n", c->section,
                 c->line);
        load_fail(text, &errs);
        expect_count(&errs, 1);
        expect_msg(&errs, 0, c->msg);
        config_errors_free(&errs);
    }
}

static void test_log_level(void **state)
{
    static const struct {
        const char *in;
        int level;
    } cases[] = {{"debug", LOG_LEVEL_DEBUG},
                 {"INFO", LOG_LEVEL_INFO},
                 {"warn", LOG_LEVEL_WARN},
                 {"Error", LOG_LEVEL_ERROR}};
    char text[128];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct config *cfg;
        snprintf(text, sizeof(text), "[upstream]\nclient_id = a\n[log]\nlevel = %s\n", cases[i].in);
        cfg = load_ok(text);
        assert_int_equal(cfg->log.level, cases[i].level);
        config_unref(cfg);
    }
}

static void test_bools_and_listen(void **state)
{
    struct config *cfg = load_ok("[server]\n"
                                 "x_forwarded_for = yes\n"
                                 "listen = [::1]:0\n"
                                 "threads = 3\n"
                                 "[admin]\n"
                                 "listen = 0.0.0.0:19090\n"
                                 "[log]\n"
                                 "access_log = FALSE\n"
                                 "[upstream]\n"
                                 "client_id = acme\n");

    (void)state;
    assert_true(cfg->server.x_forwarded_for);
    assert_string_equal(cfg->server.listen.host, "::1");
    assert_int_equal(cfg->server.listen.port, 0);
    assert_int_equal(cfg->server.threads, 3);
    assert_string_equal(cfg->admin.listen.host, "0.0.0.0");
    assert_int_equal(cfg->admin.listen.port, 19090);
    assert_false(cfg->log.access_log);
    config_unref(cfg);
}

struct id_case {
    const char *id;
    const char *why; /* NULL: valid */
};

static void test_client_id(void **state)
{
    static const char id63[] = "a23456789012345678901234567890123456789012345678901234567890123";
    static const char id64[] = "a234567890123456789012345678901234567890123456789012345678901234";
    static const struct id_case cases[] = {
        {"acme", NULL},
        {"a", NULL},
        {"Acme-Corp-2", NULL},
        {"0", NULL},
        {id63, NULL},
        {id64, "too long"},
        {"-acme", "must not start or end with '-'"},
        {"acme-", "must not start or end with '-'"},
        {"ac_me", "invalid character (letters, digits and '-' only)"},
        {"acme.corp", "invalid character (letters, digits and '-' only)"},
        {"ac me", "invalid character (letters, digits and '-' only)"},
    };
    char text[256], want[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "[upstream]\nclient_id = %s\n", cases[i].id);
        if (!cases[i].why) {
            struct config *cfg = load_ok(text);
            assert_string_equal(cfg->upstream.client_id, cases[i].id);
            snprintf(want, sizeof(want), "https://%s.anymate.app", cases[i].id);
            assert_string_equal(cfg->upstream.api.text, want);
            config_unref(cfg);
        } else {
            struct config_errors errs = {0};
            load_fail(text, &errs);
            expect_count(&errs, 1); /* no "client_id missing" on top */
            snprintf(want, sizeof(want),
                     "t.conf:2: [upstream] client_id: '%s': %s (expected "
                     "your Anymate client id: 1..63 letters",
                     cases[i].id, cases[i].why);
            expect_msg(&errs, 0, want);
            config_errors_free(&errs);
        }
    }
}

/* ---------------------------------------------------------------- file structure */

static void test_unknown_section(void **state)
{
    struct config_errors errs = {0};

    (void)state;
    load_fail("[upstream]\nclient_id = acme\n[serverr]\nlisten = 1.2.3.4:80\nthreads = x\n"
              "[server]\nthreads = 2\n",
              &errs);
    /* Keys under the unknown section are not reported again. */
    expect_count(&errs, 1);
    expect_exact(&errs, 0,
                 "t.conf:3: [serverr]: unknown section (expected one of [server], [admin], "
                 "[upstream], [policy], [audit], [log], [endpoint \"NAME\"], [process \"KEY\"])");
    config_errors_free(&errs);

    load_fail("[upstream]\nclient_id = acme\n[]\n", &errs);
    expect_count(&errs, 1);
    expect_msg(&errs, 0, "t.conf:3: []: unknown section");
    config_errors_free(&errs);
}

static void test_unknown_key(void **state)
{
    struct config_errors errs = {0};

    (void)state;
    load_fail("[upstream]\nclient_id = acme\n[server]\nlistn = 127.0.0.1:80\n", &errs);
    expect_count(&errs, 1);
    expect_exact(&errs, 0,
                 "t.conf:4: [server] listn: unknown key (expected one of: listen, threads, "
                 "max_header_size, max_body_size, client_timeout, request_timeout, "
                 "shutdown_timeout, x_forwarded_for, client_header_timeout, max_connections, "
                 "client_body_timeout, max_buffered_body, tls_cert, tls_key)");
    config_errors_free(&errs);

    /* Keys are case-sensitive. */
    load_fail("[upstream]\nClient_ID = acme\n", &errs);
    expect_msg(&errs, 0,
               "t.conf:2: [upstream] Client_ID: unknown key (expected one of: "
               "client_id, api_url, auth_url, ca_file,");
    config_errors_free(&errs);
}

static void test_duplicate_key(void **state)
{
    struct config_errors errs = {0};

    (void)state;
    load_fail("[upstream]\nclient_id = acme\n[server]\nthreads = 1\n\nthreads = 2\n", &errs);
    expect_count(&errs, 1);
    expect_exact(&errs, 0, "t.conf:6: [server] threads: duplicate key (first set on line 4)");
    config_errors_free(&errs);

    /* Across two headers of the same section, and even when the values agree. */
    load_fail("[upstream]\nclient_id = acme\n[log]\nlevel = info\n[upstream]\nclient_id = acme\n",
              &errs);
    expect_count(&errs, 1);
    expect_exact(&errs, 0, "t.conf:6: [upstream] client_id: duplicate key (first set on line 2)");
    config_errors_free(&errs);
}

static void test_key_outside_section(void **state)
{
    struct config_errors errs = {0};

    (void)state;
    load_fail("threads = 4\n[upstream]\nclient_id = acme\n", &errs);
    expect_count(&errs, 1);
    expect_exact(&errs, 0,
                 "t.conf:1: threads: key outside any section (expected a [section] header above "
                 "it)");
    config_errors_free(&errs);
}

static void test_syntax_errors(void **state)
{
    static const struct {
        const char *line, *msg;
    } cases[] = {
        {"[server", "t.conf:3: syntax error: '[server': missing ']' at the end of the section "
                    "header"},
        {"[server ; comment]", "t.conf:3: syntax error: '[server ; comment]': missing ']'"},
        {"[server] threads = 1", "t.conf:3: syntax error: '[server] threads = 1': unexpected text "
                                 "after ']'"},
        {"this is not ini", "t.conf:3: syntax error: 'this is not ini' is not 'key = value', a "
                            "[section] header or a comment"},
        {"threads ; = 4", "t.conf:3: syntax error: 'threads ; = 4' is not 'key = value'"},
        {"= 4", "t.conf:3: syntax error: missing key name before '='"},
    };
    char text[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct config_errors errs = {0};
        /* The key after the bad line is skipped (bad header) or fine: one error either way. */
        snprintf(text, sizeof(text), "[upstream]\nclient_id = acme\n%s\nthreads = 4\n",
                 cases[i].line);
        load_fail(text, &errs);
        if (i >= 3) {
            /* threads = 4 lands in [upstream]: reported as belonging to [server]. */
            expect_count(&errs, 2);
            expect_msg(&errs, 1, "t.conf:4: [upstream] threads: unknown key in this section");
        } else {
            expect_count(&errs, 1);
        }
        expect_msg(&errs, 0, cases[i].msg);
        config_errors_free(&errs);
    }
}

static void test_long_lines(void **state)
{
    struct config_errors errs = {0};
    char text[1024], pad[400];
    struct config *cfg;

    (void)state;
    memset(pad, 'x', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';

    /* A long comment is fine: comments never reach inih. */
    snprintf(text, sizeof(text), "; %s\n[upstream]\n# %s\nclient_id = acme\n", pad, pad);
    cfg = load_ok(text);
    config_unref(cfg);

    /* A key line longer than inih's buffer (198) is still one line, read whole. */
    snprintf(text, sizeof(text), "[upstream]\nclient_id = acme\nca_file = /%s\npool_size = 0\n",
             pad);
    load_fail(text, &errs);
    expect_count(&errs, 2);
    expect_msg(&errs, 0, "t.conf:3: [upstream] ca_file: cannot read '/xxxx");
    expect_msg(&errs, 0, "': File name too long (expected");
    expect_msg(&errs, 1, "t.conf:4: [upstream] pool_size: '0': out of range");
    config_errors_free(&errs);
}

/* Beyond MAX_LINE (8192) a line is reported with its line, not split into two. */
static void test_too_long_lines(void **state)
{
    struct config_errors errs = {0};
    size_t n = 8193, len;
    char *text = malloc(n + 128);

    (void)state;
    assert_non_null(text);
    len = (size_t)sprintf(text, "[audit]\ndatabase = ");
    memset(text + len, 'x', n - strlen("database = "));
    len += n - strlen("database = ");
    strcpy(text + len, "\n[upstream]\nclient_id = acme\npool_size = 0\n");
    load_fail(text, &errs);
    expect_count(&errs, 2);
    expect_exact(&errs, 0, "t.conf:2: syntax error: line too long (8193 characters, at most 8192)");
    expect_msg(&errs, 1, "t.conf:5: [upstream] pool_size: '0': out of range");
    config_errors_free(&errs);

    /* A header line too: the keys below it are skipped. */
    text[0] = '[';
    memset(text + 1, 'x', n - 2);
    strcpy(text + n - 1, "]\nthreads = 1\n[upstream]\nclient_id = acme\n");
    load_fail(text, &errs);
    expect_count(&errs, 1);
    expect_exact(&errs, 0, "t.conf:1: syntax error: line too long (8193 characters, at most 8192)");
    config_errors_free(&errs);
    free(text);
}

/* Whitespace, CRLF, a BOM, ';' inline comments and ':' as separator are all fine. */
static void test_syntax_accepted(void **state)
{
    struct config *cfg = load_ok("\xEF\xBB\xBF; gateway\r\n"
                                 "[upstream]\r\n"
                                 "  client_id = acme   ; our tenant\r\n"
                                 "\tpool_size: 8\r\n"
                                 "    queue_size=0\n"
                                 "\n"
                                 "   # indented comment\n"
                                 "  [log]  ; logging\n"
                                 "level = warn");

    (void)state;
    assert_string_equal(cfg->upstream.client_id, "acme");
    assert_int_equal(cfg->upstream.pool_size, 8);
    assert_int_equal(cfg->upstream.queue_size, 0);
    assert_int_equal(cfg->log.level, LOG_LEVEL_WARN);
    config_unref(cfg);
}

static void test_multiple_errors(void **state)
{
    struct config_errors errs = {0};

    (void)state;
    load_fail("[server]\n"                /* 1 */
              "threads = many\n"          /* 2 */
              "listen = 127.0.0.1:8080\n" /* 3 */
              "bogus = 1\n"               /* 4 */
              "[upstream]\n"              /* 5 */
              "client_id = acme\n"        /* 6 */
              "this is not ini\n"         /* 7 */
              "pool_size = 0\n"           /* 8 */
              "[log]\n"                   /* 9 */
              "level = loud\n"            /* 10 */
              "level = info\n"            /* 11 */
              "[nope]\n"                  /* 12 */
              "[upstream\n",              /* 13 */
              &errs);
    expect_count(&errs, 8);
    expect_msg(&errs, 0, "t.conf:2: [server] threads: 'many': not a number");
    expect_msg(&errs, 1, "t.conf:4: [server] bogus: unknown key");
    expect_msg(&errs, 2, "t.conf:7: syntax error: 'this is not ini'");
    expect_msg(&errs, 3,
               "t.conf:8: [upstream] pool_size: '0': out of range (expected an integer "
               "1..10000, idle connections kept per thread per host)");
    expect_msg(&errs, 4, "t.conf:10: [log] level: 'loud': unknown value");
    expect_msg(&errs, 5, "t.conf:11: [log] level: duplicate key (first set on line 10)");
    expect_msg(&errs, 6, "t.conf:12: [nope]: unknown section");
    expect_msg(&errs, 7, "t.conf:13: syntax error: '[upstream': missing ']'");
    config_errors_free(&errs);
}

/* Messages are appended to what ERRS already holds; config_errors_free resets it. */
static void test_errors_accumulate(void **state)
{
    struct config_errors errs = {0};

    (void)state;
    load_fail("[x]\n", &errs);
    expect_count(&errs, 2); /* unknown section, and no upstream */
    load_fail("[server]\nthreads = x\n", &errs);
    expect_count(&errs, 4);
    expect_msg(&errs, 2, "t.conf:2: [server] threads");
    config_errors_free(&errs);
    assert_int_equal(errs.count, 0);
    assert_null(errs.msgs);
    config_errors_free(&errs);
    config_errors_free(NULL);

    /* errs may be NULL: the load still fails. */
    assert_null(config_load_string("t.conf", "[server]\n", NULL));
    assert_null(config_load_string("t.conf", NULL, &errs));
    expect_count(&errs, 1);
    config_errors_free(&errs);
}

/* ---------------------------------------------------------------- upstream */

static void test_upstream_derived(void **state)
{
    struct config *cfg = load_ok("[upstream]\nclient_id = acme-2\n");

    (void)state;
    assert_string_equal(cfg->upstream.api.text, "https://acme-2.anymate.app");
    assert_string_equal(cfg->upstream.api.host, "acme-2.anymate.app");
    assert_int_equal(cfg->upstream.api.port, 443);
    assert_true(cfg->upstream.api.tls);
    assert_string_equal(cfg->upstream.auth.text, "https://acme-2.auth.anymate.app");
    assert_string_equal(cfg->upstream.auth.host, "acme-2.auth.anymate.app");
    assert_int_equal(cfg->upstream.auth.port, 443);
    assert_true(cfg->upstream.auth.tls);
    config_unref(cfg);
}

static void test_upstream_override(void **state)
{
    struct config *cfg;

    (void)state;
    /* One override: the other is still derived. */
    cfg = load_ok("[upstream]\nclient_id = acme\napi_url = http://127.0.0.1:18080/\n");
    assert_string_equal(cfg->upstream.api.text, "http://127.0.0.1:18080/");
    assert_string_equal(cfg->upstream.api.host, "127.0.0.1");
    assert_int_equal(cfg->upstream.api.port, 18080);
    assert_false(cfg->upstream.api.tls);
    assert_string_equal(cfg->upstream.auth.text, "https://acme.auth.anymate.app");
    config_unref(cfg);

    cfg = load_ok("[upstream]\nclient_id = acme\nauth_url = https://login.example\n");
    assert_string_equal(cfg->upstream.api.text, "https://acme.anymate.app");
    assert_string_equal(cfg->upstream.auth.host, "login.example");
    config_unref(cfg);

    /* Both URLs and no client_id. */
    cfg = load_ok("[upstream]\napi_url = https://[::1]:8443\nauth_url = http://[::1]:8444/\n");
    assert_null(cfg->upstream.client_id);
    assert_string_equal(cfg->upstream.api.host, "::1");
    assert_int_equal(cfg->upstream.api.port, 8443);
    assert_true(cfg->upstream.api.tls);
    assert_string_equal(cfg->upstream.auth.host, "::1");
    assert_int_equal(cfg->upstream.auth.port, 8444);
    assert_false(cfg->upstream.auth.tls);
    config_unref(cfg);
}

static void test_upstream_missing(void **state)
{
    struct config_errors errs = {0};

    (void)state;
    load_fail("", &errs);
    expect_count(&errs, 1);
    expect_exact(&errs, 0,
                 "t.conf:0: [upstream] client_id: missing (expected client_id = YOUR_CLIENT_ID, "
                 "or both api_url and auth_url)");
    config_errors_free(&errs);

    /* The line of the [upstream] header when there is one. */
    load_fail("[server]\nthreads = 1\n[upstream]\nconnect_timeout = 1s\n", &errs);
    expect_count(&errs, 1);
    expect_msg(&errs, 0, "t.conf:3: [upstream] client_id: missing");
    config_errors_free(&errs);

    load_fail("[upstream]\napi_url = https://a.example\n", &errs);
    expect_count(&errs, 1);
    expect_exact(&errs, 0,
                 "t.conf:1: [upstream] auth_url: missing, and no client_id to derive it from "
                 "(expected client_id, or both api_url and auth_url)");
    config_errors_free(&errs);

    load_fail("[upstream]\nauth_url = https://a.example\n", &errs);
    expect_count(&errs, 1);
    expect_msg(&errs, 0, "t.conf:1: [upstream] api_url: missing, and no client_id");
    config_errors_free(&errs);

    /* A bad URL is reported once, with no "missing" on top. */
    load_fail("[upstream]\napi_url = https://a.example/x\nauth_url = https://b.example\n", &errs);
    expect_count(&errs, 1);
    expect_msg(&errs, 0, "t.conf:2: [upstream] api_url:");
    config_errors_free(&errs);
}

/* ---------------------------------------------------------------- ca_file and files */

static void test_ca_file(void **state)
{
    char dir[] = "/tmp/test_config.XXXXXX", ca[128], conf[128], text[512];
    struct config_errors errs = {0};
    struct config *cfg;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    snprintf(conf, sizeof(conf), "%s/gw.conf", dir);
    write_file(ca, "-----BEGIN CERTIFICATE-----\n", strlen("-----BEGIN CERTIFICATE-----\n"));

    /* Absolute and present. */
    snprintf(text, sizeof(text), "[upstream]\nclient_id = acme\nca_file = %s\n", ca);
    cfg = load_ok(text);
    assert_string_equal(cfg->upstream.ca_file, ca);
    config_unref(cfg);

    /* Missing. */
    load_fail("[upstream]\nclient_id = acme\nca_file = /nonexistent/ca.pem\n", &errs);
    expect_count(&errs, 1);
    expect_exact(&errs, 0,
                 "t.conf:3: [upstream] ca_file: cannot read '/nonexistent/ca.pem': No such file "
                 "or directory (expected a readable PEM file of CA certificates; leave unset for "
                 "the system trust store)");
    config_errors_free(&errs);

    /* A directory. */
    snprintf(text, sizeof(text), "[upstream]\nclient_id = acme\nca_file = %s\n", dir);
    load_fail(text, &errs);
    expect_count(&errs, 1);
    expect_msg(&errs, 0, "': is a directory (expected");
    config_errors_free(&errs);

    /* Relative to the configuration file's directory, not to the working directory. */
    snprintf(text, sizeof(text), "[upstream]\nclient_id = acme\nca_file = ca.pem\n");
    write_file(conf, text, strlen(text));
    cfg = config_load(conf, &errs);
    expect_count(&errs, 0);
    assert_non_null(cfg);
    assert_string_equal(cfg->upstream.ca_file, ca);
    config_unref(cfg);

    /* Unreadable (only meaningful when not root). */
    if (geteuid() != 0) {
        assert_int_equal(chmod(ca, 0), 0);
        cfg = config_load(conf, &errs);
        assert_null(cfg);
        expect_msg(&errs, 0, "Permission denied");
        config_errors_free(&errs);
    }

    unlink(ca);
    unlink(conf);
    rmdir(dir);
}

static void test_load_file_errors(void **state)
{
    static const char nul_conf[] =
        "[upstream]\nclient_id = acme\nqueue_size = 1\0\npool_size = 0\n";
    char dir[] = "/tmp/test_config.XXXXXX", path[128];
    struct config_errors errs = {0};

    (void)state;
    assert_null(config_load("/nonexistent/gw.conf", &errs));
    expect_count(&errs, 1);
    expect_exact(&errs, 0, "/nonexistent/gw.conf:0: cannot read: No such file or directory");
    config_errors_free(&errs);

    assert_non_null(mkdtemp(dir));
    assert_null(config_load(dir, &errs));
    expect_count(&errs, 1);
    expect_msg(&errs, 0, ":0: cannot read: Is a directory");
    config_errors_free(&errs);

    /* A NUL byte is reported on its line, and the rest is still checked. */
    snprintf(path, sizeof(path), "%s/nul.conf", dir);
    write_file(path, nul_conf, sizeof(nul_conf) - 1);
    assert_null(config_load(path, &errs));
    expect_count(&errs, 2);
    expect_msg(&errs, 0, "nul.conf:3: syntax error: the line contains a NUL byte");
    expect_msg(&errs, 1, "nul.conf:4: [upstream] pool_size: '0': out of range");
    config_errors_free(&errs);
    unlink(path);
    rmdir(dir);
}

static struct config *load_shipped(const char *name)
{
    struct config_errors errs = {0};
    char path[512];
    struct config *cfg;

    snprintf(path, sizeof(path), "%s/config/%s", srcdir(), name);
    cfg = config_load(path, &errs);
    if (!cfg)
        print_errors(&errs);
    expect_count(&errs, 0);
    assert_non_null(cfg);
    return cfg;
}

static void test_shipped_files_load(void **state)
{
    struct config *full = load_shipped("gateway.conf");
    struct config *min = load_shipped("minimal.conf");

    (void)state;
    assert_non_null(min->upstream.client_id);
    assert_non_null(full->upstream.api.text);
    config_unref(full);
    config_unref(min);
}

static void assert_same_hostport(const struct config_hostport *a, const struct config_hostport *b)
{
    assert_string_equal(a->host, b->host);
    assert_int_equal(a->port, b->port);
}

static void assert_same_url(const struct config_url *a, const struct config_url *b)
{
    assert_string_equal(a->text, b->text);
    assert_string_equal(a->host, b->host);
    assert_int_equal(a->port, b->port);
    assert_int_equal(a->tls, b->tls);
}

static void assert_same_config(const struct config *a, const struct config *b)
{
    assert_same_hostport(&a->server.listen, &b->server.listen);
    assert_int_equal(a->server.threads, b->server.threads);
    assert_int_equal(a->server.max_header_size, b->server.max_header_size);
    assert_int_equal(a->server.max_body_size, b->server.max_body_size);
    assert_int_equal(a->server.client_timeout_ms, b->server.client_timeout_ms);
    assert_int_equal(a->server.request_timeout_ms, b->server.request_timeout_ms);
    assert_int_equal(a->server.shutdown_timeout_ms, b->server.shutdown_timeout_ms);
    assert_int_equal(a->server.x_forwarded_for, b->server.x_forwarded_for);
    assert_int_equal(a->server.client_header_timeout_ms, b->server.client_header_timeout_ms);
    assert_int_equal(a->server.max_connections, b->server.max_connections);
    assert_int_equal(a->server.client_body_timeout_ms, b->server.client_body_timeout_ms);
    assert_int_equal(a->server.max_buffered_body, b->server.max_buffered_body);
    assert_true(a->server.tls_cert == NULL && b->server.tls_cert == NULL);
    assert_same_hostport(&a->admin.listen, &b->admin.listen);
    assert_string_equal(a->upstream.client_id, b->upstream.client_id);
    assert_same_url(&a->upstream.api, &b->upstream.api);
    assert_same_url(&a->upstream.auth, &b->upstream.auth);
    assert_true(a->upstream.ca_file == NULL && b->upstream.ca_file == NULL);
    assert_int_equal(a->upstream.connect_timeout_ms, b->upstream.connect_timeout_ms);
    assert_int_equal(a->upstream.tls_handshake_timeout_ms, b->upstream.tls_handshake_timeout_ms);
    assert_int_equal(a->upstream.response_timeout_ms, b->upstream.response_timeout_ms);
    assert_int_equal(a->upstream.idle_timeout_ms, b->upstream.idle_timeout_ms);
    assert_int_equal(a->upstream.pool_size, b->upstream.pool_size);
    assert_int_equal(a->upstream.pool_max, b->upstream.pool_max);
    assert_int_equal(a->upstream.queue_timeout_ms, b->upstream.queue_timeout_ms);
    assert_int_equal(a->upstream.max_requests_per_conn, b->upstream.max_requests_per_conn);
    assert_int_equal(a->upstream.queue_size, b->upstream.queue_size);
    assert_int_equal(a->upstream.dns_refresh_ms, b->upstream.dns_refresh_ms);
    assert_int_equal(a->log.level, b->log.level);
    assert_int_equal(a->log.access_log, b->log.access_log);
    assert_int_equal(a->policy.require_bearer, b->policy.require_bearer);
    assert_int_equal(a->policy.forward_unknown_api, b->policy.forward_unknown_api);
    assert_int_equal(a->policy.numeric_string_ids, b->policy.numeric_string_ids);
    assert_int_equal(a->policy.max_overwrite_seconds_saved, b->policy.max_overwrite_seconds_saved);
    assert_int_equal(a->policy.max_overwrite_entries, b->policy.max_overwrite_entries);
    assert_int_equal(a->policy.validated_body_size, b->policy.validated_body_size);
    assert_true(a->audit.database == NULL && b->audit.database == NULL);
    assert_int_equal(a->audit.auto_migrate, b->audit.auto_migrate);
    assert_int_equal(a->audit.commit_timeout_ms, b->audit.commit_timeout_ms);
    assert_int_equal(a->audit.batch_size, b->audit.batch_size);
    assert_int_equal(a->audit.batch_delay_ms, b->audit.batch_delay_ms);
    assert_int_equal(a->audit.pipeline_depth, b->audit.pipeline_depth);
    assert_int_equal(a->audit.queue_size, b->audit.queue_size);
    assert_string_equal(a->audit.instance, b->audit.instance);
    assert_int_equal(a->audit.reconnect_max_ms, b->audit.reconnect_max_ms);
    assert_int_equal(a->audit.settings_refresh_ms, b->audit.settings_refresh_ms);
    assert_int_equal(a->audit.partitions_ahead, b->audit.partitions_ahead);
    assert_int_equal(a->audit.map_cache_size, b->audit.map_cache_size);
    assert_int_equal(a->audit.spool_max_bytes, b->audit.spool_max_bytes);
    assert_int_equal(a->audit.spool_replay_rate, b->audit.spool_replay_rate);
    assert_int_equal(a->audit.refusal_records_per_second, b->audit.refusal_records_per_second);
    assert_int_equal(a->nendpoints, 0);
    assert_int_equal(b->nendpoints, 0);
    assert_int_equal(a->nprocesses, 0);
    assert_int_equal(b->nprocesses, 0);
}

/*
 * gateway.conf documents every key with its default: uncommenting every "# key = value" line
 * must give exactly the configuration of the same file as shipped.
 */
static void test_gateway_conf_documents_defaults(void **state)
{
    static const char *const all_keys[] = {
        "listen",
        "threads",
        "max_header_size",
        "max_body_size",
        "client_timeout",
        "request_timeout",
        "shutdown_timeout",
        "x_forwarded_for",
        "client_header_timeout",
        "max_connections",
        "client_body_timeout",
        "max_buffered_body",
        "tls_cert",
        "tls_key",
        "client_id",
        "api_url",
        "auth_url",
        "ca_file",
        "connect_timeout",
        "tls_handshake_timeout",
        "response_timeout",
        "idle_timeout",
        "pool_size",
        "pool_max",
        "max_requests_per_conn",
        "queue_size",
        "queue_timeout",
        "dns_refresh",
        "level",
        "access_log",
        "access_log_file",
        "error_log_file",
        "require_bearer",
        "forward_unknown_api",
        "numeric_string_ids",
        "max_overwrite_seconds_saved",
        "max_overwrite_entries",
        "validated_body_size",
        "database",
        "auto_migrate",
        "commit_timeout",
        "batch_size",
        "batch_delay",
        "pipeline_depth",
        "instance",
        "reconnect_max",
        "settings_refresh",
        "partitions_ahead",
        "map_cache_size",
        "spool_dir",
        "spool_max_bytes",
        "spool_replay_rate",
        "refusal_records_per_second",
        /* in the commented examples of named sections */
        "enabled",
        "tasks_enabled",
        "seconds_per_run",
        "seconds_per_task",
        "default_entries",
        "seconds_per_entry",
        "advanced_mode",
    };
    char path[512], *text, *line, *save = NULL, *out;
    struct config *shipped, *uncommented;
    size_t n = 0, len;
    int uncommented_lines = 0;

    (void)state;
    snprintf(path, sizeof(path), "%s/config/gateway.conf", srcdir());
    text = slurp(path);
    for (size_t i = 0; i < sizeof(all_keys) / sizeof(all_keys[0]); i++) {
        char needle[64];
        snprintf(needle, sizeof(needle), "%s = ", all_keys[i]);
        if (!strstr(text, needle))
            print_message("  gateway.conf does not document %s\n", all_keys[i]);
        assert_non_null(strstr(text, needle));
    }

    len = strlen(text);
    out = malloc(len + 1);
    assert_non_null(out);
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t k = 0;
        if (strncmp(line, "# ", 2) == 0) {
            while (line[2 + k] == '_' || (line[2 + k] >= 'a' && line[2 + k] <= 'z'))
                k++;
            if (k > 0 && strncmp(line + 2 + k, " = ", 3) == 0) {
                line += 2;
                uncommented_lines++;
            }
        }
        n += (size_t)sprintf(out + n, "%s\n", line);
    }
    /*
     * Every key but client_id (set), ca_file, database, instance, spool_dir and the log files
     * (no fixed default; examples only) and the keys of the named sections (examples in ";   "
     * comments, test below).
     */
    assert_int_equal(uncommented_lines, 46);

    shipped = load_shipped("gateway.conf");
    uncommented = load_ok(out);
    assert_same_config(shipped, uncommented);

    config_unref(uncommented);
    config_unref(shipped);
    free(out);
    free(text);
}

/*
 * The commented example sections of gateway.conf (";   [endpoint ...]" and the ";   " lines
 * under it) are valid: appended to the file without their ";   ", it still loads, with them.
 */
static void test_gateway_conf_examples(void **state)
{
    char path[512], *text, *line, *save = NULL, *out;
    const struct config_endpoint *ep;
    const struct config_process *pr;
    struct config *cfg;
    size_t n, headers = 0, keys = 0;
    bool in_example = false;

    (void)state;
    snprintf(path, sizeof(path), "%s/config/gateway.conf", srcdir());
    text = slurp(path);
    out = malloc(2 * strlen(text) + 2);
    assert_non_null(out);
    n = (size_t)sprintf(out, "%s\n", text);
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, ";   [", 5) == 0) {
            in_example = true;
            headers++;
        } else if (strncmp(line, ";   ", 4) != 0) {
            in_example = false;
        }
        if (!in_example)
            continue;
        if (line[4] != ';' && line[4] != '[')
            keys++;
        n += (size_t)sprintf(out + n, "%s\n", line + 4);
    }
    assert_int_equal(headers, 2);
    assert_int_equal(keys, 10); /* every key of both sections */

    cfg = load_ok(out);
    ep = config_endpoint_find(cfg, "FinishRun");
    assert_non_null(ep);
    assert_true(ep->enabled);
    assert_true(ep->has_max_body_size);
    assert_int_equal(ep->max_body_size, 256 * KIB);
    pr = config_process_find(cfg, "invoice-bot");
    assert_non_null(pr);
    assert_true(pr->has_tasks_enabled && pr->has_seconds_per_run && pr->has_seconds_per_task &&
                pr->has_default_entries && pr->has_seconds_per_entry && pr->has_advanced_mode &&
                pr->has_max_overwrite_seconds_saved && pr->has_max_overwrite_entries);
    config_unref(cfg);
    free(out);
    free(text);
}

/* ---------------------------------------------------------------- [policy] and [audit] */

static void test_policy_values(void **state)
{
    struct config *cfg = load_ok("[policy]\n"
                                 "require_bearer = off\n"
                                 "forward_unknown_api = yes\n"
                                 "numeric_string_ids = true\n"
                                 "max_overwrite_seconds_saved = 86400\n"
                                 "max_overwrite_entries = 0\n"
                                 "validated_body_size = 128k\n"
                                 "[upstream]\nclient_id = acme\n");

    (void)state;
    assert_false(cfg->policy.require_bearer);
    assert_true(cfg->policy.forward_unknown_api);
    assert_true(cfg->policy.numeric_string_ids);
    assert_int_equal(cfg->policy.max_overwrite_seconds_saved, 86400);
    assert_int_equal(cfg->policy.max_overwrite_entries, 0);
    assert_int_equal(cfg->policy.validated_body_size, 128 * KIB);
    config_unref(cfg);
}

/* Body limits the HTTP layer would never let through are errors, wherever [server] is. */
static void test_validated_body_size_limit(void **state)
{
    struct config_errors errs = {0};
    struct config *cfg;

    (void)state;
    load_fail("[upstream]\nclient_id = acme\n[policy]\nvalidated_body_size = 2m\n", &errs);
    expect_count(&errs, 1);
    expect_exact(&errs, 0,
                 "t.conf:4: [policy] validated_body_size: 2m exceeds [server] max_body_size = 1m "
                 "(the default) (expected at most 1m: larger bodies get 413 before validation)");
    config_errors_free(&errs);

    load_fail("[policy]\nvalidated_body_size = 64k\n[server]\nmax_body_size = 32k\n"
              "[upstream]\nclient_id = acme\n",
              &errs);
    expect_count(&errs, 1);
    expect_exact(&errs, 0,
                 "t.conf:2: [policy] validated_body_size: 64k exceeds [server] max_body_size = "
                 "32k (line 4) (expected at most 32k: larger bodies get 413 before validation)");
    config_errors_free(&errs);

    /* [server] after [policy], equal limits. */
    cfg = load_ok("[policy]\nvalidated_body_size = 2m\n[server]\nmax_body_size = 2048k\n"
                  "[upstream]\nclient_id = acme\n");
    assert_int_equal(cfg->policy.validated_body_size, 2 * MIB);
    config_unref(cfg);

    /* Not set: the default, or the server's limit when that is smaller. */
    cfg = load_ok("[server]\nmax_body_size = 32k\n[upstream]\nclient_id = acme\n");
    assert_int_equal(cfg->policy.validated_body_size, 32 * KIB);
    config_unref(cfg);

    /* A bad server limit is reported once, with no comparison against it. */
    load_fail("[server]\nmax_body_size = 1x\n[policy]\nvalidated_body_size = 2m\n"
              "[endpoint \"FinishRun\"]\nmax_body_size = 2m\n[upstream]\nclient_id = acme\n",
              &errs);
    expect_count(&errs, 1);
    expect_msg(&errs, 0, "t.conf:2: [server] max_body_size: '1x'");
    config_errors_free(&errs);

    /* A bad validated_body_size is not compared either. */
    load_fail("[policy]\nvalidated_body_size = 100m\n[upstream]\nclient_id = acme\n", &errs);
    expect_count(&errs, 1);
    expect_msg(&errs, 0, "t.conf:2: [policy] validated_body_size: '100m': out of range");
    config_errors_free(&errs);
}

static void test_audit_values(void **state)
{
    struct config *cfg = load_ok("[audit]\n"
                                 "database = host=db.example dbname=audit user=gw\n"
                                 "auto_migrate = on\n"
                                 "commit_timeout = 250ms\n"
                                 "batch_size = 1\n"
                                 "batch_delay = 0\n"
                                 "queue_size = 5\n"
                                 "instance = gw-1.example\n"
                                 "reconnect_max = 1m\n"
                                 "settings_refresh = 5m\n"
                                 "partitions_ahead = 30\n"
                                 "map_cache_size = 0\n"
                                 "[upstream]\nclient_id = acme\n");

    (void)state;
    assert_string_equal(cfg->audit.database, "host=db.example dbname=audit user=gw");
    assert_true(cfg->audit.auto_migrate);
    assert_int_equal(cfg->audit.commit_timeout_ms, 250);
    assert_int_equal(cfg->audit.batch_size, 1);
    assert_int_equal(cfg->audit.batch_delay_ms, 0);
    assert_int_equal(cfg->audit.queue_size, 5);
    assert_string_equal(cfg->audit.instance, "gw-1.example");
    assert_int_equal(cfg->audit.reconnect_max_ms, 60000);
    assert_int_equal(cfg->audit.settings_refresh_ms, 300000);
    assert_int_equal(cfg->audit.partitions_ahead, 30);
    assert_int_equal(cfg->audit.map_cache_size, 0);
    config_unref(cfg);

    /* A URI: its ':' and '=' are the value's, the first '=' separates. */
    cfg = load_ok("[audit]\ndatabase = postgresql://gw:pw@[::1]:5432/audit?sslmode=require\n"
                  "[upstream]\nclient_id = acme\n");
    assert_string_equal(cfg->audit.database, "postgresql://gw:pw@[::1]:5432/audit?sslmode=require");
    config_unref(cfg);
}

static void test_audit_spool_dir(void **state)
{
    (void)state;
    char dir[] = "/tmp/gwcfg-spool-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char text[1024], file[600];
    /* an existing directory, and one to be made (its parent exists) */
    snprintf(text, sizeof(text),
             "[audit]\ndatabase = host=db\nspool_dir = %s\nspool_max_bytes = 2m\n"
             "spool_replay_rate = 0\nrefusal_records_per_second = 0\n"
             "[upstream]\nclient_id = acme\n",
             dir);
    struct config *cfg = load_ok(text);
    assert_string_equal(cfg->audit.spool_dir, dir);
    assert_int_equal(cfg->audit.spool_max_bytes, 2 * 1024 * 1024);
    assert_int_equal(cfg->audit.spool_replay_rate, 0);
    assert_int_equal(cfg->audit.refusal_records_per_second, 0);
    config_unref(cfg);
    snprintf(text, sizeof(text),
             "[audit]\ndatabase = host=db\nspool_dir = %s/new\n[upstream]\nclient_id = acme\n",
             dir);
    cfg = load_ok(text);
    config_unref(cfg);

    struct config_errors errs = {0};
    /* a file, not a directory */
    snprintf(file, sizeof(file), "%s/f", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(text, sizeof(text),
             "[audit]\ndatabase = host=db\nspool_dir = %s\n[upstream]\nclient_id = acme\n", file);
    load_fail(text, &errs);
    expect_msg(&errs, 0, "t.conf:3: [audit] spool_dir:");
    expect_msg(&errs, 0, "exists and is not a directory");
    config_errors_free(&errs);
    /* neither it nor its parent */
    snprintf(text, sizeof(text),
             "[audit]\ndatabase = host=db\nspool_dir = %s/a/b\n[upstream]\nclient_id = acme\n",
             dir);
    load_fail(text, &errs);
    expect_msg(&errs, 0, "neither it nor its parent directory exists");
    config_errors_free(&errs);
    /* a spool needs a database */
    snprintf(text, sizeof(text), "[audit]\nspool_dir = %s\n[upstream]\nclient_id = acme\n", dir);
    load_fail(text, &errs);
    expect_msg(&errs, 0, "t.conf:2: [audit] spool_dir: set without [audit] database");
    config_errors_free(&errs);
    /* the size's bounds */
    load_fail("[audit]\ndatabase = host=db\nspool_max_bytes = 100k\n[upstream]\nclient_id = a\n",
              &errs);
    expect_msg(&errs, 0, "[audit] spool_max_bytes");
    config_errors_free(&errs);
    unlink(file);
    rmdir(dir);
}

static void test_audit_instance(void **state)
{
    char host[256], text[512], name[130];
    struct config_errors errs = {0};
    struct config *cfg;

    (void)state;
    /* Unset: this host's name, read at load time. */
    assert_int_equal(gethostname(host, sizeof(host)), 0);
    host[sizeof(host) - 1] = '\0';
    cfg = load_ok("[upstream]\nclient_id = acme\n");
    assert_string_equal(cfg->audit.instance, host);
    config_unref(cfg);

    memset(name, 'i', 128);
    name[128] = '\0';
    snprintf(text, sizeof(text), "[upstream]\nclient_id = acme\n[audit]\ninstance = %s\n", name);
    cfg = load_ok(text);
    assert_string_equal(cfg->audit.instance, name);
    config_unref(cfg);

    name[128] = 'i';
    name[129] = '\0';
    snprintf(text, sizeof(text), "[upstream]\nclient_id = acme\n[audit]\ninstance = %s\n", name);
    load_fail(text, &errs);
    expect_count(&errs, 1);
    expect_msg(&errs, 0, "t.conf:4: [audit] instance: 'iiii");
    expect_msg(&errs, 0, "': too long (expected a name of 1..128 characters");
    config_errors_free(&errs);
}

/* No message ever carries the database value: it may hold a password. */
static void expect_no_secret(const struct config_errors *errs)
{
    for (size_t i = 0; i < errs->count; i++) {
        if (strstr(errs->msgs[i], "secret") || strstr(errs->msgs[i], "password")) {
            print_errors(errs);
            fail();
        }
    }
}

static void test_audit_database_not_shown(void **state)
{
    struct config_errors errs = {0};
    struct config *a, *b;
    char *text, *p;

    (void)state;
    /* Too long: 4097 characters. */
    text = malloc(8192);
    assert_non_null(text);
    p = text + sprintf(text, "[upstream]\nclient_id = acme\n[audit]\ndatabase = password=secret ");
    memset(p, 'x', 4097 - strlen("password=secret "));
    strcpy(p + 4097 - strlen("password=secret "), "\n");
    load_fail(text, &errs);
    expect_count(&errs, 1);
    expect_exact(&errs, 0,
                 "t.conf:4: [audit] database: the value: too long (expected a libpq connection "
                 "string (host=... dbname=...) or a postgresql:// URI, 1..4096 characters; leave "
                 "unset to turn the audit ledger off)");
    expect_no_secret(&errs);
    config_errors_free(&errs);

    /* 4096 is fine, though longer than inih's line buffer. */
    strcpy(p + 4096 - strlen("password=secret "), " ; the comment is not part of it\n");
    a = load_ok(text);
    assert_int_equal(strlen(a->audit.database), 4096);
    assert_memory_equal(a->audit.database, "password=secret xxx", 19);
    config_unref(a);
    free(text);

    /* Duplicated, in the wrong section, with a '#' hint. */
    load_fail("[upstream]\nclient_id = acme\n[audit]\ndatabase = host=a password=secret\n"
              "database = host=b password=secret # comment?\n"
              "[server]\ndatabase = password=secret\n",
              &errs);
    expect_count(&errs, 2);
    expect_exact(&errs, 0, "t.conf:5: [audit] database: duplicate key (first set on line 4)");
    expect_exact(&errs, 1,
                 "t.conf:7: [server] database: unknown key in this section (it belongs in "
                 "[audit])");
    expect_no_secret(&errs);
    config_errors_free(&errs);

    /* A reload that changes it: refused, without either value. */
    a = load_ok("[upstream]\nclient_id = acme\n[audit]\ndatabase = host=a password=secret\n");
    b = load_ok("[upstream]\nclient_id = acme\n[audit]\ndatabase = host=b password=secret2\n");
    assert_int_equal(config_reload_check(a, b, &errs), -1);
    expect_count(&errs, 1);
    expect_exact(&errs, 0,
                 "t.conf:0: [audit] database: changed (values not shown), which takes effect "
                 "only after a restart");
    expect_no_secret(&errs);
    config_errors_free(&errs);
    assert_int_equal(config_reload_check(a, a, &errs), 0);
    config_unref(a);
    config_unref(b);
}

/* TMPL with each '@' replaced by PAD. */
static void fill(char *out, size_t size, const char *tmpl, const char *pad)
{
    size_t n = 0, plen = strlen(pad);

    for (; *tmpl; tmpl++) {
        if (*tmpl == '@') {
            assert_true(n + plen < size);
            memcpy(out + n, pad, plen);
            n += plen;
        } else {
            assert_true(n + 1 < size);
            out[n++] = *tmpl;
        }
    }
    out[n] = '\0';
}

/*
 * Lines longer than inih's buffer are split by the reader, exactly as inih splits the short
 * ones: the same line with a short and a long PAD ('@') gives the same value.
 */
static void test_long_line_split(void **state)
{
    static const struct {
        const char *line, *value;
    } cases[] = {
        {"database = host=h dbname=@ ; comment", "host=h dbname=@"},
        {"database:host=h dbname=@", "host=h dbname=@"},
        {"database =;x @", ";x @"},
        {"database = a;b @;c", "a;b @;c"},
        {"database = \t x @\t ;c ; d", "x @"},
        {"database   =   @ = x : y", "@ = x : y"},
        {"database = @\t;", "@"},
    };
    char pad[400], line[1024], want[1024], text[1200];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t plen = 3; plen < sizeof(pad); plen += 390) {
            struct config *cfg;
            memset(pad, 'p', plen);
            pad[plen] = '\0';
            fill(line, sizeof(line), cases[i].line, pad);
            fill(want, sizeof(want), cases[i].value, pad);
            snprintf(text, sizeof(text), "[upstream]\nclient_id = acme\n[audit]\n%s\n", line);
            cfg = load_ok(text);
            if (strcmp(cfg->audit.database, want) != 0)
                print_message("  line '%s': '%s'\n", line, cfg->audit.database);
            assert_string_equal(cfg->audit.database, want);
            config_unref(cfg);
        }
    }
}

/* ---------------------------------------------------------------- named sections */

static void test_endpoint_sections(void **state)
{
    struct config *cfg = load_ok("[upstream]\nclient_id = acme\n"
                                 "[endpoint \"finishrun\"]\n"          /* 3 */
                                 "enabled = off\n"                     /* 4 */
                                 "max_body_size = 256k\n"              /* 5 */
                                 "[endpoint \"TOKEN\"]  ; the token\n" /* 6 */
                                 "[endpoint \"Solved\"]# tasks\n"      /* 7 */
                                 "max_body_size = 2m\n"                /* 8 */
                                 "[server]\nmax_body_size = 2m\n");
    const struct route *finishrun = router_find("FinishRun");

    (void)state;
    assert_int_equal(cfg->nendpoints, 3);
    /* The router table's spelling, and its very string. */
    assert_string_equal(cfg->endpoints[0].name, "FinishRun");
    assert_ptr_equal(cfg->endpoints[0].name, finishrun->name);
    assert_int_equal(cfg->endpoints[0].line, 3);
    assert_false(cfg->endpoints[0].enabled);
    assert_true(cfg->endpoints[0].has_max_body_size);
    assert_int_equal(cfg->endpoints[0].max_body_size, 256 * KIB);
    assert_string_equal(cfg->endpoints[1].name, "Token");
    assert_int_equal(cfg->endpoints[1].line, 6);
    assert_true(cfg->endpoints[1].enabled); /* the default */
    assert_false(cfg->endpoints[1].has_max_body_size);
    assert_string_equal(cfg->endpoints[2].name, "Solved");
    assert_int_equal(cfg->endpoints[2].max_body_size, 2 * MIB);

    /* Lookups ignore case, as the router does. */
    assert_ptr_equal(config_endpoint_find(cfg, "FinishRun"), &cfg->endpoints[0]);
    assert_ptr_equal(config_endpoint_find(cfg, "FINISHRUN"), &cfg->endpoints[0]);
    assert_ptr_equal(config_endpoint_find(cfg, "token"), &cfg->endpoints[1]);
    assert_null(config_endpoint_find(cfg, "Retry"));
    assert_null(config_endpoint_find(cfg, NULL));
    assert_null(config_endpoint_find(NULL, "FinishRun"));
    config_unref(cfg);
}

static void test_endpoint_unknown(void **state)
{
    struct config_errors errs = {0};
    const struct route *table;
    size_t n;
    char needle[64];

    (void)state;
    /* Reported once; the keys under it are skipped. */
    load_fail("[upstream]\nclient_id = acme\n[endpoint \"FinishRn\"]\nenabled = maybe\n", &errs);
    expect_count(&errs, 1);
    expect_msg(&errs, 0,
               "t.conf:3: [endpoint \"FinishRn\"]: unknown endpoint (expected one of: Token, "
               "OkToRun, StartOrGetRun, StartRun, FinishRun, ");
    table = router_table(&n);
    for (size_t i = 0; i < n; i++) {
        snprintf(needle, sizeof(needle), " %s%s", table[i].name, i + 1 < n ? "," : ")");
        expect_msg(&errs, 0, needle);
    }
    config_errors_free(&errs);

    /* The pass-through row is no endpoint one can configure. */
    load_fail("[upstream]\nclient_id = acme\n[endpoint \"api.other\"]\n", &errs);
    expect_count(&errs, 1);
    expect_msg(&errs, 0, "t.conf:3: [endpoint \"api.other\"]: unknown endpoint");
    config_errors_free(&errs);

    /* No trimming or prefix matching. */
    load_fail("[upstream]\nclient_id = acme\n[endpoint \" FinishRun\"]\n", &errs);
    expect_msg(&errs, 0, "t.conf:3: [endpoint \" FinishRun\"]: unknown endpoint");
    config_errors_free(&errs);
}

static void test_endpoint_body_limit(void **state)
{
    struct config_errors errs = {0};
    struct config *cfg;

    (void)state;
    load_fail("[upstream]\nclient_id = acme\n[endpoint \"FinishRun\"]\nenabled = on\n"
              "max_body_size = 2m\n",
              &errs);
    expect_count(&errs, 1);
    expect_exact(&errs, 0,
                 "t.conf:5: [endpoint \"FinishRun\"] max_body_size: 2m exceeds [server] "
                 "max_body_size = 1m (the default) (expected at most 1m: larger bodies get 413 "
                 "first)");
    config_errors_free(&errs);

    /* Each endpoint on its own line; the server's limit set after them. */
    load_fail("[endpoint \"Solved\"]\nmax_body_size = 65k\n[endpoint \"Retry\"]\n"
              "max_body_size = 64k\n[endpoint \"Error\"]\nmax_body_size = 1m\n"
              "[server]\nmax_body_size = 64k\n[upstream]\nclient_id = acme\n",
              &errs);
    expect_count(&errs, 2);
    expect_msg(&errs, 0,
               "t.conf:2: [endpoint \"Solved\"] max_body_size: 65k exceeds [server] "
               "max_body_size = 64k (line 8)");
    expect_msg(&errs, 1, "t.conf:6: [endpoint \"Error\"] max_body_size: 1m exceeds");
    config_errors_free(&errs);

    cfg = load_ok("[upstream]\nclient_id = acme\n[endpoint \"GetRules\"]\nmax_body_size = 1\n");
    assert_int_equal(cfg->endpoints[0].max_body_size, 1);
    config_unref(cfg);
}

static void test_process_sections(void **state)
{
    static const char *const text = "[upstream]\nclient_id = acme\n"
                                    "[process \"invoice-bot\"]\n" /* 3 */
                                    "tasks_enabled = on\n"
                                    "seconds_per_task = 90\n"
                                    "max_overwrite_entries = 2147483647\n"
                                    "[process \"Invoice-Bot\"]\n" /* 7 */
                                    "tasks_enabled = off\n"
                                    "seconds_per_run = 600\n"
                                    "advanced_mode = yes\n"
                                    "default_entries = 0\n"
                                    "seconds_per_entry = 30\n"
                                    "max_overwrite_seconds_saved = 86400\n"
                                    "[process \"no settings\"]\n" /* 14 */
                                    "[process \"a ]b; c ;d \xc3\xb8\"] ; any byte but '\"'\n";
    struct config *cfg = load_ok(text);
    const struct config_process *p;

    (void)state;
    assert_int_equal(cfg->nprocesses, 4);

    p = config_process_find(cfg, "invoice-bot");
    assert_ptr_equal(p, &cfg->processes[0]);
    assert_string_equal(p->key, "invoice-bot");
    assert_int_equal(p->line, 3);
    assert_true(p->has_tasks_enabled);
    assert_true(p->tasks_enabled);
    assert_true(p->has_seconds_per_task);
    assert_int_equal(p->seconds_per_task, 90);
    assert_true(p->has_max_overwrite_entries);
    assert_int_equal(p->max_overwrite_entries, 2147483647);
    assert_false(p->has_seconds_per_run || p->has_advanced_mode || p->has_default_entries ||
                 p->has_seconds_per_entry || p->has_max_overwrite_seconds_saved);

    /* Keys are case-sensitive: another process. */
    p = config_process_find(cfg, "Invoice-Bot");
    assert_ptr_equal(p, &cfg->processes[1]);
    assert_int_equal(p->line, 7);
    assert_true(p->has_tasks_enabled);
    assert_false(p->tasks_enabled);
    assert_true(p->has_seconds_per_run);
    assert_int_equal(p->seconds_per_run, 600);
    assert_true(p->has_advanced_mode);
    assert_true(p->advanced_mode);
    assert_true(p->has_default_entries);
    assert_int_equal(p->default_entries, 0);
    assert_true(p->has_seconds_per_entry);
    assert_int_equal(p->seconds_per_entry, 30);
    assert_true(p->has_max_overwrite_seconds_saved);
    assert_int_equal(p->max_overwrite_seconds_saved, 86400);
    assert_false(p->has_seconds_per_task || p->has_max_overwrite_entries);

    p = config_process_find(cfg, "no settings");
    assert_non_null(p);
    assert_false(p->has_tasks_enabled || p->has_seconds_per_run || p->has_seconds_per_task ||
                 p->has_advanced_mode || p->has_default_entries || p->has_seconds_per_entry ||
                 p->has_max_overwrite_seconds_saved || p->has_max_overwrite_entries);

    assert_non_null(config_process_find(cfg, "a ]b; c ;d \xc3\xb8"));
    assert_null(config_process_find(cfg, "INVOICE-BOT"));
    assert_null(config_process_find(cfg, "invoice-bot "));
    assert_null(config_process_find(cfg, NULL));
    assert_null(config_process_find(NULL, "invoice-bot"));
    config_unref(cfg);
}

static void test_process_key_length(void **state)
{
    char key[202], text[512];
    struct config_errors errs = {0};
    struct config *cfg;

    (void)state;
    memset(key, 'k', 200);
    key[200] = '\0';
    snprintf(text, sizeof(text),
             "[upstream]\nclient_id = acme\n[process \"%s\"]\nseconds_per_run = 1\n", key);
    cfg = load_ok(text);
    assert_string_equal(cfg->processes[0].key, key);
    assert_true(cfg->processes[0].has_seconds_per_run);
    config_unref(cfg);

    key[200] = 'k';
    key[201] = '\0';
    snprintf(text, sizeof(text),
             "[upstream]\nclient_id = acme\n[process \"%s\"]\nseconds_per_run = x\n", key);
    load_fail(text, &errs);
    expect_count(&errs, 1);
    expect_msg(&errs, 0, "t.conf:3: syntax error: '[process \"kkkk");
    expect_msg(&errs, 0, "': name longer than 200 bytes (expected [process \"KEY\"])");
    config_errors_free(&errs);
}

static void test_named_duplicates(void **state)
{
    struct config_errors errs = {0};

    (void)state;
    /* The same endpoint in another case is the same endpoint; its keys are skipped. */
    load_fail("[upstream]\nclient_id = acme\n"
              "[endpoint \"FinishRun\"]\n" /* 3 */
              "enabled = on\n"             /* 4 */
              "[process \"p\"]\n"          /* 5 */
              "[endpoint \"finishRUN\"]\n" /* 6 */
              "enabled = bogus\n"          /* 7 */
              "[process \"p\"]\n"          /* 8 */
              "[process \"P\"]\n"          /* 9: another process */
              "tasks_enabled = on\n"       /* 10 */
              "tasks_enabled = off\n"      /* 11 */
              "[endpoint \"Retry\"]\n"     /* 12 */
              "enabled = on\n"             /* 13: once per section is fine */
              "max_body_size = 1k\n"       /* 14 */
              "enabled = off\n",           /* 15 */
              &errs);
    expect_count(&errs, 4);
    expect_exact(&errs, 0,
                 "t.conf:6: [endpoint \"FinishRun\"]: duplicate section (first defined on line 3)");
    expect_exact(&errs, 1,
                 "t.conf:8: [process \"p\"]: duplicate section (first defined on line 5)");
    expect_exact(&errs, 2,
                 "t.conf:11: [process \"P\"] tasks_enabled: duplicate key (first set on line 10)");
    expect_exact(&errs, 3,
                 "t.conf:15: [endpoint \"Retry\"] enabled: duplicate key (first set on line 13)");
    config_errors_free(&errs);
}

static void test_named_unknown_keys(void **state)
{
    struct config_errors errs = {0};

    (void)state;
    load_fail("[upstream]\nclient_id = acme\n"
              "[endpoint \"Solved\"]\n"
              "max_body = 1k\n" /* 4 */
              "threads = 2\n"   /* 5 */
              "[process \"p\"]\n"
              "seconds_saved = 1\n"              /* 7 */
              "Tasks_Enabled = on\n"             /* 8 */
              "[server]\nenabled = on\n"         /* 10 */
              "[policy]\nseconds_per_run = 1\n", /* 12 */
              &errs);
    expect_count(&errs, 6);
    expect_exact(&errs, 0,
                 "t.conf:4: [endpoint \"Solved\"] max_body: unknown key (expected one of: "
                 "enabled, max_body_size)");
    expect_exact(&errs, 1,
                 "t.conf:5: [endpoint \"Solved\"] threads: unknown key in this section (it "
                 "belongs in [server])");
    expect_exact(&errs, 2,
                 "t.conf:7: [process \"p\"] seconds_saved: unknown key (expected one of: "
                 "tasks_enabled, seconds_per_run, seconds_per_task, default_entries, "
                 "seconds_per_entry, advanced_mode, max_overwrite_seconds_saved, "
                 "max_overwrite_entries)");
    expect_msg(&errs, 3, "t.conf:8: [process \"p\"] Tasks_Enabled: unknown key (expected");
    expect_exact(&errs, 4,
                 "t.conf:10: [server] enabled: unknown key in this section (it belongs in "
                 "[endpoint \"NAME\"])");
    expect_exact(&errs, 5,
                 "t.conf:12: [policy] seconds_per_run: unknown key in this section (it belongs "
                 "in [process \"KEY\"])");
    config_errors_free(&errs);
}

/* A malformed named header is a syntax error on its line; the keys under it are skipped. */
static void test_named_headers_malformed(void **state)
{
    static const struct {
        const char *line, *msg;
    } cases[] = {
        {"[endpoint FinishRun]",
         "t.conf:3: syntax error: '[endpoint FinishRun]': the name must be in double quotes "
         "(expected [endpoint \"NAME\"])"},
        {"[process 'x']", "t.conf:3: syntax error: '[process 'x']': the name must be in double "
                          "quotes (expected [process \"KEY\"])"},
        {"[endpoint]", "t.conf:3: syntax error: '[endpoint]': missing name (expected [endpoint "
                       "\"NAME\"])"},
        {"[endpoint \"\"]", "t.conf:3: syntax error: '[endpoint \"\"]': empty name (expected "
                            "[endpoint \"NAME\"])"},
        {"[process \"a\"b\"]", "t.conf:3: syntax error: '[process \"a\"b\"]': unexpected text "
                               "after the closing '\"' (expected [process \"KEY\"])"},
        {"[endpoint  \"FinishRun\"]", "t.conf:3: syntax error: '[endpoint  \"FinishRun\"]': one "
                                      "space must separate the section from its quoted name"},
        {"[endpoint\"FinishRun\"]", "t.conf:3: syntax error: '[endpoint\"FinishRun\"]': one "
                                    "space must separate"},
        {"[endpoint\t\"FinishRun\"]", "one space must separate"},
        {"[endpoint \"FinishRun\" ]", "'[endpoint \"FinishRun\" ]': unexpected text after the "
                                      "closing '\"'"},
        {"[endpoint \"FinishRun\"] x", "'[endpoint \"FinishRun\"] x': unexpected text after ']'"},
        {"[endpoint \"FinishRun\"", "'[endpoint \"FinishRun\"': missing ']' at the end of the "
                                    "section header"},
        {"[process \"abc]", "t.conf:3: syntax error: '[process \"abc]': missing '\"' after the "
                            "name (expected [process \"KEY\"])"},
        {"[process \"a\tb\"]", "t.conf:3: syntax error: '[process \"a?b\"]': control character "
                               "in the name (expected [process \"KEY\"])"},
        {"[server \"x\"]", "t.conf:3: syntax error: '[server \"x\"]': this section takes no name "
                           "(expected [server])"},
        {"[nope \"x\"]", "t.conf:3: [nope]: unknown section (expected one of [server], "},
        {"[Endpoint \"FinishRun\"]", "t.conf:3: [Endpoint]: unknown section"},
        {"[\"x\"]", "t.conf:3: []: unknown section"},
    };
    char text[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct config_errors errs = {0};
        snprintf(text, sizeof(text), "[upstream]\nclient_id = acme\n%s\nenabled = x\n",
                 cases[i].line);
        load_fail(text, &errs);
        expect_count(&errs, 1);
        expect_msg(&errs, 0, cases[i].msg);
        config_errors_free(&errs);
    }
}

/* ---------------------------------------------------------------- lifetime and reload */

static void test_refcount(void **state)
{
    struct config *cfg = load_ok("[upstream]\nclient_id = acme\n");

    (void)state;
    assert_int_equal(atomic_load(&cfg->refs), 1);
    assert_ptr_equal(config_ref(cfg), cfg);
    assert_int_equal(atomic_load(&cfg->refs), 2);
    config_unref(cfg);
    assert_int_equal(atomic_load(&cfg->refs), 1);
    assert_string_equal(cfg->upstream.client_id, "acme"); /* still alive */
    config_unref(cfg);                                    /* freed: ASan would complain */
    assert_null(config_ref(NULL));
    config_unref(NULL);
}

static void test_reload_check(void **state)
{
    struct config_errors errs = {0};
    struct config *a = load_ok("[upstream]\nclient_id = acme\n");
    struct config *b = load_ok("[server]\nmax_body_size = 2m\nclient_timeout = 5s\n"
                               "[log]\nlevel = debug\n[upstream]\nclient_id = acme\n");
    struct config *c = load_ok("[server]\nlisten = [::1]:8081\n"
                               "[upstream]\nclient_id = other\npool_size = 8\n");

    (void)state;
    /* Only reloadable keys differ. */
    assert_int_equal(config_reload_check(a, b, &errs), 0);
    expect_count(&errs, 0);

    /* the upstream (client_id and the URLs it derives) reloads; listen and pool_size do not */
    assert_int_equal(config_reload_check(a, c, &errs), -1);
    expect_count(&errs, 2);
    expect_exact(&errs, 0,
                 "t.conf:0: [server] listen: changed from 127.0.0.1:8080 to [::1]:8081, which "
                 "takes effect only after a restart");
    expect_msg(&errs, 1, "[upstream] pool_size: changed from 64 to 8");
    config_errors_free(&errs);

    /* kept: the restart-only keys take the running values, the others the new ones */
    config_keep_restart_values(c, a);
    assert_int_equal(config_reload_check(a, c, &errs), 0);
    assert_string_equal(c->server.listen.host, "127.0.0.1");
    assert_int_equal(c->server.listen.port, 8080);
    assert_int_equal(c->upstream.pool_size, 64);
    assert_string_equal(c->upstream.client_id, "other");
    assert_string_equal(c->upstream.api.text, "https://other.anymate.app");

    assert_int_equal(config_reload_check(c, c, NULL), 0);
    config_unref(a);
    config_unref(b);
    config_unref(c);
}

/* Named sections, [policy] and most of [audit] reload; database and instance do not. */
static void test_reload_check_new_keys(void **state)
{
    struct config_errors errs = {0};
    struct config *a = load_ok("[upstream]\nclient_id = acme\n[audit]\ninstance = gw-1\n");
    struct config *b = load_ok("[upstream]\nclient_id = acme\n[audit]\ninstance = gw-1\n"
                               "batch_size = 1\ncommit_timeout = 5s\n"
                               "[policy]\nrequire_bearer = off\nvalidated_body_size = 1m\n"
                               "[endpoint \"FinishRun\"]\nenabled = off\n"
                               "[process \"p\"]\nseconds_per_run = 5\n");
    struct config *c = load_ok("[upstream]\nclient_id = acme\n[audit]\ninstance = gw-2\n"
                               "database = dbname=audit\nspool_dir = /tmp\n"
                               "[log]\naccess_log_file = /dev/null\n");

    (void)state;
    assert_int_equal(config_reload_check(a, b, &errs), 0);
    assert_int_equal(config_reload_check(b, a, &errs), 0);
    expect_count(&errs, 0);

    assert_int_equal(config_reload_check(a, c, &errs), -1);
    expect_count(&errs, 4);
    expect_exact(&errs, 0,
                 "t.conf:0: [audit] database: changed (values not shown), which takes effect "
                 "only after a restart");
    expect_exact(&errs, 1,
                 "t.conf:0: [audit] instance: changed from gw-1 to gw-2, which takes effect only "
                 "after a restart");
    expect_msg(&errs, 2, "[audit] spool_dir: changed from (unset) to /tmp");
    expect_msg(&errs, 3, "[log] access_log_file: changed from (unset) to /dev/null");
    config_errors_free(&errs);
    config_keep_restart_values(c, a); /* strings freed and copied: ASan checks the ownership */
    assert_null(c->audit.database);
    assert_null(c->audit.spool_dir);
    assert_null(c->log.access_log_file);
    assert_string_equal(c->audit.instance, "gw-1");
    config_unref(a);
    config_unref(b);
    config_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_parse_hostport),
        cmocka_unit_test(test_parse_url),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_log_level),
        cmocka_unit_test(test_bools_and_listen),
        cmocka_unit_test(test_client_id),
        cmocka_unit_test(test_unknown_section),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_key_outside_section),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_too_long_lines),
        cmocka_unit_test(test_syntax_accepted),
        cmocka_unit_test(test_multiple_errors),
        cmocka_unit_test(test_errors_accumulate),
        cmocka_unit_test(test_upstream_derived),
        cmocka_unit_test(test_upstream_override),
        cmocka_unit_test(test_upstream_missing),
        cmocka_unit_test(test_ca_file),
        cmocka_unit_test(test_load_file_errors),
        cmocka_unit_test(test_shipped_files_load),
        cmocka_unit_test(test_gateway_conf_documents_defaults),
        cmocka_unit_test(test_gateway_conf_examples),
        cmocka_unit_test(test_policy_values),
        cmocka_unit_test(test_validated_body_size_limit),
        cmocka_unit_test(test_audit_values),
        cmocka_unit_test(test_audit_instance),
        cmocka_unit_test(test_audit_spool_dir),
        cmocka_unit_test(test_audit_database_not_shown),
        cmocka_unit_test(test_long_line_split),
        cmocka_unit_test(test_endpoint_sections),
        cmocka_unit_test(test_endpoint_unknown),
        cmocka_unit_test(test_endpoint_body_limit),
        cmocka_unit_test(test_process_sections),
        cmocka_unit_test(test_process_key_length),
        cmocka_unit_test(test_named_duplicates),
        cmocka_unit_test(test_named_unknown_keys),
        cmocka_unit_test(test_named_headers_malformed),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_reload_check),
        cmocka_unit_test(test_reload_check_new_keys),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
