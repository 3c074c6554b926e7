/* Workflow versions: put (in a store op, with its outbox row), get and list. */
#include "daemon/store/workflows.h"
#include "core/err.h"
#include "core/mem.h"
#include "daemon/store/store_int.h"

#include <stdlib.h>
#include <string.h>

static int put_apply(lab_store_op_t *op, sqlite3 *db);

lab_wf_put_t *lab_wf_put_new(void)
{
    lab_wf_put_t *p = lab_calloc(1, sizeof *p);
    p->op.apply = put_apply;
    return p;
}

void lab_wf_put_free(lab_wf_put_t *put)
{
    if (!put)
        return;
    free(put->name);
    free(put->canon);
    free(put->doc);
    free(put);
}

static char *text_dup(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t ? lab_strndup((const char *)t, (size_t)sqlite3_column_bytes(s, col)) : lab_strdup("");
}

/* The version and canonical text of (name, version), or of the newest when version is 0.
 * 1 found, 0 not, < 0 error. */
static int find(sqlite3 *db, const char *name, int version, int *found_version, char **canon,
                char **doc)
{
    sqlite3_stmt *s =
        version ? lab_store_stmt(db, "SELECT version, canon, doc FROM workflows "
                                     "WHERE name = ? AND version = ?")
                : lab_store_stmt(db, "SELECT version, canon, doc FROM workflows WHERE name = ? "
                                     "ORDER BY version DESC LIMIT 1");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    if (version)
        sqlite3_bind_int(s, 2, version);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *found_version = sqlite3_column_int(s, 0);
        if (canon)
            *canon = text_dup(s, 1);
        if (doc)
            *doc = text_dup(s, 2);
    }
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : lab_sqlite_fail(db, rc, "workflow find");
}

static int put_apply(lab_store_op_t *op, sqlite3 *db)
{
    lab_wf_put_t *p = (lab_wf_put_t *)op;
    int v = 0;
    char *canon = NULL, *doc = NULL;
    if (!p->version) { /* the same steps as any stored version are that version */
        sqlite3_stmt *s = lab_store_stmt(db, "SELECT version, doc FROM workflows WHERE name = ? "
                                             "AND canon = ? ORDER BY version DESC LIMIT 1");
        if (!s)
            return LAB_EDB;
        sqlite3_bind_text(s, 1, p->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, p->canon, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
            p->stored_version = sqlite3_column_int(s, 0);
            p->doc = text_dup(s, 1);
        }
        sqlite3_reset(s);
        if (rc == SQLITE_ROW)
            return LAB_OK;
        if (rc != SQLITE_DONE)
            return lab_sqlite_fail(db, rc, "workflow find");
    }
    int rc = find(db, p->name, p->version, &v, &canon, &doc);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        bool same = strcmp(canon, p->canon) == 0;
        free(canon);
        if (same) {
            p->stored_version = v;
            p->doc = doc;
            return LAB_OK;
        }
        free(doc);
        if (p->version)
            return LAB_ECONFLICT; /* a stored version never changes */
    }
    int version = p->version ? p->version : v + 1;
    json_t *d = json_loads(p->canon, 0, NULL);
    if (!json_is_object(d)) {
        json_decref(d);
        return LAB_EINVAL;
    }
    json_object_set_new(d, "version", json_integer(version));
    char *text = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(d);
    int64_t seq = lab_outbox_append(db, "workflow", p->name, text, p->ts_ms);
    if (seq < 0) {
        free(text);
        return (int)seq;
    }
    sqlite3_stmt *s = lab_store_stmt(db, "INSERT INTO workflows (name, version, canon, doc, "
                                         "created_ms, seq) VALUES (?, ?, ?, ?, ?, ?)");
    if (!s) {
        free(text);
        return LAB_EDB;
    }
    sqlite3_bind_text(s, 1, p->name, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, version);
    sqlite3_bind_text(s, 3, p->canon, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, p->ts_ms);
    sqlite3_bind_int64(s, 6, seq);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE) {
        free(text);
        return lab_sqlite_fail(db, rc, "workflow insert");
    }
    p->stored_version = version;
    p->created = true;
    p->doc = text;
    return LAB_OK;
}

int lab_workflows_get(lab_store_t *st, const char *name, int version, char **doc)
{
    *doc = NULL;
    int v = 0;
    int rc = find(lab_store_reader(st), name, version, &v, NULL, doc);
    return rc == 1 ? LAB_OK : rc == 0 ? LAB_ENOTFOUND : rc;
}

int64_t lab_workflows_seq(lab_store_t *st, const char *name)
{
    sqlite3_stmt *s =
        lab_store_stmt(lab_store_reader(st), "SELECT max(seq) FROM workflows WHERE name = ?");
    if (!s)
        return 0;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int64_t seq = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    return seq;
}

json_t *lab_workflows_list(lab_store_t *st)
{
    sqlite3 *db = lab_store_reader(st);
    json_t *out = json_array();
    sqlite3_stmt *s = lab_store_stmt(db, "SELECT name, version FROM workflows ORDER BY name, "
                                         "version");
    if (!s)
        return out;
    json_t *cur = NULL;
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 0);
        int v = sqlite3_column_int(s, 1);
        if (!cur || strcmp(json_string_value(json_object_get(cur, "name")), name) != 0) {
            cur = json_pack("{s:s, s:[], s:i}", "name", name, "versions", "latest", v);
            json_array_append_new(out, cur);
        }
        json_array_append_new(json_object_get(cur, "versions"), json_integer(v));
        json_object_set_new(cur, "latest", json_integer(v));
    }
    sqlite3_reset(s);
    return out;
}
