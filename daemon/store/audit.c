/* The audit trail: writing chained entries on the store's writer, the notes that carry a
 * decision's who and why onto the op that makes the change, and reading and checking the chain
 * on the loop thread. */
#include "daemon/store/audit.h"
#include "core/chain.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/store/store_int.h"

#include <stdlib.h>
#include <string.h>

/* A new outbox kind whose rows are state changes is one row here. */
const lab_audit_kind_t lab_audit_kinds[] = {
    {"run.state", "run.state"},
    {"instrument.state", "instrument.state"},
    {"campaign", "campaign.state"},
    {"candidate", "candidate.state"},
    {"batch", "campaign.batch"}, /* a learner's or a pipeline's proposal, and its progress */
    {"plate", "plate.qc"},
    {"plate.state", "plate.state"}, /* where a plate is, what it holds */
    {"plate.move", "plate.move"},
    {"consumable", "consumable"},
    {"prompt", "prompt"}, /* opened, and answered by a person (confirm, resume) */
    {"workflow", "workflow.version"},
    {NULL, NULL},
};

struct lab_audit_note {
    char *who, *what, *subject, *why;
    json_t *doc;
    int64_t lab_ms;
};

typedef struct note_op {
    lab_store_op_t op;
} note_op_t;

const lab_audit_kind_t *lab_audit_kind_find(const char *kind)
{
    for (const lab_audit_kind_t *k = lab_audit_kinds; kind && k->kind; k++)
        if (strcmp(k->kind, kind) == 0)
            return k;
    return NULL;
}

/* ---- writing (worker thread) ---- */

static int head_get(sqlite3 *db, int64_t *seq, char prev[65])
{
    bool owned;
    sqlite3_stmt *s =
        lab_stmt_acquire(db, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &owned);
    if (!s)
        return LAB_EDB;
    int rc = sqlite3_step(s), out = 0;
    *seq = 0;
    snprintf(prev, 65, "%s", LAB_CHAIN_GENESIS);
    if (rc == SQLITE_ROW) {
        *seq = sqlite3_column_int64(s, 0);
        const unsigned char *h = sqlite3_column_text(s, 1);
        snprintf(prev, 65, "%s", h ? (const char *)h : "");
    } else if (rc != SQLITE_DONE)
        out = lab_sqlite_fail(db, rc, "audit head");
    lab_stmt_release(s, owned);
    return out;
}

/* Appends the entry {fields..., doc (taken)} to the chain; *carry: what the outbox carries of it
 * to PostgreSQL and MQTT, {audit_seq, hash, entry (the canonical text)}. */
static int entry_write(sqlite3 *db, const char *who, const char *what, const char *subject,
                       const char *why, json_t *doc, int64_t lab_ms, json_t **carry)
{
    int64_t seq;
    char prev[65], hash[65], lab_t[32], wall_t[32];
    *carry = NULL;
    int rc = head_get(db, &seq, prev);
    if (rc) {
        json_decref(doc);
        return rc;
    }
    seq++;
    int64_t wall_ms = lab_wall_ms();
    lab_time_iso(lab_ms, lab_t);
    lab_time_iso(wall_ms, wall_t);
    json_t *e =
        json_pack("{s:I, s:s, s:s, s:s, s:s?, s:s, s:s, s:s?, s:o}", "seq", (json_int_t)seq,
                  "prev_hash", prev, "who", who, "what", what, "subject", subject, "lab_time",
                  lab_t, "wall_time", wall_t, "why", why, "doc", doc ? doc : json_object());
    char *canon = lab_chain_canonical(e);
    json_decref(e);
    if (!canon)
        return LAB_EINVAL; /* text that is not UTF-8: refused upstream, never stored */
    lab_chain_hash(prev, canon, hash);
    bool owned;
    sqlite3_stmt *s = lab_stmt_acquire(db,
                                       "INSERT INTO audit (seq, prev_hash, hash, who, what, "
                                       "subject, why, lab_ms, wall_ms, entry) "
                                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                       &owned);
    if (!s) {
        free(canon);
        return LAB_EDB;
    }
    sqlite3_bind_int64(s, 1, seq);
    sqlite3_bind_text(s, 2, prev, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, who, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, what, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, subject, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, why, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, lab_ms);
    sqlite3_bind_int64(s, 9, wall_ms);
    sqlite3_bind_text(s, 10, canon, -1, SQLITE_STATIC);
    int src = sqlite3_step(s);
    lab_stmt_release(s, owned);
    if (src != SQLITE_DONE) {
        free(canon);
        return lab_sqlite_fail(db, src, "audit append");
    }
    *carry =
        json_pack("{s:I, s:s, s:s}", "audit_seq", (json_int_t)seq, "hash", hash, "entry", canon);
    free(canon);
    return 0;
}

/* An entry that no row carries yet: held for the op's next row, or (a connection the store does
 * not own) written at once as a row of kind audit. */
static int carry_hold(sqlite3 *db, json_t *carry, int64_t lab_ms)
{
    lab_conn_t *c = lab_conn_find(db);
    if (c) {
        if (!c->audit_pending)
            c->audit_pending = json_array();
        json_array_append_new(c->audit_pending, carry);
        return 0;
    }
    char *payload = json_dumps(carry, JSON_COMPACT);
    json_decref(carry);
    int64_t oseq = lab_outbox_append(db, "audit", "", payload, lab_ms);
    free(payload);
    return oseq < 0 ? (int)oseq : 0;
}

int lab_audit_note_write(sqlite3 *db, const lab_audit_note_t *n)
{
    if (!n->what)
        return 0; /* who only: the op's own entries carry it */
    json_t *carry;
    int rc = entry_write(db, n->who, n->what, n->subject, n->why, json_incref(n->doc), n->lab_ms,
                         &carry);
    return rc ? rc : carry_hold(db, carry, n->lab_ms);
}

int lab_audit_state_write(sqlite3 *db, const lab_audit_kind_t *k, const char *key,
                          const char *payload, int64_t ts_ms, const lab_audit_note_t *note)
{
    /* A payload that is not JSON is kept as text; one that is not even UTF-8 by its digest: the
     * entry records whatever was stored. */
    json_t *doc = json_loads(payload, JSON_DECODE_ANY, NULL);
    if (!doc)
        doc = json_string(payload);
    if (!doc) {
        char hex[65];
        lab_chain_digest_hex(payload, strlen(payload), hex);
        doc = json_pack("{s:b, s:s}", "not_text", 1, "sha256", hex);
    }
    json_t *carry;
    int rc = entry_write(db, note ? note->who : LAB_AUDIT_SYSTEM, k->what, key && *key ? key : NULL,
                         note ? note->why : NULL, doc, ts_ms, &carry);
    return rc ? rc : carry_hold(db, carry, ts_ms);
}

char *lab_audit_take(sqlite3 *db)
{
    lab_conn_t *c = lab_conn_find(db);
    if (!c || !c->audit_pending)
        return NULL;
    char *s = json_dumps(c->audit_pending, JSON_COMPACT);
    json_decref(c->audit_pending);
    c->audit_pending = NULL;
    return s;
}

int lab_audit_flush(sqlite3 *db, const lab_audit_note_t *note)
{
    lab_conn_t *c = lab_conn_find(db);
    if (!c || !c->audit_pending)
        return 0;
    json_t *pending = c->audit_pending;
    c->audit_pending = NULL;
    size_t i;
    json_t *carry;
    int rc = 0;
    json_array_foreach(pending, i, carry)
    {
        char *payload = json_dumps(carry, JSON_COMPACT);
        int64_t oseq =
            lab_outbox_append(db, "audit", "", payload, note ? note->lab_ms : lab_wall_ms());
        free(payload);
        if (oseq < 0) {
            rc = (int)oseq;
            break;
        }
    }
    json_decref(pending);
    return rc;
}

void lab_audit_drop(sqlite3 *db)
{
    lab_conn_t *c = lab_conn_find(db);
    if (c) {
        json_decref(c->audit_pending);
        c->audit_pending = NULL;
    }
}

void lab_audit_note_free(lab_audit_note_t *n)
{
    if (!n)
        return;
    free(n->who);
    free(n->what);
    free(n->subject);
    free(n->why);
    json_decref(n->doc);
    free(n);
}

/* ---- notes (loop thread) ---- */

static lab_audit_note_t *note_new(const char *who, const char *what, const char *subject,
                                  const char *why, json_t *doc, int64_t lab_ms)
{
    lab_audit_note_t *n = LAB_NEW(lab_audit_note_t);
    n->who = lab_strdup(who);
    n->what = what ? lab_strdup(what) : NULL;
    n->subject = subject ? lab_strdup(subject) : NULL;
    n->why = why ? lab_strdup(why) : NULL;
    n->doc = doc ? doc : json_object();
    n->lab_ms = lab_ms;
    return n;
}

json_t *lab_audit_signature(const char *who, const char *meaning)
{
    char at[32];
    lab_time_iso(lab_wall_ms(), at);
    return json_pack("{s:s, s:s, s:s}", "name", who, "meaning", meaning, "at", at);
}

int lab_audit_begin(lab_store_t *st, const char *who, const char *what, const char *subject,
                    const char *why, json_t *doc, int64_t lab_ms)
{
    if (!who) {
        json_decref(doc);
        return LAB_EINVAL;
    }
    lab_audit_note_t *n = note_new(who, what, subject, why, doc, lab_ms);
    int rc = lab_store_note_open(st, n);
    if (rc)
        lab_audit_note_free(n);
    return rc;
}

static int note_op_apply(lab_store_op_t *op, sqlite3 *db)
{
    return 0; /* the store writes the op's note before this */
}

static void note_op_done(lab_store_op_t *op, int status)
{
    if (status)
        log_error("audit", "an audit entry could not be stored: %s", lab_strerror(status));
    free(op);
}

static void note_submit(lab_store_t *st, lab_audit_note_t *n)
{
    note_op_t *o = LAB_NEW(note_op_t);
    o->op.apply = note_op_apply;
    o->op.done = note_op_done;
    lab_store_submit_noted(st, &o->op, n);
}

void lab_audit_end(lab_store_t *st, bool record)
{
    lab_audit_note_t *n = lab_store_note_close(st);
    if (n && n->what && record)
        note_submit(st, n);
    else
        lab_audit_note_free(n);
}

void lab_audit_record(lab_store_t *st, const char *who, const char *what, const char *subject,
                      const char *why, json_t *doc, int64_t lab_ms)
{
    note_submit(st, note_new(who ? who : LAB_AUDIT_SYSTEM, what, subject, why, doc, lab_ms));
}

/* ---- reading (loop thread) ---- */

static const char *col_text(sqlite3_stmt *s, int i)
{
    return (const char *)sqlite3_column_text(s, i);
}

int lab_audit_list(lab_store_t *st, const lab_audit_filter_t *f, int limit, json_t **out,
                   int64_t *next)
{
    *out = NULL;
    *next = 0;
    sqlite3_stmt *s = lab_store_stmt(
        lab_store_reader(st), "SELECT seq, hash, entry FROM audit WHERE seq > ?1 "
                              "AND (?2 IS NULL OR subject = ?2) AND (?3 IS NULL OR who = ?3) "
                              "AND wall_ms >= ?4 ORDER BY seq LIMIT ?5");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_int64(s, 1, f->after);
    sqlite3_bind_text(s, 2, f->subject, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, f->who, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, f->since_ms);
    sqlite3_bind_int(s, 5, limit + 1);
    json_t *a = json_array();
    int rc, n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == limit) {
            *next = (int64_t)json_integer_value(
                json_object_get(json_array_get(a, json_array_size(a) - 1), "seq"));
            break;
        }
        json_t *e = json_loads(col_text(s, 2) ? col_text(s, 2) : "", 0, NULL);
        if (!json_is_object(e)) { /* shown as stored: the verifier says what is wrong */
            json_decref(e);
            e = json_pack("{s:I, s:s?}", "seq", (json_int_t)sqlite3_column_int64(s, 0), "entry",
                          col_text(s, 2));
        }
        json_object_set_new(e, "hash", json_string(col_text(s, 1) ? col_text(s, 1) : ""));
        json_array_append_new(a, e);
        n++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        json_decref(a);
        return lab_sqlite_fail(lab_store_reader(st), rc, "audit list");
    }
    *out = a;
    return 0;
}

json_t *lab_audit_head(lab_store_t *st)
{
    sqlite3_stmt *s = lab_store_stmt(
        lab_store_reader(st), "SELECT seq, hash, entry FROM audit ORDER BY seq DESC LIMIT 1");
    if (!s)
        return NULL;
    json_t *h = NULL;
    if (sqlite3_step(s) == SQLITE_ROW && col_text(s, 1) && col_text(s, 2))
        h = json_pack("{s:I, s:s, s:s}", "audit_seq", (json_int_t)sqlite3_column_int64(s, 0),
                      "hash", col_text(s, 1), "entry", col_text(s, 2));
    sqlite3_reset(s);
    return h;
}

static void add_problem(void *ctx, int64_t seq, const char *problem)
{
    json_array_append_new(ctx, json_pack("{s:I, s:s}", "seq", (json_int_t)seq, "problem", problem));
}

json_t *lab_audit_verify(lab_store_t *st)
{
    sqlite3 *db = lab_store_reader(st);
    sqlite3_stmt *s = lab_store_stmt(
        db, "SELECT seq, prev_hash, hash, who, what, subject, why, entry FROM audit ORDER BY seq");
    if (!s)
        return NULL;
    lab_chain_row_t *rows = NULL;
    int n = 0, cap = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            rows = lab_realloc(rows, (size_t)cap * sizeof *rows);
        }
        lab_chain_row_t *r = &rows[n++];
        const char **f[] = {&r->prev_hash, &r->hash, &r->who,  &r->what,
                            &r->subject,   &r->why,  &r->entry};
        r->seq = sqlite3_column_int64(s, 0);
        for (int i = 0; i < 7; i++)
            *f[i] = col_text(s, i + 1) ? lab_strdup(col_text(s, i + 1)) : NULL;
    }
    sqlite3_reset(s);
    json_t *out = NULL;
    if (rc == SQLITE_DONE) {
        json_t *problems = json_array();
        lab_chain_check(rows, n, 1, add_problem, problems);
        out = json_pack("{s:b, s:i, s:o, s:o}", "ok", json_array_size(problems) == 0, "entries", n,
                        "head",
                        n ? json_pack("{s:I, s:s?}", "seq", (json_int_t)rows[n - 1].seq, "hash",
                                      rows[n - 1].hash)
                          : json_null(),
                        "problems", problems);
    } else
        lab_sqlite_fail(db, rc, "audit verify");
    for (int i = 0; i < n; i++) {
        const char *f[] = {rows[i].prev_hash, rows[i].hash, rows[i].who,  rows[i].what,
                           rows[i].subject,   rows[i].why,  rows[i].entry};
        for (int k = 0; k < 7; k++)
            free((char *)f[k]);
    }
    free(rows);
    return out;
}
