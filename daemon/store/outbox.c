/* The outbox: appending rows inside an op, and reading them back on the loop thread for the sinks.
 * A row's seq comes from the table's AUTOINCREMENT, so it grows by one per committed row and is
 * never reused after pruning. */
#include "core/err.h"
#include "core/mem.h"
#include "daemon/store/audit.h"
#include "daemon/store/store.h"
#include "daemon/store/store_int.h"

#include <stdlib.h>
#include <string.h>

/* The kinds appended so far, with what the row's key and payload are. Sinks map a kind to a
 * PostgreSQL table and an MQTT topic; a new kind is a new row here and in both of them. */
const lab_outbox_kind_t lab_outbox_kinds[] = {
    {"run.state", "run id", "the run document after the change"},
    {"instrument.state", "instrument id", "the instrument's state document"},
    {"instrument.telemetry", "instrument id", "one telemetry sample"},
    {"instrument.interval", "instrument id",
     "an interval the instrument spent in one state, once it ended (from, to, seconds)"},
    {"workflow", "workflow name", "a stored workflow version (never changed afterwards)"},
    {"measurement", "run id", "one measurement with its well and raw value"},
    {"campaign", "campaign id", "the campaign document after a change (state, counters)"},
    {"batch", "campaign id", "a batch record after a change (accepted, done)"},
    {"candidate", "campaign id", "a candidate document after a change of state"},
    {"plate", "campaign id", "a campaign plate's QC: controls, Z', passed or why not"},
    {"campaign.result", "campaign id", "one candidate's result with its provenance"},
    {"batch.done", "campaign id", "the completed batch"},
    {"event", "entity id", "an audit event: who, what, when"},
    {"audit", "empty (the subject is in the entry)",
     "an audit entry that no change's row carries: {audit_seq, hash, entry (its canonical "
     "JSON)} (daemon/store/audit.h)"},
    {"prompt", "prompt id (run:ID:paused, instrument:ID:fault, move:ID)",
     "what waits for a person, opened or answered (open, by, how)"},
    {"consumable", "instrument id",
     "a liquid handler's tips and troughs after a use or a refill (left, reserved, last)"},
    {"plate.state", "the plate's barcode",
     "the registry's plate document after a change (location, contents, runs)"},
    {"plate.move", "the plate's barcode",
     "one move of a plate: queued (outcome null), then done, failed or unknown"},
    {NULL, NULL, NULL},
};

const lab_outbox_kind_t *lab_outbox_kind_find(const char *kind)
{
    for (const lab_outbox_kind_t *k = lab_outbox_kinds; kind && k->name; k++)
        if (strcmp(k->name, kind) == 0)
            return k;
    return NULL;
}

int64_t lab_outbox_append(sqlite3 *db, const char *kind, const char *key, const char *payload,
                          int64_t ts_ms)
{
    if (!db || !kind || !*kind || !payload)
        return LAB_EINVAL;
    /* A state change is kept only with its audit entry (a failure fails the op); the row carries
     * the entries written since the op's last row, its own last. */
    const lab_audit_kind_t *k = lab_audit_kind_find(kind);
    if (k) {
        lab_conn_t *wc = lab_conn_find(db);
        int arc = lab_audit_state_write(db, k, key, payload, ts_ms, wc ? wc->note : NULL);
        if (arc)
            return arc;
    }
    char *audit = strcmp(kind, "audit") == 0 ? NULL : lab_audit_take(db);
    bool owned;
    sqlite3_stmt *s = lab_stmt_acquire(
        db, "INSERT INTO outbox (ts_ms, kind, key, payload, audit) VALUES (?, ?, ?, ?, ?)", &owned);
    if (!s) {
        free(audit);
        return LAB_EDB;
    }
    sqlite3_bind_int64(s, 1, ts_ms);
    sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, key ? key : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, payload, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, audit, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    int64_t seq = rc == SQLITE_DONE ? sqlite3_last_insert_rowid(db)
                                    : lab_sqlite_fail(db, rc, "outbox append");
    lab_stmt_release(s, owned);
    free(audit);
    lab_conn_t *c = owned ? NULL : lab_conn_find(db);
    if (c && seq > c->head)
        c->head = seq;
    return seq;
}

static char *column_dup(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t ? lab_strndup((const char *)t, (size_t)sqlite3_column_bytes(s, col)) : lab_strdup("");
}

int lab_outbox_read(lab_store_t *st, int64_t after, int limit, lab_outbox_row_t **rows)
{
    int64_t oldest;
    return lab_outbox_read_oldest(st, after, limit, rows, &oldest);
}

int lab_outbox_read_oldest(lab_store_t *st, int64_t after, int limit, lab_outbox_row_t **rows,
                           int64_t *oldest)
{
    *rows = NULL;
    *oldest = 0;
    if (limit <= 0)
        return LAB_EINVAL;
    /* One statement, one snapshot: the oldest row and the rows agree even while a group that
     * prunes commits on the writer. The subquery is one step down the primary key. */
    sqlite3_stmt *s = lab_store_stmt(lab_store_reader(st),
                                     "SELECT seq, ts_ms, kind, key, payload, (SELECT min(seq) "
                                     "FROM outbox), audit FROM outbox WHERE seq > ? ORDER BY seq "
                                     "LIMIT ?");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_int64(s, 1, after);
    sqlite3_bind_int(s, 2, limit);
    lab_outbox_row_t *out = NULL;
    int n = 0, cap = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : (limit < 64 ? limit : 64);
            out = lab_realloc(out, (size_t)cap * sizeof *out);
        }
        *oldest = sqlite3_column_int64(s, 5);
        lab_outbox_row_t *r = &out[n++];
        r->seq = sqlite3_column_int64(s, 0);
        r->ts_ms = sqlite3_column_int64(s, 1);
        r->kind = column_dup(s, 2);
        r->key = column_dup(s, 3);
        r->payload = column_dup(s, 4);
        r->audit = sqlite3_column_type(s, 6) == SQLITE_NULL ? NULL : column_dup(s, 6);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        lab_outbox_rows_free(out, n);
        return lab_sqlite_fail(lab_store_reader(st), rc, "outbox read");
    }
    *rows = out;
    return n;
}

void lab_outbox_rows_free(lab_outbox_row_t *rows, int n)
{
    for (int i = 0; i < n; i++) {
        free(rows[i].kind);
        free(rows[i].key);
        free(rows[i].payload);
        free(rows[i].audit);
    }
    free(rows);
}
