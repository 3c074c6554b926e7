/* The one submission path of a run (HTTP and MQTT): checks, the `cell` rule, then this cell's
 * store or the lab's shared queue. The local path answers only after the insert committed; an
 * idempotency key is looked up before the document is even read (a replay costs one indexed
 * read), and a key whose first submission is still committing is refused rather than queued. */
#include "daemon/fleet/submit.h"
#include "core/err.h"
#include "core/id.h"
#include "core/jschema.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/chain.h"
#include "core/utf8.h"
#include "daemon/model/run_states.h"
#include "daemon/store/runs.h"
#include "daemon/store/workflows.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 255
#define TEXT_MAX 512 /* bytes of outside text kept in an error message */

/* A submission waiting for the store or the shared queue. */
typedef struct job {
    lab_run_insert_t *ins; /* the local insert (its op is what the store completes) */
    lab_submit_t *s;
    lab_submit_cb cb;
    void *arg;
    char *owner, *key; /* in the pending list while set */
    struct job *next;
    json_t *doc;  /* the run for the scheduler */
    bool in_hook; /* the shared hook has not returned yet: its caller frees the job */
} job_t;

struct lab_submit {
    lab_store_t *st;
    lab_sched_t *sched;
    const lab_clock_t *clock;
    char *cell;
    bool shared, stopping;
    lab_submit_shared_fn shared_fn;
    void *shared_ctx;
    lab_jschema_t *schema;
    job_t *pending; /* local submissions with a key, until their insert is done */
    int in_flight;
    /* The newest stored workflow document read and its version (wf_version_of). */
    char *wf_last;
    json_int_t wf_last_version;
};

static const int why_code[] = {
    [LAB_SUBMIT_ACCEPTED] = 201,    [LAB_SUBMIT_MALFORMED] = 400, [LAB_SUBMIT_BAD_KEY] = 400,
    [LAB_SUBMIT_IN_PROGRESS] = 409, [LAB_SUBMIT_CONFLICT] = 409,  [LAB_SUBMIT_INVALID] = 422,
    [LAB_SUBMIT_KEY_REUSED] = 422,  [LAB_SUBMIT_INTERNAL] = 500,  [LAB_SUBMIT_UNAVAILABLE] = 503,
    [LAB_SUBMIT_TOO_LARGE] = 413,
};

const char *lab_submit_why_slug(lab_submit_why_t why)
{
    static const char *const slugs[] = {
        [LAB_SUBMIT_ACCEPTED] = "accepted",
        [LAB_SUBMIT_MALFORMED] = "malformed-json",
        [LAB_SUBMIT_BAD_KEY] = "bad-request",
        [LAB_SUBMIT_IN_PROGRESS] = "idempotency-in-progress",
        [LAB_SUBMIT_CONFLICT] = "idempotency-in-progress",
        [LAB_SUBMIT_INVALID] = "invalid-document",
        [LAB_SUBMIT_KEY_REUSED] = "idempotency-key-reused",
        [LAB_SUBMIT_INTERNAL] = "internal",
        [LAB_SUBMIT_UNAVAILABLE] = "unavailable",
        [LAB_SUBMIT_TOO_LARGE] = "too-large",
    };
    return (unsigned)why < sizeof slugs / sizeof slugs[0] ? slugs[why] : "internal";
}

/* [{"path", "message"}] with the message made valid UTF-8 and cut to TEXT_MAX bytes. */
static json_t *errors_one(const char *path, const char *message)
{
    char buf[TEXT_MAX * 3 + 1];
    lab_utf8_sanitize(buf, TEXT_MAX + 1, message, strlen(message));
    json_t *a = json_array();
    json_array_append_new(a, json_pack("{s:s, s:s}", "path", path, "message", buf));
    return a;
}

/* Answers a refusal: errors is taken over (NULL: an empty array). */
static void refuse(lab_submit_cb cb, void *arg, lab_submit_why_t why, json_t *errors,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void refuse(lab_submit_cb cb, void *arg, lab_submit_why_t why, json_t *errors,
                   const char *fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    lab_submit_answer_t a = {
        .why = why,
        .code = why_code[why],
        .errors = errors ? errors : json_array(),
        .detail = detail,
    };
    cb(arg, &a);
    json_decref(a.errors);
}

/* An accepted run: doc is its JSON text, id its "id" (read from doc when NULL). */
static void accept_run(lab_submit_cb cb, void *arg, int code, bool replayed, bool shared,
                       const char *id, const char *doc)
{
    char idbuf[LAB_UUID_LEN + 1] = "";
    if (!id) {
        json_t *d = json_loads(doc, 0, NULL);
        const char *s = json_string_value(json_object_get(d, "id"));
        if (s)
            snprintf(idbuf, sizeof idbuf, "%s", s);
        json_decref(d);
        id = idbuf;
    }
    lab_submit_answer_t a = {
        .why = LAB_SUBMIT_ACCEPTED,
        .code = code,
        .replayed = replayed,
        .shared = shared,
        .id = id,
        .doc = doc,
        .errors = json_array(),
        .detail = "",
    };
    cb(arg, &a);
    json_decref(a.errors);
}

/* ---- idempotency ---- */

static job_t *pending_find(lab_submit_t *s, const char *owner, const char *key)
{
    for (job_t *j = s->pending; j; j = j->next)
        if (strcmp(j->key, key) == 0 && strcmp(j->owner, owner) == 0)
            return j;
    return NULL;
}

static void pending_remove(lab_submit_t *s, job_t *job)
{
    for (job_t **pp = &s->pending; *pp; pp = &(*pp)->next)
        if (*pp == job) {
            *pp = job->next;
            job->next = NULL;
            return;
        }
}

/* A stored answer for (owner, key): replayed, or a different document refused. true when the
 * submission has its answer, false when the key is new. */
static bool replay(lab_submit_t *s, const lab_submission_t *in, const char *hash, lab_submit_cb cb,
                   void *arg)
{
    char *stored_hash = NULL, *body = NULL;
    int status = 0;
    int rc = lab_idem_get(s->st, in->owner, in->key, &stored_hash, &status, &body);
    if (rc == LAB_ENOTFOUND)
        return false;
    if (rc)
        refuse(cb, arg, LAB_SUBMIT_INTERNAL, NULL, "idempotency record lookup failed: %s",
               lab_strerror(rc));
    else if (strcmp(stored_hash, hash) != 0)
        refuse(cb, arg, LAB_SUBMIT_KEY_REUSED,
               errors_one("", "Idempotency-Key was already used with another body"),
               "Idempotency-Key \"%.255s\" was first used for a different request", in->key);
    else
        accept_run(cb, arg, status, true, false, NULL, body);
    free(stored_hash);
    free(body);
    return true;
}

/* ---- the local queue ---- */

/* The version of a stored workflow document. The text read last and its version are kept: runs
 * come in long series of one workflow, and parsing its document for each one cost more than the
 * rest of the submission. A stored version never changes, so equal text is the same version. */
static json_int_t wf_version_of(lab_submit_t *s, const char *wdoc)
{
    if (s->wf_last && strcmp(s->wf_last, wdoc) == 0)
        return s->wf_last_version;
    json_t *w = json_loads(wdoc, 0, NULL);
    json_int_t v = json_integer_value(json_object_get(w, "version"));
    json_decref(w);
    free(s->wf_last);
    s->wf_last = lab_strdup(wdoc);
    s->wf_last_version = v;
    return v;
}

static void job_free(job_t *job)
{
    lab_run_insert_free(job->ins);
    json_decref(job->doc);
    free(job->owner);
    free(job->key);
    free(job);
}

static void insert_done(lab_store_op_t *op, int status)
{
    lab_run_insert_t *ins = (lab_run_insert_t *)((char *)op - offsetof(lab_run_insert_t, op));
    job_t *job = ins->arg;
    lab_submit_t *s = job->s;
    if (job->key)
        pending_remove(s, job);
    s->in_flight--;
    if (status == 0 && s->sched) {
        lab_sched_submitted_doc(s->sched, job->doc);
        job->doc = NULL;
    }
    if (status == 0)
        accept_run(job->cb, job->arg, 201, false, false, ins->id, ins->doc);
    else if (status == LAB_ESHUTDOWN)
        refuse(job->cb, job->arg, LAB_SUBMIT_UNAVAILABLE, NULL,
               "the daemon is shutting down; not submitted");
    else if (status == LAB_ECONFLICT)
        refuse(job->cb, job->arg, LAB_SUBMIT_CONFLICT, NULL,
               "another request with this Idempotency-Key committed first");
    else
        refuse(job->cb, job->arg, LAB_SUBMIT_INTERNAL, NULL, "the local store failed: %s",
               lab_strerror(status));
    job_free(job);
}

/* A run follows one version of its workflow: the one named, which must be stored, or the newest
 * stored now. A workflow not stored is refused, unless the caller asked for the run to wait for
 * it ("await_workflow": true): a typo must not queue a run that never starts. */
static int submit_local(lab_submit_t *s, const lab_submission_t *in, const char *hash, json_t *sub,
                        lab_submit_cb cb, void *arg)
{
    const char *wf = json_string_value(json_object_get(sub, "workflow"));
    json_t *wv = json_object_get(sub, "workflow_version");
    bool await_wf = json_is_true(json_object_get(sub, "await_workflow"));
    json_object_del(sub, "await_workflow"); /* how it was submitted, not part of the run */
    json_object_del(sub, "cell");           /* this one */
    char *wdoc = NULL;
    int wrc = lab_workflows_get(s->st, wf, wv ? (int)json_integer_value(wv) : 0, &wdoc);
    if (wv && wrc == LAB_ENOTFOUND && lab_workflows_get(s->st, wf, 0, &wdoc) == LAB_OK) {
        free(wdoc);
        refuse(cb, arg, LAB_SUBMIT_INVALID,
               errors_one("/workflow_version", "no such version of this workflow"),
               "workflow %s has no version %lld", wf, (long long)json_integer_value(wv));
        return 0;
    }
    if (wrc == LAB_ENOTFOUND && !await_wf) {
        refuse(cb, arg, LAB_SUBMIT_INVALID,
               errors_one("/workflow", "no workflow of this name is stored"),
               "workflow %s is not stored: store it first (POST /v1/workflows), or submit with "
               "\"await_workflow\": true to queue the run until it is",
               wf);
        return 0;
    }
    if (!wv && wrc == LAB_OK)
        json_object_set_new(sub, "workflow_version", json_integer(wf_version_of(s, wdoc)));
    free(wdoc);

    char id[LAB_UUID_LEN + 1];
    lab_uuid4(id);
    int64_t now = lab_clock_now_ms(s->clock);
    json_t *doc = lab_run_new_doc(sub, id, in->origin, in->owner, now);
    lab_run_insert_t *ins = lab_run_insert_new();
    ins->id = lab_strdup(id);
    ins->state = lab_strdup(lab_run_state_name(LAB_RUN_QUEUED));
    ins->doc = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (!ins->doc) {
        json_decref(doc);
        lab_run_insert_free(ins);
        refuse(cb, arg, LAB_SUBMIT_INTERNAL, NULL, "the run document could not be built");
        return 0;
    }
    ins->ts_ms = now;
    job_t *job = LAB_NEW(job_t);
    job->ins = ins;
    job->s = s;
    job->cb = cb;
    job->arg = arg;
    job->doc = doc; /* for the scheduler, which would parse ins->doc again */
    if (in->key) {
        ins->idem_owner = lab_strdup(in->owner);
        ins->idem_key = lab_strdup(in->key);
        ins->idem_hash = lab_strdup(hash);
        ins->idem_status = 201;
        job->owner = lab_strdup(in->owner);
        job->key = lab_strdup(in->key);
        job->next = s->pending;
        s->pending = job;
    }
    ins->arg = job;
    ins->op.done = insert_done;
    s->in_flight++;
    lab_store_submit(s->st, &ins->op);
    return 1;
}

/* ---- the shared queue ---- */

static void shared_done(void *arg, int status, bool replayed, const char *doc, const char *problems,
                        const char *msg)
{
    job_t *job = arg;
    lab_submit_t *s = job->s;
    s->in_flight--;
    if (status == 0 && doc) {
        accept_run(job->cb, job->arg, 201, replayed, true, NULL, doc);
    } else if (status == LAB_EINVAL) {
        json_t *errs = problems ? json_loads(problems, 0, NULL) : NULL;
        if (!json_is_array(errs)) {
            json_decref(errs);
            errs = errors_one("", msg ? msg : "the run document is not valid");
        }
        size_t n = json_array_size(errs);
        refuse(job->cb, job->arg, LAB_SUBMIT_INVALID, errs, "%zu problem%s in the run document", n,
               n == 1 ? "" : "s");
    } else if (status == LAB_ECONFLICT) {
        refuse(job->cb, job->arg, LAB_SUBMIT_KEY_REUSED,
               errors_one("", "Idempotency-Key was already used with another body"),
               "Idempotency-Key \"%.255s\" was first used for a different request",
               job->key ? job->key : "");
    } else if (status == LAB_ECONN || status == LAB_ESTATE) {
        lab_submit_answer_t a = {
            .why = LAB_SUBMIT_UNAVAILABLE,
            .code = why_code[LAB_SUBMIT_UNAVAILABLE],
            .errors = json_array(),
            .detail = status == LAB_ECONN
                          ? "the shared queue's database is not reachable; not submitted"
                          : "the shared queue is not set up in PostgreSQL yet (its migrations "
                            "are still running); not submitted",
            .retry_after_s = 5,
        };
        job->cb(job->arg, &a);
        json_decref(a.errors);
    } else {
        refuse(job->cb, job->arg, LAB_SUBMIT_INTERNAL, NULL, "the shared queue failed: %s",
               msg ? msg : lab_strerror(status));
    }
    if (job->in_hook)
        job->in_hook = false; /* answered before the hook returned: submit_shared frees it */
    else
        job_free(job);
}

static int submit_shared(lab_submit_t *s, const lab_submission_t *in, json_t *sub, lab_submit_cb cb,
                         void *arg)
{
    job_t *job = LAB_NEW(job_t);
    job->s = s;
    job->cb = cb;
    job->arg = arg;
    job->key = in->key ? lab_strdup(in->key) : NULL;
    job->in_hook = true;
    s->in_flight++;
    s->shared_fn(s->shared_ctx, sub, in->key, in->via, in->owner, shared_done, job);
    if (job->in_hook) { /* the answer comes later */
        job->in_hook = false;
        return 1;
    }
    job_free(job);
    return 0;
}

/* ---- the path ---- */

int lab_submit_run(lab_submit_t *s, const lab_submission_t *in, lab_submit_cb cb, void *arg)
{
    char hash[65];
    if (s->stopping) {
        refuse(cb, arg, LAB_SUBMIT_UNAVAILABLE, NULL, "the daemon is shutting down; not submitted");
        return 0;
    }
    if (in->key) {
        size_t kl = strlen(in->key);
        if (kl == 0 || kl > KEY_MAX) {
            refuse(cb, arg, LAB_SUBMIT_BAD_KEY,
                   errors_one("", "Idempotency-Key must have 1 to 255 characters"),
                   "Idempotency-Key has %zu characters", kl);
            return 0;
        }
    }
    hash[0] = '\0';
    if (in->key && in->hash) {
        snprintf(hash, sizeof hash, "%s", in->hash);
    } else if (in->key) {
        lab_chain_digest_hex(in->body, in->len, hash);
    }
    /* A key used on this cell before: its answer, whatever the document says now. */
    if (in->key && !in->shared_only) {
        if (pending_find(s, in->owner, in->key)) {
            refuse(cb, arg, LAB_SUBMIT_IN_PROGRESS, NULL,
                   "the first request with Idempotency-Key \"%s\" is still committing", in->key);
            return 0;
        }
        if (replay(s, in, hash, cb, arg))
            return 0;
    }

    json_error_t jerr;
    json_t *sub = json_loadb(in->len ? in->body : "", in->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!sub) {
        char msg[300];
        snprintf(msg, sizeof msg, "line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
        refuse(cb, arg, LAB_SUBMIT_MALFORMED, errors_one("", msg), "the body is not valid JSON: %s",
               msg);
        return 0;
    }
    lab_jerrs_t errs = {0};
    int nerr = lab_jschema_validate(s->schema, sub, &errs);
    if (nerr > 0) {
        refuse(cb, arg, LAB_SUBMIT_INVALID, lab_jerrs_to_json(&errs), "%d problem%s in the %s",
               nerr, nerr == 1 ? "" : "s", "run document");
        lab_jerrs_free(&errs);
        json_decref(sub);
        return 0;
    }
    lab_jerrs_free(&errs);

    /* The cell rule: this cell's name -> here; "any" or another cell -> the lab's queue; absent
     * -> the lab's queue when this cell is part of one. */
    const char *cell = json_string_value(json_object_get(sub, "cell"));
    bool local = !in->shared_only && (cell ? strcmp(cell, s->cell) == 0 : !s->shared);
    int rc;
    if (local) {
        rc = submit_local(s, in, hash, sub, cb, arg);
    } else if (!s->shared) {
        refuse(cb, arg, LAB_SUBMIT_INVALID,
               errors_one("/cell",
                          "this cell is not part of a shared queue ([lab] shared_queue = off)"),
               "the run is for %s, and cell %s serves only its own queue",
               cell && strcmp(cell, "any") != 0 ? "another cell" : "any cell", s->cell);
        rc = 0;
    } else if (!s->shared_fn) {
        refuse(cb, arg, LAB_SUBMIT_UNAVAILABLE, NULL, "the shared queue is not running");
        rc = 0;
    } else {
        rc = submit_shared(s, in, sub, cb, arg);
    }
    json_decref(sub);
    return rc;
}

/* ---- lifecycle ---- */

int lab_submit_new(lab_submit_t **out, lab_store_t *st, lab_sched_t *sched,
                   const lab_clock_t *clock, const char *cell, bool shared)
{
    *out = NULL;
    lab_jschema_t *schema = lab_jschema_get("run.schema.json");
    if (!schema) {
        log_error("submit", "the run schema (run.schema.json) is not available");
        return LAB_ECONFIG;
    }
    lab_submit_t *s = LAB_NEW(lab_submit_t);
    s->st = st;
    s->sched = sched;
    s->clock = clock;
    s->cell = lab_strdup(cell ? cell : "");
    s->shared = shared;
    s->schema = schema;
    *out = s;
    return LAB_OK;
}

void lab_submit_set_shared(lab_submit_t *s, lab_submit_shared_fn fn, void *ctx)
{
    s->shared_fn = fn;
    s->shared_ctx = ctx;
}

void lab_submit_stop(lab_submit_t *s)
{
    s->stopping = true;
}

void lab_submit_forget_sched(lab_submit_t *s)
{
    s->sched = NULL;
}

int lab_submit_in_flight(const lab_submit_t *s)
{
    return s->in_flight;
}

void lab_submit_free(lab_submit_t *s)
{
    if (!s)
        return;
    if (s->in_flight)
        log_error("submit", "freed with %d submissions unanswered", s->in_flight);
    free(s->wf_last);
    free(s->cell);
    free(s);
}
