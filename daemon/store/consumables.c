/* The consumables table and its outbox rows (see consumables.h). */
#include "daemon/store/consumables.h"
#include "core/err.h"
#include "core/mem.h"
#include "daemon/store/store_int.h"

#include <stdlib.h>
#include <string.h>

int lab_store_consumable_write(sqlite3 *db, const char *instrument, const json_t *doc,
                               int64_t ts_ms)
{
    if (!db || !instrument || !*instrument || !json_is_object(doc))
        return LAB_EINVAL;
    char *text = json_dumps(doc, JSON_COMPACT);
    if (!text)
        return LAB_EINVAL;
    int rc;
    sqlite3_stmt *s = lab_store_stmt(
        db, "INSERT INTO consumables (instrument, doc, updated_ms) VALUES (?1, ?2, ?3) "
            "ON CONFLICT (instrument) DO UPDATE SET doc = ?2, updated_ms = ?3");
    if (!s) {
        rc = LAB_EDB;
        goto fail;
    }
    sqlite3_bind_text(s, 1, instrument, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, ts_ms);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        rc = lab_sqlite_fail(db, rc, "consumable write");
        goto fail;
    }
    int64_t seq = lab_outbox_append(db, "consumable", instrument, text, ts_ms);
    rc = seq > 0 ? 0 : (int)seq;
fail:
    free(text);
    return rc;
}

typedef struct cons_op {
    lab_store_op_t op;
    char *instrument;
    json_t *doc;
    int64_t ts_ms;
    lab_store_consumable_cb done;
    void *arg;
} cons_op_t;

static int cons_apply(lab_store_op_t *op, sqlite3 *db)
{
    cons_op_t *c = (cons_op_t *)op;
    return lab_store_consumable_write(db, c->instrument, c->doc, c->ts_ms);
}

static void cons_done(lab_store_op_t *op, int status)
{
    cons_op_t *c = (cons_op_t *)op;
    if (c->done)
        c->done(c->arg, status);
    free(c->instrument);
    json_decref(c->doc);
    free(c);
}

void lab_store_consumable_submit(lab_store_t *st, const char *instrument, const json_t *doc,
                                 int64_t ts_ms, lab_store_consumable_cb done, void *arg)
{
    cons_op_t *c = LAB_NEW(cons_op_t);
    c->op.apply = cons_apply;
    c->op.done = cons_done;
    c->instrument = lab_strdup(instrument);
    c->doc = json_deep_copy(doc);
    c->ts_ms = ts_ms;
    c->done = done;
    c->arg = arg;
    lab_store_submit(st, &c->op);
}

int lab_store_consumables_load(lab_store_t *st, json_t **out)
{
    *out = json_object();
    sqlite3_stmt *s =
        lab_store_stmt(lab_store_reader(st), "SELECT instrument, doc FROM consumables");
    if (!s)
        return LAB_EDB;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        json_t *doc = json_loadb((const char *)sqlite3_column_text(s, 1),
                                 (size_t)sqlite3_column_bytes(s, 1), 0, NULL);
        if (doc)
            json_object_set_new(*out, (const char *)sqlite3_column_text(s, 0), doc);
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : lab_sqlite_fail(lab_store_reader(st), rc, "consumables load");
}
