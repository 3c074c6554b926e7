/* Every route of the API answered for real and checked against its OpenAPI document: labloopd
 * with tokens, PostgreSQL, mosquitto and labloop-sim's cell; tests/openapi/check_responses.py
 * (Python's jsonschema, the full 2020-12 dialect) sends good and bad requests to each route and
 * validates each answer's status, content type and body against GET /v1/openapi.json. */
#include "tests/harness/harness.h"
#include "tests/integration/mix_cell.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define TOK_VIEWER "openapi-viewer-aaaaaaaa"
#define TOK_TECH "openapi-tech-bbbbbbbbbb"
#define TOK_PIPE "openapi-pipe-cccccccccc"
#define TOK_ADMIN "openapi-admin-dddddddd"

static h_pg_t pg;
static h_mqtt_t mq;
static h_sim_t sim;
static h_daemon_t dmn;
static char dir[256];

static int setup(void **state)
{
    (void)state;
    char sections[4096], ini[5000], tokens[300], extra[5000];
    if (h_pg_start(&pg) || h_mqtt_start(&mq) || h_tempdir("labopenapi", dir, sizeof dir))
        return -1;
    mix_cell_sections(sections, sizeof sections, dir, h_free_port());
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = 60\nsim_seed = 3\n%s", sections);
    if (h_sim_start(&sim, ini))
        return -1;
    snprintf(tokens, sizeof tokens, "%s/tokens", dir);
    FILE *f = fopen(tokens, "w");
    if (!f)
        return -1;
    fprintf(f, "%s viewer vera\n%s technician tom\n%s pipeline pia\n%s admin ada\n", TOK_VIEWER,
            TOK_TECH, TOK_PIPE, TOK_ADMIN);
    fclose(f);
    snprintf(extra, sizeof extra, "[labloop]\ntime_scale = 60\n%s[auth]\ntokens = %s\n", sections,
             tokens);
    return h_daemon_start(&dmn, &pg, &mq, extra);
}

static int teardown(void **state)
{
    (void)state;
    h_daemon_destroy(&dmn);
    h_sim_stop(&sim);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
    h_rmtree(dir);
    return 0;
}

static void test_every_route_matches_the_document(void **state)
{
    (void)state;
    const char *py = getenv("LAB_PYTHON3");
    char cmd[2048], out[65536];
    snprintf(cmd, sizeof cmd,
             "%s %s/tests/openapi/check_responses.py --url %s --viewer %s --technician %s "
             "--pipeline %s --admin %s%s 2>&1",
             py && *py ? py : "python3", LAB_SOURCE_DIR_T, dmn.url, TOK_VIEWER, TOK_TECH, TOK_PIPE,
             TOK_ADMIN, getenv("LAB_OPENAPI_DUMP") ? " --dump" : "");
    int rc = h_run(cmd, out, sizeof out);
    printf("%s", out);
    assert_int_equal(rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_matches_the_document),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
