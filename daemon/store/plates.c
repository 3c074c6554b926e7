/* The plate registry's tables and their outbox rows (see plates.h). */
#include "daemon/store/plates.h"
#include "core/err.h"
#include "core/mem.h"
#include "daemon/store/store_int.h"

#include <stdlib.h>
#include <string.h>

static int step_done(sqlite3 *db, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : lab_sqlite_fail(db, rc, what);
}

int lab_plate_write(sqlite3 *db, const char *barcode, const char *doc, const char *state,
                    const char *instrument, int64_t ts_ms)
{
    if (!db || !barcode || !*barcode || !doc || !state)
        return LAB_EINVAL;
    sqlite3_stmt *s = lab_store_stmt(
        db, "INSERT INTO plates (barcode, state, instrument, doc, updated_ms) "
            "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (barcode) DO UPDATE SET state = ?2, "
            "instrument = ?3, doc = ?4, updated_ms = ?5");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, barcode, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, state, -1, SQLITE_STATIC);
    if (instrument)
        sqlite3_bind_text(s, 3, instrument, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 3);
    sqlite3_bind_text(s, 4, doc, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, ts_ms);
    int rc = step_done(db, s, "plate write");
    if (rc)
        return rc;
    int64_t seq = lab_outbox_append(db, "plate.state", barcode, doc, ts_ms);
    return seq > 0 ? 0 : (int)seq;
}

int lab_plate_move_write(sqlite3 *db, const char *barcode, int seq, const char *doc, int64_t ts_ms)
{
    if (!db || !barcode || !*barcode || seq <= 0 || !doc)
        return LAB_EINVAL;
    sqlite3_stmt *s =
        lab_store_stmt(db, "INSERT INTO plate_moves (barcode, seq, doc) VALUES (?, ?, ?)");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, barcode, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, seq);
    sqlite3_bind_text(s, 3, doc, -1, SQLITE_STATIC);
    int rc = step_done(db, s, "plate move write");
    if (rc)
        return rc;
    int64_t oseq = lab_outbox_append(db, "plate.move", barcode, doc, ts_ms);
    return oseq > 0 ? 0 : (int)oseq;
}

int lab_site_hold_write(sqlite3 *db, const char *instrument, int cassette, int slot,
                        const char *doc)
{
    if (!db || !instrument)
        return LAB_EINVAL;
    sqlite3_stmt *s = lab_store_stmt(
        db, doc ? "INSERT INTO site_holds (instrument, cassette, slot, doc) VALUES (?1, ?2, ?3, "
                  "?4) ON CONFLICT (instrument, cassette, slot) DO UPDATE SET doc = ?4"
                : "DELETE FROM site_holds WHERE instrument = ?1 AND cassette = ?2 AND slot = ?3");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, instrument, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, cassette);
    sqlite3_bind_int(s, 3, slot);
    if (doc)
        sqlite3_bind_text(s, 4, doc, -1, SQLITE_STATIC);
    return step_done(db, s, "site hold write");
}

static json_t *column_json(sqlite3_stmt *s, int col)
{
    return json_loadb((const char *)sqlite3_column_text(s, col),
                      (size_t)sqlite3_column_bytes(s, col), 0, NULL);
}

int lab_plates_load(lab_store_t *st, json_t **plates, json_t **holds)
{
    *plates = *holds = NULL;
    sqlite3 *db = lab_store_reader(st);
    sqlite3_stmt *s = lab_store_stmt(
        db, "SELECT p.doc, (SELECT max(seq) FROM plate_moves m WHERE m.barcode = p.barcode) "
            "FROM plates p ORDER BY p.n");
    if (!s)
        return LAB_EDB;
    json_t *pl = json_array(), *hl = json_array();
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        json_t *doc = column_json(s, 0);
        if (doc)
            json_array_append_new(
                pl, json_pack("{s:o, s:i}", "doc", doc, "moves", sqlite3_column_int(s, 1)));
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        goto fail;
    s = lab_store_stmt(db, "SELECT instrument, cassette, slot, doc FROM site_holds");
    if (!s) {
        rc = SQLITE_ERROR;
        goto fail;
    }
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        json_t *doc = column_json(s, 3);
        json_array_append_new(hl,
                              json_pack("{s:s, s:i, s:i, s:o}", "instrument",
                                        (const char *)sqlite3_column_text(s, 0), "cassette",
                                        sqlite3_column_int(s, 1), "slot", sqlite3_column_int(s, 2),
                                        "doc", doc ? doc : json_object()));
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        goto fail;
    *plates = pl;
    *holds = hl;
    return 0;
fail:
    json_decref(pl);
    json_decref(hl);
    return lab_sqlite_fail(db, rc, "plates load");
}

int lab_site_holds_get(lab_store_t *st, const char *instrument, json_t **out)
{
    *out = NULL;
    sqlite3 *db = lab_store_reader(st);
    sqlite3_stmt *s = lab_store_stmt(db, "SELECT doc FROM site_holds WHERE ?1 IS NULL OR "
                                         "instrument = ?1 ORDER BY instrument, cassette, slot");
    if (!s)
        return LAB_EDB;
    if (instrument)
        sqlite3_bind_text(s, 1, instrument, -1, SQLITE_STATIC);
    json_t *arr = json_array();
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        json_t *doc = column_json(s, 0);
        if (doc)
            json_array_append_new(arr, doc);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return lab_sqlite_fail(db, rc, "site holds");
    }
    *out = arr;
    return 0;
}

int lab_plates_find(lab_store_t *st, const lab_plates_filter_t *f, int64_t after, int limit,
                    char ***docs, int64_t *next)
{
    *docs = NULL;
    *next = 0;
    if (limit <= 0 || after < 0 || !f)
        return LAB_EINVAL;
    sqlite3 *db = lab_store_reader(st);
    /* One statement per set of filters (four, each cached once); the cursor is a plate's n. */
    static const char *const sql[4] = {
        "SELECT n, doc FROM plates WHERE n > ?3 ORDER BY n LIMIT ?4",
        "SELECT n, doc FROM plates WHERE state = ?1 AND n > ?3 ORDER BY n LIMIT ?4",
        "SELECT n, doc FROM plates WHERE instrument = ?2 AND n > ?3 ORDER BY n LIMIT ?4",
        "SELECT n, doc FROM plates WHERE state = ?1 AND instrument = ?2 AND n > ?3 ORDER BY n "
        "LIMIT ?4",
    };
    sqlite3_stmt *s = lab_store_stmt(db, sql[(f->state ? 1 : 0) | (f->instrument ? 2 : 0)]);
    if (!s)
        return LAB_EDB;
    if (f->state)
        sqlite3_bind_text(s, 1, f->state, -1, SQLITE_STATIC);
    if (f->instrument)
        sqlite3_bind_text(s, 2, f->instrument, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, after);
    sqlite3_bind_int64(s, 4, (int64_t)limit + 1); /* one more tells whether a page follows */
    char **out = NULL;
    int n = 0, rc;
    int64_t last = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == limit) {
            *next = last;
            break;
        }
        out = lab_realloc(out, (size_t)(n + 1) * sizeof *out);
        last = sqlite3_column_int64(s, 0);
        out[n++] = lab_strndup((const char *)sqlite3_column_text(s, 1),
                               (size_t)sqlite3_column_bytes(s, 1));
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        for (int j = 0; j < n; j++)
            free(out[j]);
        free(out);
        *next = 0;
        return lab_sqlite_fail(db, rc, "plate list");
    }
    *docs = out;
    return n;
}

int lab_plate_get(lab_store_t *st, const char *barcode, json_t **out)
{
    *out = NULL;
    sqlite3 *db = lab_store_reader(st);
    /* one statement, one snapshot: the document and its moves agree */
    sqlite3_stmt *s = lab_store_stmt(
        db, "SELECT p.doc, (SELECT json_group_array(json(m.doc)) FROM (SELECT doc FROM "
            "(SELECT seq, doc FROM plate_moves WHERE barcode = ?1 ORDER BY seq DESC LIMIT 1000) "
            "ORDER BY seq) m) FROM plates p WHERE p.barcode = ?1");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, barcode, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        json_t *doc = column_json(s, 0), *moves = column_json(s, 1);
        if (doc && json_is_array(moves)) {
            json_object_set_new(doc, "moves", moves);
            *out = doc;
        } else {
            json_decref(doc);
            json_decref(moves);
        }
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return lab_sqlite_fail(db, rc, "plate get");
    return *out ? 0 : rc == SQLITE_DONE ? LAB_ENOTFOUND : LAB_EDB;
}
