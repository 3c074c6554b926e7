/* The serial stream-driver base (drivers/stream.h) against a device played by the test on a
 * real pty, and misbehaving on purpose: it answers out of turn, echoes the command, sends noise
 * before the reply, answers after the timeout, answers the connect sequence out of step. The
 * driver here is the smallest one the base allows: "HI" -> "OK" to connect, "Q<n>" -> "A<n>"
 * per operation, so a reply taken for the wrong command shows as a wrong number (counted in
 * mispaired, which must stay 0). After every fault the driver must resynchronise (the device
 * sees "HI" again) and the next command must succeed. */
#include "drivers/driver.h"
#include "drivers/stream.h"
#include "protocols/proto.h"
#include "tests/harness/harness.h"
#include "tests/harness/harness_drv.h"

#include <fcntl.h>
#include <pty.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- the driver ---- */

typedef struct tdrv {
    lab_stream_t st;
    long n; /* the number asked */
} tdrv_t;

static int mispaired; /* a reply with another command's number was taken */

static void t_begin(lab_stream_t *s, lab_stream_owner_t owner)
{
    tdrv_t *p = lab_drv_priv(lab_stream_driver(s));
    char buf[32];
    int n = owner == LAB_STREAM_CONNECT ? snprintf(buf, sizeof buf, "HI\r")
                                        : snprintf(buf, sizeof buf, "Q%ld\r", p->n);
    lab_stream_send(s, buf, (size_t)n, 0);
}

static void t_reply(lab_stream_t *s, const char *line, size_t len)
{
    tdrv_t *p = lab_drv_priv(lab_stream_driver(s));
    bool connect = strcmp(lab_stream_sent(s), "HI") == 0;
    if (connect) {
        if (len == 2 && memcmp(line, "OK", 2) == 0)
            lab_stream_end(s, NULL);
        else
            lab_stream_unexpected(s, line, len, "OK");
        return;
    }
    char *end = NULL;
    long got = len > 1 && line[0] == 'A' ? strtol(line + 1, &end, 10) : -1;
    if (got < 0 || end != line + len) {
        lab_stream_unexpected(s, line, len, "A<n>");
        return;
    }
    if (got != p->n) {
        mispaired++;
        lab_stream_unexpected(s, line, len, "the same number");
        return;
    }
    lab_stream_end(s, NULL);
}

static void t_end(lab_stream_t *s, lab_stream_owner_t owner, const lab_drv_error_t *err)
{
    lab_driver_t *d = lab_stream_driver(s);
    tdrv_t *p = lab_drv_priv(d);
    if (owner == LAB_STREAM_CONNECT) {
        if (!err)
            lab_drv_set_state(d, LAB_INST_IDLE, NULL);
        return;
    }
    json_t *r = json_object();
    json_object_set_new(r, "n", json_integer(p->n));
    lab_drv_done(d, err, err ? NULL : r);
    if (err)
        json_decref(r);
}

/* With lines = checked: a line that starts with '#' is garbage by the driver's word. */
static void t_line(lab_stream_t *s, const char *line, size_t len)
{
    if (len > 0 && line[0] == '#')
        lab_stream_garbage(s, line, len, "a comment, not a reply");
    else
        lab_stream_reply(s, line, len);
}

/* Replies are lines: the base's line framer (no feed), every line a reply or checked first. */
static const lab_stream_ops_t t_stream_ops = {.begin = t_begin, .reply = t_reply, .end = t_end};
static const lab_stream_ops_t t_checked_ops = {
    .line = t_line, .begin = t_begin, .reply = t_reply, .end = t_end};

static int t_open(lab_driver_t *d, char *err, size_t errlen)
{
    tdrv_t *p = lab_drv_priv(d);
    lab_stream_conf_t conf = {.tag = "tstream",
                              .reply_ms = 300,
                              .quiet_ms = 400,
                              .retry_ms = 300,
                              .break_ms = 0,
                              .skip_echo = lab_drv_enum(d, "echo") == 1};
    bool checked = lab_drv_enum(d, "lines") == 1;
    return lab_stream_init(&p->st, d, checked ? &t_checked_ops : &t_stream_ops, &conf, err, errlen);
}

static void t_start(lab_driver_t *d)
{
    lab_stream_start(&((tdrv_t *)lab_drv_priv(d))->st);
}

static void t_stop(lab_driver_t *d)
{
    lab_stream_stop(&((tdrv_t *)lab_drv_priv(d))->st);
}

static void t_close(lab_driver_t *d)
{
    lab_stream_close(&((tdrv_t *)lab_drv_priv(d))->st);
}

static void t_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    (void)a;
    tdrv_t *p = lab_drv_priv(d);
    p->n = (long)json_integer_value(json_object_get(params, "n"));
    if (p->n == 0) {
        lab_drv_error_t e;
        lab_stream_refuse(&p->st, lab_drv_error_set(&e, LAB_EINVAL, NULL, "n: 0 refused"));
        return;
    }
    lab_stream_run(&p->st);
}

static void t_abort(lab_driver_t *d)
{
    lab_stream_abort(&((tdrv_t *)lab_drv_priv(d))->st);
}

static const lab_drv_key_t t_keys[] = {
    LAB_DRV_SERIAL_KEYS("9600", "8", "none", "1", "none"),
    {"echo", LAB_DRV_KEY_ENUM, "strict", 0, 0, "strict|skip", 0, "an echoed command"},
    {"lines", LAB_DRV_KEY_ENUM, "plain", 0, 0, "plain|checked", 0, "every line a reply or checked"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

static const lab_drv_action_t t_actions[] = {
    {"ask",
     "{\"type\":\"object\",\"required\":[\"n\"],\"properties\":{\"n\":{\"type\":\"integer\","
     "\"minimum\":0}}}",
     30, 0, "Q<n>, answered A<n>"},
    {NULL, NULL, 0, 0, NULL},
};

static const lab_driver_ops_t t_ops = {
    .name = "test-stream",
    .kind = "test",
    .model = "test",
    .keys = t_keys,
    .actions = t_actions,
    .priv_size = sizeof(tdrv_t),
    .open = t_open,
    .start = t_start,
    .stop = t_stop,
    .close = t_close,
    .invoke = t_invoke,
    .abort = t_abort,
};

/* ---- the device ---- */

typedef enum dev_mode {
    DEV_GOOD,
    DEV_OUT_OF_TURN, /* every reply sent twice: the second arrives when nothing waits */
    DEV_HALF_SPARE,  /* every reply followed by half a spare one, ended by the next command */
    DEV_ECHO,        /* the command echoed before the reply */
    DEV_NOISE,       /* bytes that are not the protocol before the reply */
    DEV_SILENT,      /* Q unanswered (the test answers late itself) */
    DEV_DEAD,        /* nothing answered */
    DEV_HI_TWICE,    /* the connect command answered "A1" then "OK": out of step */
    DEV_COMMENT,     /* a line "#..." before the reply */
    DEV_LONG,        /* a reply longer than the line framer holds */
} dev_mode_t;

static struct {
    int master, slave;
    char path[128];
    char line[256];
    size_t len;
    dev_mode_t mode;
    bool chatter; /* a byte on every poll: the line is never quiet */
    int hi, q;    /* commands seen */
} dev = {.master = -1, .slave = -1};

static void dev_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void dev_send(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    assert_int_equal(write(dev.master, buf, (size_t)n), n);
}

static void dev_command(const char *c)
{
    if (dev.mode == DEV_DEAD) {
        dev.q += c[0] == 'Q';
        return;
    }
    if (strcmp(c, "HI") == 0) {
        dev.hi++;
        if (dev.mode == DEV_HI_TWICE) {
            dev.mode = DEV_GOOD;
            dev_send("A1\r\n");
        }
        dev_send("OK\r\n");
        return;
    }
    if (c[0] != 'Q')
        return;
    dev.q++;
    switch (dev.mode) {
    case DEV_GOOD:
    case DEV_HI_TWICE:
        dev_send("A%s\r\n", c + 1);
        break;
    case DEV_OUT_OF_TURN:
        dev_send("A%s\r\nA%s\r\n", c + 1, c + 1);
        break;
    case DEV_HALF_SPARE:
        dev_send("\r\nA%s\r\nA%s", c + 1, c + 1);
        break;
    case DEV_ECHO:
        dev_send("%s\r\nA%s\r\n", c, c + 1);
        break;
    case DEV_NOISE:
        assert_int_equal(write(dev.master, "\x00\xff\x13", 3), 3);
        dev_send("A%s\r\n", c + 1);
        break;
    case DEV_COMMENT:
        dev_send("#warming up\r\nA%s\r\n", c + 1);
        break;
    case DEV_LONG: {
        static char big[PROTO_LINE_MAX + 100];
        memset(big, '9', sizeof big);
        big[0] = 'A';
        assert_int_equal(write(dev.master, big, sizeof big), (ssize_t)sizeof big);
        dev_send("\r\n");
        break;
    }
    case DEV_SILENT:
    case DEV_DEAD:
        break;
    }
}

static void dev_poll(void)
{
    char buf[256];
    ssize_t n;
    if (dev.chatter)
        assert_int_equal(write(dev.master, "~", 1), 1);
    while (dev.master >= 0 && (n = read(dev.master, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\r') {
                dev.line[dev.len] = '\0';
                dev.len = 0;
                dev_command(dev.line);
            } else if (dev.len < sizeof dev.line - 1) {
                dev.line[dev.len++] = buf[i];
            }
        }
}

/* The bytes the device sent are all read by the driver (none left in the pty). */
static bool dev_drained(void *arg)
{
    (void)arg;
    int n = 0;
    return ioctl(dev.slave, FIONREAD, &n) == 0 && n == 0;
}

/* ---- the tests ---- */

static lab_driver_t *drv;

static lab_driver_t *make_lines(const char *echo, const char *lines)
{
    lab_drv_kv_t kv[4] = {{"driver", "test-stream", 1},
                          {"port", dev.path, 2},
                          {"echo", echo, 3},
                          {"lines", lines, 4}};
    lab_drv_conf_t c = {.id = "s1", .line = 1, .kv = kv, .n = 4, .time_scale = 1};
    char err[256];
    lab_driver_t *d = NULL;
    if (lab_driver_new_ops(h_drv_loop(), &t_ops, &c, h_drv_host(), &d, err, sizeof err))
        fail_msg("%s", err);
    lab_driver_start(d);
    h_drv_wait_state(d, LAB_INST_IDLE);
    return d;
}

static lab_driver_t *make(const char *echo)
{
    return make_lines(echo, "plain");
}

static void ask_ok(long n)
{
    char params[32];
    snprintf(params, sizeof params, "{\"n\":%ld}", n);
    int rc = h_drv_do(drv, "ask", params);
    if (rc != LAB_OK)
        fail_msg("ask %ld: %s: %s", n, lab_err_json_name(rc), h_drv_error()->text);
    assert_int_equal(json_integer_value(json_object_get(h_drv_result(), "n")), n);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(openpty(&dev.master, &dev.slave, NULL, NULL, NULL), 0);
    struct termios t;
    tcgetattr(dev.slave, &t);
    cfmakeraw(&t);
    tcsetattr(dev.slave, TCSANOW, &t);
    fcntl(dev.master, F_SETFL, fcntl(dev.master, F_GETFL) | O_NONBLOCK);
    snprintf(dev.path, sizeof dev.path, "%s", ttyname(dev.slave));
    dev.mode = DEV_GOOD;
    dev.hi = dev.q = 0;
    dev.chatter = false;
    dev.len = 0;
    mispaired = 0;
    assert_int_equal(h_drv_init(1), 0);
    h_drv_set_pump(dev_poll);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_drv_close(drv);
    drv = NULL;
    int rc = h_drv_fini();
    json_decref(h_drv_result());
    close(dev.master);
    close(dev.slave);
    dev.master = dev.slave = -1;
    assert_int_equal(rc, 0);
    return 0;
}

/* A well-behaved device: connect, commands in turn, a refusal from invoke sends nothing. */
static void test_good(void **state)
{
    (void)state;
    drv = make("strict");
    assert_int_equal(dev.hi, 1);
    for (long n = 1; n <= 5; n++)
        ask_ok(n);
    assert_int_equal(h_drv_do(drv, "ask", "{\"n\":0}"), LAB_EINVAL);
    assert_true(h_drv_error()->not_started);
    ask_ok(6);
    assert_int_equal(dev.q, 6);
    assert_int_equal(mispaired, 0);
}

/* Every reply sent twice: the spare one arrives when no command waits and is dropped; the
 * next command waits for a quiet line and gets its own answer. */
static void test_out_of_turn(void **state)
{
    (void)state;
    drv = make("strict");
    dev.mode = DEV_OUT_OF_TURN;
    for (long n = 1; n <= 4; n++)
        ask_ok(n);
    /* Half a spare reply left on the line, its end sent before the next reply. */
    dev.mode = DEV_HALF_SPARE;
    for (long n = 11; n <= 14; n++)
        ask_ok(n);
    /* An unsolicited reply between commands, read before the next command is sent. */
    dev.mode = DEV_GOOD;
    dev_send("A77\r\n");
    assert_true(h_drv_run_until(dev_drained, NULL, 5000));
    ask_ok(5);
    assert_int_equal(mispaired, 0);
    assert_int_equal(dev.hi, 1); /* nothing was out of step: no resync was needed */
}

/* An echo is an unexpected reply (resync, the next command succeeds); with skip_echo the echo
 * is dropped and the command succeeds at once. */
static void test_echo(void **state)
{
    (void)state;
    drv = make("strict");
    dev.mode = DEV_ECHO;
    assert_int_equal(h_drv_do(drv, "ask", "{\"n\":3}"), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "unexpected reply 'Q3' to 'Q3'"));
    dev.mode = DEV_GOOD;
    ask_ok(4);
    assert_int_equal(dev.hi, 2); /* resynchronised */
    h_drv_close(drv);
    drv = make("skip");
    dev.mode = DEV_ECHO;
    ask_ok(5);
    ask_ok(6);
    assert_int_equal(mispaired, 0);
}

/* Noise before the reply: the error names the unexpected byte; the reply that follows is
 * drained, and the next command gets its own. */
static void test_noise(void **state)
{
    (void)state;
    drv = make("strict");
    dev.mode = DEV_NOISE;
    assert_int_equal(h_drv_do(drv, "ask", "{\"n\":8}"), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "byte 0x00 at 0"));
    dev.mode = DEV_GOOD;
    ask_ok(9);
    assert_int_equal(dev.hi, 2);
    assert_int_equal(mispaired, 0);
}

/* A reply after the timeout, while the next operation already waits: it is drained, never
 * taken for that operation's answer. */
static void test_late(void **state)
{
    (void)state;
    drv = make("strict");
    dev.mode = DEV_SILENT;
    assert_int_equal(h_drv_do(drv, "ask", "{\"n\":11}"), LAB_ETIMEDOUT);
    assert_non_null(strstr(h_drv_error()->text, "no reply to 'Q11'"));
    h_drv_call_t c = {0};
    lab_drv_error_t e;
    json_t *params = json_pack("{s:i}", "n", 12);
    assert_int_equal(lab_driver_call(drv, "ask", params, 0, h_drv_on_done, &c, &e, NULL), 0);
    json_decref(params);
    dev.mode = DEV_GOOD;
    dev_send("A11\r\n"); /* late */
    assert_true(h_drv_run_until(h_drv_call_done, &c, 10000));
    if (c.err.code != LAB_OK)
        fail_msg("ask 12: %s", c.err.text);
    assert_int_equal(json_integer_value(json_object_get(c.result, "n")), 12);
    json_decref(c.result);
    assert_int_equal(dev.hi, 2);
    assert_int_equal(mispaired, 0);
}

/* The connect command answered out of step ("A1" before its "OK"): the connect sequence fails,
 * the line is drained and it runs again; the instrument comes online and commands pair. */
static void test_connect_out_of_step(void **state)
{
    (void)state;
    dev.mode = DEV_HI_TWICE;
    drv = make("strict");
    assert_int_equal(dev.hi, 2);
    ask_ok(1);
    ask_ok(2);
    assert_int_equal(mispaired, 0);
}

/* A device that stops answering after the link was up: the instrument is in fault (not
 * offline), an operation meanwhile fails without a byte sent, and it is idle again by itself
 * once the device answers. */
static void test_dead_then_back(void **state)
{
    (void)state;
    drv = make("strict");
    dev.mode = DEV_DEAD;
    assert_int_equal(h_drv_do(drv, "ask", "{\"n\":1}"), LAB_ETIMEDOUT);
    int q = dev.q;
    assert_int_equal(h_drv_do(drv, "ask", "{\"n\":2}"), LAB_ETIMEDOUT);
    assert_true(h_drv_error()->not_started);
    assert_non_null(strstr(h_drv_error()->text, "no reply to 'HI'"));
    assert_int_equal(dev.q, q);
    assert_int_equal(lab_driver_state(drv), LAB_INST_FAULT);
    dev.mode = DEV_GOOD;
    h_drv_wait_state(drv, LAB_INST_IDLE);
    ask_ok(3);
    assert_int_equal(mispaired, 0);
}

/* A line that never goes quiet after a timeout: the operation waiting for the link fails
 * without a byte sent and says what the line carries; once it is quiet the link comes back. */
static void test_never_quiet(void **state)
{
    (void)state;
    drv = make("strict");
    dev.mode = DEV_SILENT;
    assert_int_equal(h_drv_do(drv, "ask", "{\"n\":1}"), LAB_ETIMEDOUT);
    dev.chatter = true;
    int q = dev.q;
    assert_int_equal(h_drv_do(drv, "ask", "{\"n\":2}"), LAB_EPROTO);
    assert_true(h_drv_error()->not_started);
    assert_non_null(strstr(h_drv_error()->text, "never quiet"));
    assert_non_null(strstr(h_drv_error()->text, "'~~"));
    assert_int_equal(dev.q, q);
    assert_int_equal(lab_driver_state(drv), LAB_INST_FAULT);
    dev.chatter = false;
    dev.mode = DEV_GOOD;
    h_drv_wait_state(drv, LAB_INST_IDLE);
    ask_ok(3);
    assert_int_equal(mispaired, 0);
}

/* The base's line framer: a line longer than it holds is garbage (the rest of it drained); a
 * line the driver's check refuses is garbage in the driver's words, one it does not check is an
 * unexpected reply; after each the next command gets its own answer. */
static void test_lines(void **state)
{
    (void)state;
    drv = make("strict");
    dev.mode = DEV_LONG;
    assert_int_equal(h_drv_do(drv, "ask", "{\"n\":1}"), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, lab_strerror(LAB_ETOOLONG)));
    dev.mode = DEV_GOOD;
    ask_ok(2);
    dev.mode = DEV_COMMENT;
    assert_int_equal(h_drv_do(drv, "ask", "{\"n\":3}"), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "unexpected reply '#warming up' to 'Q3'"));
    dev.mode = DEV_GOOD;
    ask_ok(4);
    assert_int_equal(dev.hi, 3);
    h_drv_close(drv);
    drv = make_lines("strict", "checked");
    dev.mode = DEV_COMMENT;
    assert_int_equal(h_drv_do(drv, "ask", "{\"n\":5}"), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "'#warming up': a comment, not a reply"));
    dev.mode = DEV_GOOD;
    ask_ok(6);
    assert_int_equal(mispaired, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_noise, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_out_of_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_then_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_never_quiet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lines, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
