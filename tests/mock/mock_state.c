/*
 * The Anymate model behind the mock server (see mock_state.h).
 *
 * Ownership: the state owns its processes (a list), its tasks (an array of pointers indexed by
 * id - FIRST_TASK_ID, never freed before the state), its runs (an array of structs indexed by
 * id - FIRST_RUN_ID) and the ledger array. A task points at its process (borrowed; processes
 * live as long as the state) and sits on its process's ready queue exactly while TASK_READY.
 *
 * KPI rules (design.md §6, anymate-api.md §3), applied by kpi_record:
 *   - overwriteSecondsSaved set: seconds = it; entries = overwriteEntries if set, else the
 *     default entries (Advanced Mode) or null.
 *   - only overwriteEntries set: entries = it, seconds = it x secondsPerEntry.
 *   - neither: Advanced Mode -> defaultEntries, defaultEntries x secondsPerEntry; otherwise
 *     entries null and secondsPerRun (runs) or secondsPerTask (tasks).
 *   - FinishRun of a process with tasks enabled: overrides are recorded but ignored; the row
 *     says perTask=true, entries null, secondsSaved 0 (the KPIs come from the task actions).
 *   - Manual, Retry and Error use the same defaults as Solved: Anymate documents only the
 *     "solved task" default (anymate-api.md §3 and §7.11), so the mock values every outcome
 *     alike rather than invent per-outcome numbers.
 */
#include "mock_state.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "mock_util.h"

#define FIRST_RUN_ID 501
#define FIRST_TASK_ID 1001
#define TAKE_MANY_MAX 10

const struct mock_endpoint mock_endpoints[] = {
    {"OkToRun", false, true, MOCK_BODY_NONE, MOCK_OP_OK_TO_RUN},
    {"StartOrGetRun", false, true, MOCK_BODY_NONE, MOCK_OP_START_OR_GET_RUN},
    {"StartRun", false, true, MOCK_BODY_NONE, MOCK_OP_START_RUN},
    {"FinishRun", true, false, MOCK_BODY_OBJECT, MOCK_OP_FINISH_RUN},
    {"Failure", true, false, MOCK_BODY_OBJECT, MOCK_OP_FAILURE},
    {"GetRules", false, true, MOCK_BODY_NONE, MOCK_OP_GET_RULES},
    {"TakeNext", false, true, MOCK_BODY_NONE, MOCK_OP_TAKE_NEXT},
    {"CreateTask", true, true, MOCK_BODY_OBJECT, MOCK_OP_CREATE_TASK},
    {"CreateTasks", true, true, MOCK_BODY_ARRAY, MOCK_OP_CREATE_TASKS},
    {"CreateAndTakeTask", true, true, MOCK_BODY_OBJECT, MOCK_OP_CREATE_AND_TAKE_TASK},
    {"UpdateTask", true, false, MOCK_BODY_OBJECT, MOCK_OP_UPDATE_TASK},
    {"Solved", true, false, MOCK_BODY_OBJECT, MOCK_OP_SOLVED},
    {"Manual", true, false, MOCK_BODY_OBJECT, MOCK_OP_MANUAL},
    {"Retry", true, false, MOCK_BODY_OBJECT, MOCK_OP_RETRY},
    {"Error", true, false, MOCK_BODY_OBJECT, MOCK_OP_ERROR},
    {"TakeMany", false, true, MOCK_BODY_NONE, MOCK_OP_TAKE_MANY},
    {"SolvedAsync", true, false, MOCK_BODY_OBJECT, MOCK_OP_SOLVED_ASYNC},
    {"ManualAsync", true, false, MOCK_BODY_OBJECT, MOCK_OP_MANUAL_ASYNC},
    {"RetryAsync", true, false, MOCK_BODY_OBJECT, MOCK_OP_RETRY_ASYNC},
    {"ErrorAsync", true, false, MOCK_BODY_OBJECT, MOCK_OP_ERROR_ASYNC},
    {"Return", true, false, MOCK_BODY_ARRAY, MOCK_OP_RETURN},
};
const size_t mock_endpoint_count = sizeof(mock_endpoints) / sizeof(mock_endpoints[0]);

struct settings {
    bool tasks_enabled;
    long long seconds_per_run;
    long long seconds_per_task;
    bool advanced_mode;
    long long default_entries;
    long long seconds_per_entry;
    bool gate_open;
    bool not_blocked_date;
    json_t *rules; /* owned object, or NULL for the built-in {"mock": true} */
};

enum task_state { TASK_READY, TASK_TAKEN, TASK_DONE };

struct process;

struct task {
    long long id;
    struct process *proc; /* borrowed */
    json_t *fields;       /* owned object: the process's own keys and fields */
    json_t *reason;       /* owned: string or null */
    json_t *comment;      /* owned: string or null */
    enum task_state state;
    bool queued;         /* on proc->ready (only while TASK_READY) */
    const char *outcome; /* static: last accepted action, or NULL */
    long long run_id;    /* run of the last take; 0 = never taken */
    time_t active_at;    /* not handed out by TakeNext before this */
    TAILQ_ENTRY(task) link;
};

TAILQ_HEAD(task_queue, task);

struct process {
    char *key; /* owned */
    struct settings s;
    long long open_run; /* 0 = no open run */
    bool failure;
    char *failure_message; /* owned, may be NULL */
    struct task_queue ready;
    TAILQ_ENTRY(process) link;
};

struct run {
    long long id;
    struct process *proc; /* borrowed */
    bool open;
};

struct mock_state {
    TAILQ_HEAD(, process) procs;
    struct settings defaults;
    struct task **tasks; /* owned array of owned tasks */
    size_t ntasks, tasks_cap;
    struct run *runs; /* owned array */
    size_t nruns, runs_cap;
    json_t *ledger; /* owned array */
    long long ledger_seq;
    char request_id[128]; /* X-Request-Id of the request being served ("" if none) */
    long long item;       /* index of the Return item being applied (0 otherwise) */
};

/* ---- settings ------------------------------------------------------------------------ */

enum setting_type { SET_BOOL, SET_INT, SET_OBJECT };

static const struct {
    const char *key;
    enum setting_type type;
    size_t offset;
} setting_keys[] = {
    {"tasksEnabled", SET_BOOL, offsetof(struct settings, tasks_enabled)},
    {"secondsPerRun", SET_INT, offsetof(struct settings, seconds_per_run)},
    {"secondsPerTask", SET_INT, offsetof(struct settings, seconds_per_task)},
    {"advancedMode", SET_BOOL, offsetof(struct settings, advanced_mode)},
    {"defaultEntries", SET_INT, offsetof(struct settings, default_entries)},
    {"secondsPerEntry", SET_INT, offsetof(struct settings, seconds_per_entry)},
    {"gateOpen", SET_BOOL, offsetof(struct settings, gate_open)},
    {"notBlockedDate", SET_BOOL, offsetof(struct settings, not_blocked_date)},
    {"rules", SET_OBJECT, offsetof(struct settings, rules)},
};

static void settings_init(struct settings *s)
{
    *s = (struct settings){
        .tasks_enabled = false,
        .seconds_per_run = 60,
        .seconds_per_task = 30,
        .advanced_mode = false,
        .default_entries = 1,
        .seconds_per_entry = 10,
        .gate_open = true,
        .not_blocked_date = true,
        .rules = NULL,
    };
}

static void settings_copy(struct settings *dst, const struct settings *src)
{
    *dst = *src;
    json_incref(dst->rules);
}

static void settings_release(struct settings *s)
{
    json_decref(s->rules);
    s->rules = NULL;
}

/* Applies the keys of spec to s. On error s may be half-changed: callers use a scratch copy. */
static int settings_apply(struct settings *s, const char *pk, const json_t *spec, char *err,
                          size_t errlen)
{
    if (!json_is_object(spec)) {
        snprintf(err, errlen, "process \"%s\": settings must be a JSON object", pk);
        return -1;
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)spec, key, val)
    {
        size_t i;
        for (i = 0; i < sizeof(setting_keys) / sizeof(setting_keys[0]); i++) {
            if (strcmp(setting_keys[i].key, key) == 0)
                break;
        }
        if (i == sizeof(setting_keys) / sizeof(setting_keys[0])) {
            snprintf(err, errlen, "process \"%s\": unknown setting \"%s\"", pk, key);
            return -1;
        }
        char *field = (char *)s + setting_keys[i].offset;
        switch (setting_keys[i].type) {
        case SET_BOOL:
            if (!json_is_boolean(val)) {
                snprintf(err, errlen, "process \"%s\": %s must be true or false", pk, key);
                return -1;
            }
            *(bool *)field = json_is_true(val);
            break;
        case SET_INT:
            if (!json_is_integer(val) || json_integer_value(val) < 0 ||
                json_integer_value(val) > INT32_MAX) {
                snprintf(err, errlen, "process \"%s\": %s must be an integer 0..%d", pk, key,
                         INT32_MAX);
                return -1;
            }
            *(long long *)field = json_integer_value(val);
            break;
        case SET_OBJECT:
            if (!json_is_object(val)) {
                snprintf(err, errlen, "process \"%s\": %s must be a JSON object", pk, key);
                return -1;
            }
            json_decref(*(json_t **)field);
            *(json_t **)field = json_deep_copy(val);
            break;
        }
    }
    return 0;
}

static json_t *settings_json(const struct settings *s)
{
    return json_pack("{s:b, s:I, s:I, s:b, s:I, s:I, s:b, s:b, s:O}", "tasksEnabled",
                     s->tasks_enabled, "secondsPerRun", (json_int_t)s->seconds_per_run,
                     "secondsPerTask", (json_int_t)s->seconds_per_task, "advancedMode",
                     s->advanced_mode, "defaultEntries", (json_int_t)s->default_entries,
                     "secondsPerEntry", (json_int_t)s->seconds_per_entry, "gateOpen", s->gate_open,
                     "notBlockedDate", s->not_blocked_date, "rules",
                     s->rules != NULL ? s->rules : json_null());
}

/* ---- state, processes, runs, tasks ------------------------------------------------------ */

struct mock_state *mock_state_new(void)
{
    struct mock_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    TAILQ_INIT(&st->procs);
    settings_init(&st->defaults);
    st->ledger = json_array();
    if (st->ledger == NULL) {
        free(st);
        return NULL;
    }
    return st;
}

void mock_state_free(struct mock_state *st)
{
    if (st == NULL)
        return;
    for (size_t i = 0; i < st->ntasks; i++) {
        struct task *t = st->tasks[i];
        json_decref(t->fields);
        json_decref(t->reason);
        json_decref(t->comment);
        free(t);
    }
    free(st->tasks);
    free(st->runs);
    struct process *p;
    while ((p = TAILQ_FIRST(&st->procs)) != NULL) {
        TAILQ_REMOVE(&st->procs, p, link);
        settings_release(&p->s);
        free(p->failure_message);
        free(p->key);
        free(p);
    }
    settings_release(&st->defaults);
    json_decref(st->ledger);
    free(st);
}

static struct process *process_find(const struct mock_state *st, const char *key)
{
    struct process *p;
    TAILQ_FOREACH(p, &st->procs, link)
    {
        if (strcmp(p->key, key) == 0)
            return p;
    }
    return NULL;
}

/* The process named key, created with the current defaults on first use. NULL on OOM. */
static struct process *process_get(struct mock_state *st, const char *key)
{
    struct process *p = process_find(st, key);
    if (p != NULL)
        return p;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->key = strdup(key);
    if (p->key == NULL) {
        free(p);
        return NULL;
    }
    settings_copy(&p->s, &st->defaults);
    TAILQ_INIT(&p->ready);
    TAILQ_INSERT_TAIL(&st->procs, p, link);
    return p;
}

static struct run *run_find(const struct mock_state *st, long long id)
{
    if (id < FIRST_RUN_ID || (unsigned long long)(id - FIRST_RUN_ID) >= st->nruns)
        return NULL;
    return &st->runs[id - FIRST_RUN_ID];
}

/* The id of p's open run, opening one if there is none. -1 on OOM. */
static long long run_open(struct mock_state *st, struct process *p)
{
    if (p->open_run != 0)
        return p->open_run;
    if (st->nruns == st->runs_cap) {
        size_t cap = st->runs_cap != 0 ? st->runs_cap * 2 : 64;
        struct run *runs = realloc(st->runs, cap * sizeof(*runs));
        if (runs == NULL)
            return -1;
        st->runs = runs;
        st->runs_cap = cap;
    }
    struct run *r = &st->runs[st->nruns];
    r->id = FIRST_RUN_ID + (long long)st->nruns;
    r->proc = p;
    r->open = true;
    st->nruns++;
    p->open_run = r->id;
    return r->id;
}

static void run_close(struct mock_state *st, struct process *p)
{
    struct run *r = run_find(st, p->open_run);
    if (r != NULL)
        r->open = false;
    p->open_run = 0;
}

static struct task *task_find(const struct mock_state *st, long long id)
{
    if (id < FIRST_TASK_ID || (unsigned long long)(id - FIRST_TASK_ID) >= st->ntasks)
        return NULL;
    return st->tasks[id - FIRST_TASK_ID];
}

static bool is_reserved_key(const char *key)
{
    static const char *const reserved[] = {"taskId", "reason", "runId", "processKey", "comment"};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        if (strcasecmp(key, reserved[i]) == 0)
            return true;
    }
    return false;
}

static json_t *string_or_null(const json_t *v)
{
    return json_is_string(v) ? json_incref((json_t *)v) : json_null();
}

/* A new task of p from a NewTask body (borrowed), not yet queued. NULL on OOM. */
static struct task *task_new(struct mock_state *st, struct process *p, const json_t *body,
                             time_t now)
{
    if (st->ntasks == st->tasks_cap) {
        size_t cap = st->tasks_cap != 0 ? st->tasks_cap * 2 : 64;
        struct task **tasks = realloc(st->tasks, cap * sizeof(*tasks));
        if (tasks == NULL)
            return NULL;
        st->tasks = tasks;
        st->tasks_cap = cap;
    }
    struct task *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->fields = json_object();
    if (t->fields == NULL) {
        free(t);
        return NULL;
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)body, key, val)
    {
        if (!is_reserved_key(key))
            json_object_set_new(t->fields, key, json_deep_copy(val));
    }
    t->id = FIRST_TASK_ID + (long long)st->ntasks;
    t->proc = p;
    t->reason = json_null();
    t->comment = string_or_null(mock_json_get_ci(body, "comment"));
    t->state = TASK_READY;
    t->active_at = now;
    json_t *act = mock_json_get_ci(body, "activationDate");
    time_t when;
    if (json_is_string(act) && mock_parse_iso8601(json_string_value(act), &when))
        t->active_at = when;
    st->tasks[st->ntasks++] = t;
    return t;
}

static void task_enqueue(struct task *t)
{
    t->state = TASK_READY;
    t->queued = true;
    TAILQ_INSERT_TAIL(&t->proc->ready, t, link);
}

/* The oldest ready task of p that is active at now, or NULL. The gate and the calendar block
 * hand-outs too: "if a bot ignores okToRun=false, TakeNext behaves as if the queue were empty". */
static struct task *queue_first(const struct process *p, time_t now)
{
    if (!p->s.gate_open || !p->s.not_blocked_date)
        return NULL;
    struct task *t;
    TAILQ_FOREACH(t, &p->ready, link)
    {
        if (t->active_at <= now)
            return t;
    }
    return NULL;
}

/* Locks t (queued or new) and attaches it to its process's open run. -1 on OOM. */
static int task_take(struct mock_state *st, struct task *t)
{
    long long run = run_open(st, t->proc);
    if (run < 0)
        return -1;
    if (t->queued) {
        TAILQ_REMOVE(&t->proc->ready, t, link);
        t->queued = false;
    }
    t->state = TASK_TAKEN;
    t->run_id = run;
    return 0;
}

/* The Task object: {taskId, reason, runId, processKey, comment, ...fields}. New reference. */
static json_t *task_json(const struct task *t)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "taskId", json_integer(t->id));
    json_object_set(o, "reason", t->reason);
    json_object_set_new(o, "runId", t->run_id != 0 ? json_integer(t->run_id) : json_null());
    json_object_set_new(o, "processKey", mock_json_text(t->proc->key));
    json_object_set(o, "comment", t->comment);
    const char *key;
    json_t *val;
    json_object_foreach(t->fields, key, val)
    {
        if (json_object_get(o, key) == NULL)
            json_object_set(o, key, val);
    }
    return o;
}

static void clear_failure(struct process *p)
{
    p->failure = false;
    free(p->failure_message);
    p->failure_message = NULL;
}

/* ---- KPI ledger ------------------------------------------------------------------------- */

struct kpi_in {
    bool has_entries;
    long long entries; /* overwriteEntries */
    bool has_seconds;
    long long seconds; /* overwriteSecondsSaved */
};

static json_t *opt_int(bool has, long long v)
{
    return has ? json_integer(v) : json_null();
}

/* Appends one ledger row. kind is "run" or "task"; id the runId or taskId. */
static void kpi_record(struct mock_state *st, const char *kind, long long id,
                       const struct process *p, const char *action, const char *endpoint,
                       long long run_id, const struct kpi_in *in, bool per_task)
{
    const struct settings *s = &p->s;
    bool has_entries = false;
    long long entries = 0, seconds = 0;
    if (!per_task) {
        has_entries = in->has_entries || s->advanced_mode;
        entries = in->has_entries ? in->entries : s->default_entries;
        if (in->has_seconds)
            seconds = in->seconds;
        else if (in->has_entries && s->advanced_mode)
            seconds = in->entries * s->seconds_per_entry;
        else if (s->advanced_mode)
            seconds = s->default_entries * s->seconds_per_entry;
        else
            seconds = strcmp(kind, "run") == 0 ? s->seconds_per_run : s->seconds_per_task;
    }
    json_t *row = json_object();
    if (row == NULL)
        return;
    json_object_set_new(row, "seq", json_integer(++st->ledger_seq));
    json_object_set_new(row, "kind", json_string(kind));
    json_object_set_new(row, "id", json_integer(id));
    json_object_set_new(row, "processKey", mock_json_text(p->key));
    json_object_set_new(row, "action", json_string(action));
    json_object_set_new(row, "endpoint", json_string(endpoint));
    json_object_set_new(row, "runId", run_id != 0 ? json_integer(run_id) : json_null());
    json_object_set_new(row, "entries", opt_int(has_entries, entries));
    json_object_set_new(row, "secondsSaved", json_integer(seconds));
    json_object_set_new(row, "overwriteEntries", opt_int(in->has_entries, in->entries));
    json_object_set_new(row, "overwriteSecondsSaved", opt_int(in->has_seconds, in->seconds));
    json_object_set_new(row, "perTask", json_boolean(per_task));
    json_object_set_new(row, "requestId",
                        st->request_id[0] ? json_string(st->request_id) : json_null());
    json_object_set_new(row, "item", json_integer(st->item));
    json_array_append_new(st->ledger, row);
}

json_t *mock_state_ledger(const struct mock_state *st)
{
    return st->ledger;
}

void mock_state_clear_ledger(struct mock_state *st)
{
    json_array_clear(st->ledger);
    st->ledger_seq = 0;
}

/* ---- request field parsing ---------------------------------------------------------------- */

/* Reads the two optional KPI overrides. -1 with err on a wrong type or a value outside int32. */
static int parse_kpi(const json_t *body, struct kpi_in *in, char *err, size_t errlen)
{
    static const char *const names[] = {"overwriteEntries", "overwriteSecondsSaved"};
    bool *has[] = {&in->has_entries, &in->has_seconds};
    long long *val[] = {&in->entries, &in->seconds};
    for (int i = 0; i < 2; i++) {
        int rc = mock_json_get_int(body, names[i], INT32_MIN, INT32_MAX, val[i]);
        if (rc < 0) {
            snprintf(err, errlen, "%s must be a 32-bit integer or null", names[i]);
            return -1;
        }
        *has[i] = rc == 1;
    }
    return 0;
}

/* A field that must be a string or null when present. -1 with err otherwise. */
static int parse_text(const json_t *body, const char *name, json_t **out, char *err, size_t errlen)
{
    json_t *v = mock_json_get_ci(body, name);
    if (v != NULL && !json_is_string(v) && !json_is_null(v)) {
        snprintf(err, errlen, "%s must be a string or null", name);
        return -1;
    }
    *out = v;
    return 0;
}

struct action_args {
    bool has_task_id;
    long long task_id;
    json_t *reason;     /* borrowed; NULL when absent */
    json_t *comment;    /* borrowed; NULL when absent */
    json_t *activation; /* borrowed; NULL when absent */
    struct kpi_in kpi;
    const char *action; /* Return items: canonical action name, NULL when missing/unknown */
};

static const char *const action_names[] = {"Solved", "Manual", "Retry", "Error"};

/* Parses a TaskAction / RetryTaskAction / ReturnTaskAction object. -1 with err on a type error
 * (the whole request is then a 400); a missing taskId or action is reported later as a refusal. */
static int parse_action(const json_t *body, bool with_action, struct action_args *a, char *err,
                        size_t errlen)
{
    memset(a, 0, sizeof(*a));
    if (!json_is_object(body)) {
        snprintf(err, errlen, "each task action must be a JSON object");
        return -1;
    }
    int rc = mock_json_get_int(body, "taskId", INT64_MIN, INT64_MAX, &a->task_id);
    if (rc < 0) {
        snprintf(err, errlen, "taskId must be an integer");
        return -1;
    }
    a->has_task_id = rc == 1;
    if (parse_text(body, "reason", &a->reason, err, errlen) != 0 ||
        parse_text(body, "comment", &a->comment, err, errlen) != 0 ||
        parse_text(body, "activationDate", &a->activation, err, errlen) != 0 ||
        parse_kpi(body, &a->kpi, err, errlen) != 0)
        return -1;
    if (with_action) {
        json_t *act = mock_json_get_ci(body, "action");
        if (act != NULL && !json_is_string(act) && !json_is_null(act)) {
            snprintf(err, errlen, "action must be a string");
            return -1;
        }
        for (size_t i = 0; json_is_string(act) && i < 4; i++) {
            if (strcasecmp(json_string_value(act), action_names[i]) == 0)
                a->action = action_names[i];
        }
    }
    return 0;
}

/* Applies one accepted-or-refused task action. Returns true when accepted; false with the
 * refusal in msg. */
static bool apply_action(struct mock_state *st, const struct action_args *a, const char *action,
                         const char *endpoint, time_t now, char *msg, size_t msglen)
{
    if (!a->has_task_id) {
        snprintf(msg, msglen, "taskId is required");
        return false;
    }
    struct task *t = task_find(st, a->task_id);
    if (t == NULL) {
        snprintf(msg, msglen, "task %lld not found", a->task_id);
        return false;
    }
    if (t->state != TASK_TAKEN) {
        snprintf(msg, msglen, "task %lld is not taken", a->task_id);
        return false;
    }
    kpi_record(st, "task", t->id, t->proc, action, endpoint, t->run_id, &a->kpi, false);
    if (a->reason != NULL) {
        json_decref(t->reason);
        t->reason = json_incref(a->reason);
    }
    if (a->comment != NULL && json_is_string(a->comment)) {
        json_decref(t->comment);
        t->comment = json_incref(a->comment);
    }
    t->outcome = action;
    if (strcmp(action, "Retry") == 0) {
        /* Back of the queue; an unparseable activationDate means "now". */
        time_t when;
        t->active_at = now;
        if (json_is_string(a->activation) &&
            mock_parse_iso8601(json_string_value(a->activation), &when))
            t->active_at = when;
        task_enqueue(t);
    } else {
        t->state = TASK_DONE;
    }
    return true;
}

/* ---- endpoints -------------------------------------------------------------------------- */

static json_t *bad_request(int *status, const char *err)
{
    *status = 400;
    return mock_response(false, "%s", err);
}

static json_t *op_ok_to_run(struct mock_state *st, const char *key, time_t now)
{
    struct process *p = process_get(st, key);
    if (p == NULL)
        return NULL;
    /* tasksAvailable reports the queue itself, whatever the gate and the calendar say. */
    bool tasks = false;
    struct task *t;
    TAILQ_FOREACH(t, &p->ready, link)
    {
        if (t->active_at <= now)
            tasks = true;
    }
    bool ok = p->s.gate_open && p->s.not_blocked_date && (!p->s.tasks_enabled || tasks);
    return json_pack("{s:b, s:b, s:b, s:b}", "gateOpen", p->s.gate_open, "tasksAvailable", tasks,
                     "notBlockedDate", p->s.not_blocked_date, "okToRun", ok);
}

static json_t *op_start_run(struct mock_state *st, const char *key)
{
    struct process *p = process_get(st, key);
    if (p == NULL)
        return NULL;
    clear_failure(p);
    long long run = run_open(st, p);
    if (run < 0)
        return NULL;
    json_t *res = json_object();
    json_object_set_new(res, "processKey", mock_json_text(key));
    json_object_set_new(res, "runId", json_integer(run));
    return res;
}

static json_t *op_finish_run(struct mock_state *st, const json_t *body, int *status)
{
    char err[256];
    long long run_id = 0;
    int rc = mock_json_get_int(body, "runId", INT64_MIN, INT64_MAX, &run_id);
    if (rc < 0)
        return bad_request(status, "runId must be an integer");
    struct kpi_in kpi;
    if (parse_kpi(body, &kpi, err, sizeof(err)) != 0)
        return bad_request(status, err);
    if (rc == 0)
        return mock_response(false, "runId is required");
    struct run *r = run_find(st, run_id);
    if (r == NULL)
        return mock_response(false, "run %lld not found", run_id);
    if (!r->open)
        return mock_response(false, "run %lld is already closed", run_id);
    struct process *p = r->proc;
    run_close(st, p);
    kpi_record(st, "run", run_id, p, "FinishRun", "FinishRun", run_id, &kpi, p->s.tasks_enabled);
    return mock_response(true, "%s", "");
}

static json_t *op_failure(struct mock_state *st, const json_t *body, int *status)
{
    char err[256];
    json_t *key = mock_json_get_ci(body, "processKey");
    json_t *message;
    if (key != NULL && !json_is_string(key) && !json_is_null(key))
        return bad_request(status, "processKey must be a string");
    if (parse_text(body, "message", &message, err, sizeof(err)) != 0)
        return bad_request(status, err);
    if (!json_is_string(key) || json_string_length(key) == 0)
        return mock_response(false, "processKey is required");
    struct process *p = process_get(st, json_string_value(key));
    if (p == NULL)
        return NULL;
    clear_failure(p);
    p->failure = true;
    if (json_is_string(message))
        p->failure_message = strdup(json_string_value(message));
    return mock_response(true, "%s", "");
}

static json_t *op_get_rules(struct mock_state *st, const char *key)
{
    struct process *p = process_get(st, key);
    if (p == NULL)
        return NULL;
    if (p->s.rules != NULL)
        return json_deep_copy(p->s.rules);
    return json_pack("{s:b}", "mock", 1);
}

static json_t *op_take_next(struct mock_state *st, const char *key, time_t now)
{
    struct process *p = process_get(st, key);
    if (p == NULL)
        return NULL;
    clear_failure(p);
    struct task *t = queue_first(p, now);
    if (t == NULL) {
        /* Empty queue: Anymate closes the open run and answers a dummy task with id -1. Its
         * other fields are undocumented; the mock fills them so that every key is present. */
        run_close(st, p);
        json_t *dummy = json_object();
        json_object_set_new(dummy, "taskId", json_integer(-1));
        json_object_set_new(dummy, "reason", json_null());
        json_object_set_new(dummy, "runId", json_integer(-1));
        json_object_set_new(dummy, "processKey", mock_json_text(key));
        json_object_set_new(dummy, "comment", json_null());
        return dummy;
    }
    if (task_take(st, t) != 0)
        return NULL;
    return task_json(t);
}

static json_t *op_take_many(struct mock_state *st, const char *key, time_t now)
{
    struct process *p = process_get(st, key);
    if (p == NULL)
        return NULL;
    clear_failure(p);
    json_t *list = json_array();
    if (list == NULL)
        return NULL;
    struct task *t;
    while (json_array_size(list) < TAKE_MANY_MAX && (t = queue_first(p, now)) != NULL) {
        if (task_take(st, t) != 0)
            break;
        json_array_append_new(list, task_json(t));
    }
    /* Like TakeNext, finding nothing closes the run. */
    if (json_array_size(list) == 0)
        run_close(st, p);
    return list;
}

static json_t *op_create_tasks(struct mock_state *st, const char *key, json_t *body, time_t now,
                               int *status)
{
    size_t i;
    json_t *item;
    json_array_foreach(body, i, item)
    {
        if (!json_is_object(item)) {
            char err[64];
            snprintf(err, sizeof(err), "element %zu is not a JSON object", i);
            return bad_request(status, err);
        }
    }
    struct process *p = process_get(st, key);
    json_t *ids = json_array();
    if (p == NULL || ids == NULL) {
        json_decref(ids);
        return NULL;
    }
    json_array_foreach(body, i, item)
    {
        struct task *t = task_new(st, p, item, now);
        if (t == NULL) {
            json_decref(ids);
            return NULL;
        }
        task_enqueue(t);
        json_array_append_new(ids, json_integer(t->id));
    }
    json_t *res = mock_response(true, "%s", "");
    json_object_set_new(res, "taskIds", ids);
    return res;
}

static json_t *op_create_task(struct mock_state *st, const char *key, const json_t *body,
                              time_t now, bool take)
{
    struct process *p = process_get(st, key);
    if (p == NULL)
        return NULL;
    struct task *t = task_new(st, p, body, now);
    if (t == NULL)
        return NULL;
    if (take) {
        clear_failure(p);
        if (task_take(st, t) != 0)
            return NULL;
        return task_json(t);
    }
    task_enqueue(t);
    json_t *res = mock_response(true, "%s", "");
    json_object_set_new(res, "taskId", json_integer(t->id));
    return res;
}

static json_t *op_update_task(struct mock_state *st, const json_t *body, int *status)
{
    long long id = 0;
    int rc = mock_json_get_int(body, "taskId", INT64_MIN, INT64_MAX, &id);
    if (rc < 0)
        return bad_request(status, "taskId must be an integer or a numeric string");
    if (rc == 0)
        return mock_response(false, "taskId is required");
    struct task *t = task_find(st, id);
    if (t == NULL)
        return mock_response(false, "task %lld not found", id);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)body, key, val)
    {
        if (strcasecmp(key, "comment") == 0 || strcasecmp(key, "newNote") == 0) {
            /* UiPath's UpdateTask activity sends the comment as newNote (anymate-api.md §2.4). */
            if (json_is_string(val)) {
                json_decref(t->comment);
                t->comment = json_incref(val);
            }
            continue;
        }
        if (is_reserved_key(key))
            continue;
        const char *existing = key;
        const char *k;
        json_t *v;
        json_object_foreach(t->fields, k, v)
        {
            if (strcasecmp(k, key) == 0) {
                existing = k;
                break;
            }
        }
        json_object_set_new(t->fields, existing, json_deep_copy(val));
    }
    return mock_response(true, "%s", "");
}

static json_t *op_task_action(struct mock_state *st, const json_t *body, const char *action,
                              const char *endpoint, time_t now, int *status)
{
    char err[256];
    struct action_args a;
    if (parse_action(body, false, &a, err, sizeof(err)) != 0)
        return bad_request(status, err);
    if (!apply_action(st, &a, action, endpoint, now, err, sizeof(err)))
        return mock_response(false, "%s", err);
    return mock_response(true, "%s", "");
}

static json_t *op_return(struct mock_state *st, const json_t *body, time_t now, int *status)
{
    char err[256];
    size_t n = json_array_size(body);
    struct action_args *args = calloc(n != 0 ? n : 1, sizeof(*args));
    if (args == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (parse_action(json_array_get(body, i), true, &args[i], err, sizeof(err)) != 0) {
            free(args);
            char msg[300];
            snprintf(msg, sizeof(msg), "item %zu: %s", i, err);
            return bad_request(status, msg);
        }
    }
    char msg[512] = "";
    size_t used = 0;
    bool all_ok = true;
    for (size_t i = 0; i < n; i++) {
        bool ok;
        if (args[i].action == NULL) {
            ok = false;
            snprintf(err, sizeof(err), "action must be Solved, Manual, Retry or Error");
        } else {
            st->item = (long long)i;
            ok = apply_action(st, &args[i], args[i].action, "Return", now, err, sizeof(err));
            st->item = 0;
        }
        if (!ok) {
            all_ok = false;
            if (used < sizeof(msg)) {
                int w = snprintf(msg + used, sizeof(msg) - used, "%sitem %zu: %s",
                                 used != 0 ? "; " : "", i, err);
                used += w > 0 ? (size_t)w : 0;
            }
        }
    }
    free(args);
    return mock_response(all_ok, "%s", msg);
}

void mock_state_set_request_id(struct mock_state *st, const char *id)
{
    snprintf(st->request_id, sizeof(st->request_id), "%s", id ? id : "");
    st->item = 0;
}

json_t *mock_state_call(struct mock_state *st, const struct mock_endpoint *ep, const char *key,
                        json_t *body, time_t now, int *status)
{
    *status = 200;
    switch (ep->op) {
    case MOCK_OP_OK_TO_RUN:
        return op_ok_to_run(st, key, now);
    case MOCK_OP_START_OR_GET_RUN:
    case MOCK_OP_START_RUN:
        return op_start_run(st, key);
    case MOCK_OP_FINISH_RUN:
        return op_finish_run(st, body, status);
    case MOCK_OP_FAILURE:
        return op_failure(st, body, status);
    case MOCK_OP_GET_RULES:
        return op_get_rules(st, key);
    case MOCK_OP_TAKE_NEXT:
        return op_take_next(st, key, now);
    case MOCK_OP_TAKE_MANY:
        return op_take_many(st, key, now);
    case MOCK_OP_CREATE_TASK:
        return op_create_task(st, key, body, now, false);
    case MOCK_OP_CREATE_AND_TAKE_TASK:
        return op_create_task(st, key, body, now, true);
    case MOCK_OP_CREATE_TASKS:
        return op_create_tasks(st, key, body, now, status);
    case MOCK_OP_UPDATE_TASK:
        return op_update_task(st, body, status);
    case MOCK_OP_SOLVED:
        return op_task_action(st, body, "Solved", ep->name, now, status);
    case MOCK_OP_MANUAL:
        return op_task_action(st, body, "Manual", ep->name, now, status);
    case MOCK_OP_RETRY:
        return op_task_action(st, body, "Retry", ep->name, now, status);
    case MOCK_OP_ERROR:
        return op_task_action(st, body, "Error", ep->name, now, status);
    case MOCK_OP_SOLVED_ASYNC:
        return op_task_action(st, body, "Solved", ep->name, now, status);
    case MOCK_OP_MANUAL_ASYNC:
        return op_task_action(st, body, "Manual", ep->name, now, status);
    case MOCK_OP_RETRY_ASYNC:
        return op_task_action(st, body, "Retry", ep->name, now, status);
    case MOCK_OP_ERROR_ASYNC:
        return op_task_action(st, body, "Error", ep->name, now, status);
    case MOCK_OP_RETURN:
        return op_return(st, body, now, status);
    }
    return NULL;
}

/* ---- configuration and introspection ---------------------------------------------------- */

int mock_state_configure(struct mock_state *st, const json_t *spec, char *err, size_t errlen)
{
    if (!json_is_object(spec)) {
        snprintf(err, errlen, "process settings must be a JSON object keyed by process key");
        return -1;
    }
    const char *pk;
    json_t *val;
    /* Pass 1 validates on scratch copies so that a bad entry changes nothing. */
    json_object_foreach((json_t *)spec, pk, val)
    {
        struct settings scratch;
        struct process *p = strcmp(pk, "*") == 0 ? NULL : process_find(st, pk);
        settings_copy(&scratch, p != NULL ? &p->s : &st->defaults);
        int rc = settings_apply(&scratch, pk, val, err, errlen);
        settings_release(&scratch);
        if (rc != 0)
            return -1;
        if (*pk == '\0') {
            snprintf(err, errlen, "process key must not be empty");
            return -1;
        }
    }
    /* The defaults first, so that processes created below start from them. */
    json_t *defaults = json_object_get(spec, "*");
    if (defaults != NULL)
        settings_apply(&st->defaults, "*", defaults, err, errlen);
    json_object_foreach((json_t *)spec, pk, val)
    {
        if (strcmp(pk, "*") == 0)
            continue;
        struct process *p = process_get(st, pk);
        if (p == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        settings_apply(&p->s, pk, val, err, errlen);
    }
    return 0;
}

json_t *mock_state_dump(const struct mock_state *st)
{
    json_t *procs = json_array();
    struct process *p;
    TAILQ_FOREACH(p, &st->procs, link)
    {
        long long ready = 0, taken = 0, done = 0;
        for (size_t i = 0; i < st->ntasks; i++) {
            const struct task *t = st->tasks[i];
            if (t->proc != p)
                continue;
            ready += t->state == TASK_READY;
            taken += t->state == TASK_TAKEN;
            done += t->state == TASK_DONE;
        }
        json_t *o = json_object();
        json_object_set_new(o, "processKey", mock_json_text(p->key));
        json_object_set_new(o, "settings", settings_json(&p->s));
        json_object_set_new(o, "openRunId",
                            p->open_run != 0 ? json_integer(p->open_run) : json_null());
        json_object_set_new(o, "failure", json_boolean(p->failure));
        json_object_set_new(o, "failureMessage",
                            p->failure_message != NULL ? mock_json_text(p->failure_message)
                                                       : json_null());
        json_object_set_new(o, "readyTasks", json_integer(ready));
        json_object_set_new(o, "takenTasks", json_integer(taken));
        json_object_set_new(o, "doneTasks", json_integer(done));
        json_array_append_new(procs, o);
    }
    json_t *res = json_object();
    json_object_set_new(res, "defaults", settings_json(&st->defaults));
    json_object_set_new(res, "processes", procs);
    json_object_set_new(res, "nextRunId", json_integer(FIRST_RUN_ID + (long long)st->nruns));
    json_object_set_new(res, "nextTaskId", json_integer(FIRST_TASK_ID + (long long)st->ntasks));
    return res;
}
