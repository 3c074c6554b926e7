/* The audit trail: canonical JSON and entry hashes against an independent computation, entries
 * written in the transaction of the change they record (a rolled back op leaves none), decision
 * notes carried by the op that makes the change, the append-only triggers, and tamper detection
 * (an edited, a deleted and two swapped rows, each found and located). */
#include "core/chain.h"
#include "core/err.h"
#include "core/mem.h"
#include "daemon/store/audit.h"
#include "daemon/store/store.h"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

typedef struct fx {
    char dir[64];
    char dbpath[128];
    uv_loop_t loop;
    lab_store_t *st;
} fx_t;

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void on_closed(void *arg)
{
    *(int *)arg = 1;
}

static void fx_close(fx_t *f)
{
    int closed = 0;
    lab_store_close(f->st, on_closed, &closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    f->st = NULL;
}

static int setup(void **state)
{
    fx_t *f = LAB_NEW(fx_t);
    snprintf(f->dir, sizeof f->dir, "/tmp/labloop-audit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->dbpath, sizeof f->dbpath, "%s/labloop.db", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(lab_store_open(&f->st, &f->loop, f->dir), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->st)
        fx_close(f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* ---- an op that appends run.state rows, and fails afterwards when told to ---- */

typedef struct change_op {
    lab_store_op_t op;
    const char *run;
    int rows;
    bool fail;
    int status;
} change_op_t;

static int change_apply(lab_store_op_t *op, sqlite3 *db)
{
    change_op_t *c = (change_op_t *)op;
    for (int i = 0; i < c->rows; i++) {
        char doc[128];
        snprintf(doc, sizeof doc, "{\"id\":\"%s\",\"state\":\"running\",\"n\":%d,\"x\":0.1}",
                 c->run, i);
        if (lab_outbox_append(db, "run.state", c->run, doc, 1764925200000 + i) < 0)
            return LAB_EDB;
    }
    return c->fail ? LAB_ESTATE : 0;
}

static void change_done(lab_store_op_t *op, int status)
{
    ((change_op_t *)op)->status = status;
}

static int change(fx_t *f, const char *run, int rows, bool fail)
{
    change_op_t c = {.op = {.apply = change_apply, .done = change_done},
                     .run = run,
                     .rows = rows,
                     .fail = fail,
                     .status = 1};
    lab_store_submit(f->st, &c.op);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return c.status;
}

static sqlite3 *raw_open(fx_t *f)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(f->dbpath, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    return db;
}

static int64_t q_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    return v;
}

/* ---- canonical JSON and the hash ---- */

/* The expected text and hash were computed apart from this code, with Python 3's json and hashlib:
 * json.dumps(e, sort_keys=True, separators=(',', ':'), ensure_ascii=False) and
 * hashlib.sha256(("0" * 64 + text).encode()).hexdigest() (tools/audit_verify.py does the same). */
static void test_canonical(void **state)
{
    json_t *e = json_loads(
        "{\"seq\":1,\"prev_hash\":\"" LAB_CHAIN_GENESIS "\",\"who\":\"Ada Lovelace\","
        "\"what\":\"run.cancel\",\"subject\":\"r1\",\"lab_time\":\"2026-12-05T09:00:00.000Z\","
        "\"wall_time\":\"2026-12-05T09:00:01.500Z\",\"why\":\"plate dropped, \xc3\xa7"
        "a arrive\",\"doc\":{\"z\":[1, 2.5, null, true], \"a\":{\"b\":\"x\\\"y\"}}}",
        0, NULL);
    assert_non_null(e);
    char *c = lab_chain_canonical(e);
    assert_string_equal(
        c, "{\"doc\":{\"a\":{\"b\":\"x\\\"y\"},\"z\":[1,2.5,null,true]},\"lab_time\":\"2026-12-"
           "05T09:00:00.000Z\",\"prev_hash\":\"" LAB_CHAIN_GENESIS "\",\"seq\":1,\"subject\":"
           "\"r1\",\"wall_time\":\"2026-12-05T09:00:01.500Z\",\"what\":\"run.cancel\",\"who\":"
           "\"Ada Lovelace\",\"why\":\"plate dropped, \xc3\xa7"
           "a arrive\"}");
    char h[65];
    lab_chain_hash(LAB_CHAIN_GENESIS, c, h);
    assert_string_equal(h, "091d433034e3ea22d6511090437910e80368e4ccccf406c5368e9e2902285396");
    free(c);
    json_decref(e);
}

/* ---- entries in the store ---- */

static json_t *list_all(fx_t *f, const char *subject, const char *who)
{
    lab_audit_filter_t flt = {.subject = subject, .who = who};
    json_t *a;
    int64_t next;
    assert_int_equal(lab_audit_list(f->st, &flt, 1000, &a, &next), 0);
    assert_int_equal(next, 0);
    return a;
}

static const char *field(json_t *a, size_t i, const char *k)
{
    return json_string_value(json_object_get(json_array_get(a, i), k));
}

static void test_entries(void **state)
{
    fx_t *f = *state;
    assert_int_equal(change(f, "r1", 2, false), 0);
    /* A decision: its entry first, then the change's entries signed with its who and why. */
    assert_int_equal(lab_audit_begin(f->st, "Ada", "run.cancel", "r2", "contaminated",
                                     json_pack("{s:o}", "signature",
                                               lab_audit_signature("Ada", "cancelled run")),
                                     1764925300000),
                     0);
    assert_int_equal(lab_audit_begin(f->st, "Bob", "run.cancel", "r2", NULL, NULL, 0), LAB_EBUSY);
    change_op_t c = {.op = {.apply = change_apply, .done = change_done}, .run = "r2", .rows = 1};
    lab_store_submit(f->st, &c.op);
    lab_audit_end(f->st, true);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(c.status, 0);
    /* A rolled back op leaves neither its change nor its entries. */
    assert_int_equal(change(f, "r3", 2, true), LAB_ESTATE);
    /* A note no op took is written alone. */
    assert_int_equal(
        lab_audit_begin(f->st, "Ada", "instrument.pause", "reader1", "lamp", NULL, 1764925400000),
        0);
    lab_audit_end(f->st, true);
    uv_run(&f->loop, UV_RUN_DEFAULT);

    json_t *a = list_all(f, NULL, NULL);
    assert_int_equal(json_array_size(a), 5);
    assert_string_equal(field(a, 0, "what"), "run.state");
    assert_string_equal(field(a, 0, "who"), LAB_AUDIT_SYSTEM);
    assert_string_equal(field(a, 0, "prev_hash"), LAB_CHAIN_GENESIS);
    assert_string_equal(field(a, 1, "prev_hash"), field(a, 0, "hash"));
    assert_string_equal(field(a, 2, "what"), "run.cancel");
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(json_array_get(a, 2), "doc"), "signature"), "meaning")),
        "cancelled run");
    assert_string_equal(field(a, 3, "what"), "run.state");
    assert_string_equal(field(a, 3, "who"), "Ada");
    assert_string_equal(field(a, 3, "why"), "contaminated");
    assert_string_equal(field(a, 4, "what"), "instrument.pause");
    assert_null(lab_audit_kind_find("audit")); /* entries are not entries of themselves */
    json_decref(a);
    a = list_all(f, "r2", NULL);
    assert_int_equal(json_array_size(a), 2);
    json_decref(a);
    a = list_all(f, NULL, "Ada");
    assert_int_equal(json_array_size(a), 3);
    json_decref(a);

    /* Paging: two at a time, the cursor is the last seq. */
    lab_audit_filter_t flt = {0};
    int64_t next;
    assert_int_equal(lab_audit_list(f->st, &flt, 2, &a, &next), 0);
    assert_int_equal(next, 2);
    json_decref(a);

    json_t *v = lab_audit_verify(f->st);
    assert_true(json_is_true(json_object_get(v, "ok")));
    assert_int_equal(json_integer_value(json_object_get(v, "entries")), 5);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "head"), "seq")), 5);
    json_decref(v);

    /* Each entry travels with the outbox row of its change (one row per change still); the
     * decision's with the row its op appended; the note no op took as a row of its own. */
    lab_outbox_row_t *rows;
    int n = lab_outbox_read(f->st, 0, 100, &rows);
    assert_int_equal(n, 4);
    int want_entries[] = {1, 1, 2, -1};
    for (int i = 0; i < n; i++) {
        json_t *p = json_loads(rows[i].kind[0] == 'a' ? rows[i].payload : rows[i].audit, 0, NULL);
        if (want_entries[i] < 0) {
            assert_string_equal(rows[i].kind, "audit");
            assert_null(rows[i].audit);
            assert_int_equal(json_integer_value(json_object_get(p, "audit_seq")), 5);
        } else {
            assert_string_equal(rows[i].kind, "run.state");
            assert_int_equal(json_array_size(p), want_entries[i]);
        }
        json_decref(p);
    }
    json_t *two = json_loads(rows[2].audit, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(two, 0), "audit_seq")), 3);
    json_t *e4 =
        json_loads(json_string_value(json_object_get(json_array_get(two, 1), "entry")), 0, NULL);
    assert_string_equal(json_string_value(json_object_get(e4, "who")), "Ada");
    json_decref(e4);
    json_decref(two);
    lab_outbox_rows_free(rows, n);

    /* The table refuses changes. */
    fx_close(f);
    sqlite3 *db = raw_open(f);
    assert_int_not_equal(sqlite3_exec(db, "UPDATE audit SET why = 'x' WHERE seq = 1", 0, 0, 0),
                         SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(db, "DELETE FROM audit WHERE seq = 1", 0, 0, 0), SQLITE_OK);
    assert_int_equal(q_int(db, "SELECT count(*) FROM audit"), 5);
    sqlite3_close_v2(db);
}

/* ---- tampering, with the daemon's store closed and the file edited ---- */

static bool has_problem(json_t *v, int64_t seq, const char *text)
{
    json_t *p;
    size_t i;
    json_array_foreach(json_object_get(v, "problems"), i, p)
    {
        if (json_integer_value(json_object_get(p, "seq")) == seq &&
            strstr(json_string_value(json_object_get(p, "problem")), text))
            return true;
    }
    return false;
}

static json_t *tamper(fx_t *f, const char *sql)
{
    assert_int_equal(change(f, "r1", 6, false), 0);
    fx_close(f);
    sqlite3 *db = raw_open(f);
    assert_int_equal(
        sqlite3_exec(db, "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;", 0, 0, 0),
        SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, 0, 0, 0), SQLITE_OK);
    sqlite3_close_v2(db);
    assert_int_equal(lab_store_open(&f->st, &f->loop, f->dir), 0);
    json_t *v = lab_audit_verify(f->st);
    assert_non_null(v);
    assert_true(json_is_false(json_object_get(v, "ok")));
    char *s = json_dumps(v, JSON_INDENT(1));
    printf("%s\n", s);
    free(s);
    return v;
}

static void test_tamper_edit(void **state)
{
    json_t *v = tamper(*state, "UPDATE audit SET entry = replace(entry, '\"n\":2', '\"n\":7') "
                               "WHERE seq = 3");
    assert_true(has_problem(v, 3, "hash does not match"));
    assert_int_equal(json_array_size(json_object_get(v, "problems")), 1);
    json_decref(v);
    /* A column changed apart from the entry shows too. */
    fx_t *f = *state;
    fx_close(f);
    sqlite3 *db = raw_open(f);
    assert_int_equal(sqlite3_exec(db, "UPDATE audit SET who = 'Eve' WHERE seq = 5", 0, 0, 0),
                     SQLITE_OK);
    sqlite3_close_v2(db);
    assert_int_equal(lab_store_open(&f->st, &f->loop, f->dir), 0);
    v = lab_audit_verify(f->st);
    assert_true(has_problem(v, 5, "column who differs"));
    json_decref(v);
}

static void test_tamper_delete(void **state)
{
    json_t *v = tamper(*state, "DELETE FROM audit WHERE seq = 4");
    assert_true(has_problem(v, 4, "entry 4 is missing"));
    assert_true(has_problem(v, 5, "prev_hash is not the hash of the entry stored before"));
    json_decref(v);
}

static void test_tamper_reorder(void **state)
{
    json_t *v = tamper(*state, "UPDATE audit SET seq = -2 WHERE seq = 2; "
                               "UPDATE audit SET seq = 2 WHERE seq = 3; "
                               "UPDATE audit SET seq = 3 WHERE seq = -2;");
    assert_true(has_problem(v, 2, "its entry says seq 3"));
    assert_true(has_problem(v, 3, "its entry says seq 2"));
    assert_true(has_problem(v, 2, "prev_hash is not the hash"));
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical),
        cmocka_unit_test_setup_teardown(test_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_edit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_reorder, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
