/* Claims in the local store: the ops on the runs table's `claim` column and the loop thread's
 * reads of it. */
#include "daemon/fleet/local.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"

#include <stdlib.h>
#include <string.h>

static int claim_step(sqlite3 *db, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return 0;
    log_error("fleet", "%s: %s", what, sqlite3_errmsg(db));
    return LAB_EDB;
}

static int claim_apply(lab_store_op_t *op, sqlite3 *db)
{
    lab_claim_op_t *c = (lab_claim_op_t *)op;
    static const char *const sql[] = {
        /* a row of the same id is replaced only when this cell had released it: the lab's queue
         * gave the run back to this cell */
        [LAB_CLAIM_PENDING] =
            "INSERT INTO runs (id, state, doc, created_ms, updated_ms, seq, claim) "
            "VALUES (?1, 'queued', ?2, ?3, ?3, 0, 'pending') "
            "ON CONFLICT (id) DO UPDATE SET state = 'queued', doc = ?2, "
            "updated_ms = ?3, seq = 0, claim = 'pending' "
            "WHERE runs.state = 'released'",
        [LAB_CLAIM_HOLD] = "UPDATE runs SET claim = 'held', seq = ?4, updated_ms = ?3 "
                           "WHERE id = ?1 AND claim = 'pending'",
        [LAB_CLAIM_DROP] = "DELETE FROM runs WHERE id = ?1 AND claim = 'pending'",
    };
    sqlite3_stmt *s = lab_store_stmt(db, sql[c->verb]);
    if (!s)
        return LAB_EDB;
    for (int i = 0; i < c->n; i++) {
        int64_t seq = 0;
        if (c->verb == LAB_CLAIM_HOLD) {
            /* the row first: a run dropped meanwhile gets no outbox row */
            sqlite3_stmt *q =
                lab_store_stmt(db, "SELECT 1 FROM runs WHERE id = ? AND claim = 'pending'");
            if (!q)
                return LAB_EDB;
            sqlite3_bind_text(q, 1, c->ids[i], -1, SQLITE_STATIC);
            int rc = sqlite3_step(q);
            sqlite3_reset(q);
            if (rc != SQLITE_ROW) {
                c->skip[i] = true;
                continue;
            }
            seq = lab_outbox_append(db, "run.state", c->ids[i], c->docs[i], c->ts_ms);
            if (seq < 0)
                return (int)seq;
        }
        sqlite3_bind_text(s, 1, c->ids[i], -1, SQLITE_STATIC);
        if (c->verb == LAB_CLAIM_PENDING)
            sqlite3_bind_text(s, 2, c->docs[i], -1, SQLITE_STATIC);
        if (c->verb != LAB_CLAIM_DROP)
            sqlite3_bind_int64(s, 3, c->ts_ms);
        if (c->verb == LAB_CLAIM_HOLD)
            sqlite3_bind_int64(s, 4, seq);
        int rc = claim_step(db, s, "claim");
        if (rc)
            return rc;
        c->skip[i] = sqlite3_changes(db) == 0;
    }
    return 0;
}

lab_claim_op_t *lab_claim_op_new(lab_claim_verb_t verb, int64_t ts_ms)
{
    lab_claim_op_t *c = LAB_NEW(lab_claim_op_t);
    c->verb = verb;
    c->ts_ms = ts_ms;
    c->op.apply = claim_apply;
    return c;
}

void lab_claim_op_add(lab_claim_op_t *c, const char *id, const char *doc)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 16;
        c->ids = lab_realloc(c->ids, sizeof *c->ids * (size_t)c->cap);
        c->docs = lab_realloc(c->docs, sizeof *c->docs * (size_t)c->cap);
        c->skip = lab_realloc(c->skip, sizeof *c->skip * (size_t)c->cap);
    }
    c->ids[c->n] = lab_strdup(id);
    c->docs[c->n] = doc ? lab_strdup(doc) : NULL;
    c->skip[c->n] = false;
    c->n++;
}

void lab_claim_op_free(lab_claim_op_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++) {
        free(c->ids[i]);
        free(c->docs[i]);
    }
    free(c->ids);
    free(c->docs);
    free(c->skip);
    free(c);
}

int lab_claims_not_begun(lab_store_t *st, char (*ids)[37], bool *held, int max)
{
    sqlite3 *db = lab_store_reader(st);
    sqlite3_stmt *s = lab_store_stmt(db, "SELECT id, claim FROM runs WHERE claim IS NOT NULL "
                                         "AND state IN ('queued', 'planned') ORDER BY n");
    if (!s)
        return LAB_EDB;
    int n = 0;
    while (n < max && sqlite3_step(s) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(s, 0);
        const char *claim = (const char *)sqlite3_column_text(s, 1);
        if (!id || strlen(id) > 36)
            continue;
        memcpy(ids[n], id, strlen(id) + 1);
        held[n] = claim && strcmp(claim, "held") == 0;
        n++;
    }
    sqlite3_reset(s);
    return n;
}

int lab_claim_get(lab_store_t *st, const char *id)
{
    sqlite3 *db = lab_store_reader(st);
    sqlite3_stmt *s = lab_store_stmt(db, "SELECT claim IS NOT NULL FROM runs WHERE id = ?");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    int out = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : LAB_ENOTFOUND;
    sqlite3_reset(s);
    return out;
}
