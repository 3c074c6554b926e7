/* hamilton-star against labloop-sim's STAR: initialised on connection, then tips picked up, a
 * reagent aspirated from its trough and dispensed into wells with 8 channels and with one, tips
 * dropped, and the simulator's world checked for the volumes per well (its log names every
 * dispense: reagent, plate and well). Then bad params, an unknown action, a firmware error with
 * its code and text, garbage, silence, a vanished pty, and a reply that comes back after its
 * operation timed out (on a slow second instrument) while the next command is in flight: it must
 * not be taken for that command's reply. A STAR played by the test on a pty of its own checks the
 * frames against PyLabRobot's (C0TT first, C0TP, C0AS, C0TR: tests/harness/star_plr.h), the
 * C0AS/C0DS lists written for volumes per channel (0 sitting a channel out), the held
 * volumes per channel, and the refusals of a bad array, each naming the entry, with nothing sent.
 */
#include "drivers/driver.h"
#include "drivers/transport/transport_int.h"
#include "protocols/star.h"
#include "tests/harness/harness.h"
#include "tests/harness/star_plr.h"
#include "tests/harness/harness_drv.h"

#include <fcntl.h>
#include <pty.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <cmocka.h>
#include <libusb.h>

static h_sim_t sim;
static char dir[256], port1[300], port2[300];

/* ---- a STAR played by the test: records every frame, answers each with er00/00 ---- */

#define FAKE_FRAMES 32

static struct {
    int master, slave;
    char line[2048];
    size_t len;
    char frames[FAKE_FRAMES][2048];
    int n;
    int stale; /* first a reply with the previous id (an error), as a late one would come */
} fake = {.master = -1, .slave = -1};

static void fake_frame(void)
{
    static star_msg_t m;
    fake.line[fake.len] = '\0';
    if (fake.n < FAKE_FRAMES)
        snprintf(fake.frames[fake.n++], sizeof fake.frames[0], "%s", fake.line);
    assert_int_equal(star_parse(fake.line, fake.len, &m), LAB_OK);
    char out[64];
    star_builder_t b;
    if (fake.stale) {
        star_begin(&b, out, sizeof out, m.module, m.cmd, m.id ? m.id - 1 : 9999);
        star_error(&b, 8, 0);
        int k = star_end(&b, 1);
        assert_true(k > 0);
        assert_int_equal(write(fake.master, out, (size_t)k), k);
    }
    star_begin(&b, out, sizeof out, m.module, m.cmd, m.id);
    star_error(&b, 0, 0);
    int n = star_end(&b, 1);
    assert_true(n > 0);
    assert_int_equal(write(fake.master, out, (size_t)n), n);
    fake.len = 0;
}

static void fake_poll(void)
{
    char buf[1024];
    ssize_t n;
    while (fake.master >= 0 && (n = read(fake.master, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n')
                fake_frame();
            else if (buf[i] != '\r' && fake.len < sizeof fake.line - 1)
                fake.line[fake.len++] = buf[i];
        }
}

/* ---- setup ---- */

static int setup(void **state)
{
    (void)state;
    if (h_tempdir("drvstar", dir, sizeof dir))
        return -1;
    snprintf(port1, sizeof port1, "%s/star1", dir);
    snprintf(port2, sizeof port2, "%s/star2", dir);
    char ini[2048];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 20\nsim_seed = 4\n"
             "[instrument star1]\ndriver = hamilton-star\nport = %s\nsim_plate = P1\n"
             "sim_reagents = substrate,inhibitor,buffer\nsim_step_seconds = 1\n"
             "[instrument star2]\ndriver = hamilton-star\nport = %s\nsim_plate = P2\n"
             "sim_reagents = substrate\nsim_step_seconds = 50\n",
             port1, port2);
    if (h_sim_start(&sim, ini))
        return -1;
    if (h_drv_init(20))
        return -1;
    h_drv_set_pump(fake_poll);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_sim_stop(&sim);
    h_rmtree(dir);
    h_drv_fini();
    if (fake.master >= 0) {
        close(fake.master);
        close(fake.slave);
    }
    return 0;
}

static void fault(const char *id, const char *kind)
{
    assert_int_equal(h_sim_fault(&sim, id, kind, 0), 0);
}

static lab_driver_t *open_star1(void)
{
    lab_drv_kv_t kv[] = {{"driver", "hamilton-star", 2},
                         {"port", port1, 3},
                         {"reagents", "substrate, inhibitor,buffer", 4},
                         {"move_timeout_s", "4", 5},
                         {"timeout_ms", "300", 6},
                         {"sim_plate", "P1", 7}};
    return h_drv_open("star1", kv, sizeof kv / sizeof kv[0]);
}

/* The simulator's log line for one dispense. */
static int dispensed(const char *what)
{
    char path[600], line[1024];
    snprintf(path, sizeof path, "%s/sim.log", sim.dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "sim.star ") && strstr(line, what))
            n++;
    fclose(f);
    return n;
}

static void expect_err(lab_driver_t *d, const char *action, const char *params, int code)
{
    lab_drv_error_t e;
    json_t *r = h_drv_call(d, action, params, &e);
    if (r)
        fail_msg("%s %s succeeded", action, params ? params : "");
    if (e.code != code)
        fail_msg("%s %s: %s (%s), expected %s", action, params ? params : "",
                 lab_err_json_name(e.code), e.text, lab_err_json_name(code));
    /* refused by the driver before a byte was sent: it says so, so the command may be repeated;
     * offline is refused by the framework, before the driver */
    if ((code == LAB_ESTATE || code == LAB_EINVAL) && !e.not_started)
        fail_msg("%s %s: %s, not marked as never started", action, params ? params : "",
                 lab_err_json_name(e.code));
}

static void test_pipetting(void **state)
{
    (void)state;
    lab_driver_t *d = open_star1();
    h_drv_wait_state(d, LAB_INST_IDLE);
    json_t *r = h_drv_call_ok(d, "status", NULL);
    assert_true(json_is_true(json_object_get(r, "initialized")));
    assert_int_equal(json_array_size(json_object_get(r, "tips")), 8);
    json_decref(r);

    /* 8 channels: substrate from trough column 0 into A1..H1, then channel 3 alone into A2 */
    r = h_drv_call_ok(d, "pick_up_tips", "{\"channels\": 8}");
    assert_int_equal((int)h_drv_num(r, "column"), 1);
    assert_int_equal(json_array_size(json_object_get(r, "channels")), 8);
    json_decref(r);
    r = h_drv_call_ok(d, "aspirate", "{\"volume_ul\": 20, \"reagent\": \"substrate\"}");
    assert_int_equal(json_array_size(json_object_get(r, "channels")), 8);
    json_decref(r);
    json_decref(h_drv_call_ok(d, "dispense", "{\"well\": \"A1\", \"volume_ul\": 10}"));
    json_decref(
        h_drv_call_ok(d, "dispense", "{\"well\": \"a2\", \"volume_ul\": 5, \"channel\": 3}"));
    r = h_drv_call_ok(d, "status", NULL);
    json_t *held = json_object_get(r, "held_ul");
    assert_true(json_number_value(json_array_get(held, 0)) == 10);
    assert_true(json_number_value(json_array_get(held, 2)) == 5);
    json_decref(r);
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    /* one channel: inhibitor (trough column 1) into C5, tips from the next rack column */
    r = h_drv_call_ok(d, "pick_up_tips", NULL); /* one channel by default */
    assert_int_equal((int)h_drv_num(r, "column"), 2);
    json_decref(r);
    json_decref(h_drv_call_ok(d, "aspirate", "{\"volume_ul\": 7.5, \"reagent\": \"inhibitor\"}"));
    json_decref(h_drv_call_ok(d, "dispense", "{\"well\": \"C5\", \"volume_ul\": 7.5}"));
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    r = h_drv_call_ok(d, "status", NULL);
    held = json_object_get(r, "held_ul");
    for (size_t i = 0; i < 8; i++) {
        assert_true(json_number_value(json_array_get(held, i)) == 0);
        assert_false(json_is_true(json_array_get(json_object_get(r, "tips"), i)));
    }
    json_decref(r);

    /* the simulator's world: what went into which well */
    const char *rows = "ABCDEFGH";
    for (int i = 0; i < 8; i++) {
        char what[64];
        snprintf(what, sizeof what, "dispense 10.0 uL substrate into P1 %c1\n", rows[i]);
        assert_int_equal(dispensed(what), 1);
    }
    assert_int_equal(dispensed("dispense 5.0 uL substrate into P1 A2\n"), 1);
    assert_int_equal(dispensed("dispense 7.5 uL inhibitor into P1 C5\n"), 1);
    assert_int_equal(dispensed("dispense"), 10);
    h_drv_close(d);
}

static void test_refusals(void **state)
{
    (void)state;
    lab_driver_t *d = open_star1();
    h_drv_wait_state(d, LAB_INST_IDLE);
    const char *bad[][2] = {
        {"aspirate", "{}"},
        {"aspirate", "{\"volume_ul\": 10, \"reagent\": \"substrate\", \"well\": \"A1\"}"},
        {"aspirate", "{\"volume_ul\": 1001, \"reagent\": \"substrate\"}"},
        {"dispense", "{\"well\": \"Z9\", \"volume_ul\": 1}"},
        {"dispense", "{\"well\": \"A1\", \"volume_ul\": 0}"},
        {"dispense", "{\"well\": \"A1\", \"volume_ul\": 1, \"channel\": 17}"},
        {"pick_up_tips", "{\"column\": 0}"},
        {"drop_tips", "{\"now\": true}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *p = json_loads(bad[i][1], 0, NULL), *problems = NULL;
        lab_drv_error_t e;
        if (lab_driver_call(d, bad[i][0], p, 0, h_drv_on_done, NULL, &e, &problems) == 0)
            fail_msg("%s %s accepted", bad[i][0], bad[i][1]);
        assert_int_equal(e.code, LAB_EINVAL);
        assert_true(json_array_size(problems) >= 1);
        json_decref(problems);
        json_decref(p);
    }
    lab_drv_error_t e;
    assert_int_not_equal(lab_driver_call(d, "shake", NULL, 0, h_drv_on_done, NULL, &e, NULL), 0);
    assert_int_equal(e.code, LAB_ENOACTION);
    /* refused by the driver, nothing sent: no tips, a well off the plate, an unknown reagent */
    expect_err(d, "aspirate", "{\"volume_ul\": 5, \"reagent\": \"substrate\"}", LAB_ESTATE);
    expect_err(d, "dispense", "{\"well\": \"M1\", \"volume_ul\": 5, \"channel\": 1}", LAB_EINVAL);
    expect_err(d, "aspirate", "{\"volume_ul\": 5, \"reagent\": \"acid\", \"channel\": 1}",
               LAB_EINVAL);
    json_decref(h_drv_call_ok(d, "pick_up_tips", "{\"channels\": 8}"));
    expect_err(d, "pick_up_tips", NULL, LAB_ESTATE);
    /* 8 channels from row F would run off the plate */
    expect_err(d, "aspirate", "{\"volume_ul\": 5, \"well\": \"F1\"}", LAB_EINVAL);
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
    assert_int_equal(dispensed("dispense"), 10); /* nothing more than test_pipetting's */
    h_drv_close(d);
}

static void test_faults(void **state)
{
    (void)state;
    lab_driver_t *d = open_star1();
    h_drv_wait_state(d, LAB_INST_IDLE);
    lab_drv_error_t e;

    /* a firmware error: er08/00 with the master table's text; nothing picked up */
    fault("star1", "error");
    assert_null(h_drv_call(d, "pick_up_tips", NULL, &e));
    assert_int_equal(e.code, LAB_EDEVICE);
    assert_string_equal(e.device_code, "er08/00");
    assert_non_null(strstr(e.text, "No tips"));
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
    json_decref(h_drv_call_ok(d, "pick_up_tips", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* garbage before the reply: a protocol error, then the next command works */
    fault("star1", "garbage");
    assert_null(h_drv_call(d, "drop_tips", NULL, &e));
    assert_int_equal(e.code, LAB_EPROTO);
    assert_false(e.not_started); /* sent: it may have moved */
    assert_non_null(strstr(e.text, "\\x"));
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* silence: a timeout; answers again after clear */
    fault("star1", "timeout");
    assert_null(h_drv_call(d, "pick_up_tips", NULL, &e));
    assert_int_equal(e.code, LAB_ETIMEDOUT);
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
    fault("star1", "clear");
    json_decref(h_drv_call_ok(d, "pick_up_tips", NULL));
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* the pty goes away: offline, refused; back, initialised again, and working */
    fault("star1", "disconnect");
    h_drv_wait_state(d, LAB_INST_OFFLINE);
    expect_err(d, "pick_up_tips", NULL, LAB_EOFFLINE);
    fault("star1", "clear");
    h_drv_wait_state(d, LAB_INST_IDLE);
    json_decref(h_drv_call_ok(d, "pick_up_tips", "{\"channels\": 2}"));
    json_decref(h_drv_call_ok(d, "aspirate", "{\"volume_ul\": 3, \"reagent\": \"buffer\"}"));
    json_decref(h_drv_call_ok(d, "dispense", "{\"well\": \"D12\", \"volume_ul\": 3}"));
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    assert_int_equal(dispensed("dispense 3.0 uL buffer into P1 D12\n"), 1);
    assert_int_equal(dispensed("dispense 3.0 uL buffer into P1 E12\n"), 1);
    h_drv_close(d);
}

/* star2 answers 2.5 s after each command (sim_seed 4 makes it send the stale reply first, while
 * the next command waits; the other order passes as well): an operation given less (the framework's
 * floor is 2 s) times out, and its reply arrives while the next command is in flight. That next
 * command is answered with an injected error: taking the stale (successful) reply for it would end
 * it in success. */
static void test_late_reply(void **state)
{
    (void)state;
    lab_drv_kv_t kv[] = {{"driver", "hamilton-star", 2}, {"port", port2, 3}};
    lab_driver_t *d = h_drv_open("star2", kv, sizeof kv / sizeof kv[0]);
    h_drv_wait_state(d, LAB_INST_IDLE);
    h_drv_call_t c = {0};
    lab_drv_error_t e;
    assert_int_equal(lab_driver_call(d, "pick_up_tips", NULL, 0.5, h_drv_on_done, &c, &e, NULL), 0);
    assert_true(h_drv_run_until(h_drv_call_done, &c, 10000));
    assert_int_equal(c.err.code, LAB_ETIMEDOUT);
    json_decref(c.result);
    fault("star2", "error");
    assert_null(h_drv_call(d, "drop_tips", NULL, &e));
    assert_int_equal(e.code, LAB_EDEVICE);
    assert_string_equal(e.device_code, "er08/00");
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
    h_drv_close(d);
}

/* The refusal of params the driver judges (nothing is sent); its text holds needle. */
static void expect_refusal(lab_driver_t *d, const char *action, const char *params,
                           const char *needle)
{
    int frames = fake.n;
    lab_drv_error_t e;
    json_t *r = h_drv_call(d, action, params, &e);
    if (r)
        fail_msg("%s %s succeeded", action, params);
    if (e.code != LAB_EINVAL || !strstr(e.text, needle))
        fail_msg("%s %s: %s \"%s\", expected EPARAM naming \"%s\"", action, params,
                 lab_err_json_name(e.code), e.text, needle);
    assert_int_equal(fake.n, frames);
}

/* The values of one per-channel parameter of a frame, joined by spaces. */
static void frame_list(const char *frame, const char *name, char *out, size_t cap)
{
    static star_msg_t m;
    long v[16];
    size_t n = 0, used = 0;
    assert_int_equal(star_parse(frame, strlen(frame), &m), LAB_OK);
    assert_int_equal(star_param_list(&m, name, v, 16, &n), LAB_OK);
    out[0] = '\0';
    for (size_t i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%ld", i ? " " : "", v[i]);
}

static void held_is(lab_driver_t *d, const double *want)
{
    json_t *r = h_drv_call_ok(d, "status", NULL);
    json_t *held = json_object_get(r, "held_ul");
    for (size_t i = 0; i < 8; i++)
        if (json_number_value(json_array_get(held, i)) != want[i])
            fail_msg("channel %zu holds %g uL, expected %g", i + 1,
                     json_number_value(json_array_get(held, i)), want[i]);
    json_decref(r);
}

/* A fresh pty for the test's own STAR; returns its path. */
static const char *fake_open(void)
{
    static char path[128];
    if (fake.master >= 0) {
        close(fake.master);
        close(fake.slave);
    }
    fake.n = 0;
    fake.len = 0;
    assert_int_equal(openpty(&fake.master, &fake.slave, NULL, NULL, NULL), 0);
    struct termios t;
    tcgetattr(fake.slave, &t);
    cfmakeraw(&t);
    tcsetattr(fake.slave, TCSANOW, &t);
    fcntl(fake.master, F_SETFL, fcntl(fake.master, F_GETFL) | O_NONBLOCK);
    snprintf(path, sizeof path, "%s", ttyname(fake.slave));
    return path;
}

/* frame is golden but for its id (which counts the commands of this connection). */
static void same_but_id(const char *frame, const char *golden)
{
    assert_true(strlen(frame) > 10 && strncmp(frame, golden, 6) == 0);
    assert_string_equal(frame + 10, golden + 10);
}

/* The driver's frames against PyLabRobot's for the same deck (tests/harness/star_plr.h): the tip
 * type defined first (C0TT, PyLabRobot's first command too, so with its id), C0DI heights begin
 * above end, two tips picked up (test_tip_pickup_01), 107.2 uL aspirated from A1 and B1
 * (test_multi_channel_aspiration), and eight tips discarded into the waste (test_discard_tips). */
static void test_plr_frames(void **state)
{
    (void)state;
    lab_drv_kv_t kv[] = {{"driver", "hamilton-star", 2}, {"port", fake_open(), 3},
                         {"tip_a1_x", "1179", 4},        {"tip_a1_y", "2418", 5},
                         {"waste_y", "3427", 6},         {"plate_a1_x", "2983", 7},
                         {"plate_a1_y", "1457", 8}};
    lab_driver_t *d = h_drv_open("plr", kv, sizeof kv / sizeof kv[0]);
    h_drv_wait_state(d, LAB_INST_IDLE);
    assert_int_equal(fake.n, 2);
    assert_string_equal(fake.frames[0], PLR_TT);
    /* initialize_pip's layout and heights (PLR_DI) on this deck's waste, tip type 01 */
    assert_string_equal(fake.frames[1], "C0DIid0002xp08000&yp3427 3337 3247 3157 3067 2977 2887 "
                                        "2797tp2450tz1220te3600tm1 1 1 1 1 1 1 1tt01ti0");
    json_decref(h_drv_call_ok(d, "pick_up_tips", "{\"channels\": 2}"));
    same_but_id(fake.frames[2], PLR_TP_01);
    json_decref(h_drv_call_ok(d, "aspirate", "{\"volume_ul\": 107.2, \"well\": \"A1\"}"));
    same_but_id(fake.frames[3], PLR_AS_2);
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    /* test_discard_tips' heights, PyLabRobot's layout for two channels */
    assert_string_equal(fake.frames[4], "C0TRid0005xp08000 08000 00000&yp3427 3337 0000&tm1 1 0&"
                                        "tp1970tz1870th2450te2450ti0");
    json_decref(h_drv_call_ok(d, "pick_up_tips", "{\"channels\": 8}"));
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    assert_int_equal(fake.n, 7);
    same_but_id(fake.frames[6], PLR_TR_WASTE);

    /* initialize defines the tip type again before C0DI (a reset STAR forgot it) */
    json_decref(h_drv_call_ok(d, "initialize", NULL));
    assert_int_equal(fake.n, 9);
    same_but_id(fake.frames[7], PLR_TT);
    assert_true(strncmp(fake.frames[8], "C0DIid0009", 10) == 0);

    /* a reply with an earlier id (er08/00) ahead of the right one is not this command's */
    fake.stale = 1;
    json_t *r = h_drv_call_ok(d, "pick_up_tips", NULL);
    fake.stale = 0;
    assert_int_equal(fake.n, 10);
    json_decref(r);
    h_drv_close(d);
}

/* Volumes per channel: channels sitting out have tm 0, xp/yp 0 and the first acting channel's
 * other values, as PyLabRobot lays lists out; the lists run one entry past the last acting
 * channel. */
static void test_per_channel_frames(void **state)
{
    (void)state;
    lab_drv_kv_t kv[] = {{"driver", "hamilton-star", 2}, {"port", fake_open(), 3}};
    lab_driver_t *d = h_drv_open("fake", kv, sizeof kv / sizeof kv[0]);
    h_drv_wait_state(d, LAB_INST_IDLE);
    assert_int_equal(fake.n, 2);
    assert_true(strncmp(fake.frames[0], "C0TTid0001", 10) == 0);
    assert_true(strncmp(fake.frames[1], "C0DIid0002", 10) == 0);
    json_decref(h_drv_call_ok(d, "pick_up_tips", "{\"channels\": 4}"));
    assert_int_equal(fake.n, 3);

    json_t *r = h_drv_call_ok(d, "aspirate",
                              "{\"volume_ul\": [100, 50, 0, 25.5], \"reagent\": "
                              "\"substrate\"}");
    assert_int_equal(fake.n, 4);
    char got[128];
    const char *f = fake.frames[3];
    assert_true(strncmp(f, "C0ASid0004", 10) == 0);
    frame_list(f, "tm", got, sizeof got);
    assert_string_equal(got, "1 1 0 1 0");
    frame_list(f, "xp", got, sizeof got);
    assert_string_equal(got, "1000 1000 0 1000 0");
    frame_list(f, "yp", got, sizeof got);
    assert_string_equal(got, "1000 910 0 730 0");
    frame_list(f, "av", got, sizeof got);
    assert_string_equal(got, "1000 500 1000 255 1000");
    assert_non_null(strstr(f, "ld00 00 00 00 00&"));
    /* the result: the first acting channel's volume, and every channel's */
    assert_true(h_drv_num(r, "volume_ul") == 100);
    json_t *vols = json_object_get(r, "volumes_ul");
    assert_int_equal(json_array_size(vols), 8);
    const double want[8] = {100, 50, 0, 25.5, 0, 0, 0, 0};
    for (size_t i = 0; i < 8; i++)
        assert_true(json_number_value(json_array_get(vols, i)) == want[i]);
    json_t *chs = json_object_get(r, "channels");
    assert_int_equal(json_array_size(chs), 3);
    assert_int_equal(json_integer_value(json_array_get(chs, 2)), 4);
    json_decref(r);
    held_is(d, want);

    json_decref(h_drv_call_ok(d, "dispense", "{\"well\": \"B3\", \"volume_ul\": [100, 50, 0, 0]}"));
    assert_int_equal(fake.n, 5);
    f = fake.frames[4];
    frame_list(f, "tm", got, sizeof got);
    assert_string_equal(got, "1 1 0");
    frame_list(f, "xp", got, sizeof got);
    assert_string_equal(got, "1180 1180 0");
    frame_list(f, "dv", got, sizeof got);
    assert_string_equal(got, "1000 500 1000");
    held_is(d, (const double[8]){0, 0, 0, 25.5, 0, 0, 0, 0});

    /* channel 4 alone into E4 (its row below B4) */
    r = h_drv_call_ok(d, "dispense", "{\"well\": \"B4\", \"volume_ul\": [0, 0, 0, 25.5]}");
    assert_true(h_drv_num(r, "volume_ul") == 25.5);
    json_decref(r);
    assert_int_equal(fake.n, 6);
    f = fake.frames[5];
    assert_true(strncmp(f, "C0DSid0006", 10) == 0);
    frame_list(f, "tm", got, sizeof got);
    assert_string_equal(got, "0 0 0 1 0");
    frame_list(f, "dv", got, sizeof got);
    assert_string_equal(got, "255 255 255 255 255");
    frame_list(f, "xp", got, sizeof got);
    assert_string_equal(got, "0 0 0 1270 0");
    frame_list(f, "yp", got, sizeof got);
    assert_string_equal(got, "0 0 0 2640 0");
    held_is(d, (const double[8]){0});

    /* refused before anything is sent, each naming the entry at fault */
    const char *as = "aspirate";
    expect_refusal(d, as, "{\"volume_ul\": [0, 0, 0, 0], \"reagent\": \"buffer\"}",
                   "every entry is 0");
    expect_refusal(d, as, "{\"volume_ul\": [1, 2, 3, 4, 5], \"reagent\": \"buffer\"}",
                   "params/volume_ul/4: one entry too many");
    expect_refusal(d, as, "{\"volume_ul\": [1, 2, 3], \"reagent\": \"buffer\"}",
                   "channel 4 has none");
    expect_refusal(d, as, "{\"volume_ul\": [-1, 2, 3, 4], \"reagent\": \"buffer\"}",
                   "params/volume_ul/0: must be >= 0");
    expect_refusal(d, as, "{\"volume_ul\": [1, 1000.5, 3, 4], \"reagent\": \"buffer\"}",
                   "params/volume_ul/1: must be <= 1000");
    expect_refusal(d, as, "{\"volume_ul\": [1, 2, \"3\", 4], \"reagent\": \"buffer\"}",
                   "params/volume_ul/2: expected number");
    expect_refusal(d, as,
                   "{\"volume_ul\": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1], \"reagent\": \"buffer\"}",
                   "params/volume_ul: must have at most 16 items");
    expect_refusal(d, as, "{\"volume_ul\": [1, 0.01, 0, 4], \"reagent\": \"buffer\"}",
                   "params/volume_ul/1 (channel 2): 0.01 uL is below");
    expect_refusal(d, "dispense", "{\"well\": \"A1\", \"volume_ul\": [5], \"channel\": 2}",
                   "with channel, give one number");
    /* from G1 channel 3 (acting) would reach row 9, off the plate */
    expect_refusal(d, "dispense", "{\"well\": \"G1\", \"volume_ul\": [1, 1, 1, 0]}",
                   "channel 3 would reach row 9");

    /* one number: every channel with a tip, as before */
    json_decref(h_drv_call_ok(d, "aspirate", "{\"volume_ul\": 5, \"reagent\": \"buffer\"}"));
    /* channel 4 sits out: the lists end at channel 3 (E1, F1, G1) */
    json_decref(h_drv_call_ok(d, "dispense", "{\"well\": \"E1\", \"volume_ul\": [0, 5, 5, 0]}"));
    f = fake.frames[fake.n - 1];
    frame_list(f, "yp", got, sizeof got);
    assert_string_equal(got, "0 2550 2460 0");
    json_decref(h_drv_call_ok(d, "dispense", "{\"well\": \"A5\", \"volume_ul\": 5}"));
    f = fake.frames[fake.n - 1];
    frame_list(f, "tm", got, sizeof got);
    assert_string_equal(got, "1 1 1 1 0");
    frame_list(f, "dv", got, sizeof got);
    assert_string_equal(got, "50 50 50 50 50");
    held_is(d, (const double[8]){0, 0, 0, 0});
    json_decref(h_drv_call_ok(d, "drop_tips", NULL));
    h_drv_close(d);
}

/* ---- FAKE_USB: a STAR on a fake USB bus behind usb.c's seam (lab_usb_api_t) ----
 * It answers each bulk OUT transfer (one command) with one reply, er00/00, by bulk IN. What it
 * proves is the driver's framing on usb (no terminator, one message per transfer) and its
 * offline/online cycle, not a real STAR's USB behaviour. */

static struct {
    uv_mutex_t mu;
    uv_cond_t cv;
    int present;
    char out[FAKE_FRAMES][2048];
    int out_len[FAKE_FRAMES], n_out;
    char reply[8][64];
    int reply_len[8], n_reply;
} usbf;

static int usbf_open(const lab_usb_match_t *m, void **dev, lab_usb_eps_t *eps, char *why, size_t wn)
{
    uv_mutex_lock(&usbf.mu);
    int present = usbf.present;
    uv_mutex_unlock(&usbf.mu);
    if (!present) {
        snprintf(why, wn, "no USB device %04x:%04x on the fake bus", m->vid, m->pid);
        return LIBUSB_ERROR_NOT_FOUND;
    }
    *eps = (lab_usb_eps_t){0x81, 0x02, 64, 64};
    *dev = &usbf;
    return 0;
}

static void usbf_close(void *dev)
{
    (void)dev;
}

static int usbf_bulk(void *dev, unsigned char ep, uint8_t *data, int len, int *done,
                     unsigned timeout_ms)
{
    (void)dev;
    *done = 0;
    int rc = 0;
    uv_mutex_lock(&usbf.mu);
    if (!usbf.present) {
        rc = LIBUSB_ERROR_NO_DEVICE;
    } else if (ep == 0x02) {
        static star_msg_t m;
        *done = len;
        if (len > 0 && usbf.n_out < FAKE_FRAMES && len < (int)sizeof usbf.out[0]) {
            memcpy(usbf.out[usbf.n_out], data, (size_t)len);
            usbf.out[usbf.n_out][len] = '\0';
            usbf.out_len[usbf.n_out++] = len;
        }
        if (len > 0 && star_parse((const char *)data, (size_t)len, &m) == LAB_OK &&
            usbf.n_reply < 8) {
            star_builder_t b;
            star_begin(&b, usbf.reply[usbf.n_reply], sizeof usbf.reply[0], m.module, m.cmd, m.id);
            star_error(&b, 0, 0);
            usbf.reply_len[usbf.n_reply] = star_end(&b, 0);
            usbf.n_reply++;
            uv_cond_broadcast(&usbf.cv);
        }
    } else {
        uint64_t until = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
        while (usbf.present && !usbf.n_reply && uv_hrtime() < until)
            uv_cond_timedwait(&usbf.cv, &usbf.mu, until - uv_hrtime());
        if (!usbf.present) {
            rc = LIBUSB_ERROR_NO_DEVICE;
        } else if (!usbf.n_reply) {
            rc = LIBUSB_ERROR_TIMEOUT;
        } else {
            *done = usbf.reply_len[0] < len ? usbf.reply_len[0] : len;
            memcpy(data, usbf.reply[0], (size_t)*done);
            memmove(usbf.reply[0], usbf.reply[1],
                    sizeof usbf.reply[0] * (size_t)(usbf.n_reply - 1));
            memmove(usbf.reply_len, usbf.reply_len + 1, sizeof(int) * (size_t)(usbf.n_reply - 1));
            usbf.n_reply--;
        }
    }
    uv_mutex_unlock(&usbf.mu);
    return rc;
}

static const lab_usb_api_t usbf_api = {usbf_open, usbf_bulk, usbf_close};

static void usbf_present(int on)
{
    uv_mutex_lock(&usbf.mu);
    usbf.present = on;
    uv_cond_broadcast(&usbf.cv);
    uv_mutex_unlock(&usbf.mu);
}

static int usbf_outs(void)
{
    uv_mutex_lock(&usbf.mu);
    int n = usbf.n_out;
    uv_mutex_unlock(&usbf.mu);
    return n;
}

/* The STAR on usb://08af:8000 (FAKE_USB): C0TT, C0DI and every later command each one bulk
 * transfer without CR LF; unplugged, offline with the reason; back, initialised again. */
static void test_usb_fake(void **state)
{
    (void)state;
    uv_mutex_init(&usbf.mu);
    uv_cond_init(&usbf.cv);
    usbf_present(1);
    lab_usb_api_set(&usbf_api);
    lab_drv_kv_t kv[] = {{"driver", "hamilton-star", 2}, {"port", "usb://08af:8000", 3}};
    lab_driver_t *d = h_drv_open("usbstar", kv, sizeof kv / sizeof kv[0]);
    h_drv_wait_state(d, LAB_INST_IDLE);
    assert_int_equal(usbf_outs(), 2);
    assert_string_equal(usbf.out[0], PLR_TT); /* exactly PyLabRobot's bytes: no terminator */
    assert_int_equal(usbf.out_len[0], (int)strlen(PLR_TT));
    assert_true(strncmp(usbf.out[1], "C0DIid0002", 10) == 0);
    json_decref(h_drv_call_ok(d, "pick_up_tips", "{\"channels\": 2}"));
    assert_int_equal(usbf_outs(), 3);
    for (int i = 0; i < 3; i++)
        assert_null(memchr(usbf.out[i], '\r', (size_t)usbf.out_len[i]));

    usbf_present(0);
    h_drv_wait_state(d, LAB_INST_OFFLINE);
    const lab_drv_error_t *e = lab_driver_last_error(d);
    if (!strstr(e->text, "USB 08af:8000") || !strstr(e->text, "unplugged"))
        fail_msg("offline reason: %s", e->text);
    usbf_present(1);
    h_drv_wait_state(d, LAB_INST_IDLE);
    int n = usbf_outs();
    assert_true(n >= 5);
    same_but_id(usbf.out[n - 2], PLR_TT); /* the tip type again on the new connection */
    assert_true(strncmp(usbf.out[n - 1], "C0DI", 4) == 0);
    h_drv_close(d);
    lab_usb_api_set(NULL);
}

static void test_config(void **state)
{
    (void)state;
    lab_drv_kv_t kv[] = {
        {"driver", "hamilton-star", 2}, {"channels", "17", 3}, {"plate_wells", "48", 4}};
    lab_drv_conf_t conf = {.id = "bad", .line = 1, .kv = kv, .n = 3, .time_scale = 1};
    h_drv_problems_t p = {0};
    assert_int_equal(lab_driver_check(&conf, h_drv_on_conf_err, &p), 3); /* port, channels, wells */
    lab_drv_kv_t kv2[] = {
        {"driver", "hamilton-star", 2}, {"port", port1, 3}, {"reagents", "water,water", 4}};
    lab_drv_conf_t conf2 = {.id = "bad2", .line = 1, .kv = kv2, .n = 3, .time_scale = 1};
    p.n = 0;
    assert_int_equal(lab_driver_check(&conf2, h_drv_on_conf_err, &p), 0);
    lab_driver_t *d = NULL;
    char err[256] = "";
    assert_int_not_equal(lab_driver_new(h_drv_loop(), &conf2, h_drv_host(), &d, err, sizeof err),
                         0);
    assert_null(d);
    assert_non_null(strstr(err, "water"));
}

/* Every driver closed above: nothing of theirs (timers, transports) is left open. */
static void test_all_released(void **state)
{
    (void)state;
    assert_true(h_drv_run_until(h_drv_loop_dead, NULL, 5000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipetting),    cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_faults),       cmocka_unit_test(test_late_reply),
        cmocka_unit_test(test_plr_frames),   cmocka_unit_test(test_per_channel_frames),
        cmocka_unit_test(test_usb_fake),     cmocka_unit_test(test_config),
        cmocka_unit_test(test_all_released),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
