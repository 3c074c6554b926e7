/* labloop plan: a small lab day planned offline (no daemon), its JSON answer checked against
 * the problem's constraints; a bad problem named by path with exit 1; usage errors exit 2. */
#include "tests/harness/harness.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char dir[256], out[65536];

static int plan(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' plan %s 2>&1", getenv("LABLOOP_CLI"), args);
    return h_run(cmd, out, sizeof out);
}

static void write_file(const char *name, const char *text)
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
    return h_tempdir("labplan", dir, sizeof dir);
}

static int teardown(void **state)
{
    h_rmtree(dir);
    return 0;
}

static void test_day(void **state)
{
    write_file("day.json",
               "{\"instruments\":[{\"id\":\"star1\",\"kind\":\"liquid_handler\",\"capacity\":1},"
               "{\"id\":\"inc1\",\"kind\":\"incubator\",\"capacity\":4},"
               "{\"id\":\"reader1\",\"kind\":\"plate_reader\",\"capacity\":1}],"
               "\"workflows\":[{\"name\":\"assay\",\"steps\":["
               "{\"name\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":120},"
               "{\"name\":\"incubate\",\"on\":\"incubator\",\"duration_s\":1800,"
               "\"start_within_s\":300},"
               "{\"name\":\"read\",\"on\":\"plate_reader\",\"duration_s\":90,"
               "\"start_within_s\":120}]}],"
               "\"runs\":[{\"id\":\"r1\",\"workflow\":\"assay\"},{\"id\":\"r2\",\"workflow\":"
               "\"assay\"},{\"id\":\"r3\",\"workflow\":\"assay\",\"priority\":\"urgent\"},"
               "{\"id\":\"r4\",\"workflow\":\"assay\"},{\"id\":\"r5\",\"workflow\":\"assay\"}]}");
    char args[400];
    snprintf(args, sizeof args, "%s/day.json --budget-ms 100", dir);
    assert_int_equal(plan(args), 0);
    json_t *doc = json_loads(out, 0, NULL);
    assert_non_null(doc);
    json_t *steps = json_object_get(doc, "steps");
    assert_int_equal(json_array_size(steps), 15);
    assert_int_equal(json_array_size(json_object_get(doc, "unscheduled")), 0);
    assert_true(json_number_value(json_object_get(doc, "makespan_s")) >=
                json_number_value(json_object_get(doc, "lower_bound_s")));
    /* every read within 120 s of its incubation's end; the urgent run goes first */
    size_t i;
    json_t *s;
    double inc_end[6] = {0};
    json_array_foreach(steps, i, s)
    {
        int r = json_string_value(json_object_get(s, "run"))[1] - '0';
        const char *name = json_string_value(json_object_get(s, "step"));
        if (strcmp(name, "incubate") == 0)
            inc_end[r] = json_number_value(json_object_get(s, "end_s"));
    }
    json_array_foreach(steps, i, s)
    {
        int r = json_string_value(json_object_get(s, "run"))[1] - '0';
        if (strcmp(json_string_value(json_object_get(s, "step")), "read") == 0)
            assert_true(json_number_value(json_object_get(s, "start_s")) - inc_end[r] <= 120);
    }
    assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 0), "run")), "r3");
    json_decref(doc);
}

/* With a mover in the lab, each change of instrument is a move on it, in the output too; a
 * mover's move takes 60 s unless it says otherwise. */
static void test_moves(void **state)
{
    write_file("moves.json",
               "{\"instruments\":[{\"id\":\"star1\",\"kind\":\"liquid_handler\"},"
               "{\"id\":\"reader1\",\"kind\":\"plate_reader\"},"
               "{\"id\":\"arm1\",\"kind\":\"mover\",\"move_s\":20}],"
               "\"workflows\":[{\"name\":\"w\",\"steps\":["
               "{\"name\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":60},"
               "{\"name\":\"read\",\"on\":\"plate_reader\",\"duration_s\":30,"
               "\"start_within_s\":60}]}],"
               "\"runs\":[{\"id\":\"r1\",\"workflow\":\"w\"},{\"id\":\"r2\",\"workflow\":\"w\"}]}");
    char args[400];
    snprintf(args, sizeof args, "%s/moves.json", dir);
    assert_int_equal(plan(args), 0);
    json_t *doc = json_loads(out, 0, NULL);
    assert_non_null(doc);
    size_t i;
    json_t *st;
    int moves = 0, runs = 0;
    json_array_foreach(json_object_get(doc, "steps"), i, st)
    {
        if (!json_is_true(json_object_get(st, "move")))
            continue;
        moves++;
        assert_int_equal(json_object_size(st), 8); /* run step instrument from to start end move */
        runs |= json_string_value(json_object_get(st, "run"))[1] == '1' ? 1 : 2;
        assert_string_equal(json_string_value(json_object_get(st, "step")), "move:read");
        assert_string_equal(json_string_value(json_object_get(st, "instrument")), "arm1");
        assert_string_equal(json_string_value(json_object_get(st, "from")), "star1");
        assert_string_equal(json_string_value(json_object_get(st, "to")), "reader1");
        assert_true(json_number_value(json_object_get(st, "end_s")) -
                        json_number_value(json_object_get(st, "start_s")) ==
                    20);
    }
    assert_int_equal(moves, 2);
    assert_int_equal(runs, 3);
    json_decref(doc);
    /* a mover without move_s takes 60 s a move: a 50 s window cannot hold it, and says so */
    write_file("slow.json", "{\"instruments\":[{\"id\":\"star1\",\"kind\":\"liquid_handler\"},"
                            "{\"id\":\"reader1\",\"kind\":\"plate_reader\"},"
                            "{\"id\":\"arm1\",\"kind\":\"mover\"}],"
                            "\"workflows\":[{\"name\":\"w\",\"steps\":["
                            "{\"name\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":60},"
                            "{\"name\":\"read\",\"on\":\"plate_reader\",\"duration_s\":30,"
                            "\"start_within_s\":50}]}],"
                            "\"runs\":[{\"id\":\"r1\",\"workflow\":\"w\"}]}");
    snprintf(args, sizeof args, "%s/slow.json", dir);
    assert_int_equal(plan(args), 0);
    doc = json_loads(out, 0, NULL);
    assert_non_null(doc);
    assert_int_equal(json_array_size(json_object_get(doc, "steps")), 0);
    json_t *un = json_array_get(json_object_get(doc, "unscheduled"), 0);
    assert_non_null(strstr(json_string_value(json_object_get(un, "reason")), "takes 60 s"));
    json_decref(doc);
    /* move_s on something that is not a mover is named */
    write_file("badmove.json",
               "{\"instruments\":[{\"id\":\"star1\",\"kind\":\"liquid_handler\",\"move_s\":5}],"
               "\"workflows\":[],\"runs\":[]}");
    snprintf(args, sizeof args, "%s/badmove.json", dir);
    assert_int_equal(plan(args), 1);
    assert_non_null(strstr(out, "/instruments/0/move_s"));
}

static void test_bad_problem(void **state)
{
    write_file("bad.json", "{\"instruments\":[],\"workflows\":[{\"name\":\"w\",\"steps\":[{\"on\":"
                           "\"robot\",\"duration_s\":5}]}],\"runs\":[{\"id\":\"a\",\"workflow\":"
                           "\"v\"}]}");
    char args[400];
    snprintf(args, sizeof args, "%s/bad.json", dir);
    assert_int_equal(plan(args), 1);
    assert_non_null(strstr(out, "/workflows/0/steps/0/on"));
    assert_non_null(strstr(out, "/runs/0/workflow"));
    snprintf(args, sizeof args, "%s/none.json", dir);
    assert_int_equal(plan(args), 1);
    assert_int_equal(plan(""), 2);
    snprintf(args, sizeof args, "%s/bad.json --budget-ms soon", dir);
    assert_int_equal(plan(args), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_day),
        cmocka_unit_test(test_moves),
        cmocka_unit_test(test_bad_problem),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
