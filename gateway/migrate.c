/*
 * migrate: applies the embedded SQL migrations (see migrate.h) with blocking libpq.
 *
 * Protocol, per run:
 *   1. connect; take the session advisory lock MIGRATE_LOCK_KEY, so that replicas starting
 *      together apply each migration exactly once (the others wait, then find nothing to do);
 *   2. create gateway_schema_migrations if it is missing (under the lock, so without a race);
 *   3. for each embedded migration in name order: when recorded, compare its SHA-256 with the
 *      recorded one and refuse to go on if they differ (an applied migration was edited: add a
 *      new one instead); when not recorded, run it and record it in one transaction;
 *   4. unlock and disconnect (the lock would go with the session anyway).
 * A migration is one text sent with PQexec (the simple query protocol runs several statements);
 * it must not contain BEGIN/COMMIT or statements that cannot run in a transaction block.
 *
 * Never logs: problems come back in ERRBUF, progress lines go to the caller's FILE. PostgreSQL
 * notices are dropped (client_min_messages = warning) and warnings go to the progress FILE.
 */
#include "migrate.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/evp.h>

/* 'anymateM' in ASCII. gateway_ensure_partitions() (sql/migrations/0001) uses 'anymateP'. */
#define MIGRATE_LOCK_KEY "7020682379810596173"
#define MIGRATE_MIN_SERVER 120000 /* partitioning features used need 12; tested on 15 */
#define CHECKSUM_HEX (2 * 32 + 1) /* SHA-256 in lower-case hex, NUL-terminated */

static const char create_version_table[] =
    "create table gateway_schema_migrations (\n"
    "    version    text        not null primary key,\n"
    "    applied_at timestamptz not null default now(),\n"
    "    checksum   text        not null\n"
    ");\n"
    "comment on table gateway_schema_migrations is\n"
    "    'SQL migrations applied by anymate-gateway migrate (sql/migrations/NNNN_name.sql, "
    "forward only): file name, when, and the SHA-256 of its text, which must never change "
    "afterwards.';\n";

/* Appends printf-style text at *pos in buf (size len), truncating; *pos never passes len - 1. */
static void append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    if (len == 0 || *pos >= len - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    *pos = (size_t)n >= len - *pos ? len - 1 : *pos + (size_t)n;
}

/* Appends S on one line: line breaks (and the indentation after them) become "; ", trailing
 * white space is dropped. */
static void append_folded(char *buf, size_t len, size_t *pos, const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r'))
        n--;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n') {
            append(buf, len, pos, "; ");
            while (i + 1 < n && (s[i + 1] == ' ' || s[i + 1] == '\t'))
                i++; /* libpq indents continuation lines */
        } else if (s[i] != '\r') {
            append(buf, len, pos, "%c", s[i]);
        }
    }
}

/* Line and column (1-based) of character POSITION (1-based, counted in characters as
 * PostgreSQL counts them; the texts are UTF-8) in SQL. false when out of range. */
static bool position_to_line(const char *sql, long position, long *line, long *col)
{
    long chars = 0;
    *line = 1;
    *col = 0;
    for (const unsigned char *p = (const unsigned char *)sql; *p != '\0'; p++) {
        if ((*p & 0xC0) == 0x80)
            continue; /* UTF-8 continuation byte: same character */
        chars++;
        (*col)++;
        if (chars == position)
            return true;
        if (*p == '\n') {
            (*line)++;
            *col = 0;
        }
    }
    return false;
}

/*
 * Fills ERRBUF with "WHAT: " and PostgreSQL's error: from RES when it carries one (severity,
 * SQLSTATE, message, detail, hint, where in SQL, context), else PQerrorMessage(CONN). SQL, when
 * not NULL, is the text RES answers, to turn the error position into a line and column.
 */
static void pg_error(char *errbuf, size_t errlen, const char *what, PGconn *conn,
                     const PGresult *res, const char *sql)
{
    size_t pos = 0;
    append(errbuf, errlen, &pos, "%s: ", what);
    const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (msg == NULL) {
        const char *m = PQerrorMessage(conn);
        append_folded(errbuf, errlen, &pos, m != NULL && *m != '\0' ? m : "unknown error");
        return;
    }
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
    const char *position = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
    const char *context = PQresultErrorField(res, PG_DIAG_CONTEXT);
    append(errbuf, errlen, &pos, "%s %s: ", severity != NULL ? severity : "ERROR",
           state != NULL ? state : "?????");
    append_folded(errbuf, errlen, &pos, msg);
    if (position != NULL) {
        long line, col, p = strtol(position, NULL, 10);
        if (sql != NULL && position_to_line(sql, p, &line, &col))
            append(errbuf, errlen, &pos, " (at line %ld, column %ld; character %ld)", line, col, p);
        else
            append(errbuf, errlen, &pos, " (at character %ld)", p);
    }
    const char *extra[][2] = {{"DETAIL", detail}, {"HINT", hint}, {"CONTEXT", context}};
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
        if (extra[i][1] != NULL) {
            append(errbuf, errlen, &pos, "; %s: ", extra[i][0]);
            append_folded(errbuf, errlen, &pos, extra[i][1]);
        }
    }
}

/* Runs SQL (no parameters); true when it succeeded. On failure ERRBUF says WHAT failed. */
static bool exec_ok(PGconn *conn, const char *sql, const char *what, char *errbuf, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    if (!ok)
        pg_error(errbuf, errlen, what, conn, res, NULL);
    PQclear(res);
    return ok;
}

static void sha256_hex(const char *data, size_t len, char out[CHECKSUM_HEX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
        /* Cannot happen with a working libcrypto; a checksum that matches nothing is safe. */
        snprintf(out, CHECKSUM_HEX, "%s", "unavailable");
        return;
    }
    for (unsigned int i = 0; i < mdlen; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* "NNNN_name.sql": four digits, an underscore, at least one character, ".sql". */
static bool valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n < 10 || strcmp(name + n - 4, ".sql") != 0 || name[4] != '_')
        return false;
    for (int i = 0; i < 4; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
    }
    return true;
}

/* The embedded list must be well named and strictly ascending: the order is the contract. */
static int check_embedded(char *errbuf, size_t errlen)
{
    if (migrations_embedded_count == 0) {
        /* A build without sql/migrations/ (e.g. a Dockerfile that did not copy it): applying
         * nothing and reporting success would leave a database without a single table. */
        snprintf(errbuf, errlen,
                 "this binary has no migrations embedded (it was built without "
                 "sql/migrations/*.sql); rebuild it from the whole source tree");
        return -1;
    }
    for (size_t i = 0; i < migrations_embedded_count; i++) {
        const struct migration_file *m = &migrations_embedded[i];
        if (m->name == NULL || m->sql == NULL || !valid_name(m->name)) {
            snprintf(errbuf, errlen,
                     "embedded migration %zu has a bad name \"%s\" (want NNNN_name.sql)", i,
                     m->name != NULL ? m->name : "(null)");
            return -1;
        }
        if (strlen(m->sql) != m->len) {
            snprintf(errbuf, errlen, "migration %s contains a NUL byte", m->name);
            return -1;
        }
        if (i > 0 && strcmp(migrations_embedded[i - 1].name, m->name) >= 0) {
            snprintf(errbuf, errlen, "embedded migrations out of order: %s before %s",
                     migrations_embedded[i - 1].name, m->name);
            return -1;
        }
    }
    return 0;
}

struct notice_ctx {
    FILE *progress;
    const char *current; /* migration being applied, or NULL */
};

/* PostgreSQL warnings (notices are filtered out by the server) go to the progress stream. */
static void on_notice(void *arg, const PGresult *res)
{
    const struct notice_ctx *ctx = arg;
    if (ctx->progress == NULL)
        return;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (sev == NULL || strcmp(sev, "WARNING") != 0 || msg == NULL)
        return;
    fprintf(ctx->progress, "%s: postgres warning: %s\n",
            ctx->current != NULL ? ctx->current : "migrate", msg);
}

/* Applies M (checksum SUM) and records it, in one transaction. 0, or -1 with ERRBUF set. */
static int apply_one(PGconn *conn, const struct migration_file *m, const char *sum, char *errbuf,
                     size_t errlen)
{
    char what[256];
    snprintf(what, sizeof(what), "migration %s", m->name);
    if (!exec_ok(conn, "begin", what, errbuf, errlen))
        return -1;
    PGresult *res = PQexec(conn, m->sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        pg_error(errbuf, errlen, what, conn, res, m->sql);
        PQclear(res);
        goto rollback;
    }
    PQclear(res);
    if (PQtransactionStatus(conn) != PQTRANS_INTRANS) {
        /* COMMIT or ROLLBACK inside the file: part of it may be committed, unrecorded. */
        snprintf(errbuf, errlen,
                 "migration %s: ended the transaction itself (BEGIN/COMMIT/ROLLBACK in the "
                 "file?); it is not recorded as applied and may be partly applied: check the "
                 "database, remove the statement, and use a new migration file",
                 m->name);
        goto rollback;
    }
    const char *params[] = {m->name, sum};
    res = PQexecParams(conn,
                       "insert into gateway_schema_migrations (version, checksum) "
                       "values ($1, $2)",
                       2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(what, sizeof(what), "migration %s: recording it", m->name);
        pg_error(errbuf, errlen, what, conn, res, NULL);
        PQclear(res);
        goto rollback;
    }
    PQclear(res);
    snprintf(what, sizeof(what), "migration %s: commit", m->name);
    if (!exec_ok(conn, "commit", what, errbuf, errlen))
        goto rollback;
    return 0;

rollback:
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        PQclear(PQexec(conn, "rollback"));
    return -1;
}

struct applied {
    char *version;
    char *checksum;
};

/* The recorded migrations, NULL-terminated list owned by the caller (free_applied). */
static struct applied *read_applied(PGconn *conn, char *errbuf, size_t errlen)
{
    PGresult *res = PQexec(conn, "select version, checksum from gateway_schema_migrations "
                                 "order by version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_error(errbuf, errlen, "reading gateway_schema_migrations", conn, res, NULL);
        PQclear(res);
        return NULL;
    }
    int n = PQntuples(res);
    struct applied *list = calloc((size_t)n + 1, sizeof(*list));
    if (list == NULL)
        goto oom;
    for (int i = 0; i < n; i++) {
        list[i].version = strdup(PQgetvalue(res, i, 0));
        list[i].checksum = strdup(PQgetvalue(res, i, 1));
        if (list[i].version == NULL || list[i].checksum == NULL)
            goto oom;
    }
    PQclear(res);
    return list;

oom:
    snprintf(errbuf, errlen, "out of memory reading gateway_schema_migrations");
    for (int i = 0; list != NULL && i < n; i++) {
        free(list[i].version);
        free(list[i].checksum);
    }
    free(list);
    PQclear(res);
    return NULL;
}

static void free_applied(struct applied *list)
{
    for (struct applied *a = list; a != NULL && a->version != NULL; a++) {
        free(a->version);
        free(a->checksum);
    }
    free(list);
}

static const struct applied *find_applied(const struct applied *list, const char *name)
{
    for (const struct applied *a = list; a->version != NULL; a++) {
        if (strcmp(a->version, name) == 0)
            return a;
    }
    return NULL;
}

static bool is_embedded(const char *name)
{
    for (size_t i = 0; i < migrations_embedded_count; i++) {
        if (strcmp(migrations_embedded[i].name, name) == 0)
            return true;
    }
    return false;
}

/* Under the lock: bring the schema up to date. Returns the number applied, or -1. */
static int migrate_locked(PGconn *conn, struct notice_ctx *nctx, char *errbuf, size_t errlen)
{
    PGresult *res = PQexec(conn, "select to_regclass('gateway_schema_migrations') is null");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        pg_error(errbuf, errlen, "looking for gateway_schema_migrations", conn, res, NULL);
        PQclear(res);
        return -1;
    }
    bool missing = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (missing &&
        !exec_ok(conn, create_version_table, "creating gateway_schema_migrations", errbuf, errlen))
        return -1;

    struct applied *applied = read_applied(conn, errbuf, errlen);
    if (applied == NULL)
        return -1;
    int count = 0;
    for (size_t i = 0; i < migrations_embedded_count; i++) {
        const struct migration_file *m = &migrations_embedded[i];
        char sum[CHECKSUM_HEX];
        sha256_hex(m->sql, m->len, sum);
        const struct applied *a = find_applied(applied, m->name);
        if (a != NULL) {
            if (strcmp(a->checksum, sum) != 0) {
                snprintf(errbuf, errlen,
                         "migration %s was applied with checksum %s, but this binary's copy has "
                         "%s: an applied migration must never change (add a new migration "
                         "instead); nothing more was applied",
                         m->name, a->checksum, sum);
                count = -1;
                break;
            }
            continue;
        }
        nctx->current = m->name;
        int rc = apply_one(conn, m, sum, errbuf, errlen);
        nctx->current = NULL;
        if (rc != 0) {
            count = -1;
            break;
        }
        count++;
        if (nctx->progress != NULL)
            fprintf(nctx->progress, "applied %s\n", m->name);
    }
    for (const struct applied *a = applied; count >= 0 && a->version != NULL; a++) {
        if (!is_embedded(a->version) && nctx->progress != NULL)
            fprintf(nctx->progress,
                    "note: the database has migration %s, which this binary does not know "
                    "(applied by a newer gateway?)\n",
                    a->version);
    }
    free_applied(applied);
    return count;
}

int migrate_apply(const char *conninfo, FILE *progress, char *errbuf, size_t errlen)
{
    char scratch[1];
    if (errbuf == NULL || errlen == 0) {
        errbuf = scratch;
        errlen = sizeof(scratch);
    }
    errbuf[0] = '\0';
    if (check_embedded(errbuf, errlen) != 0)
        return -1;

    /* conninfo last, so that what it says wins; it may be a "key=value" string or a URI. A
     * connect timeout unless the caller or PGCONNECT_TIMEOUT sets one: start-up must not hang
     * on an unreachable database. */
    const char *keys[4], *values[4];
    int k = 0;
    if (getenv("PGCONNECT_TIMEOUT") == NULL) {
        keys[k] = "connect_timeout";
        values[k++] = "10";
    }
    keys[k] = "fallback_application_name";
    values[k++] = "anymate-gateway migrate";
    keys[k] = "dbname";
    values[k++] = conninfo != NULL ? conninfo : "";
    keys[k] = NULL;
    values[k] = NULL;
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    if (conn == NULL) {
        snprintf(errbuf, errlen, "connecting to the audit database: out of memory");
        return -1;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        pg_error(errbuf, errlen, "connecting to the audit database", conn, NULL, NULL);
        PQfinish(conn);
        return -1;
    }
    struct notice_ctx nctx = {progress, NULL};
    PQsetNoticeReceiver(conn, on_notice, &nctx);

    int count = -1;
    if (PQserverVersion(conn) < MIGRATE_MIN_SERVER) {
        snprintf(errbuf, errlen,
                 "the audit database runs PostgreSQL %d.%d; the schema needs 12 or newer (15 "
                 "is tested)",
                 PQserverVersion(conn) / 10000, PQserverVersion(conn) % 10000);
        goto finish;
    }
    if (!exec_ok(conn, "set client_min_messages = warning", "setting up the session", errbuf,
                 errlen))
        goto finish;
    /* Blocks while another replica migrates; it releases the lock when done (or disconnects). */
    if (!exec_ok(conn, "select pg_advisory_lock(" MIGRATE_LOCK_KEY ")",
                 "taking the migration lock (pg_advisory_lock)", errbuf, errlen))
        goto finish;
    count = migrate_locked(conn, &nctx, errbuf, errlen);
    /* Failure to unlock is harmless: PQfinish ends the session, which releases it. */
    PQclear(PQexec(conn, "select pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));

finish:
    PQfinish(conn);
    return count;
}
