/* Workflows through labloopd with a real PostgreSQL: files from [workflows] dir stored as
 * versions at start, POST /v1/workflows (new version, same content, a stored version never
 * changed, every problem named with its path), GET list and one version, the versions in
 * PostgreSQL labloop.workflows, kept across a restart, and a bad file refusing the start. */
#include "tests/harness/harness.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static h_pg_t pg;
static h_daemon_t dmn;
static char wfdir[256];

static const char assay[] =
    "{\"name\": \"assay\", \"steps\": ["
    "{\"name\": \"dispense\", \"op\": \"dispense\", \"on\": \"liquid_handler\", \"duration_s\": "
    "120},"
    "{\"name\": \"incubate\", \"op\": \"incubate\", \"on\": \"incubator\", \"duration_s\": 1800,"
    " \"start_within_s\": 300},"
    "{\"name\": \"read\", \"op\": \"read_absorbance\", \"on\": \"plate_reader\","
    " \"duration_s\": [60, 90], \"start_within_s\": 120, \"params\": {\"wavelength_nm\": 450}}],"
    " \"on_failure\": {\"action\": \"retry\", \"retries\": 2}}";

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    if (h_pg_start(&pg) || h_tempdir("labwf", wfdir, sizeof wfdir))
        return -1;
    write_file(wfdir, "assay.json", assay);
    write_file(wfdir, "notes.txt", "not a workflow: ignored");
    char extra[400];
    snprintf(extra, sizeof extra, "[workflows]\ndir = %s\n", wfdir);
    return h_daemon_start(&dmn, &pg, NULL, extra);
}

static int teardown(void **state)
{
    h_daemon_destroy(&dmn);
    h_pg_destroy(&pg);
    h_rmtree(wfdir);
    return 0;
}

static json_t *req(const char *method, const char *path, const char *body, int want)
{
    char *resp = NULL;
    int st =
        h_http(dmn.url, method, path, body ? "Content-Type: application/json" : NULL, body, &resp);
    if (st != want)
        fail_msg("%s %s: %d (wanted %d) %s", method, path, st, want, resp ? resp : "");
    json_t *doc = json_loads(resp ? resp : "", 0, NULL);
    free(resp);
    assert_non_null(doc);
    return doc;
}

static int version_of(json_t *doc)
{
    return (int)json_integer_value(json_object_get(doc, "version"));
}

static void test_loaded_from_dir(void **state)
{
    json_t *list = req("GET", "/v1/workflows", NULL, 200);
    json_t *w = json_array_get(json_object_get(list, "workflows"), 0);
    assert_string_equal(json_string_value(json_object_get(w, "name")), "assay");
    assert_int_equal(json_integer_value(json_object_get(w, "latest")), 1);
    assert_int_equal(json_array_size(json_object_get(list, "workflows")), 1);
    json_decref(list);
    json_t *doc = req("GET", "/v1/workflows/assay", NULL, 200);
    assert_int_equal(version_of(doc), 1);
    assert_int_equal(json_array_size(json_object_get(doc, "steps")), 3);
    json_decref(doc);
}

static void test_versions(void **state)
{
    /* The same steps again: the same version, nothing new. */
    json_t *doc = req("POST", "/v1/workflows", assay, 200);
    assert_int_equal(version_of(doc), 1);
    json_decref(doc);
    /* Other steps: the next version; version 1 stays as it was. */
    const char *v2 = "{\"name\":\"assay\",\"steps\":[{\"name\":\"read\",\"op\":\"read_absorbance\","
                     "\"on\":\"plate_reader\",\"duration_s\":60}]}";
    doc = req("POST", "/v1/workflows", v2, 201);
    assert_int_equal(version_of(doc), 2);
    json_decref(doc);
    doc = req("GET", "/v1/workflows/assay?version=1", NULL, 200);
    assert_int_equal(json_array_size(json_object_get(doc, "steps")), 3);
    json_decref(doc);
    /* A stored version is never changed. */
    const char *v1x = "{\"name\":\"assay\",\"version\":1,\"steps\":[{\"name\":\"x\",\"op\":\"o\","
                      "\"on\":\"incubator\",\"duration_s\":1}]}";
    json_decref(req("POST", "/v1/workflows", v1x, 409));
    /* A version given and free is stored as that version. */
    const char *v7 = "{\"name\":\"assay\",\"version\":7,\"steps\":[{\"name\":\"x\",\"op\":\"o\","
                     "\"on\":\"incubator\",\"duration_s\":1}]}";
    json_decref(req("POST", "/v1/workflows", v7, 201));
    doc = req("GET", "/v1/workflows/assay", NULL, 200);
    assert_int_equal(version_of(doc), 7);
    json_decref(doc);
    json_decref(req("GET", "/v1/workflows/assay?version=3", NULL, 404));
    json_decref(req("GET", "/v1/workflows/assay?version=x", NULL, 400));
    json_decref(req("GET", "/v1/workflows/nothing", NULL, 404));
}

/* A run follows one version: the newest when it names none, the one it names when stored. */
static void test_runs_pin_a_version(void **state)
{
    json_t *run = req("POST", "/v1/runs", "{\"workflow\":\"assay\",\"plate\":\"P1\"}", 201);
    assert_int_equal(json_integer_value(json_object_get(run, "workflow_version")), 7);
    json_decref(run);
    run = req("POST", "/v1/runs", "{\"workflow\":\"assay\",\"workflow_version\":2}", 201);
    assert_int_equal(json_integer_value(json_object_get(run, "workflow_version")), 2);
    json_decref(run);
    json_t *p = req("POST", "/v1/runs", "{\"workflow\":\"assay\",\"workflow_version\":3}", 422);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(p, "errors"), 0), "path")),
        "/workflow_version");
    json_decref(p);
    /* Not stored: refused, naming the workflow; a version of a workflow not stored, too. */
    p = req("POST", "/v1/runs", "{\"workflow\":\"later\"}", 422);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(p, "errors"), 0), "path")),
        "/workflow");
    assert_non_null(strstr(json_string_value(json_object_get(p, "detail")), "later"));
    json_decref(p);
    json_decref(req("POST", "/v1/runs", "{\"workflow\":\"later\",\"workflow_version\":2}", 422));
    /* Unless the run is to wait for it: accepted, naming no version, and the flag is not kept. */
    run = req("POST", "/v1/runs", "{\"workflow\":\"later\",\"await_workflow\":true}", 201);
    assert_null(json_object_get(run, "workflow_version"));
    assert_null(json_object_get(run, "await_workflow"));
    json_decref(run);
    run = req("POST", "/v1/runs", "{\"workflow\":\"later\",\"await_workflow\":false}", 422);
    json_decref(run);
}

/* deploy/examples/elisa.workflow.json, the README's example, is stored as it is and runs of it
 * are accepted (and the runs waiting for it earlier follow it from then on). */
static void test_example_workflow(void **state)
{
    json_t *early =
        req("POST", "/v1/runs", "{\"workflow\":\"elisa\",\"await_workflow\":true}", 201);
    assert_int_equal(h_workflow_example(dmn.url, NULL), 0);
    json_t *wf = req("GET", "/v1/workflows/elisa", NULL, 200);
    assert_int_equal(json_array_size(json_object_get(wf, "steps")), 3);
    json_t *run = req("POST", "/v1/runs", "{\"workflow\":\"elisa\",\"plate\":\"E1\"}", 201);
    assert_int_equal(json_integer_value(json_object_get(run, "workflow_version")),
                     json_integer_value(json_object_get(wf, "version")));
    /* Stored again unchanged: the same version, not a new one. */
    assert_int_equal(h_workflow_example(dmn.url, NULL), 0);
    json_t *again = req("GET", "/v1/workflows/elisa", NULL, 200);
    assert_int_equal(json_integer_value(json_object_get(again, "version")),
                     json_integer_value(json_object_get(wf, "version")));
    json_decref(early);
    json_decref(again);
    json_decref(run);
    json_decref(wf);
}

static void test_every_problem_named(void **state)
{
    const char *bad =
        "{\"name\":\"x\",\"steps\":[{\"name\":\"a\",\"op\":\"o\",\"on\":\"spaceship\","
        "\"duration_s\":[5,1],\"start_after_s\":3},{\"name\":\"a\",\"op\":\"o\",\"on\":"
        "\"incubator\","
        "\"duration_s\":1,\"start_after_s\":10,\"start_within_s\":5},{\"op\":1,\"on\":"
        "\"incubator\","
        "\"duration_s\":-1}]}";
    json_t *p = req("POST", "/v1/workflows", bad, 422);
    char *text = json_dumps(json_object_get(p, "errors"), JSON_COMPACT);
    json_decref(p);
    /* The schema's problems first; the rules need a schema-valid document. */
    assert_non_null(strstr(text, "/steps/2/name"));
    assert_non_null(strstr(text, "/steps/2/op"));
    assert_non_null(strstr(text, "/steps/2/duration_s"));
    free(text);
    const char *rules =
        "{\"name\":\"x\",\"steps\":[{\"name\":\"a\",\"op\":\"o\",\"on\":\"spaceship\","
        "\"duration_s\":[5,1],\"start_after_s\":3},{\"name\":\"a\",\"op\":\"o\",\"on\":"
        "\"incubator\","
        "\"duration_s\":1,\"start_after_s\":10,\"start_within_s\":5}]}";
    p = req("POST", "/v1/workflows", rules, 422);
    text = json_dumps(json_object_get(p, "errors"), JSON_COMPACT);
    json_decref(p);
    static const char *const paths[] = {"/steps/0/duration_s", "/steps/0/start_after_s",
                                        "/steps/0/on", "/steps/1/name", "/steps/1/start_within_s"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (!strstr(text, paths[i]))
            fail_msg("%s not named in %s", paths[i], text);
    free(text);
    json_decref(req("POST", "/v1/workflows", "{\"name\":", 400));
}

static void test_in_postgres_and_kept(void **state)
{
    long long n = 0;
    for (long long end = h_now_ms() + 30000; h_now_ms() < end && n != 3; h_sleep_ms(50))
        n = h_pg_count(&pg, "SELECT count(*) FROM labloop.workflows WHERE name = 'assay'");
    assert_int_equal(n, 3); /* versions 1, 2, 7 */
    char v[64];
    assert_int_equal(h_pg_query(&pg,
                                "SELECT doc->'steps'->2->>'start_within_s' FROM labloop.workflows "
                                "WHERE name = 'assay' AND version = 1",
                                v, sizeof v),
                     0);
    assert_string_equal(v, "120");
    /* A restart loads the same file again: no new version. */
    assert_int_equal(h_daemon_stop(&dmn), 0);
    assert_int_equal(h_daemon_restart(&dmn), 0);
    json_t *list = req("GET", "/v1/workflows", NULL, 200);
    json_t *w = json_array_get(json_object_get(list, "workflows"), 0);
    assert_int_equal(json_array_size(json_object_get(w, "versions")), 3);
    json_decref(list);
}

static void test_bad_file_refuses_start(void **state)
{
    char dir[256], path[300], cmd[900], out[8192];
    assert_int_equal(h_tempdir("labwfbad", dir, sizeof dir), 0);
    write_file(dir, "good.json", assay);
    write_file(dir, "bad.json",
               "{\"name\":\"b\",\"steps\":[{\"name\":\"s\",\"op\":\"o\",\"on\":\"toaster\","
               "\"duration_s\":1}]}");
    write_file(dir, "broken.json", "{\"name\": ");
    snprintf(path, sizeof path, "%s/labloop.ini", dir);
    char ini[700];
    snprintf(ini, sizeof ini,
             "[labloop]\nstate_dir = %s\nhttp = 127.0.0.1:%d\n[workflows]\ndir = %s\n", dir,
             h_free_port(), dir);
    write_file(dir, "labloop.ini", ini);
    snprintf(cmd, sizeof cmd, "timeout 20 %s -c %s 2>&1", getenv("LABLOOPD"), path);
    assert_int_equal(h_run(cmd, out, sizeof out), 1);
    if (!strstr(out, "bad.json: /steps/0/on: no instrument of this cell is 'toaster'") ||
        !strstr(out, "broken.json: /: not JSON"))
        fail_msg("%s", out);
    h_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loaded_from_dir),        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_runs_pin_a_version),     cmocka_unit_test(test_example_workflow),
        cmocka_unit_test(test_every_problem_named),    cmocka_unit_test(test_in_postgres_and_kept),
        cmocka_unit_test(test_bad_file_refuses_start),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
