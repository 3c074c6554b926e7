/* The robot-server codec (protocols/opentrons.h) on the robot-server's own recorded answers
 * (tests/fixtures/opentrons_robot_server.h, each cited there) and its request grammar
 * (commands_router.py: the target and query; test_home.tavern.yaml: the body), then at the
 * limits: ids too long or with bytes a target cannot carry, unknown statuses and models,
 * truncated and non-JSON bodies, control bytes, non-ASCII text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/opentrons.h"
#include "tests/fixtures/opentrons_robot_server.h"

static char why[200];

static void test_health(void **state)
{
    (void)state;
    ot_health_t h;
    assert_int_equal(
        ot_health_parse(ot_rs_health_ot2, strlen(ot_rs_health_ot2), &h, why, sizeof why), LAB_OK);
    assert_int_equal(h.model, OT_MODEL_OT2);
    assert_string_equal(h.name, "opentrons-dev");
    assert_string_equal(h.fw_version, "Virtual Smoothie");
    assert_string_equal(h.robot_serial, "simulator");
    assert_int_equal(
        ot_health_parse(ot_rs_health_flex, strlen(ot_rs_health_flex), &h, why, sizeof why), LAB_OK);
    assert_int_equal(h.model, OT_MODEL_FLEX);
    assert_string_equal(ot_model_name(h.model), "OT-3 Standard");
    /* Another model is not guessed at. */
    const char *ot1 = "{\"name\":\"n\",\"api_version\":\"1\",\"robot_model\":\"OT-1\"}";
    assert_int_equal(ot_health_parse(ot1, strlen(ot1), &h, why, sizeof why), LAB_EUNKNOWN);
    assert_non_null(strstr(why, "OT-1"));
}

static void test_run(void **state)
{
    (void)state;
    ot_run_t r;
    assert_int_equal(ot_run_parse(ot_rs_run_answer, strlen(ot_rs_run_answer), &r, why, sizeof why),
                     LAB_OK);
    assert_string_equal(r.id, "9f3e5c1a-7d2b-4e47-9a0c-1f1d2b3c4d5e");
    assert_string_equal(r.status, "idle");
    assert_true(r.current);
    assert_string_equal(ot_run_body(), ot_rs_run_request);
}

static void test_command_request(void **state)
{
    (void)state;
    char target[128];
    int n = ot_command_target(target, sizeof target, "9f3e5c1a-7d2b-4e47-9a0c-1f1d2b3c4d5e", 30000);
    assert_int_equal(n, (int)strlen(target));
    assert_string_equal(target, "/runs/9f3e5c1a-7d2b-4e47-9a0c-1f1d2b3c4d5e/commands"
                                "?waitUntilComplete=true&timeout=30000");
    assert_int_equal(ot_command_target(target, sizeof target, "../health", 1), LAB_EINVAL);
    assert_int_equal(ot_command_target(target, sizeof target, "run", 0), LAB_EINVAL);
    assert_int_equal(ot_command_target(target, 20, "run", 1), LAB_ENOSPACE);
    /* test_home.tavern.yaml "issue home Command": {"data":{"commandType":"home","params":{}}},
     * with the intent the router gives a command that names none (commands_router.py:221). */
    char *body = ot_command_body("home", NULL);
    assert_string_equal(body, "{\"data\":{\"commandType\":\"home\",\"params\":{},"
                              "\"intent\":\"setup\"}}");
    char type[64];
    json_t *params;
    assert_int_equal(
        ot_command_request_parse(body, strlen(body), type, sizeof type, &params, why, sizeof why),
        LAB_OK);
    assert_string_equal(type, "home");
    assert_int_equal(json_object_size(params), 0);
    json_decref(params);
    free(body);
    json_t *p = json_pack("{s:s,s:f}", "pipetteId", "p", "volume", 100.0);
    body = ot_command_body("aspirate", p);
    assert_non_null(strstr(body, "\"volume\":100.0"));
    free(body);
    assert_null(ot_command_body("home\"}", p)); /* not a command name: nothing to smuggle */
    assert_null(ot_command_body("", p));
    json_decref(p);
    const char *bad = "{\"data\":{\"commandType\":\"home\",\"params\":[]}}";
    assert_int_equal(
        ot_command_request_parse(bad, strlen(bad), type, sizeof type, &params, why, sizeof why),
        LAB_ESYNTAX);
    assert_null(params);
}

static void test_command_answers(void **state)
{
    (void)state;
    ot_command_t c;
    assert_int_equal(
        ot_command_parse(ot_rs_home_answer, strlen(ot_rs_home_answer), &c, why, sizeof why),
        LAB_OK);
    assert_int_equal(c.status, OT_CMD_SUCCEEDED);
    assert_string_equal(c.command_type, "home");
    assert_string_equal(c.error_type, "");
    assert_int_equal(
        ot_command_parse(ot_rs_aspirate_failed, strlen(ot_rs_aspirate_failed), &c, why, sizeof why),
        LAB_OK);
    assert_int_equal(c.status, OT_CMD_FAILED);
    assert_string_equal(c.error_type, "TipNotAttachedError");
    assert_string_equal(c.error_code, "3005");
    assert_string_equal(c.detail, "Pipette should have a tip attached, but does not.");
    assert_int_equal(ot_command_parse(ot_rs_load_module_failed, strlen(ot_rs_load_module_failed),
                                      &c, why, sizeof why),
                     LAB_OK);
    assert_int_equal(c.status, OT_CMD_FAILED);
    assert_string_equal(c.error_type, "LocationIsOccupiedError");
    /* A result's id: loadPipette's pipetteId, loadLabware's labwareId. */
    const char *lp = "{\"data\":{\"id\":\"c1\",\"commandType\":\"loadPipette\",\"status\":"
                     "\"succeeded\",\"result\":{\"pipetteId\":\"pip-7\"}}}";
    assert_int_equal(ot_command_parse(lp, strlen(lp), &c, why, sizeof why), LAB_OK);
    assert_string_equal(c.result_id, "pip-7");
    const char *ll = "{\"data\":{\"id\":\"c2\",\"commandType\":\"loadLabware\",\"status\":"
                     "\"succeeded\",\"result\":{\"labwareId\":\"lw/../x\",\"definition\":{}}}}";
    assert_int_equal(ot_command_parse(ll, strlen(ll), &c, why, sizeof why), LAB_ESYNTAX);
    assert_non_null(strstr(why, "labwareId"));
}

static void test_error_body(void **state)
{
    (void)state;
    ot_error_t e;
    assert_int_equal(
        ot_error_parse(ot_rs_run_not_found, strlen(ot_rs_run_not_found), &e, why, sizeof why),
        LAB_OK);
    assert_string_equal(e.id, "RunNotFound");
    assert_string_equal(e.error_code, "4000");
    assert_string_equal(e.detail, "Run run-0 not found.");
    const char *none = "{\"errors\":[]}";
    assert_int_equal(ot_error_parse(none, strlen(none), &e, why, sizeof why), LAB_ESYNTAX);
}

/* Bodies a broken or hostile server could send: each refused with a reason, none crashes. */
static void test_limits(void **state)
{
    (void)state;
    ot_command_t c;
    static const struct {
        const char *body;
        int rc;
        const char *why;
    } cases[] = {
        {"", LAB_ESYNTAX, "not JSON"},
        {"{\"data\": {\"id\": \"c\", \"commandType\": \"home\", \"status\": \"succ", LAB_ESYNTAX,
         "not JSON"},
        {"[1,2]", LAB_ESYNTAX, "not a JSON object"},
        {"{\"data\": 5}", LAB_ESYNTAX, "no \"data\""},
        {"{\"data\": {\"id\": 5, \"commandType\": \"home\", \"status\": \"queued\"}}", LAB_ESYNTAX,
         "not a string"},
        {"{\"data\": {\"id\": \"c\", \"commandType\": \"home\", \"status\": \"paused\"}}",
         LAB_EUNKNOWN, "paused"},
        {"{\"data\": {\"id\": \"c\", \"commandType\": \"home\", \"status\": \"failed\"}}",
         LAB_ESYNTAX, "without an \"error\""},
        {"{\"data\": {\"id\": \"c\\u0001\", \"commandType\": \"home\", \"status\": \"queued\"}}",
         LAB_ESYNTAX, "control byte"},
        {"{\"data\": {\"id\": \"c\", \"id\": \"d\", \"commandType\": \"home\", \"status\": "
         "\"queued\"}}",
         LAB_ESYNTAX, "duplicate"},
        {"\xff\xfe{}", LAB_ESYNTAX, "not JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        why[0] = '\0';
        int rc = ot_command_parse(cases[i].body, strlen(cases[i].body), &c, why, sizeof why);
        if (rc != cases[i].rc || !strstr(why, cases[i].why))
            fail_msg("case %zu: rc %d why '%s', expected %d '%s'", i, rc, why, cases[i].rc,
                     cases[i].why);
    }
    /* An id of OT_ID_MAX bytes fits, one more does not. */
    char body[512], id[OT_ID_MAX + 2];
    for (int over = 0; over < 2; over++) {
        memset(id, 'a', sizeof id);
        id[OT_ID_MAX + over] = '\0';
        snprintf(body, sizeof body, "{\"data\":{\"id\":\"%s\",\"status\":\"idle\"}}", id);
        ot_run_t r;
        assert_int_equal(ot_run_parse(body, strlen(body), &r, why, sizeof why),
                         over ? LAB_ESYNTAX : LAB_OK);
        assert_int_equal(ot_id_ok(id), !over);
    }
    /* A long non-ASCII detail is cut at a character boundary, never inside a UTF-8 sequence. */
    char big[2048] = "{\"data\":{\"id\":\"c\",\"commandType\":\"aspirate\",\"status\":\"failed\","
                     "\"error\":{\"errorType\":\"overpressure\",\"detail\":\"";
    for (int i = 0; i < 200; i++)
        strcat(big, "\xe2\x82\xac"); /* the euro sign, 3 bytes */
    strcat(big, "\"}}}");
    assert_int_equal(ot_command_parse(big, strlen(big), &c, why, sizeof why), LAB_OK);
    size_t dl = strlen(c.detail);
    assert_true(dl > 0 && dl < OT_TEXT_MAX && dl % 3 == 0);
    assert_string_equal(c.error_type, "overpressure");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health),          cmocka_unit_test(test_run),
        cmocka_unit_test(test_command_request), cmocka_unit_test(test_command_answers),
        cmocka_unit_test(test_error_body),      cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
