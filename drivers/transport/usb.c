/* USB bulk transport (port = usb://VVVV:PPPP[?serial=S]) on libusb-1.0, for instruments that are
 * USB devices taking each message as one bulk OUT transfer and answering by bulk IN (the
 * Hamilton STAR, 08af:8000). What PyLabRobot's pylabrobot/io/usb.py does with a real STAR (commit
 * 598b58ffb) is what this does: the first configuration, interface 0, its first OUT and first IN
 * endpoints; stale IN data drained after opening; a zero-length packet after a write whose length
 * is a multiple of the OUT endpoint's packet size; a reply read packet after packet until one is
 * shorter than the IN endpoint's packet size. Each reply so read is handed to the owner as one
 * on_data call, and each lab_transport_write is one bulk OUT transfer.
 *
 * libusb's synchronous calls block, so they run on threads of their own, never on the loop: a
 * control thread opens the device, writes and tears down; a reader thread (one per connection)
 * waits on the IN endpoint in slices of USB_READ_SLICE_MS so that it notices a teardown. Results
 * reach the loop through a lab_tq_t. Every connection has a generation: whatever a thread reports
 * for an older one is dropped on the loop side. When the device goes (unplugged, powered off)
 * the transfer fails with LIBUSB_ERROR_NO_DEVICE and the transport goes offline with that reason;
 * the generic retry with backoff opens it again when it is back. */
#include "drivers/transport/transport_int.h"

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/tq.h"

#include <ctype.h>
#include <libusb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUB "transport"
#define USB_READ_SLICE_MS 250
#define USB_WRITE_TIMEOUT_MS 30000 /* PyLabRobot's write_timeout */
#define USB_DRAIN_MS 100
#define USB_MSG_MAX 65536

typedef struct usb_out {
    struct usb_out *next;
    size_t len;
    uint8_t data[];
} usb_out_t;

enum { EV_OPENED, EV_LOST, EV_DATA, EV_SENT, EV_EXITED };

typedef struct usb_ev {
    lab_tq_item_t item; /* first */
    struct lab_usb *u;
    int type, gen, err;
    char reason[200];
    size_t len;
    uint8_t data[];
} usb_ev_t;

struct lab_usb {
    lab_transport_t *t; /* loop side only */
    const lab_usb_api_t *api;
    lab_tq_t tq;
    uv_thread_t ctl, reader;
    uv_mutex_t mu;
    uv_cond_t cv;
    /* under mu */
    int gen;       /* the connection the loop wants; bumped by every teardown */
    int want_open; /* an open of generation gen is asked for */
    int stop;      /* the transport is closing for good */
    int reader_live, reader_stop, reader_done;
    usb_out_t *out_head, *out_tail;
    /* control thread only (and the reader, while it runs) */
    void *dev;
    int dev_gen;
    lab_usb_eps_t eps;
};

/* ---- the real libusb behind the seam ---- */

static libusb_context *usb_ctx;
static uv_once_t usb_ctx_once = UV_ONCE_INIT;
static int usb_ctx_rc;

static void usb_ctx_init(void)
{
    usb_ctx_rc = libusb_init(&usb_ctx);
}

typedef struct real_dev {
    libusb_device_handle *h;
    int iface;
} real_dev_t;

/* The serial number string of an opened device, or "" when it has none. */
static void real_serial(libusb_device_handle *h, const struct libusb_device_descriptor *dd,
                        char *out, size_t cap)
{
    out[0] = '\0';
    if (dd->iSerialNumber && libusb_get_string_descriptor_ascii(h, dd->iSerialNumber,
                                                                (unsigned char *)out, (int)cap) < 0)
        out[0] = '\0';
}

static int real_open(const lab_usb_match_t *m, void **out, lab_usb_eps_t *eps, char *why, size_t wn)
{
    uv_once(&usb_ctx_once, usb_ctx_init);
    if (usb_ctx_rc != LIBUSB_SUCCESS) {
        snprintf(why, wn, "libusb cannot start: %s (no usbfs under /dev/bus/usb?)",
                 libusb_strerror(usb_ctx_rc));
        return usb_ctx_rc;
    }
    libusb_device **list = NULL;
    ssize_t n = libusb_get_device_list(usb_ctx, &list);
    if (n < 0) {
        snprintf(why, wn, "cannot list USB devices: %s", libusb_strerror((int)n));
        return (int)n;
    }
    libusb_device_handle *h = NULL;
    int rc = LIBUSB_ERROR_NOT_FOUND, matched = 0;
    char serial[128] = "";
    for (ssize_t i = 0; i < n && !h; i++) {
        struct libusb_device_descriptor dd;
        if (libusb_get_device_descriptor(list[i], &dd) != 0 || dd.idVendor != m->vid ||
            dd.idProduct != m->pid)
            continue;
        matched++;
        rc = libusb_open(list[i], &h);
        if (rc != 0) {
            snprintf(why, wn, "cannot open USB device %04x:%04x (bus %u address %u): %s%s", m->vid,
                     m->pid, libusb_get_bus_number(list[i]), libusb_get_device_address(list[i]),
                     libusb_strerror(rc),
                     rc == LIBUSB_ERROR_ACCESS ? " (a udev rule must give this user the device)"
                                               : "");
            h = NULL;
            continue;
        }
        real_serial(h, &dd, serial, sizeof serial);
        if (m->serial[0] && strcmp(serial, m->serial) != 0) {
            libusb_close(h);
            h = NULL;
            rc = LIBUSB_ERROR_NOT_FOUND;
        }
    }
    libusb_free_device_list(list, 1);
    if (!h) {
        if (rc == LIBUSB_ERROR_NOT_FOUND)
            snprintf(why, wn,
                     "no USB device %04x:%04x%s%s on the bus (%zd devices, %d with that id)",
                     m->vid, m->pid, m->serial[0] ? " with serial " : "", m->serial, n, matched);
        return rc;
    }
    libusb_set_auto_detach_kernel_driver(h, 1);
    struct libusb_config_descriptor *cfg = NULL;
    int active = 0;
    if ((rc = libusb_get_config_descriptor(libusb_get_device(h), 0, &cfg)) != 0) {
        snprintf(why, wn, "USB device %04x:%04x has no configuration: %s", m->vid, m->pid,
                 libusb_strerror(rc));
        goto fail;
    }
    /* PyUSB's set_configuration(): the first configuration; not again if it is active already,
     * which would reset the device's endpoints for nothing. */
    if (libusb_get_configuration(h, &active) != 0 || active != cfg->bConfigurationValue)
        if ((rc = libusb_set_configuration(h, cfg->bConfigurationValue)) != 0) {
            snprintf(why, wn, "USB device %04x:%04x: set configuration %u: %s", m->vid, m->pid,
                     cfg->bConfigurationValue, libusb_strerror(rc));
            goto fail;
        }
    if (cfg->bNumInterfaces < 1 || cfg->interface[0].num_altsetting < 1) {
        rc = LIBUSB_ERROR_NOT_FOUND;
        snprintf(why, wn, "USB device %04x:%04x has no interface 0", m->vid, m->pid);
        goto fail;
    }
    const struct libusb_interface_descriptor *id = &cfg->interface[0].altsetting[0];
    memset(eps, 0, sizeof *eps);
    for (int i = 0; i < id->bNumEndpoints; i++) {
        const struct libusb_endpoint_descriptor *ep = &id->endpoint[i];
        int in = (ep->bEndpointAddress & LIBUSB_ENDPOINT_DIR_MASK) == LIBUSB_ENDPOINT_IN;
        if (in && !eps->in) {
            eps->in = ep->bEndpointAddress;
            eps->in_packet = ep->wMaxPacketSize;
        } else if (!in && !eps->out) {
            eps->out = ep->bEndpointAddress;
            eps->out_packet = ep->wMaxPacketSize;
        }
    }
    if (!eps->in || !eps->out || !eps->in_packet || !eps->out_packet) {
        rc = LIBUSB_ERROR_NOT_FOUND;
        snprintf(why, wn, "USB device %04x:%04x interface 0 lacks a bulk IN or OUT endpoint",
                 m->vid, m->pid);
        goto fail;
    }
    if ((rc = libusb_claim_interface(h, id->bInterfaceNumber)) != 0) {
        snprintf(why, wn, "USB device %04x:%04x: claim interface %u: %s%s", m->vid, m->pid,
                 id->bInterfaceNumber, libusb_strerror(rc),
                 rc == LIBUSB_ERROR_BUSY ? " (another program holds it)" : "");
        goto fail;
    }
    real_dev_t *d = LAB_NEW(real_dev_t);
    d->h = h;
    d->iface = id->bInterfaceNumber;
    libusb_free_config_descriptor(cfg);
    *out = d;
    return 0;
fail:
    if (cfg)
        libusb_free_config_descriptor(cfg);
    libusb_close(h);
    return rc;
}

static int real_bulk(void *dev, unsigned char ep, uint8_t *buf, int len, int *done,
                     unsigned timeout_ms)
{
    real_dev_t *d = dev;
    return libusb_bulk_transfer(d->h, ep, buf, len, done, timeout_ms);
}

static void real_close(void *dev)
{
    real_dev_t *d = dev;
    libusb_release_interface(d->h, d->iface);
    libusb_close(d->h);
    free(d);
}

static const lab_usb_api_t real_api = {real_open, real_bulk, real_close};
static const lab_usb_api_t *usb_api = &real_api;

void lab_usb_api_set(const lab_usb_api_t *api)
{
    usb_api = api ? api : &real_api;
}

/* ---- usb://VVVV:PPPP[?serial=S] ---- */

static int hex4(const char *s, size_t n, uint16_t *out)
{
    if (n < 1 || n > 4)
        return 0;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)s[i]))
            return 0;
        v = v * 16 + (unsigned)(isdigit((unsigned char)s[i])
                                    ? s[i] - '0'
                                    : tolower((unsigned char)s[i]) - 'a' + 10);
    }
    *out = (uint16_t)v;
    return 1;
}

int lab_usb_parse(const char *uri, lab_usb_match_t *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    const char *p = uri + strlen("usb://"), *colon = strchr(p, ':'), *q = strchr(p, '?');
    const char *end = q ? q : p + strlen(p);
    if (strncmp(uri, "usb://", 6) != 0 || !colon || colon > end) {
        snprintf(err, errlen, "'%s' is not usb://VENDOR:PRODUCT[?serial=S] (hex ids)", uri);
        return LAB_EINVAL;
    }
    if (!hex4(p, (size_t)(colon - p), &m->vid)) {
        snprintf(err, errlen, "'%s': vendor id '%.*s' is not 1..4 hex digits", uri,
                 (int)(colon - p), p);
        return LAB_EINVAL;
    }
    if (!hex4(colon + 1, (size_t)(end - colon - 1), &m->pid)) {
        snprintf(err, errlen, "'%s': product id '%.*s' is not 1..4 hex digits", uri,
                 (int)(end - colon - 1), colon + 1);
        return LAB_EINVAL;
    }
    if (!q)
        return LAB_OK;
    if (strncmp(q + 1, "serial=", 7) != 0) {
        snprintf(err, errlen, "'%s': the only query is serial=S", uri);
        return LAB_EINVAL;
    }
    const char *s = q + 8;
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof m->serial) {
        snprintf(err, errlen, "'%s': serial must be 1..%zu characters", uri, sizeof m->serial - 1);
        return LAB_EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (!isgraph((unsigned char)s[i]) || s[i] == '&' || s[i] == '?') {
            snprintf(err, errlen,
                     "'%s': serial has a character (0x%02x) at %zu that is not in "
                     "a USB serial number",
                     uri, (unsigned char)s[i], i);
            return LAB_EINVAL;
        }
    memcpy(m->serial, s, n + 1);
    return LAB_OK;
}

/* ---- threads -> loop ---- */

static const char *usb_errtext(int rc)
{
    switch (rc) {
    case LIBUSB_ERROR_NO_DEVICE:
        return "device unplugged or switched off";
    case LIBUSB_ERROR_TIMEOUT:
        return "timed out";
    case LIBUSB_ERROR_PIPE:
        return "endpoint stalled";
    case LIBUSB_ERROR_OVERFLOW:
        return "device sent more than asked for";
    default:
        return libusb_strerror(rc);
    }
}

static int usb_laberr(int rc)
{
    return rc == LIBUSB_ERROR_TIMEOUT                                     ? LAB_ETIMEDOUT
           : rc == LIBUSB_ERROR_NOT_FOUND || rc == LIBUSB_ERROR_NO_DEVICE ? LAB_ECONN
                                                                          : LAB_EIO;
}

static void usb_post(struct lab_usb *u, int type, int gen, int err, const uint8_t *data, size_t len,
                     const char *reason);

/* ---- the reader thread: one per connection ---- */

typedef struct reader_arg {
    struct lab_usb *u;
    void *dev;
    int gen;
    lab_usb_eps_t eps;
} reader_arg_t;

static void usb_reader(void *arg)
{
    reader_arg_t ra = *(reader_arg_t *)arg;
    free(arg);
    struct lab_usb *u = ra.u;
    /* A whole number of packets: a transfer ends at the first short packet, the end of one
     * reply as PyLabRobot reads it. */
    int cap = ra.eps.in_packet * (4096 / ra.eps.in_packet > 0 ? 4096 / ra.eps.in_packet : 1);
    uint8_t *buf = lab_malloc((size_t)cap);
    uint8_t *msg = lab_malloc(USB_MSG_MAX);
    size_t have = 0;
    for (;;) {
        uv_mutex_lock(&u->mu);
        int stop = u->reader_stop;
        uv_mutex_unlock(&u->mu);
        if (stop)
            break;
        int got = 0;
        int rc = u->api->bulk(ra.dev, ra.eps.in, buf, cap, &got, USB_READ_SLICE_MS);
        if (got > 0) {
            size_t take = (size_t)got < USB_MSG_MAX - have ? (size_t)got : USB_MSG_MAX - have;
            memcpy(msg + have, buf, take);
            have += take;
        }
        if (rc == LIBUSB_ERROR_TIMEOUT && got > 0)
            continue; /* a reply cut by the slice goes on in the next transfer */
        if (rc == LIBUSB_ERROR_TIMEOUT) {
            /* a slice without a packet ends a reply that filled its last packet exactly and
             * came without a zero-length packet, as PyLabRobot's read loop ends it */
            if (have)
                usb_post(u, EV_DATA, ra.gen, 0, msg, have, NULL);
            have = 0;
            continue;
        }
        if (rc != 0) {
            char why[160];
            snprintf(why, sizeof why, "USB %04x:%04x bulk IN endpoint 0x%02x: %s",
                     u->t->usb_match.vid, u->t->usb_match.pid, ra.eps.in, usb_errtext(rc));
            usb_post(u, EV_LOST, ra.gen, usb_laberr(rc), NULL, 0, why);
            break;
        }
        if (got == cap && have < USB_MSG_MAX)
            continue; /* the buffer filled before a short packet: the reply goes on */
        if (have)
            usb_post(u, EV_DATA, ra.gen, 0, msg, have, NULL);
        have = 0;
    }
    free(buf);
    free(msg);
    uv_mutex_lock(&u->mu);
    u->reader_done = 1;
    uv_cond_broadcast(&u->cv);
    uv_mutex_unlock(&u->mu);
}

/* ---- the control thread ---- */

/* Under mu: stops the reader and closes the device. */
static void usb_teardown(struct lab_usb *u)
{
    if (u->reader_live) {
        u->reader_stop = 1;
        uv_mutex_unlock(&u->mu);
        uv_thread_join(&u->reader);
        uv_mutex_lock(&u->mu);
        u->reader_live = 0;
    }
    if (u->dev) {
        void *dev = u->dev;
        u->dev = NULL;
        uv_mutex_unlock(&u->mu);
        u->api->close(dev);
        uv_mutex_lock(&u->mu);
    }
}

static void usb_free_out(struct lab_usb *u)
{
    while (u->out_head) {
        usb_out_t *o = u->out_head;
        u->out_head = o->next;
        free(o);
    }
    u->out_tail = NULL;
}

/* Reads and drops what the device still had queued from before (PyLabRobot's empty_buffer). */
static int usb_drain(struct lab_usb *u, void *dev, char *why, size_t wn)
{
    uint8_t buf[512];
    int cap = u->eps.in_packet < (int)sizeof buf ? u->eps.in_packet : (int)sizeof buf;
    for (int i = 0; i < 64; i++) {
        int got = 0;
        int rc = u->api->bulk(dev, u->eps.in, buf, cap, &got, USB_DRAIN_MS);
        if (rc == LIBUSB_ERROR_TIMEOUT || (rc == 0 && got == 0))
            return 0;
        if (rc != 0) {
            snprintf(why, wn, "USB %04x:%04x draining bulk IN endpoint 0x%02x: %s",
                     u->t->usb_match.vid, u->t->usb_match.pid, u->eps.in, usb_errtext(rc));
            return rc;
        }
    }
    return 0;
}

static void usb_control(void *arg)
{
    struct lab_usb *u = arg;
    uv_mutex_lock(&u->mu);
    for (;;) {
        while (!u->stop && !u->want_open && !(u->dev && u->dev_gen != u->gen) &&
               !(u->dev && u->reader_done) && !(u->dev && u->out_head))
            uv_cond_wait(&u->cv, &u->mu);
        if (u->stop)
            break;
        if (u->dev && (u->dev_gen != u->gen || u->reader_done)) {
            usb_teardown(u); /* dropped by the loop, or the reader saw it go */
            continue;
        }
        if (u->want_open) {
            u->want_open = 0;
            int gen = u->gen;
            uv_mutex_unlock(&u->mu);
            char why[256] = "";
            void *dev = NULL;
            int rc = u->api->open(&u->t->usb_match, &dev, &u->eps, why, sizeof why);
            if (rc == 0)
                rc = usb_drain(u, dev, why, sizeof why);
            if (rc != 0) {
                if (dev)
                    u->api->close(dev);
                usb_post(u, EV_LOST, gen, usb_laberr(rc), NULL, 0, why);
                uv_mutex_lock(&u->mu);
                continue;
            }
            uv_mutex_lock(&u->mu);
            u->dev = dev;
            u->dev_gen = gen;
            u->reader_stop = u->reader_done = 0;
            reader_arg_t *ra = LAB_NEW(reader_arg_t);
            *ra = (reader_arg_t){u, dev, gen, u->eps};
            if (uv_thread_create(&u->reader, usb_reader, ra) != 0) {
                free(ra);
                usb_teardown(u);
                usb_post(u, EV_LOST, gen, LAB_ENOMEM, NULL, 0, "cannot start the reader thread");
                continue;
            }
            u->reader_live = 1;
            usb_post(u, EV_OPENED, gen, 0, NULL, 0, NULL);
            continue;
        }
        if (u->dev && u->out_head) {
            usb_out_t *o = u->out_head;
            u->out_head = o->next;
            if (!u->out_head)
                u->out_tail = NULL;
            void *dev = u->dev;
            int gen = u->dev_gen;
            uv_mutex_unlock(&u->mu);
            int done = 0;
            int rc =
                u->api->bulk(dev, u->eps.out, o->data, (int)o->len, &done, USB_WRITE_TIMEOUT_MS);
            if (rc == 0 && (size_t)done != o->len)
                rc = LIBUSB_ERROR_IO;
            /* the end of a message that fills its last packet exactly */
            if (rc == 0 && o->len % (size_t)u->eps.out_packet == 0)
                rc = u->api->bulk(dev, u->eps.out, NULL, 0, &done, USB_WRITE_TIMEOUT_MS);
            if (rc == 0) {
                usb_post(u, EV_SENT, gen, 0, o->data, o->len, NULL);
            } else {
                char why[160];
                snprintf(why, sizeof why, "USB %04x:%04x bulk OUT endpoint 0x%02x: %s",
                         u->t->usb_match.vid, u->t->usb_match.pid, u->eps.out, usb_errtext(rc));
                usb_post(u, EV_LOST, gen, usb_laberr(rc), NULL, 0, why);
            }
            free(o);
            uv_mutex_lock(&u->mu);
            if (rc != 0)
                usb_teardown(u);
        }
    }
    usb_teardown(u);
    usb_free_out(u);
    uv_mutex_unlock(&u->mu);
    usb_post(u, EV_EXITED, 0, 0, NULL, 0, NULL);
}

/* ---- loop side ---- */

static void usb_freed(uv_handle_t *h)
{
    struct lab_usb *u = (struct lab_usb *)(void *)((char *)h - offsetof(struct lab_usb, tq.async));
    lab_transport_t *t = u->t;
    uv_cond_destroy(&u->cv);
    uv_mutex_destroy(&u->mu);
    free(u);
    lab_transport_unref(t);
}

static void usb_on_event(lab_tq_item_t *item)
{
    usb_ev_t *ev = (usb_ev_t *)item;
    struct lab_usb *u = ev->u;
    lab_transport_t *t = u->t;
    if (ev->type == EV_EXITED) {
        free(ev);
        uv_thread_join(&u->ctl); /* it has returned: this was its last word */
        t->usb = NULL;
        lab_tq_close(&u->tq, usb_freed);
        return;
    }
    uv_mutex_lock(&u->mu);
    int current = ev->gen == u->gen;
    uv_mutex_unlock(&u->mu);
    if (!current || t->closing) {
        free(ev);
        return;
    }
    switch (ev->type) {
    case EV_OPENED:
        if (t->state == LAB_TRANSPORT_OPENING)
            lab_transport_opened(t);
        break;
    case EV_LOST:
        lab_transport_lost(t, ev->err, "%s", ev->reason);
        break;
    case EV_DATA:
        if (t->state == LAB_TRANSPORT_OPEN)
            lab_transport_received(t, ev->data, ev->len);
        break;
    case EV_SENT: {
        lab_transport_sent(t, ev->data, ev->len);
        if (t->wq_head)
            lab_transport_wq_done(t);
        break;
    }
    }
    free(ev);
}

static void usb_post(struct lab_usb *u, int type, int gen, int err, const uint8_t *data, size_t len,
                     const char *reason)
{
    usb_ev_t *ev = lab_malloc(sizeof *ev + len);
    memset(ev, 0, sizeof *ev);
    ev->item.fn = usb_on_event;
    ev->u = u;
    ev->type = type;
    ev->gen = gen;
    ev->err = err;
    ev->len = len;
    if (len)
        memcpy(ev->data, data, len);
    if (reason)
        snprintf(ev->reason, sizeof ev->reason, "%s", reason);
    lab_tq_push(&u->tq, &ev->item);
}

static void usb_open(lab_transport_t *t)
{
    struct lab_usb *u = t->usb;
    if (!u) {
        u = LAB_NEW(struct lab_usb);
        u->t = t;
        u->api = usb_api;
        if (uv_mutex_init(&u->mu) != 0 || uv_cond_init(&u->cv) != 0 ||
            lab_tq_init(&u->tq, t->loop) != LAB_OK)
            LAB_ASSERT(!"usb: cannot create the worker's lock or queue");
        t->refs++; /* the queue's handle */
        if (uv_thread_create(&u->ctl, usb_control, u) != 0)
            LAB_ASSERT(!"usb: cannot start the worker thread");
        t->usb = u;
    }
    uv_mutex_lock(&u->mu);
    u->want_open = 1;
    uv_cond_signal(&u->cv);
    uv_mutex_unlock(&u->mu);
}

static int usb_write(lab_transport_t *t)
{
    struct lab_usb *u = t->usb;
    lab_transport_wreq_t *w = t->wq_tail;
    usb_out_t *o = lab_malloc(sizeof *o + w->len);
    o->next = NULL;
    o->len = w->len;
    memcpy(o->data, w->data, w->len);
    uv_mutex_lock(&u->mu);
    if (u->out_tail)
        u->out_tail->next = o;
    else
        u->out_head = o;
    u->out_tail = o;
    uv_cond_signal(&u->cv);
    uv_mutex_unlock(&u->mu);
    return LAB_OK;
}

static int usb_send_break(lab_transport_t *t, int on)
{
    (void)t;
    (void)on;
    return LAB_EINVAL; /* no BREAK on a USB bulk pipe */
}

/* The connection ends (lost, or the transport closes): the control thread tears it down; what
 * its threads still report for it is dropped. */
static void usb_close(lab_transport_t *t)
{
    struct lab_usb *u = t->usb;
    if (!u)
        return;
    uv_mutex_lock(&u->mu);
    u->gen++;
    u->want_open = 0;
    usb_free_out(u);
    uv_cond_signal(&u->cv);
    uv_mutex_unlock(&u->mu);
}

static void usb_release(lab_transport_t *t)
{
    struct lab_usb *u = t->usb;
    if (!u)
        return;
    uv_mutex_lock(&u->mu);
    u->gen++;
    u->stop = 1;
    uv_cond_signal(&u->cv);
    uv_mutex_unlock(&u->mu);
}

const lab_transport_ops_t lab_transport_usb_ops = {
    .name = "usb",
    .open = usb_open,
    .write = usb_write,
    .send_break = usb_send_break,
    .close = usb_close,
    .release = usb_release,
};
