/* opentrons against labloop-sim's robot-server: /health to idle (model and name in the info),
 * a run created and the deck loaded at the first operation, a tip picked up, a reagent aspirated
 * from its trough and dispensed into a well (the simulator's world checked), the tip dropped;
 * params refused before anything is sent; the robot's own errors (a used tip well:
 * tipPhysicallyMissing; the run replaced by another client: RunStopped, then a new run); every
 * injected fault (error: overpressure in fault until the next success; garbage; timeout;
 * disconnect and back); an answer that comes after its operation timed out, never taken for the
 * next request's; polling telemetry; a Flex moving labware. Last, a robot-server played by the
 * test replays the robot-server's own recorded exchanges (tests/fixtures/
 * opentrons_robot_server.h) at the driver, checks every request it gets (method, target,
 * Opentrons-Version, body) and closes its keep-alive connection between requests, which the
 * driver must ride out without going offline. */
#include "drivers/driver.h"
#include "protocols/httpmsg.h"
#include "protocols/opentrons.h"
#include "tests/fixtures/opentrons_robot_server.h"
#include "tests/harness/harness.h"
#include "tests/harness/harness_drv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

static h_sim_t sim;
static char dir[256], url1[64], url2[64], url3[64];
static int port1, port2, port3;

static int setup(void **state)
{
    (void)state;
    if (h_tempdir("drvot", dir, sizeof dir))
        return -1;
    port1 = h_free_port();
    port2 = h_free_port();
    port3 = h_free_port();
    snprintf(url1, sizeof url1, "tcp://127.0.0.1:%d", port1);
    snprintf(url2, sizeof url2, "tcp://127.0.0.1:%d", port2);
    snprintf(url3, sizeof url3, "tcp://127.0.0.1:%d", port3);
    char ini[2048];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 20\nsim_seed = 3\n"
             "[instrument ot1]\ndriver = opentrons\nport = %s\nsim_plate = P1\n"
             "sim_reagents = substrate,inhibitor,buffer\nsim_step_seconds = 1\n"
             "[instrument ot2]\ndriver = opentrons\nport = %s\nsim_plate = P2\n"
             "sim_step_seconds = 50\n"
             "[instrument flex]\ndriver = opentrons\nport = %s\nsim_plate = P3\n"
             "sim_model = flex\nsim_step_seconds = 1\n",
             url1, url2, url3);
    if (h_sim_start(&sim, ini))
        return -1;
    return h_drv_init(20);
}

static int teardown(void **state)
{
    (void)state;
    h_sim_stop(&sim);
    h_rmtree(dir);
    h_drv_fini();
    return 0;
}

static void fault(const char *id, const char *kind)
{
    assert_int_equal(h_sim_fault(&sim, id, kind, 0), 0);
}

static lab_driver_t *open_ot(const char *id, const char *url, const char *poll_s)
{
    lab_drv_kv_t kv[] = {{"driver", "opentrons", 2},
                         {"port", url, 3},
                         {"reagents", "substrate, inhibitor,buffer", 4},
                         {"move_timeout_s", "40", 5},
                         {"timeout_ms", "800", 6},
                         {"poll_s", poll_s, 7}};
    return h_drv_open(id, kv, sizeof kv / sizeof kv[0]);
}

static void expect_err(lab_driver_t *d, const char *action, const char *params, int code)
{
    lab_drv_error_t e;
    json_t *r = h_drv_call(d, action, params, &e);
    if (r)
        fail_msg("%s %s succeeded", action, params ? params : "");
    if (e.code != code)
        fail_msg("%s: %s \"%s\", expected %s", action, lab_err_json_name(e.code), e.text,
                 lab_err_json_name(code));
}

/* uL of reagent the simulator's world holds in a well of a plate (0 when none). */
static double well_ul(const char *plate, const char *well, const char *reagent)
{
    char r[8192];
    assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"%s\"}", plate), 0);
    json_t *doc = json_loads(r, 0, NULL);
    assert_non_null(doc);
    double v = json_number_value(
        json_object_get(json_object_get(json_object_get(doc, "wells"), well), reagent));
    json_decref(doc);
    return v;
}

static void test_connect_and_pipette(void **state)
{
    (void)state;
    lab_driver_t *d = open_ot("ot1", url1, "0");
    h_drv_wait_state(d, LAB_INST_IDLE);
    json_t *info = lab_driver_info(d);
    assert_string_equal(json_string_value(json_object_get(info, "robot_model")), "OT-2 Standard");
    assert_string_equal(json_string_value(json_object_get(info, "name")), "ot1");
    json_t *r = h_drv_call_ok(d, "pick_up_tips", "{\"channels\": 1}");
    assert_true(json_is_true(json_object_get(r, "tip")));
    json_decref(r);
    r = h_drv_call_ok(d, "aspirate", "{\"volume_ul\": 50, \"reagent\": \"inhibitor\"}");
    assert_true(h_drv_num(r, "held_ul") == 50);
    json_decref(r);
    json_decref(h_drv_call_ok(d, "dispense", "{\"well\": \"B3\", \"volume_ul\": 30}"));
    json_decref(h_drv_call_ok(d, "dispense", "{\"well\": \"c12\", \"volume_ul\": [20]}"));
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    assert_true(well_ul("P1", "B3", "inhibitor") == 30);
    assert_true(well_ul("P1", "C12", "inhibitor") == 20);
    r = h_drv_call_ok(d, "status", NULL);
    assert_false(json_is_true(json_object_get(r, "tip")));
    assert_true(h_drv_num(r, "tips_left") == 95);
    assert_string_equal(json_string_value(json_object_get(r, "run")), "run-1");
    json_decref(r);
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
    h_drv_close(d);
}

static void test_refusals(void **state)
{
    (void)state;
    lab_driver_t *d = open_ot("ot1", url1, "0");
    h_drv_wait_state(d, LAB_INST_IDLE);
    const char *bad[][2] = {
        {"aspirate", "{}"},
        {"aspirate", "{\"volume_ul\": 10, \"reagent\": \"substrate\", \"well\": \"A1\"}"},
        {"aspirate", "{\"volume_ul\": 301, \"reagent\": \"substrate\"}"}, /* a p300 */
        {"aspirate", "{\"volume_ul\": 10, \"reagent\": \"acid\"}"},
        {"aspirate", "{\"volume_ul\": [10, 10], \"reagent\": \"substrate\"}"}, /* 1 channel */
        {"dispense", "{\"well\": \"I1\", \"volume_ul\": 1}"},
        {"dispense", "{\"well\": \"A13\", \"volume_ul\": 1}"},
        {"dispense", "{\"well\": \"A1\", \"volume_ul\": 0}"},
        {"pick_up_tips", "{\"channels\": 8}"}, /* a single-channel pipette */
        {"move_labware", "{\"slot\": \"12\"}"},
        {"drop_tips", "{\"now\": true}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *p = json_loads(bad[i][1], 0, NULL), *problems = NULL;
        lab_drv_error_t e;
        int rc = lab_driver_call(d, bad[i][0], p, 0, h_drv_on_done, NULL, &e, &problems);
        json_decref(p);
        if (rc == 0) {
            /* pick_up_tips channels is the driver's refusal, after the schema: not sent */
            h_drv_call_t c = {0};
            (void)c;
            fail_msg("%s %s accepted", bad[i][0], bad[i][1]);
        }
        assert_int_equal(e.code, LAB_EINVAL);
        json_decref(problems);
    }
    /* refused by the driver, nothing sent: no tip to aspirate with */
    lab_drv_error_t e;
    assert_null(h_drv_call(d, "aspirate", "{\"volume_ul\": 5, \"reagent\": \"substrate\"}", &e));
    assert_int_equal(e.code, LAB_ESTATE);
    assert_true(e.not_started);
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
    h_drv_close(d);
}

/* The robot's own error: a tip well already used (pick_up_tip.py's tipPhysicallyMissing),
 * holding the instrument in fault until an operation succeeds. */
static void test_robot_errors(void **state)
{
    (void)state;
    lab_driver_t *d = open_ot("ot1", url1, "0");
    h_drv_wait_state(d, LAB_INST_IDLE);
    lab_drv_error_t e;
    json_decref(h_drv_call_ok(d, "pick_up_tips", "{\"well\": \"A1\"}"));
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    assert_null(h_drv_call(d, "pick_up_tips", "{\"well\": \"A1\"}", &e));
    assert_int_equal(e.code, LAB_EDEVICE);
    assert_string_equal(e.device_code, "tipPhysicallyMissing");
    assert_non_null(strstr(e.text, "No tip detected"));
    assert_false(e.not_started);
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
    json_decref(h_drv_call_ok(d, "pick_up_tips", "{\"well\": \"B1\"}"));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    h_drv_close(d);
}

static void test_faults(void **state)
{
    (void)state;
    lab_driver_t *d = open_ot("ot1", url1, "0");
    h_drv_wait_state(d, LAB_INST_IDLE);
    lab_drv_error_t e;

    /* the robot reports an error: overpressure, fault until an operation succeeds */
    json_decref(h_drv_call_ok(d, "pick_up_tips", NULL));
    fault("ot1", "error");
    assert_null(h_drv_call(d, "aspirate", "{\"volume_ul\": 10, \"reagent\": \"buffer\"}", &e));
    assert_int_equal(e.code, LAB_EDEVICE);
    assert_string_equal(e.device_code, "overpressure");
    assert_non_null(strstr(e.text, "3006"));
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
    json_decref(h_drv_call_ok(d, "aspirate", "{\"volume_ul\": 10, \"reagent\": \"buffer\"}"));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* bytes before the answer: a broken HTTP answer, then the next one works */
    fault("ot1", "garbage");
    assert_null(h_drv_call(d, "dispense", "{\"well\": \"H1\", \"volume_ul\": 4}", &e));
    assert_int_equal(e.code, LAB_EPROTO);
    assert_false(e.not_started);
    assert_non_null(strstr(e.text, "broken HTTP answer"));
    json_decref(h_drv_call_ok(d, "dispense", "{\"well\": \"H2\", \"volume_ul\": 4}"));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* silence: a timeout; the robot answers again after clear */
    fault("ot1", "timeout");
    assert_null(h_drv_call(d, "dispense", "{\"well\": \"H3\", \"volume_ul\": 1}", &e));
    assert_int_equal(e.code, LAB_ETIMEDOUT);
    assert_int_not_equal(lab_driver_state(d), LAB_INST_IDLE);
    fault("ot1", "clear");
    h_drv_wait_state(d, LAB_INST_IDLE);
    json_decref(h_drv_call_ok(d, "dispense", "{\"well\": \"H4\", \"volume_ul\": 1}"));

    /* the connection goes and stays away: offline, refused; back, and working */
    fault("ot1", "disconnect");
    h_drv_wait_state(d, LAB_INST_OFFLINE);
    expect_err(d, "drop_tips", NULL, LAB_EOFFLINE);
    fault("ot1", "clear");
    h_drv_wait_state(d, LAB_INST_IDLE);
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    assert_true(well_ul("P1", "H2", "buffer") == 4);
    assert_true(well_ul("P1", "H4", "buffer") == 1);
    h_drv_close(d);
}

/* ot2 takes 2.5 s per command: a pick-up given 0.5 lab s times out in the framework (its floor
 * is 2 s), and its answer comes later. The next request is answered with an injected error:
 * taking the late (successful) answer for it would end it in success. */
static void test_late_answer(void **state)
{
    (void)state;
    lab_drv_kv_t kv[] = {{"driver", "opentrons", 2},
                         {"port", url2, 3},
                         {"move_timeout_s", "200", 4},
                         {"timeout_ms", "5000", 5}};
    lab_driver_t *d = h_drv_open("ot2", kv, sizeof kv / sizeof kv[0]);
    h_drv_wait_state(d, LAB_INST_IDLE);
    json_decref(h_drv_call_ok(d, "home", NULL)); /* the run and the deck: quick commands */
    h_drv_call_t c = {0};
    lab_drv_error_t e;
    assert_int_equal(lab_driver_call(d, "pick_up_tips", NULL, 0.5, h_drv_on_done, &c, &e, NULL), 0);
    assert_true(h_drv_run_until(h_drv_call_done, &c, 10000));
    assert_int_equal(c.err.code, LAB_ETIMEDOUT);
    json_decref(c.result);
    fault("ot2", "error");
    assert_null(h_drv_call(d, "home", NULL, &e));
    assert_int_equal(e.code, LAB_EDEVICE);
    assert_string_equal(e.device_code, "overpressure");
    json_decref(h_drv_call_ok(d, "home", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
    h_drv_close(d);
}

/* The server's own timeout (the request's timeout=, 1 s here) runs out before ot2's 2.5 s
 * command ends: the answer is the command still "running" (commands_router.py:174-190), a
 * timeout that may have done its work; the robot answers the next command as usual. */
static void test_server_timeout(void **state)
{
    (void)state;
    lab_drv_kv_t kv[] = {{"driver", "opentrons", 2},
                         {"port", url2, 3},
                         {"move_timeout_s", "20", 4},
                         {"timeout_ms", "2000", 5}};
    lab_driver_t *d = h_drv_open("ot2", kv, sizeof kv / sizeof kv[0]);
    h_drv_wait_state(d, LAB_INST_IDLE);
    lab_drv_error_t e;
    assert_null(h_drv_call(d, "pick_up_tips", NULL, &e));
    assert_int_equal(e.code, LAB_ETIMEDOUT);
    assert_non_null(strstr(e.text, "still running"));
    assert_false(e.not_started);
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
    json_decref(h_drv_call_ok(d, "home", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
    h_drv_close(d);
}

static bool got_telemetry(void *arg)
{
    (void)arg;
    json_t *t = h_drv_telemetry();
    return t && json_is_number(json_object_get(t, "tips_left"));
}

/* The Flex: its model from /health, labware moved with the gripper, telemetry by polling. */
static void test_flex_poll(void **state)
{
    (void)state;
    h_drv_telemetry_clear();
    lab_driver_t *d = open_ot("flex", url3, "0.5");
    h_drv_wait_state(d, LAB_INST_IDLE);
    json_t *info = lab_driver_info(d);
    assert_string_equal(json_string_value(json_object_get(info, "robot_model")), "OT-3 Standard");
    json_t *r = h_drv_call_ok(d, "move_labware", "{\"labware\": \"plate\", \"slot\": \"C2\"}");
    assert_string_equal(json_string_value(json_object_get(r, "slot")), "C2");
    json_decref(r);
    assert_true(h_drv_run_until(got_telemetry, NULL, 10000));
    assert_true(json_number_value(json_object_get(h_drv_telemetry(), "tips_left")) == 96);
    h_drv_close(d);
}

/* ---- a robot-server played by the test, answering with the recorded exchanges ---- */

static struct {
    int listen_fd, fd;
    httpmsg_msg_t req;
    int n;              /* requests answered */
    char seen[24][200]; /* "METHOD TARGET commandType" of each */
    bool close_after;   /* answer with Connection: close and close */
    const char *health; /* the health document to give */
    int fail;           /* a request check that failed (its number), or 0 */
    char fail_why[200];
} fake = {.listen_fd = -1, .fd = -1};

static void fake_answer(int status, const char *reason, const char *body)
{
    char out[8192];
    httpmsg_kv_t f[] = {{OT_VERSION_FIELD, OT_RS_VERSION},
                        {"Opentrons-Min-Version", OT_RS_MIN_VERSION}};
    int n = httpmsg_response(out, sizeof out, status, reason, f, 2, body, strlen(body),
                             fake.close_after);
    assert_true(n > 0);
    assert_int_equal(write(fake.fd, out, (size_t)n), n);
    if (fake.close_after) {
        close(fake.fd);
        fake.fd = -1;
    }
}

static void fake_request(void)
{
    httpmsg_msg_t *m = &fake.req;
    char type[64] = "";
    json_t *params = NULL;
    char why[160];
    const char *v = httpmsg_msg_field(m, OT_VERSION_FIELD);
    if ((!v || strcmp(v, OT_API_VERSION) != 0) && !fake.fail) {
        fake.fail = fake.n + 1;
        snprintf(fake.fail_why, sizeof fake.fail_why, "Opentrons-Version %s", v ? v : "missing");
    }
    if (m->body_len)
        ot_command_request_parse(m->body, m->body_len, type, sizeof type, &params, why, sizeof why);
    if (fake.n < 24)
        snprintf(fake.seen[fake.n], sizeof fake.seen[0], "%.16s %.100s %.63s", m->method, m->target,
                 type);
    fake.n++;
    if (strcmp(m->target, "/health") == 0) {
        fake_answer(200, "OK", fake.health);
    } else if (strcmp(m->target, "/runs") == 0) {
        fake_answer(201, "Created", ot_rs_run_answer);
    } else if (strcmp(type, "home") == 0) {
        fake_answer(201, "Created", ot_rs_home_answer);
    } else if (strcmp(type, "aspirate") == 0) {
        fake_answer(201, "Created", ot_rs_aspirate_failed);
    } else if (strcmp(type, "pickUpTip") == 0) {
        fake_answer(201, "Created",
                    "{\"data\":{\"id\":\"p1\",\"commandType\":\"pickUpTip\",\"status\":"
                    "\"succeeded\",\"params\":{},\"result\":{\"tipVolume\":300}}}");
    } else if (strcmp(type, "loadPipette") == 0 || strcmp(type, "loadLabware") == 0) {
        /* Not among the recordings: the result's id as load_pipette.py / load_labware.py name
         * it, the rest as any command document. */
        char body[512];
        snprintf(body, sizeof body,
                 "{\"data\":{\"id\":\"c%d\",\"key\":\"c%d\",\"commandType\":\"%s\",\"status\":"
                 "\"succeeded\",\"params\":{},\"result\":{\"%s\":\"id-%d\"}}}",
                 fake.n, fake.n, type, strcmp(type, "loadPipette") ? "labwareId" : "pipetteId",
                 fake.n);
        fake_answer(201, "Created", body);
    } else {
        fake_answer(404, "Not Found", ot_rs_run_not_found);
    }
    json_decref(params);
}

static void fake_poll(void)
{
    if (fake.listen_fd < 0)
        return;
    if (fake.fd < 0) {
        fake.fd = accept(fake.listen_fd, NULL, NULL);
        if (fake.fd < 0)
            return;
        fcntl(fake.fd, F_SETFL, fcntl(fake.fd, F_GETFL) | O_NONBLOCK);
        httpmsg_msg_reset(&fake.req);
    }
    uint8_t buf[4096];
    ssize_t n = read(fake.fd, buf, sizeof buf);
    if (n == 0) {
        close(fake.fd);
        fake.fd = -1;
        return;
    }
    size_t at = 0;
    while (n > 0 && at < (size_t)n && fake.fd >= 0) {
        size_t used;
        int rc = httpmsg_msg_feed(&fake.req, buf + at, (size_t)n - at, &used);
        at += used;
        if (rc == LAB_EAGAIN)
            break;
        assert_int_equal(rc, LAB_OK);
        fake_request();
        httpmsg_msg_reset(&fake.req);
    }
}

static const char *fake_start(void)
{
    static char url[64];
    fake.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int one = 1;
    setsockopt(fake.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    assert_int_equal(bind(fake.listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    getsockname(fake.listen_fd, (struct sockaddr *)&a, &len);
    assert_int_equal(listen(fake.listen_fd, 4), 0);
    fcntl(fake.listen_fd, F_SETFL, fcntl(fake.listen_fd, F_GETFL) | O_NONBLOCK);
    httpmsg_msg_init(&fake.req, true, 1u << 16);
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", ntohs(a.sin_port));
    fake.n = 0;
    h_drv_set_pump(fake_poll);
    return url;
}

static void fake_stop(void)
{
    h_drv_set_pump(NULL);
    if (fake.fd >= 0)
        close(fake.fd);
    close(fake.listen_fd);
    fake.fd = fake.listen_fd = -1;
    httpmsg_msg_free(&fake.req);
}

/* The recorded exchanges at the driver: the health documents of both models, a run, home
 * (test_home.tavern.yaml), a failed aspirate (test_json_v6_run_failure.tavern.yaml: EDEVICE with
 * its errorType and errorCode), a run that is gone (404 RunNotFound), and a server that closes
 * its connection after every answer. */
static void test_replay_recorded(void **state)
{
    (void)state;
    for (int model = 0; model < 2; model++) {
        const char *url = fake_start();
        fake.health = model ? ot_rs_health_flex : ot_rs_health_ot2;
        fake.close_after = model == 1;
        lab_drv_kv_t kv[] = {{"driver", "opentrons", 2}, {"port", url, 3}, {"poll_s", "0", 4}};
        lab_driver_t *d = h_drv_open("fake", kv, sizeof kv / sizeof kv[0]);
        h_drv_wait_state(d, LAB_INST_IDLE);
        assert_string_equal(json_string_value(json_object_get(lab_driver_info(d), "robot_model")),
                            model ? "OT-3 Standard" : "OT-2 Standard");
        assert_string_equal(json_string_value(json_object_get(lab_driver_info(d), "firmware")),
                            model ? "0" : "Virtual Smoothie");
        json_decref(h_drv_call_ok(d, "home", NULL));
        assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
        /* the server's connection closes after each answer: never offline for it */
        json_decref(h_drv_call_ok(d, "pick_up_tips", NULL));
        lab_drv_error_t e;
        assert_null(
            h_drv_call(d, "aspirate", "{\"volume_ul\": 100, \"reagent\": \"substrate\"}", &e));
        assert_int_equal(e.code, LAB_EDEVICE);
        assert_string_equal(e.device_code, "TipNotAttachedError");
        assert_non_null(strstr(e.text, "errorCode 3005"));
        assert_non_null(strstr(e.text, "Pipette should have a tip attached"));
        assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
        /* the fake answers dispense with 404 RunNotFound: not enqueued, the run forgotten */
        assert_null(h_drv_call(d, "dispense", "{\"well\": \"A1\", \"volume_ul\": 1}", &e));
        assert_int_equal(e.code, LAB_EDEVICE);
        assert_string_equal(e.device_code, "RunNotFound");
        assert_true(e.not_started);
        json_decref(h_drv_call_ok(d, "home", NULL)); /* a new run, the deck loaded again */
        assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
        if (fake.fail)
            fail_msg("request %d: %s", fake.fail, fake.fail_why);
        /* what the driver asked, in order */
        const char *want[] = {
            "GET /health ",
            "POST /runs ",
            "POST /runs/9f3e5c1a-7d2b-4e47-9a0c-1f1d2b3c4d5e/commands?waitUntilComplete=true&"
            "timeout=3000 loadPipette",
            NULL,
        };
        for (int i = 0; want[i]; i++)
            if (strncmp(fake.seen[i], want[i], strlen(want[i])) != 0)
                fail_msg("request %d: '%s', expected '%s'", i + 1, fake.seen[i], want[i]);
        assert_non_null(strstr(fake.seen[6], "home"));
        assert_non_null(strstr(fake.seen[7], "pickUpTip"));
        assert_non_null(strstr(fake.seen[8], "aspirate"));
        assert_non_null(strstr(fake.seen[9], "dispense"));
        assert_non_null(strstr(fake.seen[10], "POST /runs "));
        h_drv_close(d);
        fake_stop();
    }
}

static void test_config(void **state)
{
    (void)state;
    static const struct {
        const char *key, *value;
    } bad[] = {
        {"port", "/dev/ttyUSB0"},  {"port", "tcp://"},  {"port", "tcp://a b:1"},
        {"pipette", "pipette300"}, {"mount", "middle"}, {"move_timeout_s", "0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lab_drv_kv_t kv[] = {{"driver", "opentrons", 2},
                             {"port", strcmp(bad[i].key, "port") ? url1 : bad[i].value, 3},
                             {bad[i].key, bad[i].value, 4}};
        size_t n = strcmp(bad[i].key, "port") ? 3 : 2;
        lab_drv_conf_t conf = {.id = "bad", .line = 1, .kv = kv, .n = n, .time_scale = 1};
        h_drv_problems_t p = {0};
        if (lab_driver_check(&conf, h_drv_on_conf_err, &p) != 1)
            fail_msg("%s = %s accepted", bad[i].key, bad[i].value);
        assert_string_equal(p.keys[0], bad[i].key);
    }
    /* A pipette with no known flow rates needs them given. */
    lab_drv_kv_t kv[] = {
        {"driver", "opentrons", 2}, {"port", url1, 3}, {"pipette", "p50_multi_flex", 4}};
    lab_drv_conf_t conf = {.id = "bad2", .line = 1, .kv = kv, .n = 3, .time_scale = 1};
    lab_driver_t *d = NULL;
    char err[256] = "";
    assert_int_not_equal(lab_driver_new(h_drv_loop(), &conf, h_drv_host(), &d, err, sizeof err), 0);
    assert_null(d);
    assert_non_null(strstr(err, "flow"));
}

static void test_all_released(void **state)
{
    (void)state;
    assert_true(h_drv_run_until(h_drv_loop_dead, NULL, 5000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_and_pipette),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_robot_errors),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_late_answer),
        cmocka_unit_test(test_server_timeout),
        cmocka_unit_test(test_flex_poll),
        cmocka_unit_test(test_replay_recorded),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_all_released),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
