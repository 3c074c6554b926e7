/* Runs in the local store: the insert and update ops (run row, its outbox row and the
 * idempotency record in one savepoint) and the loop thread's reads. */
#include "daemon/store/runs.h"
#include "core/err.h"
#include "core/mem.h"
#include "daemon/store/prompts.h"
#include "daemon/store/store_int.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static int step_insert(sqlite3 *db, sqlite3_stmt *s, int on_constraint, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return 0;
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return on_constraint;
    return lab_sqlite_fail(db, rc, what);
}

static int idem_insert(sqlite3 *db, const char *owner, const char *key, const char *hash,
                       int status, const char *body, int64_t ts_ms)
{
    if (!owner || !hash)
        return LAB_EINVAL;
    sqlite3_stmt *s = lab_store_stmt(db, "INSERT INTO idempotency "
                                         "(owner, key, hash, status, body, created_ms) "
                                         "VALUES (?, ?, ?, ?, ?, ?)");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, owner, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, hash, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 4, status);
    sqlite3_bind_text(s, 5, body, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 6, ts_ms);
    return step_insert(db, s, LAB_ECONFLICT, "idempotency insert");
}

/* Idempotency record first: a replayed key is the likelier failure, and it costs no outbox seq. */
static int run_insert_apply(lab_store_op_t *op, sqlite3 *db)
{
    lab_run_insert_t *ins = (lab_run_insert_t *)op;
    if (!ins->id || !ins->state || !ins->doc)
        return LAB_EINVAL;
    int rc = 0;
    if (ins->idem_key)
        rc = idem_insert(db, ins->idem_owner, ins->idem_key, ins->idem_hash, ins->idem_status,
                         ins->doc, ins->ts_ms);
    if (rc)
        return rc;
    int64_t seq = lab_outbox_append(db, "run.state", ins->id, ins->doc, ins->ts_ms);
    if (seq < 0)
        return (int)seq;
    sqlite3_stmt *s = lab_store_stmt(db, "INSERT INTO runs "
                                         "(id, state, doc, created_ms, updated_ms, seq) "
                                         "VALUES (?, ?, ?, ?, ?, ?)");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, ins->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, ins->state, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, ins->doc, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, ins->ts_ms);
    sqlite3_bind_int64(s, 5, ins->ts_ms);
    sqlite3_bind_int64(s, 6, seq);
    rc = step_insert(db, s, LAB_EEXIST, "run insert");
    if (rc)
        return rc;
    ins->seq = seq;
    return 0;
}

/* Why an update touched no row: no such run, or not in the expected state. */
static int run_missing_or_moved(sqlite3 *db, const char *id)
{
    sqlite3_stmt *s = lab_store_stmt(db, "SELECT 1 FROM runs WHERE id = ?");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return LAB_ESTATE;
    return rc == SQLITE_DONE ? LAB_ENOTFOUND : lab_sqlite_fail(db, rc, "run lookup");
}

static int run_update_apply(lab_store_op_t *op, sqlite3 *db)
{
    lab_run_update_t *upd = (lab_run_update_t *)op;
    if (!upd->id || !upd->state || !upd->doc)
        return LAB_EINVAL;
    int64_t seq = lab_outbox_append(db, "run.state", upd->id, upd->doc, upd->ts_ms);
    if (seq < 0)
        return (int)seq;
    sqlite3_stmt *s =
        lab_store_stmt(db, "UPDATE runs SET state = ?1, doc = ?2, updated_ms = ?3, seq = ?4 "
                           "WHERE id = ?5 AND (?6 IS NULL OR state = ?6)");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, upd->state, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, upd->doc, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, upd->ts_ms);
    sqlite3_bind_int64(s, 4, seq);
    sqlite3_bind_text(s, 5, upd->id, -1, SQLITE_STATIC);
    if (upd->from)
        sqlite3_bind_text(s, 6, upd->from, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return lab_sqlite_fail(db, rc, "run update");
    if (sqlite3_changes(db) == 0)
        return run_missing_or_moved(db, upd->id);
    if (upd->idem_key) {
        rc = idem_insert(db, upd->idem_owner, upd->idem_key, upd->idem_hash, upd->idem_status,
                         upd->doc, upd->ts_ms);
        if (rc)
            return rc;
    }
    for (int i = 0; i < upd->nextra; i++) {
        int64_t x =
            lab_outbox_append(db, upd->extra_kind[i], upd->id, upd->extra_payload[i], upd->ts_ms);
        if (x < 0)
            return (int)x;
    }
    if (upd->prompt_id) {
        rc = lab_prompt_write(db, upd->prompt_id, upd->prompt, upd->ts_ms);
        if (rc)
            return rc;
    }
    upd->seq = seq;
    return 0;
}

void lab_run_update_add_row(lab_run_update_t *upd, const char *kind, char *payload)
{
    upd->extra_kind =
        lab_realloc(upd->extra_kind, sizeof *upd->extra_kind * (size_t)(upd->nextra + 1));
    upd->extra_payload =
        lab_realloc(upd->extra_payload, sizeof *upd->extra_payload * (size_t)(upd->nextra + 1));
    upd->extra_kind[upd->nextra] = lab_strdup(kind);
    upd->extra_payload[upd->nextra++] = payload;
}

lab_run_update_t *lab_run_update_new(void)
{
    lab_run_update_t *upd = LAB_NEW(lab_run_update_t);
    upd->op.apply = run_update_apply;
    return upd;
}

void lab_run_update_free(lab_run_update_t *upd)
{
    if (!upd)
        return;
    free(upd->id);
    free(upd->state);
    free(upd->doc);
    free(upd->from);
    free(upd->idem_owner);
    free(upd->idem_key);
    free(upd->idem_hash);
    for (int i = 0; i < upd->nextra; i++) {
        free(upd->extra_kind[i]);
        free(upd->extra_payload[i]);
    }
    free(upd->extra_kind);
    free(upd->extra_payload);
    free(upd->prompt_id);
    json_decref(upd->prompt);
    free(upd);
}

lab_run_insert_t *lab_run_insert_new(void)
{
    lab_run_insert_t *ins = LAB_NEW(lab_run_insert_t);
    ins->op.apply = run_insert_apply;
    return ins;
}

void lab_run_insert_free(lab_run_insert_t *ins)
{
    if (!ins)
        return;
    free(ins->id);
    free(ins->state);
    free(ins->doc);
    free(ins->idem_owner);
    free(ins->idem_key);
    free(ins->idem_hash);
    free(ins);
}

static char *column_dup(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t ? lab_strndup((const char *)t, (size_t)sqlite3_column_bytes(s, col)) : lab_strdup("");
}

int lab_runs_get(lab_store_t *st, const char *id, char **doc)
{
    *doc = NULL;
    if (!id)
        return LAB_EINVAL;
    sqlite3 *db = lab_store_reader(st);
    sqlite3_stmt *s = lab_store_stmt(db, "SELECT doc FROM runs WHERE id = ?");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *doc = column_dup(s, 0);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return 0;
    return rc == SQLITE_DONE ? LAB_ENOTFOUND : lab_sqlite_fail(db, rc, "run get");
}

int lab_runs_list(lab_store_t *st, const char *state, int64_t after, int limit, char ***docs,
                  int64_t *next)
{
    lab_runs_filter_t f = {.state = state};
    return lab_runs_find(st, &f, after, limit, docs, next);
}

/* The filter's columns, in the order their values are bound. */
static const struct {
    const char *col;
    size_t off;
} filter_cols[] = {
    {"state", offsetof(lab_runs_filter_t, state)},
    {"plate", offsetof(lab_runs_filter_t, plate)},
    {"workflow", offsetof(lab_runs_filter_t, workflow)},
    {"priority", offsetof(lab_runs_filter_t, priority)},
};
#define NFILTER (sizeof filter_cols / sizeof filter_cols[0])

static const char *filter_value(const lab_runs_filter_t *f, size_t i)
{
    return *(const char *const *)((const char *)f + filter_cols[i].off);
}

int lab_runs_find(lab_store_t *st, const lab_runs_filter_t *f, int64_t after, int limit,
                  char ***docs, int64_t *next)
{
    *docs = NULL;
    *next = 0;
    if (limit <= 0 || after < 0 || !f)
        return LAB_EINVAL;
    sqlite3 *db = lab_store_reader(st);
    /* One statement text per set of filters (at most 2^4 * 2, each cached once). The cursor is
     * a run's n: the page goes on past it in the list's order, whatever the filters. */
    char sql[400];
    size_t len = (size_t)snprintf(sql, sizeof sql, "SELECT n, doc FROM runs WHERE ");
    for (size_t i = 0; i < NFILTER; i++)
        if (filter_value(f, i))
            len += (size_t)snprintf(sql + len, sizeof sql - len, "%s = ? AND ", filter_cols[i].col);
    /* After the newest run (cursor 0 going back): every n is below INT64_MAX. */
    snprintf(sql + len, sizeof sql - len, "%s",
             f->newest_first ? "n < ? ORDER BY n DESC LIMIT ?" : "n > ? ORDER BY n LIMIT ?");
    sqlite3_stmt *s = lab_store_stmt(db, sql);
    if (!s)
        return LAB_EDB;
    int i = 1;
    for (size_t k = 0; k < NFILTER; k++)
        if (filter_value(f, k))
            sqlite3_bind_text(s, i++, filter_value(f, k), -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, i++, f->newest_first && after == 0 ? INT64_MAX : after);
    /* One row more than asked tells whether there is a next page. */
    sqlite3_bind_int64(s, i, (int64_t)limit + 1);
    char **out = NULL;
    int n = 0, cap = 0, rc;
    int64_t last = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == limit) {
            *next = last;
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : (limit < 32 ? limit : 32);
            out = lab_realloc(out, (size_t)cap * sizeof *out);
        }
        last = sqlite3_column_int64(s, 0);
        out[n++] = column_dup(s, 1);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        for (int j = 0; j < n; j++)
            free(out[j]);
        free(out);
        *next = 0;
        return lab_sqlite_fail(db, rc, "run list");
    }
    *docs = out;
    return n;
}

int lab_runs_count(lab_store_t *st, const char *state)
{
    sqlite3 *db = lab_store_reader(st);
    sqlite3_stmt *s = state ? lab_store_stmt(db, "SELECT count(*) FROM runs WHERE state = ?")
                            : lab_store_stmt(db, "SELECT count(*) FROM runs");
    if (!s)
        return LAB_EDB;
    if (state)
        sqlite3_bind_text(s, 1, state, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    int64_t n = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW)
        return lab_sqlite_fail(db, rc, "run count");
    return n > 0x7fffffff ? 0x7fffffff : (int)n;
}

int lab_idem_get(lab_store_t *st, const char *owner, const char *key, char **hash, int *status,
                 char **body)
{
    *hash = NULL;
    *body = NULL;
    *status = 0;
    if (!owner || !key)
        return LAB_EINVAL;
    sqlite3 *db = lab_store_reader(st);
    sqlite3_stmt *s = lab_store_stmt(
        db, "SELECT hash, status, body FROM idempotency WHERE owner = ? AND key = ?");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, owner, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *hash = column_dup(s, 0);
        *status = sqlite3_column_int(s, 1);
        *body = column_dup(s, 2);
    }
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return 0;
    return rc == SQLITE_DONE ? LAB_ENOTFOUND : lab_sqlite_fail(db, rc, "idempotency get");
}
