/* The closed loop's records: one write op for any number of them, and the load at start. */
#include "daemon/store/campaigns.h"
#include "core/err.h"
#include "core/mem.h"
#include "daemon/store/store_int.h"

#include <stdlib.h>
#include <string.h>

static int write_apply(lab_store_op_t *op, sqlite3 *db);

lab_campaigns_write_t *lab_campaigns_write_new(int64_t ts_ms)
{
    lab_campaigns_write_t *w = LAB_NEW(lab_campaigns_write_t);
    w->op.apply = write_apply;
    w->ts_ms = ts_ms;
    return w;
}

void lab_campaigns_write_free(lab_campaigns_write_t *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->nputs; i++) {
        free(w->puts[i].campaign);
        free(w->puts[i].id);
        free(w->puts[i].state);
        free(w->puts[i].doc);
    }
    for (int i = 0; i < w->nrows; i++) {
        free(w->row_kind[i]);
        free(w->row_key[i]);
        free(w->row_payload[i]);
    }
    for (int i = 0; i < w->nruns; i++)
        lab_run_insert_free(w->runs[i]);
    free(w->puts);
    free(w->row_kind);
    free(w->row_key);
    free(w->row_payload);
    free(w->runs);
    free(w);
}

static char *dup_or_null(const char *s)
{
    return s ? lab_strdup(s) : NULL;
}

void lab_campaigns_write_put(lab_campaigns_write_t *w, lab_campaigns_table_t table,
                             const char *campaign, const char *id, const char *state, int64_t ord,
                             const char *doc)
{
    /* a later change of the same record in the same write replaces the earlier one */
    for (int i = 0; i < w->nputs; i++) {
        lab_campaigns_put_t *p = &w->puts[i];
        if (p->table == table && strcmp(p->campaign, campaign) == 0 &&
            ((!p->id && !id) || (p->id && id && strcmp(p->id, id) == 0))) {
            free(p->state);
            free(p->doc);
            p->state = dup_or_null(state);
            p->ord = ord;
            p->doc = lab_strdup(doc);
            return;
        }
    }
    if (w->nputs == w->capputs) {
        w->capputs = w->capputs ? 2 * w->capputs : 16;
        w->puts = lab_realloc(w->puts, sizeof *w->puts * (size_t)w->capputs);
    }
    w->puts[w->nputs++] = (lab_campaigns_put_t){
        table, lab_strdup(campaign), dup_or_null(id), dup_or_null(state), ord, lab_strdup(doc)};
}

void lab_campaigns_write_row(lab_campaigns_write_t *w, const char *kind, const char *key,
                             const char *payload)
{
    if (w->nrows == w->caprows) {
        w->caprows = w->caprows ? 2 * w->caprows : 16;
        w->row_kind = lab_realloc(w->row_kind, sizeof *w->row_kind * (size_t)w->caprows);
        w->row_key = lab_realloc(w->row_key, sizeof *w->row_key * (size_t)w->caprows);
        w->row_payload = lab_realloc(w->row_payload, sizeof *w->row_payload * (size_t)w->caprows);
    }
    w->row_kind[w->nrows] = lab_strdup(kind);
    w->row_key[w->nrows] = lab_strdup(key);
    w->row_payload[w->nrows] = lab_strdup(payload);
    w->nrows++;
}

void lab_campaigns_write_run(lab_campaigns_write_t *w, lab_run_insert_t *ins)
{
    if (w->nruns == w->capruns) {
        w->capruns = w->capruns ? 2 * w->capruns : 4;
        w->runs = lab_realloc(w->runs, sizeof *w->runs * (size_t)w->capruns);
    }
    w->runs[w->nruns++] = ins;
}

static const char *const put_sql[] = {
    [LAB_CAMPAIGNS_TABLE_CAMPAIGN] =
        "INSERT INTO campaigns (id, state, doc, updated_ms) VALUES (?1, ?3, ?5, ?6) "
        "ON CONFLICT (id) DO UPDATE SET state = excluded.state, doc = excluded.doc, "
        "updated_ms = excluded.updated_ms",
    [LAB_CAMPAIGNS_TABLE_BATCH] = "INSERT INTO batches (campaign, batch, ord, doc, updated_ms) "
                                  "VALUES (?1, ?2, ?4, ?5, ?6) "
                                  "ON CONFLICT (campaign, batch) DO UPDATE SET doc = excluded.doc, "
                                  "updated_ms = excluded.updated_ms",
    [LAB_CAMPAIGNS_TABLE_CANDIDATE] =
        "INSERT INTO candidates (campaign, id, state, ord, doc, updated_ms) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (campaign, id) DO UPDATE SET "
        "state = excluded.state, doc = excluded.doc, "
        "updated_ms = excluded.updated_ms",
};

static const char *const put_kind[] = {
    [LAB_CAMPAIGNS_TABLE_CAMPAIGN] = "campaign",
    [LAB_CAMPAIGNS_TABLE_BATCH] = "batch",
    [LAB_CAMPAIGNS_TABLE_CANDIDATE] = "candidate",
};

static int write_apply(lab_store_op_t *op, sqlite3 *db)
{
    lab_campaigns_write_t *w = (lab_campaigns_write_t *)op;
    for (int i = 0; i < w->nruns; i++) {
        int rc = w->runs[i]->op.apply(&w->runs[i]->op, db);
        if (rc)
            return rc;
    }
    for (int i = 0; i < w->nputs; i++) {
        const lab_campaigns_put_t *p = &w->puts[i];
        sqlite3_stmt *s = lab_store_stmt(db, put_sql[p->table]);
        if (!s)
            return LAB_EDB;
        sqlite3_bind_text(s, 1, p->campaign, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, p->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, p->state, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, p->ord);
        sqlite3_bind_text(s, 5, p->doc, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 6, w->ts_ms);
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE)
            return lab_sqlite_fail(db, rc, "campaign record");
        int64_t seq = lab_outbox_append(db, put_kind[p->table], p->campaign, p->doc, w->ts_ms);
        if (seq < 0)
            return (int)seq;
    }
    for (int i = 0; i < w->nrows; i++) {
        int64_t seq =
            lab_outbox_append(db, w->row_kind[i], w->row_key[i], w->row_payload[i], w->ts_ms);
        if (seq < 0)
            return (int)seq;
    }
    return 0;
}

int lab_campaigns_load(lab_store_t *st, lab_campaigns_table_t table,
                       void (*cb)(void *ctx, const char *campaign, const char *id, const char *doc),
                       void *ctx)
{
    static const char *const sql[] = {
        [LAB_CAMPAIGNS_TABLE_CAMPAIGN] = "SELECT id, NULL, doc FROM campaigns ORDER BY id",
        [LAB_CAMPAIGNS_TABLE_BATCH] =
            "SELECT campaign, batch, doc FROM batches ORDER BY campaign, ord",
        [LAB_CAMPAIGNS_TABLE_CANDIDATE] =
            "SELECT campaign, id, doc FROM candidates ORDER BY campaign, ord",
    };
    sqlite3 *db = lab_store_reader(st);
    sqlite3_stmt *s = lab_store_stmt(db, sql[table]);
    if (!s)
        return LAB_EDB;
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        cb(ctx, (const char *)sqlite3_column_text(s, 0), (const char *)sqlite3_column_text(s, 1),
           (const char *)sqlite3_column_text(s, 2));
        n++;
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? n : lab_sqlite_fail(db, rc, "campaign load");
}
