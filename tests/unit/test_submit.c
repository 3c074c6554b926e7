/* The submission path (daemon/fleet/submit.c) against a real local store: the cell rule (this
 * cell, another, "any", absent, with and without a shared queue and its hook), the answers the
 * hook's outcomes become (synchronous or later), idempotency on the local path, and stopping.
 * The hook here records what it was given and answers as a test tells it: it stands where
 * main.c puts the fleet's lab_fleet_submit. */
#include "core/clock.h"
#include "core/err.h"
#include "core/mem.h"
#include "daemon/fleet/submit.h"
#include "daemon/store/store.h"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct answer {
    int n; /* answers seen */
    lab_submit_why_t why;
    int code;
    bool replayed, shared;
    char id[64];
    char *doc;
    char *errors; /* JSON text */
    char detail[512];
    int retry_after_s;
} answer_t;

typedef struct hook {
    int calls;
    char *sub, *key, *via, *by;
    int mode; /* 0: accept now; 1: later; LAB_E*: that status now */
    lab_submit_shared_cb cb;
    void *arg;
} hook_t;

typedef struct fx {
    char dir[64];
    uv_loop_t loop;
    lab_clock_t clock;
    lab_store_t *st;
    lab_submit_t *s;
    hook_t hook;
} fx_t;

static void on_answer(void *arg, const lab_submit_answer_t *a)
{
    answer_t *r = arg;
    r->n++;
    r->why = a->why;
    r->code = a->code;
    r->replayed = a->replayed;
    r->shared = a->shared;
    snprintf(r->id, sizeof r->id, "%s", a->id ? a->id : "");
    free(r->doc);
    r->doc = a->doc ? lab_strdup(a->doc) : NULL;
    free(r->errors);
    r->errors = json_dumps(a->errors, JSON_COMPACT);
    snprintf(r->detail, sizeof r->detail, "%s", a->detail ? a->detail : "");
    r->retry_after_s = a->retry_after_s;
}

static void answer_free(answer_t *r)
{
    free(r->doc);
    free(r->errors);
    memset(r, 0, sizeof *r);
}

static void shared_fn(void *ctx, json_t *sub, const char *key, const char *via, const char *by,
                      lab_submit_shared_cb cb, void *arg)
{
    hook_t *h = ctx;
    h->calls++;
    free(h->sub);
    free(h->key);
    free(h->via);
    free(h->by);
    h->sub = json_dumps(sub, JSON_COMPACT | JSON_SORT_KEYS);
    h->key = key ? lab_strdup(key) : NULL;
    h->via = lab_strdup(via);
    h->by = lab_strdup(by);
    if (h->mode == 0)
        cb(arg, 0, key != NULL, "{\"id\":\"00000000-0000-4000-8000-000000000001\"}", NULL, NULL);
    else if (h->mode == 1) {
        h->cb = cb;
        h->arg = arg;
    } else if (h->mode == LAB_EINVAL)
        cb(arg, LAB_EINVAL, false, NULL,
           "[{\"path\":\"/workflow\",\"message\":\"no workflow of this name is stored\"}]",
           "run document has 1 problem(s)");
    else
        cb(arg, h->mode, false, NULL, NULL, "refused");
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void fx_start(fx_t *f, bool shared, bool hook)
{
    assert_int_equal(lab_submit_new(&f->s, f->st, NULL, &f->clock, "cell1", shared), 0);
    if (hook)
        lab_submit_set_shared(f->s, shared_fn, &f->hook);
}

static int setup(void **state)
{
    fx_t *f = LAB_NEW(fx_t);
    snprintf(f->dir, sizeof f->dir, "/tmp/labloop-submit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    lab_clock_init_manual(&f->clock, &f->loop, 1700000000000);
    assert_int_equal(lab_store_open(&f->st, &f->loop, f->dir), 0);
    *state = f;
    return 0;
}

static void on_closed(void *arg)
{
    *(int *)arg = 1;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    lab_submit_free(f->s);
    int closed = 0;
    lab_store_close(f->st, on_closed, &closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    nftw(f->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(f->hook.sub);
    free(f->hook.key);
    free(f->hook.via);
    free(f->hook.by);
    free(f);
    return 0;
}

/* Submits body; runs the loop until answered. */
static int submit(fx_t *f, const char *body, const char *key, bool shared_only, answer_t *a)
{
    lab_submission_t in = {
        .body = body,
        .len = strlen(body),
        .key = key,
        .owner = "tester",
        .origin = "api",
        .via = "http",
        .shared_only = shared_only,
    };
    int rc = lab_submit_run(f->s, &in, on_answer, a);
    if (rc == 0)
        assert_int_equal(a->n, 1); /* answered before it returned */
    while (a->n == 0 && uv_run(&f->loop, UV_RUN_ONCE))
        ;
    assert_int_equal(a->n, 1);
    return rc;
}

#define RUN "{\"workflow\":\"w\",\"await_workflow\":true"

static void test_local_without_shared_queue(void **state)
{
    fx_t *f = *state;
    fx_start(f, false, false);
    answer_t a = {0};
    assert_int_equal(submit(f, RUN "}", "k1", false, &a), 1);
    assert_int_equal(a.code, 201);
    assert_false(a.replayed || a.shared);
    assert_non_null(strstr(a.doc, a.id));
    char first[64];
    snprintf(first, sizeof first, "%s", a.id);
    answer_free(&a);
    /* the same key and body: the first answer; another body: refused */
    assert_int_equal(submit(f, RUN "}", "k1", false, &a), 0);
    assert_true(a.replayed);
    assert_int_equal(a.code, 201);
    assert_string_equal(a.id, first);
    answer_free(&a);
    assert_int_equal(submit(f, RUN ",\"plate\":\"x\"}", "k1", false, &a), 0);
    assert_int_equal(a.why, LAB_SUBMIT_KEY_REUSED);
    assert_int_equal(a.code, 422);
    answer_free(&a);
    /* this cell's name: here, and the member is not part of the run */
    assert_int_equal(submit(f, RUN ",\"cell\":\"cell1\"}", NULL, false, &a), 1);
    assert_int_equal(a.code, 201);
    assert_null(strstr(a.doc, "\"cell\""));
    answer_free(&a);
    /* any or another cell: no shared queue here */
    assert_int_equal(submit(f, RUN ",\"cell\":\"any\"}", NULL, false, &a), 0);
    assert_int_equal(a.why, LAB_SUBMIT_INVALID);
    assert_non_null(strstr(a.errors, "\"path\":\"/cell\""));
    assert_non_null(strstr(a.errors, "shared_queue = off"));
    answer_free(&a);
    assert_int_equal(submit(f, RUN ",\"cell\":\"cell2\"}", NULL, false, &a), 0);
    assert_int_equal(a.code, 422);
    answer_free(&a);
    /* not a cell name */
    assert_int_equal(submit(f, RUN ",\"cell\":\"a b\"}", NULL, false, &a), 0);
    assert_int_equal(a.why, LAB_SUBMIT_INVALID);
    assert_non_null(strstr(a.errors, "/cell"));
    answer_free(&a);
    /* malformed, invalid, bad key */
    assert_int_equal(submit(f, "{\"workflow\":", NULL, false, &a), 0);
    assert_int_equal(a.why, LAB_SUBMIT_MALFORMED);
    answer_free(&a);
    assert_int_equal(submit(f, "{\"workflow\":\"\",\"x\":1}", NULL, false, &a), 0);
    assert_int_equal(a.why, LAB_SUBMIT_INVALID);
    assert_non_null(strstr(a.errors, "/workflow"));
    assert_non_null(strstr(a.errors, "/x"));
    answer_free(&a);
    assert_int_equal(submit(f, RUN "}", "", false, &a), 0);
    assert_int_equal(a.why, LAB_SUBMIT_BAD_KEY);
    answer_free(&a);
    assert_int_equal(f->hook.calls, 0);
}

static void test_shared_queue_without_hook(void **state)
{
    fx_t *f = *state;
    fx_start(f, true, false);
    answer_t a = {0};
    assert_int_equal(submit(f, RUN "}", NULL, false, &a), 0);
    assert_int_equal(a.why, LAB_SUBMIT_UNAVAILABLE);
    assert_string_equal(a.detail, "the shared queue is not running");
    answer_free(&a);
    /* this cell's own queue still works */
    assert_int_equal(submit(f, RUN ",\"cell\":\"cell1\"}", NULL, false, &a), 1);
    assert_int_equal(a.code, 201);
    answer_free(&a);
}

static void test_shared_queue_hook(void **state)
{
    fx_t *f = *state;
    fx_start(f, true, true);
    hook_t *h = &f->hook;
    answer_t a = {0};
    /* absent cell -> the lab's queue; the submission as given, with how and by whom */
    assert_int_equal(submit(f, RUN "}", "lab-key", false, &a), 0);
    assert_int_equal(h->calls, 1);
    assert_string_equal(h->sub, "{\"await_workflow\":true,\"workflow\":\"w\"}");
    assert_string_equal(h->key, "lab-key");
    assert_string_equal(h->via, "http");
    assert_string_equal(h->by, "tester");
    assert_true(a.shared && a.replayed);
    assert_string_equal(a.id, "00000000-0000-4000-8000-000000000001");
    answer_free(&a);
    /* another cell, answered later */
    h->mode = 1;
    lab_submission_t in = {.body = RUN ",\"cell\":\"cell2\"}", .owner = "tester", .via = "mqtt"};
    in.len = strlen(in.body);
    assert_int_equal(lab_submit_run(f->s, &in, on_answer, &a), 1);
    assert_int_equal(a.n, 0);
    assert_int_equal(lab_submit_in_flight(f->s), 1);
    assert_non_null(strstr(h->sub, "\"cell\":\"cell2\""));
    assert_string_equal(h->via, "mqtt");
    h->cb(h->arg, 0, false, "{\"id\":\"00000000-0000-4000-8000-000000000002\"}", NULL, NULL);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.code, 201);
    assert_false(a.replayed);
    assert_int_equal(lab_submit_in_flight(f->s), 0);
    answer_free(&a);
    /* the database's refusals */
    h->mode = LAB_EINVAL;
    assert_int_equal(submit(f, "{\"workflow\":\"nope\",\"cell\":\"any\"}", NULL, false, &a), 0);
    assert_int_equal(a.why, LAB_SUBMIT_INVALID);
    assert_string_equal(a.errors,
                        "[{\"path\":\"/workflow\",\"message\":\"no workflow of this name is "
                        "stored\"}]");
    answer_free(&a);
    h->mode = LAB_ECONFLICT;
    assert_int_equal(submit(f, RUN "}", "k", false, &a), 0);
    assert_int_equal(a.why, LAB_SUBMIT_KEY_REUSED);
    assert_int_equal(a.code, 422);
    answer_free(&a);
    h->mode = LAB_ECONN;
    assert_int_equal(submit(f, RUN "}", NULL, false, &a), 0);
    assert_int_equal(a.code, 503);
    assert_true(a.retry_after_s > 0);
    answer_free(&a);
    /* this cell's name stays here, unless it came on the site's topic */
    int calls = h->calls;
    assert_int_equal(submit(f, RUN ",\"cell\":\"cell1\"}", NULL, false, &a), 1);
    assert_int_equal(h->calls, calls);
    assert_false(a.shared);
    answer_free(&a);
    h->mode = 0;
    assert_int_equal(submit(f, RUN ",\"cell\":\"cell1\"}", NULL, true, &a), 0);
    assert_int_equal(h->calls, calls + 1);
    assert_true(a.shared);
    answer_free(&a);
    /* stopping */
    lab_submit_stop(f->s);
    assert_int_equal(submit(f, RUN "}", NULL, false, &a), 0);
    assert_int_equal(a.why, LAB_SUBMIT_UNAVAILABLE);
    assert_int_equal(h->calls, calls + 1);
    answer_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_local_without_shared_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_queue_without_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_queue_hook, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
