/* The external pipeline example (deploy/examples/pipeline.py, Debian's python3 with
 * python3-paho-mqtt) against labloopd, mosquitto, PostgreSQL and labloop-sim: it creates a
 * campaign, pushes batches over MQTT, reads the results and pushes the next, and every batch it
 * pushed is done with a result per candidate in PostgreSQL. */
#include "tests/harness/harness.h"
#include "tests/integration/mix_cell.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#ifndef LAB_SOURCE_DIR_T
#define LAB_SOURCE_DIR_T "."
#endif

static void test_pipeline_closes_the_loop(void **state)
{
    (void)state;
    h_pg_t pg;
    h_mqtt_t mq;
    h_sim_t sim;
    h_daemon_t d;
    char dir[256], sections[2048], ini[2600], extra[2600];
    assert_int_equal(h_pg_start(&pg), 0);
    assert_int_equal(h_mqtt_start(&mq), 0);
    assert_int_equal(h_tempdir("labpipe", dir, sizeof dir), 0);
    mix_cell_sections(sections, sizeof sections, dir, h_free_port());
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = 60\nsim_seed = 9\nsim_noise = 0.002\n%s",
             sections);
    assert_int_equal(h_sim_start(&sim, ini), 0);
    snprintf(extra, sizeof extra, "[labloop]\ntime_scale = 60\n%s", sections);
    assert_int_equal(h_daemon_start(&d, &pg, &mq, extra), 0);
    json_decref(h_api(&d, "POST", "/v1/workflows", mix_workflow, 201));
    char root[128];
    mix_topic_root(&d, root, sizeof root);
    char cmd[1024], out[16384];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 %s/deploy/examples/pipeline.py --url %s --mqtt 127.0.0.1:%d "
             "--root %s --campaign ext1 --workflow mix --batches 3 --batch-size 3 --timeout 240 "
             "2>&1",
             LAB_SOURCE_DIR_T, d.url, mq.port, root);
    int rc = h_run(cmd, out, sizeof out);
    if (rc != 0)
        fail_msg("pipeline.py exited %d:\n%s", rc, out);
    /* its last line: the summary */
    size_t len = strlen(out);
    while (len && out[len - 1] == '\n')
        out[--len] = '\0';
    char *last = strrchr(out, '\n');
    last = last ? last + 1 : out;
    json_t *sum = json_loads(last, 0, NULL);
    if (!sum)
        fail_msg("no summary from pipeline.py:\n%s", out);
    assert_int_equal(json_integer_value(json_object_get(sum, "results")), 9);
    json_decref(sum);
    /* the pipeline read its results from the daemon; PostgreSQL gets them through the outbox,
     * which may be a moment behind */
    assert_int_equal(h_pg_count_wait(&pg,
                                     "select count(*) from labloop.results where campaign = 'ext1'",
                                     9, 30000),
                     9);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "select count(*) from labloop.batches where campaign = 'ext1' "
                                     "and state = 'done' and model_name = 'kernel-regression'",
                                     3, 30000),
                     3);
    h_daemon_destroy(&d);
    h_sim_stop(&sim);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipeline_closes_the_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
