/* The prompts table and its outbox rows (see prompts.h). */
#include "daemon/store/prompts.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/store/store_int.h"

#include <stdlib.h>
#include <string.h>

/* The stored document of id and whether it is open; *doc NULL when there is none. */
static int prompt_get(sqlite3 *db, const char *id, json_t **doc, bool *open)
{
    *doc = NULL;
    *open = false;
    sqlite3_stmt *s = lab_store_stmt(db, "SELECT open, doc FROM prompts WHERE id = ?");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *open = sqlite3_column_int(s, 0) != 0;
        *doc = json_loadb((const char *)sqlite3_column_text(s, 1),
                          (size_t)sqlite3_column_bytes(s, 1), 0, NULL);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return lab_sqlite_fail(db, rc, "prompt get");
    return 0;
}

int lab_prompt_write(sqlite3 *db, const char *id, const json_t *doc, int64_t ts_ms)
{
    if (!db || !id || !*id || !json_is_object(doc))
        return LAB_EINVAL;
    bool opening = json_is_true(json_object_get(doc, "open"));
    json_t *old = NULL, *out = NULL;
    bool was_open;
    char *text = NULL, ts[32];
    int rc = prompt_get(db, id, &old, &was_open);
    if (rc || was_open == opening) /* nothing changes: no row */
        goto fail;
    lab_time_iso(ts_ms, ts);
    if (opening) {
        out = json_deep_copy(doc);
        json_object_set_new(out, "id", json_string(id));
        json_object_set_new(out, "opened_at", json_string(ts));
    } else {
        out = old ? json_incref(old) : json_object();
        json_object_update(out, (json_t *)doc);
        json_object_set_new(out, "id", json_string(id));
        json_object_set_new(out, "open", json_false());
        json_object_set_new(out, "closed_at", json_string(ts));
    }
    text = json_dumps(out, JSON_COMPACT);
    if (!text) {
        rc = LAB_EINVAL;
        goto fail;
    }
    sqlite3_stmt *s = lab_store_stmt(
        db,
        "INSERT INTO prompts (id, open, doc, opened_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?4) "
        "ON CONFLICT (id) DO UPDATE SET open = ?2, doc = ?3, updated_ms = ?4, "
        "opened_ms = CASE WHEN ?2 THEN ?4 ELSE opened_ms END");
    if (!s) {
        rc = LAB_EDB;
        goto fail;
    }
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, opening);
    sqlite3_bind_text(s, 3, text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, ts_ms);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        rc = lab_sqlite_fail(db, rc, "prompt write");
        goto fail;
    }
    int64_t seq = lab_outbox_append(db, "prompt", id, text, ts_ms);
    rc = seq > 0 ? 0 : (int)seq;
fail:
    free(text);
    json_decref(out);
    json_decref(old);
    return rc;
}

typedef struct prompt_op {
    lab_store_op_t op;
    char *id;     /* one prompt, or with prefix set every open one under it */
    char *prefix; /* close_prefix */
    json_t *doc;
    int64_t ts_ms;
} prompt_op_t;

static int prompt_apply(lab_store_op_t *op, sqlite3 *db)
{
    prompt_op_t *p = (prompt_op_t *)op;
    if (!p->prefix)
        return lab_prompt_write(db, p->id, p->doc, p->ts_ms);
    /* The ids first: writing while stepping over the same table is not done. */
    sqlite3_stmt *s = lab_store_stmt(
        db, "SELECT id FROM prompts WHERE open = 1 AND substr(id, 1, length(?1)) = ?1");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, p->prefix, -1, SQLITE_STATIC);
    char **ids = NULL;
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        ids = lab_realloc(ids, sizeof *ids * (size_t)(n + 1));
        ids[n++] = lab_strdup((const char *)sqlite3_column_text(s, 0));
    }
    sqlite3_reset(s);
    rc = rc == SQLITE_DONE ? 0 : lab_sqlite_fail(db, rc, "prompt list");
    for (int i = 0; i < n; i++) {
        if (!rc)
            rc = lab_prompt_write(db, ids[i], p->doc, p->ts_ms);
        free(ids[i]);
    }
    free(ids);
    return rc;
}

static void prompt_done(lab_store_op_t *op, int status)
{
    prompt_op_t *p = (prompt_op_t *)op;
    if (status != 0)
        log_error("store", "prompt=%s%s not recorded: %s", p->prefix ? p->prefix : p->id,
                  p->prefix ? "*" : "", lab_strerror(status));
    free(p->id);
    free(p->prefix);
    json_decref(p->doc);
    free(p);
}

static void prompt_op_submit(lab_store_t *st, const char *id, const char *prefix, json_t *doc,
                             int64_t ts_ms)
{
    prompt_op_t *p = LAB_NEW(prompt_op_t);
    p->op.apply = prompt_apply;
    p->op.done = prompt_done;
    p->id = id ? lab_strdup(id) : NULL;
    p->prefix = prefix ? lab_strdup(prefix) : NULL;
    p->doc = doc;
    p->ts_ms = ts_ms;
    lab_store_submit(st, &p->op);
}

void lab_prompt_submit(lab_store_t *st, const char *id, const json_t *doc, int64_t ts_ms)
{
    prompt_op_submit(st, id, NULL, json_deep_copy(doc), ts_ms);
}

void lab_prompts_close_prefix(lab_store_t *st, const char *prefix, const char *how, int64_t ts_ms)
{
    prompt_op_submit(st, NULL, prefix, json_pack("{s:b, s:n, s:s}", "open", 0, "by", "how", how),
                     ts_ms);
}

int lab_prompts_open(lab_store_t *st, json_t **out)
{
    *out = NULL;
    sqlite3 *db = lab_store_reader(st);
    sqlite3_stmt *s = lab_store_stmt(
        db, "SELECT doc FROM prompts WHERE open = 1 ORDER BY opened_ms DESC, id LIMIT 1000");
    if (!s)
        return LAB_EDB;
    json_t *arr = json_array();
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        json_t *d = json_loadb((const char *)sqlite3_column_text(s, 0),
                               (size_t)sqlite3_column_bytes(s, 0), 0, NULL);
        if (d)
            json_array_append_new(arr, d);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return lab_sqlite_fail(db, rc, "prompts open");
    }
    *out = arr;
    return 0;
}
