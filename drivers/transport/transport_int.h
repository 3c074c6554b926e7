/* What the transport backends (tty.c, serial.c, tcp.c) share with the generic part: the object
 * itself, the state transitions and the fd-polling I/O used by both tty and serial. Not for
 * drivers: they only see transport.h. */
#ifndef LAB_DRIVERS_TRANSPORT_INT_H
#define LAB_DRIVERS_TRANSPORT_INT_H

#include "drivers/transport/transport.h"
#include "drivers/transport/wirerec.h"

#include <sys/types.h>

struct sp_port;
struct lab_usb;

/* usb://VVVV:PPPP[?serial=S] */
typedef struct lab_usb_match {
    uint16_t vid, pid;
    char serial[128]; /* "" for any */
} lab_usb_match_t;

typedef struct lab_usb_eps {
    unsigned char in, out;     /* endpoint addresses */
    int in_packet, out_packet; /* wMaxPacketSize */
} lab_usb_eps_t;

/* The few libusb calls usb.c makes, behind a seam so that a test can stand in for a device.
 * Return 0 or a LIBUSB_ERROR_* code. open finds the device (by vid, pid and serial), opens it,
 * sets its first configuration, claims interface 0 and reports its first IN and OUT endpoints;
 * why says what failed. bulk is libusb_bulk_transfer (data NULL and len 0: a zero-length
 * packet). Called on usb.c's threads only. */
typedef struct lab_usb_api {
    int (*open)(const lab_usb_match_t *m, void **dev, lab_usb_eps_t *eps, char *why, size_t wn);
    int (*bulk)(void *dev, unsigned char ep, uint8_t *data, int len, int *done,
                unsigned timeout_ms);
    void (*close)(void *dev);
} lab_usb_api_t;

/* The seam: NULL puts libusb back. For transports opened afterwards. */
void lab_usb_api_set(const lab_usb_api_t *api);
int lab_usb_parse(const char *uri, lab_usb_match_t *m, char *err, size_t errlen);

typedef struct lab_transport_wreq {
    struct lab_transport_wreq *next;
    uv_write_t uw; /* tcp only */
    lab_transport_t *t;
    lab_transport_done_cb cb;
    void *arg;
    size_t len, off;
    int orphan; /* tcp: the owner was already told; the uv_write callback only frees it */
    uint8_t data[];
} lab_transport_wreq_t;

struct lab_transport {
    const lab_transport_ops_t *ops;
    uv_loop_t *loop;
    lab_transport_settings_t set;
    char *path; /* owned copy of set.path */
    char *host; /* tcp */
    int port;
    char *id;
    lab_transport_callbacks_t cb;
    lab_wirerec_t *rec; /* the owner's wire recorder (a reference), or NULL */

    lab_transport_state_t state;
    int closing;
    int refs; /* open handles and pending requests; freed at 0 once closing */
    uint64_t rng;

    uv_timer_t retry;
    unsigned backoff_ms;

    uv_timer_t brk;
    int brk_active;
    lab_transport_done_cb brk_cb;
    void *brk_arg;

    /* Writes waiting for the fd (tty, serial) or in flight in libuv (tcp), oldest first. */
    lab_transport_wreq_t *wq_head, *wq_tail;

    /* fd backends */
    int fd;
    uv_poll_t poll;
    int poll_live; /* initialised and not yet closed */
    int poll_events;
    ssize_t (*fd_read)(lab_transport_t *t, void *buf, size_t n);
    ssize_t (*fd_write)(lab_transport_t *t, const void *buf, size_t n);
    struct sp_port *sp;

    /* usb */
    lab_usb_match_t usb_match;
    struct lab_usb *usb;

    /* tcp */
    uv_tcp_t tcp;
    int tcp_live;
    uv_connect_t conn;
    uv_getaddrinfo_t gai;
    int gai_pending;
    uint8_t rbuf[4096];
};

extern const lab_transport_ops_t lab_transport_tty_ops;
extern const lab_transport_ops_t lab_transport_serial_ops;
extern const lab_transport_ops_t lab_transport_tcp_ops;
extern const lab_transport_ops_t lab_transport_usb_ops;

/* Backend -> generic. */
void lab_transport_opened(lab_transport_t *t);
void lab_transport_lost(lab_transport_t *t, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void lab_transport_received(lab_transport_t *t, const uint8_t *data, size_t len);
void lab_transport_sent(lab_transport_t *t, const uint8_t *data, size_t len);
/* The oldest queued write is out: unlinked, its callback told LAB_OK, freed. */
void lab_transport_wq_done(lab_transport_t *t);
/* A handle or request of t finished closing: drop a reference, free t after the last one. */
void lab_transport_unref(lab_transport_t *t);

/* The retry timer: reconnects when offline, and is a connect timeout while opening. */
void lab_transport_on_retry(uv_timer_t *timer);

/* baud -> termios speed constant; LAB_EINVAL for a rate termios has no constant for. */
int lab_tty_speed(int baud, unsigned *speed);
/* Raw mode plus the framing of set, over what tio held (checked settings only). */
struct termios;
void lab_tty_make_termios(const lab_transport_settings_t *set, struct termios *tio);

/* fd backends: poll fd for reads (and for writes while the queue is not empty). */
int lab_transport_fd_attach(lab_transport_t *t, int fd);
/* Stops polling; the fd itself is the backend's to close. */
void lab_transport_fd_detach(lab_transport_t *t);
void lab_transport_fd_flush(lab_transport_t *t);

#endif
