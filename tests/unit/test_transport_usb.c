/* The usb transport. Without a device (this machine has none, and no dummy_hcd): the port's
 * usb://VVVV:PPPP[?serial=S] form and its errors, and a real libusb that finds no STAR (offline
 * with that reason, tried again with backoff, writes refused, a clean close). The bulk path runs
 * against FAKE_USB below, a stand-in for a device behind usb.c's seam (lab_usb_api_t): packets
 * of a fixed size, a short packet or a zero-length packet ending a reply, unplugging and
 * plugging back. What it proves is usb.c's handling of transfers as libusb reports them, not
 * libusb's or a real STAR's behaviour. */
#include "core/err.h"
#include "core/log.h"
#include "drivers/transport/transport.h"
#include "drivers/transport/transport_int.h"

#include <libusb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { DEADLINE_MS = 10000 };

/* ---- FAKE_USB: a device on a fake bus, driven by the test ---- */

#define FAKE_MSGS 16
#define FAKE_OUTS 32

static struct {
    uv_mutex_t mu;
    uv_cond_t cv;
    int present, opened, opens;
    int in_packet, out_packet;
    int zlp; /* the device ends a reply of whole packets with a zero-length packet */
    struct {
        uint8_t data[8192];
        size_t len, off;
        int zlp_due;
    } in[FAKE_MSGS];
    int n_in;
    uint8_t out[FAKE_OUTS][512];
    int out_len[FAKE_OUTS], n_out;
    int fail_out; /* the next bulk OUT fails with this */
} fake;

static int fake_open(const lab_usb_match_t *m, void **dev, lab_usb_eps_t *eps, char *why, size_t wn)
{
    uv_mutex_lock(&fake.mu);
    int present = fake.present;
    if (present) {
        fake.opened = 1;
        fake.opens++;
    }
    uv_mutex_unlock(&fake.mu);
    if (!present) {
        snprintf(why, wn, "no USB device %04x:%04x on the fake bus", m->vid, m->pid);
        return LIBUSB_ERROR_NOT_FOUND;
    }
    *eps = (lab_usb_eps_t){0x81, 0x02, fake.in_packet, fake.out_packet};
    *dev = &fake;
    return 0;
}

static void fake_close(void *dev)
{
    assert_ptr_equal(dev, &fake);
    uv_mutex_lock(&fake.mu);
    fake.opened = 0;
    uv_mutex_unlock(&fake.mu);
}

/* A bulk IN transfer receives whole packets until a short one (or a zero-length one) or until
 * its buffer is full, as a host controller does. */
static int fake_bulk(void *dev, unsigned char ep, uint8_t *data, int len, int *done,
                     unsigned timeout_ms)
{
    assert_ptr_equal(dev, &fake);
    *done = 0;
    uv_mutex_lock(&fake.mu);
    int rc = 0;
    if (!fake.present) {
        rc = LIBUSB_ERROR_NO_DEVICE;
    } else if (ep == 0x02) {
        if (fake.fail_out) {
            rc = fake.fail_out;
            fake.fail_out = 0;
        } else if (fake.n_out < FAKE_OUTS && len <= (int)sizeof fake.out[0]) {
            if (len)
                memcpy(fake.out[fake.n_out], data, (size_t)len);
            fake.out_len[fake.n_out++] = len;
            *done = len;
            uv_cond_broadcast(&fake.cv);
        }
    } else {
        assert_int_equal(ep, 0x81);
        assert_int_equal(len % fake.in_packet, 0);
        uint64_t until = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
        while (fake.present && fake.n_in == 0 && uv_hrtime() < until)
            uv_cond_timedwait(&fake.cv, &fake.mu, until - uv_hrtime());
        if (!fake.present) {
            rc = LIBUSB_ERROR_NO_DEVICE;
        } else if (fake.n_in == 0) {
            rc = LIBUSB_ERROR_TIMEOUT;
        } else if (fake.in[0].zlp_due) {
            fake.in[0].zlp_due = 0; /* the zero-length packet: done = 0 */
        } else {
            size_t left = fake.in[0].len - fake.in[0].off;
            size_t n = left < (size_t)len ? left : (size_t)len;
            memcpy(data, fake.in[0].data + fake.in[0].off, n);
            fake.in[0].off += n;
            *done = (int)n;
            int whole = n % (size_t)fake.in_packet == 0;
            if (fake.in[0].off == fake.in[0].len && whole && n == (size_t)len)
                fake.in[0].zlp_due = fake.zlp; /* buffer full: the ZLP comes in the next one */
            else if (fake.in[0].off == fake.in[0].len && whole && !fake.zlp)
                rc = LIBUSB_ERROR_TIMEOUT; /* no short packet: the transfer runs out its time */
        }
        if (fake.n_in && fake.in[0].off == fake.in[0].len && !fake.in[0].zlp_due) {
            memmove(&fake.in[0], &fake.in[1], sizeof fake.in[0] * (size_t)(fake.n_in - 1));
            fake.n_in--;
        }
    }
    uv_mutex_unlock(&fake.mu);
    return rc;
}

static const lab_usb_api_t fake_api = {fake_open, fake_bulk, fake_close};

static void fake_reply(const void *data, size_t len)
{
    uv_mutex_lock(&fake.mu);
    assert_true(fake.n_in < FAKE_MSGS && len <= sizeof fake.in[0].data);
    memcpy(fake.in[fake.n_in].data, data, len);
    fake.in[fake.n_in].len = len;
    fake.in[fake.n_in].off = 0;
    /* a reply that fills its last packet exactly, read into a buffer it does not fill */
    fake.in[fake.n_in].zlp_due = 0;
    fake.n_in++;
    uv_cond_broadcast(&fake.cv);
    uv_mutex_unlock(&fake.mu);
}

static void fake_set(int *field, int v)
{
    uv_mutex_lock(&fake.mu);
    *field = v;
    uv_cond_broadcast(&fake.cv);
    uv_mutex_unlock(&fake.mu);
}

static int fake_get(const int *field)
{
    uv_mutex_lock(&fake.mu);
    int v = *field;
    uv_mutex_unlock(&fake.mu);
    return v;
}

/* ---- the loop side ---- */

typedef struct fx {
    uv_loop_t loop;
    lab_transport_t *t;
    uint8_t rx[16][8192];
    size_t rx_len[16];
    int n_rx;
    int n_open, n_offline, last_err, writes_done, write_status;
    char last_reason[256];
} fx_t;

static fx_t fx;

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

#define WAIT(cond)                                                                                 \
    do {                                                                                           \
        uint64_t deadline_ = now_ms() + DEADLINE_MS;                                               \
        while (!(cond) && now_ms() < deadline_)                                                    \
            uv_run(&fx.loop, UV_RUN_ONCE);                                                         \
        assert_true(cond);                                                                         \
    } while (0)

static void on_data(lab_transport_t *t, const uint8_t *data, size_t len, void *user)
{
    (void)t;
    (void)user;
    assert_true(fx.n_rx < 16 && len <= sizeof fx.rx[0]);
    memcpy(fx.rx[fx.n_rx], data, len);
    fx.rx_len[fx.n_rx++] = len;
}

static void on_state(lab_transport_t *t, lab_transport_state_t state, int err, const char *reason,
                     void *user)
{
    (void)t;
    (void)user;
    if (state == LAB_TRANSPORT_OPEN)
        fx.n_open++;
    if (state == LAB_TRANSPORT_OFFLINE) {
        fx.n_offline++;
        fx.last_err = err;
        snprintf(fx.last_reason, sizeof fx.last_reason, "%s", reason ? reason : "");
    }
}

static void on_written(lab_transport_t *t, int status, void *arg)
{
    (void)t;
    (void)arg;
    fx.writes_done++;
    fx.write_status = status;
}

static int new_usb(const char *port, lab_transport_kind_t kind, char *err, size_t errlen)
{
    lab_transport_settings_t s;
    lab_transport_settings_init(&s);
    s.kind = kind;
    s.path = port;
    s.retry_min_ms = 20;
    s.retry_max_ms = 80;
    lab_transport_callbacks_t cb = {on_data, on_state, NULL};
    return lab_transport_new(&fx.loop, &s, "usb-test", &cb, &fx.t, err, errlen);
}

static void close_all(void)
{
    lab_transport_close(fx.t);
    fx.t = NULL;
    uint64_t deadline = now_ms() + DEADLINE_MS;
    while (uv_loop_alive(&fx.loop) && now_ms() < deadline)
        uv_run(&fx.loop, UV_RUN_ONCE);
    assert_false(uv_loop_alive(&fx.loop)); /* threads joined, queue closed, memory freed */
}

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof fx);
    uv_loop_init(&fx.loop);
    uv_mutex_lock(&fake.mu);
    fake.present = 1;
    fake.opened = fake.opens = fake.n_in = fake.n_out = fake.fail_out = 0;
    fake.in_packet = fake.out_packet = 64;
    fake.zlp = 1;
    uv_mutex_unlock(&fake.mu);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    lab_usb_api_set(NULL);
    uv_loop_close(&fx.loop);
    return 0;
}

/* ---- tests ---- */

static void test_url(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(new_usb("usb://08af:8000", LAB_TRANSPORT_AUTO, err, sizeof err), LAB_OK);
    assert_string_equal(lab_transport_backend(fx.t), "usb");
    assert_int_equal(fx.t->usb_match.vid, 0x08af);
    assert_int_equal(fx.t->usb_match.pid, 0x8000);
    assert_string_equal(fx.t->usb_match.serial, "");
    close_all();
    assert_int_equal(new_usb("usb://8AF:8000?serial=F12345", LAB_TRANSPORT_USB, err, sizeof err),
                     LAB_OK);
    assert_int_equal(fx.t->usb_match.vid, 0x08af);
    assert_string_equal(fx.t->usb_match.serial, "F12345");
    close_all();
    const char *bad[][2] = {
        {"usb://08af", "not usb://VENDOR:PRODUCT"},
        {"usb://zz:8000", "vendor id 'zz'"},
        {"usb://08af:80000", "product id '80000'"},
        {"usb://08af:", "product id ''"},
        {"usb://08af:8000?sn=1", "the only query is serial=S"},
        {"usb://08af:8000?serial=", "serial must be 1..127"},
        {"usb://08af:8000?serial=a b", "(0x20) at 1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(new_usb(bad[i][0], LAB_TRANSPORT_AUTO, err, sizeof err), LAB_EINVAL);
        if (!strstr(err, bad[i][1]))
            fail_msg("%s: \"%s\" does not say \"%s\"", bad[i][0], err, bad[i][1]);
        assert_null(fx.t);
    }
    /* a usb:// port under another kind, and another port under usb */
    assert_int_equal(new_usb("usb://08af:8000", LAB_TRANSPORT_TTY, err, sizeof err), LAB_EINVAL);
    assert_non_null(strstr(err, "does not match transport kind tty"));
    assert_int_equal(new_usb("/dev/ttyUSB0", LAB_TRANSPORT_USB, err, sizeof err), LAB_EINVAL);
    assert_non_null(strstr(err, "does not match transport kind usb"));
    assert_int_equal(lab_transport_kind_parse("usb"), LAB_TRANSPORT_USB);
}

/* The real libusb on a bus without the device: offline with the reason, again and again with
 * backoff, writes refused at once, then a clean close. */
static void test_no_device(void **state)
{
    (void)state;
    lab_usb_api_set(NULL);
    char err[256];
    assert_int_equal(new_usb("usb://08af:8000?serial=NOPE", LAB_TRANSPORT_AUTO, err, sizeof err),
                     LAB_OK);
    assert_int_equal(lab_transport_open(fx.t), LAB_OK);
    WAIT(fx.n_offline >= 3);
    assert_int_equal(fx.n_open, 0);
    /* "no USB device 08af:8000 with serial NOPE on the bus (..)", or libusb could not start */
    if (!strstr(fx.last_reason, "no USB device 08af:8000 with serial NOPE") &&
        !strstr(fx.last_reason, "libusb cannot start"))
        fail_msg("reason: %s", fx.last_reason);
    assert_int_equal(lab_transport_write(fx.t, "C0QMid0001", 10, NULL, NULL), LAB_ECONN);
    close_all();
}

static void open_fake(void)
{
    lab_usb_api_set(&fake_api);
    char err[256];
    assert_int_equal(new_usb("usb://08af:8000", LAB_TRANSPORT_AUTO, err, sizeof err), LAB_OK);
    assert_int_equal(lab_transport_open(fx.t), LAB_OK);
    WAIT(fx.n_open == 1);
}

static int outs(void)
{
    return fake_get(&fake.n_out);
}

/* FAKE_USB: each write one bulk OUT transfer, without terminator; each reply one on_data. */
static void test_fake_bulk(void **state)
{
    (void)state;
    fake_reply("stale", 5); /* left from before: drained at open, never delivered */
    open_fake();
    assert_int_equal(fake_get(&fake.n_in), 0);

    assert_int_equal(lab_transport_write(fx.t, "C0QMid0001", 10, on_written, NULL), LAB_OK);
    WAIT(fx.writes_done == 1);
    assert_int_equal(fx.write_status, LAB_OK);
    assert_int_equal(outs(), 1);
    assert_int_equal(fake.out_len[0], 10);
    assert_memory_equal(fake.out[0], "C0QMid0001", 10);

    /* 64 bytes: one full packet, then the zero-length packet that ends it */
    char m64[64];
    memset(m64, 'x', sizeof m64);
    assert_int_equal(lab_transport_write(fx.t, m64, 64, on_written, NULL), LAB_OK);
    WAIT(fx.writes_done == 2);
    assert_int_equal(outs(), 3);
    assert_int_equal(fake.out_len[1], 64);
    assert_int_equal(fake.out_len[2], 0);

    /* replies: a short one, one longer than a transfer's buffer, one of whole packets ended by
     * a zero-length packet, one of whole packets without it, and two back to back */
    fake_reply("C0QMid0001er00/00", 17);
    WAIT(fx.n_rx == 1);
    assert_int_equal(fx.rx_len[0], 17);
    assert_memory_equal(fx.rx[0], "C0QMid0001er00/00", 17);
    static uint8_t big[5000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)('A' + i % 26);
    fake_reply(big, sizeof big);
    WAIT(fx.n_rx == 2);
    assert_int_equal(fx.rx_len[1], sizeof big);
    assert_memory_equal(fx.rx[1], big, sizeof big);
    fake_reply(big, 128);
    WAIT(fx.n_rx == 3);
    assert_int_equal(fx.rx_len[2], 128);
    fake_set(&fake.zlp, 0);
    fake_reply(big, 4096); /* fills the transfer: only a quiet slice ends it */
    WAIT(fx.n_rx == 4);
    assert_int_equal(fx.rx_len[3], 4096);
    fake_reply("C0TTid0002er00/00", 17);
    fake_reply("C0DIid0003er00/00", 17);
    WAIT(fx.n_rx == 6);
    assert_memory_equal(fx.rx[4], "C0TTid0002er00/00", 17);
    assert_memory_equal(fx.rx[5], "C0DIid0003er00/00", 17);
    assert_int_equal(fx.n_offline, 0);
    close_all();
    assert_int_equal(fake_get(&fake.opened), 0);
}

/* FAKE_USB: unplugged while open, offline with the reason; tried again while it is away; back
 * when it returns. A stalled OUT endpoint takes the link down too. */
static void test_fake_unplug(void **state)
{
    (void)state;
    open_fake();
    fake_set(&fake.present, 0);
    WAIT(fx.n_offline >= 1);
    assert_int_equal(fx.last_err, LAB_ECONN);
    assert_non_null(strstr(fx.last_reason, "bulk IN endpoint 0x81: device unplugged"));
    assert_int_equal(lab_transport_write(fx.t, "C0QMid0001", 10, NULL, NULL), LAB_ECONN);
    WAIT(fx.n_offline >= 3); /* each retry: not on the bus */
    assert_non_null(strstr(fx.last_reason, "no USB device 08af:8000"));
    WAIT(fake_get(&fake.opened) == 0);
    fake_set(&fake.present, 1);
    WAIT(fx.n_open == 2);
    assert_int_equal(fake_get(&fake.opens), 2);
    fake_reply("C0QMid0001", 10);
    WAIT(fx.n_rx == 1);

    int off = fx.n_offline;
    fake_set(&fake.fail_out, LIBUSB_ERROR_PIPE);
    assert_int_equal(lab_transport_write(fx.t, "C0QMid0002", 10, on_written, NULL), LAB_OK);
    WAIT(fx.n_offline == off + 1);
    assert_int_equal(fx.writes_done, 1);
    assert_int_equal(fx.write_status, LAB_ECONN);
    assert_non_null(strstr(fx.last_reason, "bulk OUT endpoint 0x02: endpoint stalled"));
    WAIT(fx.n_open == 3);
    close_all();
}

int main(void)
{
    uv_mutex_init(&fake.mu);
    uv_cond_init(&fake.cv);
    lab_log_threshold = LAB_LOG_WARN;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fake_bulk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fake_unplug, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
