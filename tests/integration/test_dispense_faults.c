/* A dispense step that goes wrong part way is never repeated on its own. labloopd drives
 * labloop-sim's STAR through a one-column dispense (pick up tips, aspirate, dispense, drop tips:
 * four firmware commands) under a workflow whose policy is retry, and the simulator hits one of
 * the four commands with garbage for a reply, a device error, no reply, or a dropped link. A
 * fault at the first command (tips, nothing aspirated) is retried by the policy once the STAR is
 * back; at any later one the run pauses with what is known (which commands completed, which one
 * is not confirmed and why), nothing is dispensed while it waits, and only the operator's retry
 * repeats the dispense. While the STAR is in fault or offline the run says so in the API, the
 * CLI and its MQTT state message. */
#include "tests/harness/harness.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static h_mqtt_t mq;
static h_sim_t sim;
static h_daemon_t daemon_;
static char star_section[1024];

#define SCALE "60"
/* Lab seconds the simulator keeps a dropped link down. */
#define DOWN_S 240

static const char wf_disp[] =
    "{\"name\":\"disp\",\"steps\":["
    "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":60,"
    "\"params\":{\"reagent\":\"substrate\",\"volume_ul\":50,\"wells\":\"A1:H1\"}}],"
    "\"on_failure\":{\"action\":\"retry\",\"retries\":3}}";

static int setup(void **state)
{
    (void)state;
    char dir[256];
    if (h_mqtt_start(&mq) || h_tempdir("labdispf", dir, sizeof dir))
        return -1;
    snprintf(star_section, sizeof star_section,
             "[instrument star1]\ndriver = hamilton-star\nport = %s/star1\nsim_plate = P1\n"
             "sim_reagents = substrate,inhibitor\nsim_step_seconds = 1\n"
             "reagents = substrate,inhibitor\nmove_timeout_s = 30\ntimeout_ms = 300\n",
             dir);
    char ini[2000];
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = " SCALE "\nsim_seed = 5\n%s", star_section);
    if (h_sim_start(&sim, ini))
        return -1;
    char extra[2000];
    snprintf(extra, sizeof extra, "[labloop]\ntime_scale = " SCALE "\n%s", star_section);
    if (h_daemon_start(&daemon_, NULL, &mq, extra))
        return -1;
    char *resp = NULL;
    int st = h_http(daemon_.url, "POST", "/v1/workflows", "Content-Type: application/json", wf_disp,
                    &resp);
    free(resp);
    return st == 201 || st == 200 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    h_daemon_destroy(&daemon_);
    h_sim_stop(&sim);
    h_mqtt_destroy(&mq);
    return 0;
}

static const char *sval(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k)) ?: "";
}

static json_t *step0(json_t *run)
{
    return json_array_get(json_object_get(run, "steps"), 0);
}

static long long attempts(json_t *run)
{
    return json_integer_value(json_object_get(step0(run), "attempts"));
}

/* Waits until the run is in state and its waiting_reason holds both words (the reason is the
 * scheduler's own, the state the stored one, which may come a moment later); its document. */
static json_t *wait_reason(const char *id, const char *state, const char *a, const char *b, int ms)
{
    json_t *doc = NULL;
    for (long long end = h_now_ms() + ms; h_now_ms() < end; h_sleep_ms(20)) {
        json_decref(doc);
        doc = h_run_get(&daemon_, id);
        const char *why = sval(doc, "waiting_reason");
        if (strcmp(sval(doc, "state"), state) == 0 && strstr(why, a) && strstr(why, b))
            return doc;
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    fail_msg("run %s not %s with a reason with '%s' and '%s' within %d ms: %s", id, state, a, b, ms,
             text);
    free(text);
    return NULL;
}

static const char *inst_state(void)
{
    static char st[32];
    json_t *doc = h_api(&daemon_, "GET", "/v1/instruments/star1", NULL, 200);
    snprintf(st, sizeof st, "%s", sval(doc, "state"));
    json_decref(doc);
    return st;
}

static void wait_inst(const char *want, int ms)
{
    for (long long end = h_now_ms() + ms; h_now_ms() < end; h_sleep_ms(20))
        if (strcmp(inst_state(), want) == 0)
            return;
    fail_msg("star1 not %s after %d ms (it is %s)", want, ms, inst_state());
}

static int dispensed(void)
{
    return h_sim_log_count(&sim, ": dispense 50.0 uL");
}

/* The STAR works again: the simulator answers, and (unless its link came back, which
 * initialises it) an operator initialises it. */
static void star_back(const char *fault)
{
    assert_int_equal(h_sim_fault(&sim, "star1", "clear", 0), 0);
    if (strcmp(fault, "disconnect") == 0) {
        wait_inst("idle", 20000);
        return;
    }
    json_decref(h_api(&daemon_, "POST", "/v1/instruments/star1/actions",
                      "{\"action\":\"initialize\"}", 200));
    wait_inst("idle", 5000);
}

/* What the STAR is in while the fault lasts, and the driver's word for the fault. */
static const struct {
    const char *fault, *inst_state, *error;
} faults[] = {
    {"garbage", "fault", "protocol_error"},
    {"error", "fault", "device_error"},
    {"timeout", "fault", "timeout"},
    {"disconnect", "offline", "offline"},
};

/* The four commands of a one-column dispense, and what the pause reason must say was done
 * before each. */
static const struct {
    const char *action; /* as the reason names the command that is not confirmed */
    const char *done;   /* NULL: the first, which the policy may repeat */
} commands[] = {
    {"pick up tips", NULL},
    {"aspirate 50 µL from substrate", "tips picked up"},
    {"dispense 50 µL into A1", "tips picked up, aspirated 50 µL from substrate"},
    {"drop tips", "tips picked up, aspirated 50 µL from substrate, dispensed 50 µL into A1"},
};

/* Whether the first attempt put liquid into the plate: the dispense command was carried out
 * (the simulator acts before a garbled, lost or cut reply; an injected error answers instead),
 * or the fault came after it. */
static bool first_dispensed(int fi, int ci)
{
    return ci == 3 || (ci == 2 && strcmp(faults[fi].fault, "error") != 0);
}

static void one_case(int fi, int ci, h_sub_t *states)
{
    const char *fault = faults[fi].fault;
    print_message("case: %s at command %d (%s)\n", fault, ci + 1, commands[ci].action);
    wait_inst("idle", 20000);
    int before = dispensed();
    assert_int_equal(
        h_sim_fault_at(&sim, "star1", fault, strcmp(fault, "disconnect") == 0 ? DOWN_S : 0, ci + 1),
        0);
    json_t *doc =
        h_api(&daemon_, "POST", "/v1/runs", "{\"workflow\":\"disp\",\"plate\":\"P1\"}", 201);
    char id[64];
    snprintf(id, sizeof id, "%s", sval(doc, "id"));
    json_decref(doc);

    if (!commands[ci].done) {
        /* nothing aspirated: the policy may start again, once the STAR is back; until then the
         * run says why it waits, in the API, the CLI and its MQTT state */
        doc = wait_reason(id, "running", "star1", faults[fi].inst_state, 5000);
        print_message("  waits: %s\n", sval(doc, "waiting_reason"));
        json_decref(doc);
        bool seen = false;
        for (long long end = h_now_ms() + 5000; h_now_ms() < end && !seen; h_sleep_ms(20)) {
            h_msg_t *msgs;
            int n = h_sub_messages(states, &msgs);
            for (int i = 0; i < n && !seen; i++)
                seen = strstr(msgs[i].topic, id) && strstr(msgs[i].payload, "waiting_reason") &&
                       strstr(msgs[i].payload, faults[fi].inst_state);
        }
        assert_true(seen);
        char cmd[512], out[8192];
        snprintf(cmd, sizeof cmd, "LABLOOP_URL=%s '%s' run %s 2>&1", daemon_.url,
                 getenv("LABLOOP_CLI"), id);
        assert_int_equal(h_run(cmd, out, sizeof out), 0);
        assert_non_null(strstr(out, "waiting: "));
        assert_non_null(strstr(out, faults[fi].inst_state));
        /* the list too, from the stored document */
        snprintf(cmd, sizeof cmd, "LABLOOP_URL=%s '%s' runs --state running 2>&1", daemon_.url,
                 getenv("LABLOOP_CLI"));
        assert_int_equal(h_run(cmd, out, sizeof out), 0);
        const char *row = strstr(out, id);
        assert_non_null(row);
        assert_non_null(strstr(row, "waiting: step dispense waits"));
        star_back(fault);
        doc = h_run_wait(&daemon_, id, "done", 20000);
        assert_int_equal(attempts(doc), 2);
        assert_null(json_object_get(doc, "paused_reason"));
        json_decref(doc);
        assert_int_equal(dispensed(), before + 8);
        return;
    }

    /* anything later: paused for an operator, with what is known */
    doc = h_run_wait(&daemon_, id, "paused", 20000);
    const char *why = sval(doc, "paused_reason");
    print_message("  paused: %s\n", why);
    char not_confirmed[128];
    snprintf(not_confirmed, sizeof not_confirmed, "%s not confirmed: %s", commands[ci].action,
             faults[fi].error);
    if (!strstr(why, commands[ci].done) || !strstr(why, not_confirmed))
        fail_msg("paused_reason lacks '%s' or '%s': %s", commands[ci].done, not_confirmed, why);
    assert_non_null(strstr(sval(doc, "waiting_reason"), "paused"));
    assert_int_equal(attempts(doc), 1);
    json_decref(doc);
    int first = before + (first_dispensed(fi, ci) ? 8 : 0);
    assert_int_equal(dispensed(), first);
    /* nothing is repeated while it waits, not even once the STAR is back */
    star_back(fault);
    h_sleep_ms(1000);
    doc = h_run_get(&daemon_, id);
    assert_string_equal(sval(doc, "state"), "paused");
    assert_int_equal(attempts(doc), 1);
    json_decref(doc);
    assert_int_equal(dispensed(), first);
    /* the operator's retry repeats it, once */
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/resume", id);
    json_decref(h_api(&daemon_, "POST", path, "{\"step\":\"retry\"}", 200));
    doc = h_run_wait(&daemon_, id, "done", 20000);
    assert_int_equal(attempts(doc), 2);
    json_decref(doc);
    assert_int_equal(dispensed(), first + 8);
}

static void test_fault_at_each_command(void **state)
{
    (void)state;
    h_sub_t *states = h_sub_start(mq.uri, "labloop/v1/lab/+/runs/+/state");
    assert_non_null(states);
    for (int fi = 0; fi < (int)(sizeof faults / sizeof faults[0]); fi++)
        for (int ci = 0; ci < (int)(sizeof commands / sizeof commands[0]); ci++)
            one_case(fi, ci, states);
    h_sub_stop(states);
}

/* An operator pauses the STAR in the middle of a twelve-column dispense: the step holds after
 * the command in flight, the run says so, and goes on when the STAR is resumed. The pause may
 * come too late for a fast run (it ended first): then another run tries. */
static void test_paused_mid_step_says_why(void **state)
{
    (void)state;
    static const char wf_long[] =
        "{\"name\":\"long\",\"steps\":[{\"name\":\"fill\",\"op\":\"dispense\","
        "\"on\":\"liquid_handler\",\"duration_s\":120,\"params\":{\"reagent\":"
        "\"inhibitor\",\"volume_ul\":5,\"wells\":\"A1:H12\"}}]}";
    json_decref(h_api(&daemon_, "POST", "/v1/workflows", wf_long, 201));
    bool held = false;
    for (int tries = 0; tries < 5 && !held; tries++) {
        wait_inst("idle", 20000);
        int before = h_sim_log_count(&sim, ": dispense 5.0 uL");
        json_t *doc =
            h_api(&daemon_, "POST", "/v1/runs", "{\"workflow\":\"long\",\"plate\":\"P1\"}", 201);
        char id[64], next[64];
        snprintf(id, sizeof id, "%s", sval(doc, "id"));
        json_decref(doc);
        /* a second run, planned behind the first */
        doc = h_api(&daemon_, "POST", "/v1/runs", "{\"workflow\":\"long\",\"plate\":\"P1\"}", 201);
        snprintf(next, sizeof next, "%s", sval(doc, "id"));
        json_decref(doc);
        /* The pause goes in once the first well is dispensed; a run that never gets there (a
         * fault, the simulator's log gone) fails the test here instead of waiting for ever. */
        assert_true(before >= 0);
        int seen = before;
        for (long long end = h_now_ms() + 20000; seen == before && h_now_ms() < end; h_sleep_ms(2))
            seen = h_sim_log_count(&sim, ": dispense 5.0 uL");
        if (seen <= before) {
            doc = h_run_get(&daemon_, id);
            char *text = json_dumps(doc, JSON_COMPACT);
            fail_msg("run %s dispensed nothing within 20 s (sim log count %d, was %d): %s", id,
                     seen, before, text);
            free(text);
        }
        json_decref(h_api(&daemon_, "POST", "/v1/instruments/star1/pause", NULL, 200));
        for (long long end = h_now_ms() + 5000; h_now_ms() < end && !held; h_sleep_ms(20)) {
            doc = h_run_get(&daemon_, id);
            held = strcmp(sval(doc, "state"), "running") == 0 &&
                   strstr(sval(doc, "waiting_reason"), "star1 is paused by an operator");
            bool over = strcmp(sval(doc, "state"), "done") == 0;
            json_decref(doc);
            if (over)
                break;
        }
        if (held) {
            /* the one behind says why too (queued or planned), in its stored document (the list) */
            bool said = false;
            for (long long end = h_now_ms() + 5000; h_now_ms() < end && !said; h_sleep_ms(20)) {
                doc = h_api(&daemon_, "GET", "/v1/runs?limit=500", NULL, 200);
                size_t i;
                json_t *r;
                json_array_foreach(json_object_get(doc, "runs"), i, r)
                {
                    said |= strcmp(sval(r, "id"), next) == 0 &&
                            strstr(sval(r, "waiting_reason"), "star1 paused");
                }
                json_decref(doc);
            }
            assert_true(said);
            int now = h_sim_log_count(&sim, ": dispense 5.0 uL");
            h_sleep_ms(500);
            assert_int_equal(h_sim_log_count(&sim, ": dispense 5.0 uL"), now);
        }
        json_decref(h_api(&daemon_, "POST", "/v1/instruments/star1/resume", NULL, 200));
        doc = h_run_wait(&daemon_, id, "done", 20000);
        assert_null(json_object_get(doc, "waiting_reason"));
        json_decref(doc);
        json_decref(h_run_wait(&daemon_, next, "done", 20000));
    }
    assert_true(held);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_at_each_command),
        cmocka_unit_test(test_paused_mid_step_says_why),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
