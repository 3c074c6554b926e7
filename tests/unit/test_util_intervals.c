/* Utilisation in the local store (daemon/store/utilisation.c) against a real SQLite file, to the
 * millisecond: intervals follow the changes of state (the same state again is no change), an
 * interval across midnight counts in both days, the time no interval covers is unrecorded, an
 * interval a kill -9 left open ends at its last "seen" mark, a clean stop ends them at the stop,
 * each ended interval is one instrument.interval outbox row, and per campaign the seconds its
 * runs' steps ran on an instrument. */
#include "core/clock.h"
#include "core/err.h"
#include "core/mem.h"
#include "daemon/store/store.h"
#include "daemon/store/utilisation.h"

#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define DAY 86400000LL
#define T0 1796083200000LL /* 2026-12-01T00:00:00Z */

typedef struct fx {
    char dir[64];
    uv_loop_t loop;
    lab_store_t *st;
} fx_t;

/* One op: SQL to run or state changes to apply, inside the writer. */
typedef struct sql_op {
    lab_store_op_t op;
    const char *sql;
    const char *inst, *state;
    int64_t ts;
    int status;
} sql_op_t;

static int sql_apply(lab_store_op_t *op, sqlite3 *db)
{
    sql_op_t *o = (sql_op_t *)op;
    if (o->sql)
        return sqlite3_exec(db, o->sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    return lab_util_change(db, o->inst, o->state, o->ts);
}

static void sql_done(lab_store_op_t *op, int status)
{
    ((sql_op_t *)op)->status = status;
}

static void run_op(fx_t *f, const char *sql, const char *inst, const char *state, int64_t ts)
{
    sql_op_t o = {.op = {.apply = sql_apply, .done = sql_done},
                  .sql = sql,
                  .inst = inst,
                  .state = state,
                  .ts = ts,
                  .status = 1};
    lab_store_submit(f->st, &o.op);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(o.status, 0);
}

static void change(fx_t *f, const char *inst, const char *state, int64_t ts)
{
    run_op(f, NULL, inst, state, ts);
}

static void settle(fx_t *f)
{
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

static void closed(void *arg)
{
    *(int *)arg = 1;
}

static void reopen(fx_t *f)
{
    int done = 0;
    lab_store_close(f->st, closed, &done);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(done, 1);
    assert_int_equal(lab_store_open(&f->st, &f->loop, f->dir), 0);
}

static fx_t *fx_new(void)
{
    fx_t *f = LAB_NEW(fx_t);
    snprintf(f->dir, sizeof f->dir, "/tmp/labloop-util-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(lab_store_open(&f->st, &f->loop, f->dir), 0);
    return f;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void fx_free(fx_t *f)
{
    int done = 0;
    lab_store_close(f->st, closed, &done);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_loop_close(&f->loop);
    nftw(f->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
}

static double day_secs(json_t *days, int i, const char *state)
{
    return json_number_value(
        json_object_get(json_object_get(json_array_get(days, i), "seconds"), state));
}

static void test_days_split_and_unrecorded(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    /* Day 1: nothing until 06:00; idle 06:00-20:00, busy 20:00-02:00 (across midnight), the same
     * state again at 21:00 (no change), idle from 02:00 of day 2, open until "now" = 12:00. */
    change(f, "inc", "idle", T0 + 6 * 3600000LL);
    change(f, "inc", "busy", T0 + 20 * 3600000LL);
    change(f, "inc", "busy", T0 + 21 * 3600000LL);
    change(f, "inc", "idle", T0 + DAY + 2 * 3600000LL);
    change(f, "rdr", "fault", T0 + 3600000LL); /* another instrument: not counted */
    json_t *days = NULL;
    assert_int_equal(
        lab_util_days(f->st, "inc", T0, T0 + 3 * DAY, T0 + DAY + 12 * 3600000LL, &days), 0);
    assert_int_equal(json_array_size(days), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(days, 0), "day")),
                        "2026-12-01");
    assert_true(day_secs(days, 0, "idle") == 14 * 3600.0);
    assert_true(day_secs(days, 0, "busy") == 4 * 3600.0);
    assert_true(day_secs(days, 0, "unrecorded") == 6 * 3600.0);
    assert_true(day_secs(days, 0, "fault") == 0);
    assert_true(day_secs(days, 1, "busy") == 2 * 3600.0);
    assert_true(day_secs(days, 1, "idle") == 10 * 3600.0); /* 02:00 to now */
    assert_true(day_secs(days, 1, "unrecorded") == 0);
    assert_true(day_secs(days, 2, "idle") == 0); /* after now: nothing, not even unrecorded */
    assert_true(day_secs(days, 2, "unrecorded") == 0);
    json_decref(days);
    /* one interval ended per change: three rows (idle, busy, and rdr has none ended) */
    lab_outbox_row_t *rows;
    int n = lab_outbox_read(f->st, 0, 100, &rows);
    int intervals = 0;
    for (int i = 0; i < n; i++)
        intervals += strcmp(rows[i].kind, "instrument.interval") == 0;
    assert_int_equal(intervals, 2);
    json_t *first = json_loads(rows[0].payload, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(first, "state")), "idle");
    assert_string_equal(json_string_value(json_object_get(first, "from")),
                        "2026-12-01T06:00:00.000Z");
    assert_true(json_number_value(json_object_get(first, "seconds")) == 14 * 3600.0);
    json_decref(first);
    lab_outbox_rows_free(rows, n);
    /* limits */
    assert_int_equal(lab_util_days(f->st, "inc", T0, T0, T0, &days), LAB_EINVAL);
    assert_int_equal(lab_util_days(f->st, "inc", T0, T0 + 367 * DAY, T0, &days), LAB_EINVAL);
    fx_free(f);
}

static void test_stale_seen_and_stop(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    change(f, "inc", "paused", T0 + 1000);
    lab_util_seen(f->st, T0 + 61000);
    settle(f);
    reopen(f); /* as after a kill -9: the interval is still open */
    lab_util_close_stale(f->st);
    settle(f);
    change(f, "inc", "offline", T0 + 300000);
    json_t *days = NULL;
    assert_int_equal(lab_util_days(f->st, "inc", T0, T0 + DAY, T0 + 400000, &days), 0);
    assert_true(day_secs(days, 0, "paused") == 60.0);   /* until its last mark */
    assert_true(day_secs(days, 0, "offline") == 100.0); /* 300 s to now at 400 s */
    assert_true(day_secs(days, 0, "unrecorded") == 1.0 + 239.0);
    json_decref(days);
    /* a clean stop ends the open one at the stop */
    lab_util_close_all(f->st, T0 + 350000);
    settle(f);
    assert_int_equal(lab_util_days(f->st, "inc", T0, T0 + DAY, T0 + 400000, &days), 0);
    assert_true(day_secs(days, 0, "offline") == 50.0);
    json_decref(days);
    fx_free(f);
}

static void test_by_campaign(void **state)
{
    (void)state;
    fx_t *f = fx_new();
    run_op(f,
           "INSERT INTO runs (id, state, doc, created_ms, updated_ms, seq) VALUES "
           "('r1', 'done', '{\"campaign\":\"c1\",\"steps\":["
           "{\"instrument\":\"rdr\",\"started_at\":\"2026-12-01T10:00:00.000Z\","
           "\"ended_at\":\"2026-12-01T10:01:30.000Z\"},"
           "{\"instrument\":\"inc\",\"started_at\":\"2026-12-01T09:00:00.000Z\","
           "\"ended_at\":\"2026-12-01T10:00:00.000Z\"}]}', 0, 0, 1),"
           "('r2', 'done', '{\"campaign\":\"c1\",\"steps\":["
           "{\"instrument\":\"rdr\",\"started_at\":\"2026-12-01T11:00:00.000Z\","
           "\"ended_at\":\"2026-12-01T11:00:30.000Z\"}]}', 0, 0, 2),"
           "('r3', 'running', '{\"campaign\":\"c2\",\"steps\":["
           "{\"instrument\":\"rdr\",\"started_at\":\"2026-12-01T12:00:00.000Z\"}]}', 0, 0, 3),"
           "('r4', 'done', '{\"steps\":[{\"instrument\":\"rdr\","
           "\"started_at\":\"2026-12-01T12:00:00.000Z\","
           "\"ended_at\":\"2026-12-01T13:00:00.000Z\"}]}', 0, 0, 4)",
           NULL, NULL, 0);
    json_t *c = NULL;
    assert_int_equal(lab_util_campaigns(f->st, "rdr", &c), 0);
    assert_int_equal(json_array_size(c), 1); /* c2's step has not ended; r4 is no campaign's */
    json_t *c1 = json_array_get(c, 0);
    assert_string_equal(json_string_value(json_object_get(c1, "campaign")), "c1");
    assert_int_equal(json_integer_value(json_object_get(c1, "runs")), 2);
    assert_true(fabs(json_number_value(json_object_get(c1, "busy_s")) - 120.0) < 1e-3);
    json_decref(c);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_days_split_and_unrecorded),
        cmocka_unit_test(test_stale_seen_and_stop),
        cmocka_unit_test(test_by_campaign),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
