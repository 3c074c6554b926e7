/* The instrument_states table and its outbox rows (see utilisation.h). */
#include "daemon/store/utilisation.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/store/store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAY_MS 86400000LL

/* Ends the open intervals of one instrument (NULL: of all) at ts_ms, or each at its own
 * seen_ms when stale, with an instrument.interval row for each. */
static int close_open(sqlite3 *db, const char *instrument, int64_t ts_ms, bool stale)
{
    sqlite3_stmt *s =
        lab_store_stmt(db, "SELECT id, instrument, state, from_ms, seen_ms FROM instrument_states "
                           "WHERE to_ms IS NULL AND (?1 IS NULL OR instrument = ?1) ORDER BY id");
    if (!s)
        return LAB_EDB;
    if (instrument)
        sqlite3_bind_text(s, 1, instrument, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 1);
    typedef struct open_row {
        int64_t id, from_ms, to_ms;
        char *instrument, *state;
    } open_row_t;
    open_row_t *v = NULL;
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        v = lab_realloc(v, sizeof *v * (size_t)(n + 1));
        v[n].id = sqlite3_column_int64(s, 0);
        v[n].instrument = lab_strdup((const char *)sqlite3_column_text(s, 1));
        v[n].state = lab_strdup((const char *)sqlite3_column_text(s, 2));
        v[n].from_ms = sqlite3_column_int64(s, 3);
        int64_t seen = sqlite3_column_int64(s, 4);
        v[n].to_ms = stale ? seen : ts_ms;
        if (v[n].to_ms < v[n].from_ms) /* a clock set back: an empty interval, never negative */
            v[n].to_ms = v[n].from_ms;
        n++;
    }
    sqlite3_reset(s);
    rc = rc == SQLITE_DONE ? 0 : lab_sqlite_fail(db, rc, "instrument states open");
    sqlite3_stmt *u =
        rc ? NULL
           : lab_store_stmt(db, "UPDATE instrument_states SET to_ms = ?2, seen_ms = ?2 "
                                "WHERE id = ?1");
    if (!rc && !u)
        rc = LAB_EDB;
    for (int i = 0; i < n; i++) {
        if (!rc) {
            sqlite3_bind_int64(u, 1, v[i].id);
            sqlite3_bind_int64(u, 2, v[i].to_ms);
            int r = sqlite3_step(u);
            sqlite3_reset(u);
            rc = r == SQLITE_DONE ? 0 : lab_sqlite_fail(db, r, "instrument state end");
        }
        if (!rc) {
            char from[32], to[32];
            lab_time_iso(v[i].from_ms, from);
            lab_time_iso(v[i].to_ms, to);
            json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:f}", "instrument", v[i].instrument,
                                    "state", v[i].state, "from", from, "to", to, "seconds",
                                    (double)(v[i].to_ms - v[i].from_ms) / 1000.0);
            char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
            int64_t seq = text ? lab_outbox_append(db, "instrument.interval", v[i].instrument, text,
                                                   v[i].to_ms)
                               : LAB_ENOMEM;
            rc = seq > 0 ? 0 : (int)seq;
            free(text);
            json_decref(doc);
        }
        free(v[i].instrument);
        free(v[i].state);
    }
    free(v);
    return rc;
}

int lab_util_change(sqlite3 *db, const char *instrument, const char *state, int64_t ts_ms)
{
    if (!db || !instrument || !state)
        return LAB_EINVAL;
    sqlite3_stmt *s = lab_store_stmt(
        db, "SELECT state FROM instrument_states WHERE instrument = ? AND to_ms IS NULL");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, instrument, -1, SQLITE_STATIC);
    bool same = false;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        same = strcmp((const char *)sqlite3_column_text(s, 0), state) == 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return lab_sqlite_fail(db, rc, "instrument state");
    if (same)
        return 0;
    rc = close_open(db, instrument, ts_ms, false);
    if (rc)
        return rc;
    s = lab_store_stmt(db, "INSERT INTO instrument_states (instrument, state, from_ms, seen_ms) "
                           "VALUES (?1, ?2, ?3, ?3)");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, instrument, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, ts_ms);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : lab_sqlite_fail(db, rc, "instrument state begin");
}

typedef enum util_what { UTIL_STALE, UTIL_SEEN, UTIL_ALL } util_what_t;

typedef struct util_op {
    lab_store_op_t op;
    util_what_t what;
    int64_t ts_ms;
} util_op_t;

static int util_apply(lab_store_op_t *op, sqlite3 *db)
{
    util_op_t *u = (util_op_t *)op;
    if (u->what != UTIL_SEEN)
        return close_open(db, NULL, u->ts_ms, u->what == UTIL_STALE);
    sqlite3_stmt *s = lab_store_stmt(
        db, "UPDATE instrument_states SET seen_ms = max(seen_ms, ?1) WHERE to_ms IS NULL");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_int64(s, 1, u->ts_ms);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : lab_sqlite_fail(db, rc, "instrument states seen");
}

static void util_done(lab_store_op_t *op, int status)
{
    if (status != 0)
        log_error("store", "instrument states not recorded: %s", lab_strerror(status));
    free(op);
}

static void util_submit(lab_store_t *st, util_what_t what, int64_t ts_ms)
{
    util_op_t *u = LAB_NEW(util_op_t);
    u->op.apply = util_apply;
    u->op.done = util_done;
    u->what = what;
    u->ts_ms = ts_ms;
    lab_store_submit(st, &u->op);
}

void lab_util_close_stale(lab_store_t *st)
{
    util_submit(st, UTIL_STALE, 0);
}

void lab_util_seen(lab_store_t *st, int64_t ts_ms)
{
    util_submit(st, UTIL_SEEN, ts_ms);
}

void lab_util_close_all(lab_store_t *st, int64_t ts_ms)
{
    util_submit(st, UTIL_ALL, ts_ms);
}

/* ---- reading ---- */

static int64_t day_floor(int64_t ms)
{
    int64_t d = ms / DAY_MS;
    if (ms < 0 && d * DAY_MS != ms)
        d--;
    return d * DAY_MS;
}

static void add_seconds(json_t *secs, const char *state, int64_t ms)
{
    json_t *v = json_object_get(secs, state);
    double was = v ? json_real_value(v) : 0;
    json_object_set_new(secs, state, json_real(was + (double)ms / 1000.0));
}

int lab_util_days(lab_store_t *st, const char *instrument, int64_t from_ms, int64_t to_ms,
                  int64_t now_ms, json_t **out)
{
    *out = NULL;
    if (!instrument || to_ms <= from_ms || to_ms - from_ms > LAB_UTIL_SPAN_MAX_MS)
        return LAB_EINVAL;
    int64_t d0 = day_floor(from_ms), d1 = day_floor(to_ms - 1) + DAY_MS;
    int ndays = (int)((d1 - d0) / DAY_MS);
    json_t **secs = lab_calloc((size_t)ndays, sizeof *secs);
    int64_t *covered = lab_calloc((size_t)ndays, sizeof *covered);
    static const char *const states[] = {"busy", "idle", "paused", "fault", "offline"};
    for (int i = 0; i < ndays; i++) {
        secs[i] = json_object();
        for (size_t k = 0; k < sizeof states / sizeof *states; k++)
            json_object_set_new(secs[i], states[k], json_real(0));
    }
    sqlite3 *db = lab_store_reader(st);
    sqlite3_stmt *s = lab_store_stmt(
        db, "SELECT state, from_ms, coalesce(to_ms, ?4) FROM instrument_states "
            "WHERE instrument = ?1 AND from_ms < ?3 AND coalesce(to_ms, ?4) > ?2 ORDER BY from_ms");
    int rc = s ? 0 : LAB_EDB;
    if (s) {
        sqlite3_bind_text(s, 1, instrument, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, from_ms);
        sqlite3_bind_int64(s, 3, to_ms);
        sqlite3_bind_int64(s, 4, now_ms);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            const char *state = (const char *)sqlite3_column_text(s, 0);
            int64_t a = sqlite3_column_int64(s, 1), b = sqlite3_column_int64(s, 2);
            a = a < from_ms ? from_ms : a;
            b = b > to_ms ? to_ms : b;
            while (a < b) { /* split at midnights */
                int64_t day = day_floor(a), end = day + DAY_MS < b ? day + DAY_MS : b;
                int i = (int)((day - d0) / DAY_MS);
                add_seconds(secs[i], state, end - a);
                covered[i] += end - a;
                a = end;
            }
        }
        sqlite3_reset(s);
        rc = rc == SQLITE_DONE ? 0 : lab_sqlite_fail(db, rc, "instrument states read");
    }
    json_t *arr = json_array();
    for (int i = 0; i < ndays; i++) {
        int64_t day = d0 + (int64_t)i * DAY_MS;
        /* the part of the day asked about that has happened */
        int64_t a = day > from_ms ? day : from_ms, b = day + DAY_MS;
        b = b < to_ms ? b : to_ms;
        b = b < now_ms ? b : now_ms;
        int64_t span = b > a ? b - a : 0;
        json_object_set_new(secs[i], "unrecorded",
                            json_real((double)(span > covered[i] ? span - covered[i] : 0) / 1e3));
        char iso[32];
        lab_time_iso(day, iso);
        iso[10] = '\0';
        json_array_append_new(arr, json_pack("{s:s, s:o}", "day", iso, "seconds", secs[i]));
    }
    free(secs);
    free(covered);
    if (rc) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int lab_util_campaigns(lab_store_t *st, const char *instrument, json_t **out)
{
    *out = NULL;
    sqlite3 *db = lab_store_reader(st);
    /* A step's times are ISO 8601 UTC with milliseconds; julianday reads them. */
    sqlite3_stmt *s =
        lab_store_stmt(db, "SELECT json_extract(r.doc, '$.campaign') AS c, count(DISTINCT r.id), "
                           "sum((julianday(json_extract(x.value, '$.ended_at')) - "
                           "julianday(json_extract(x.value, '$.started_at'))) * 86400.0) AS busy "
                           "FROM runs r, json_each(r.doc, '$.steps') x "
                           "WHERE json_extract(r.doc, '$.campaign') IS NOT NULL "
                           "AND json_extract(x.value, '$.instrument') = ?1 "
                           "AND json_extract(x.value, '$.started_at') IS NOT NULL "
                           "AND json_extract(x.value, '$.ended_at') IS NOT NULL "
                           "GROUP BY c ORDER BY busy DESC, c LIMIT 1000");
    if (!s)
        return LAB_EDB;
    sqlite3_bind_text(s, 1, instrument, -1, SQLITE_STATIC);
    json_t *arr = json_array();
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        json_array_append_new(arr, json_pack("{s:s, s:I, s:f}", "campaign",
                                             (const char *)sqlite3_column_text(s, 0), "runs",
                                             (json_int_t)sqlite3_column_int64(s, 1), "busy_s",
                                             sqlite3_column_double(s, 2)));
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return lab_sqlite_fail(db, rc, "utilisation by campaign");
    }
    *out = arr;
    return 0;
}
