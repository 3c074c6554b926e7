/* Byte transports under every instrument driver: serial ports (libserialport), raw termios ttys
 * (ptys and ports libserialport refuses), TCP serial device servers, and USB bulk devices
 * (libusb; one message per transfer). A transport owns its
 * connection, a write queue, and its reconnection: when the device goes away it reports
 * `offline` with the reason and comes back by itself with exponential backoff. Everything runs
 * on the loop thread and nothing here blocks it. */
#ifndef LAB_DRIVERS_TRANSPORT_H
#define LAB_DRIVERS_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef enum lab_transport_kind {
    LAB_TRANSPORT_AUTO = 0, /* tcp for tcp://, usb for usb://, serial otherwise */
    LAB_TRANSPORT_SERIAL,   /* libserialport; falls back to tty for ptys it refuses */
    LAB_TRANSPORT_TTY,      /* raw termios on a device path */
    LAB_TRANSPORT_TCP,      /* tcp://host:port */
    LAB_TRANSPORT_USB,      /* usb://VVVV:PPPP[?serial=S]: each write one bulk OUT transfer, each
                               on_data one reply read by bulk IN (usb.c) */
} lab_transport_kind_t;

typedef enum lab_parity { LAB_PARITY_NONE = 0, LAB_PARITY_EVEN, LAB_PARITY_ODD } lab_parity_t;
typedef enum lab_flow { LAB_FLOW_NONE = 0, LAB_FLOW_RTSCTS, LAB_FLOW_XONXOFF } lab_flow_t;

typedef enum lab_transport_state {
    LAB_TRANSPORT_CLOSED = 0,
    LAB_TRANSPORT_OPENING,
    LAB_TRANSPORT_OPEN,
    LAB_TRANSPORT_OFFLINE, /* lost or never reached; a reconnection is scheduled */
} lab_transport_state_t;

typedef struct lab_transport_settings {
    lab_transport_kind_t kind;
    const char *path; /* device path, or tcp://host:port; copied */
    int baud;         /* serial/tty only */
    int data_bits;    /* 5..8 */
    lab_parity_t parity;
    int stop_bits; /* 1 or 2 */
    lab_flow_t flow;
    unsigned retry_min_ms; /* first reconnection delay; 0 means 200 */
    unsigned retry_max_ms; /* the delay doubles up to this; 0 means 10000 */
} lab_transport_settings_t;

typedef struct lab_transport lab_transport_t;

typedef struct lab_transport_callbacks {
    /* Bytes received; the buffer is only valid during the call. */
    void (*on_data)(lab_transport_t *t, const uint8_t *data, size_t len, void *user);
    /* Every state change; err (negative LAB_E*) and reason say why for offline. */
    void (*on_state)(lab_transport_t *t, lab_transport_state_t state, int err, const char *reason,
                     void *user);
    void *user;
} lab_transport_callbacks_t;

/* A write or a BREAK finished: 0 once the bytes are handed to the kernel, LAB_ECONN when the
 * connection dropped first, LAB_ESHUTDOWN when the transport was closed first. */
typedef void (*lab_transport_done_cb)(lab_transport_t *t, int status, void *arg);

/* The backend contract. The generic part (transport.c) owns the state, the write queue, the
 * reconnection timer and the logging; a backend only moves bytes. */
typedef struct lab_transport_ops {
    const char *name;
    /* Start one connection attempt; ends in lab_transport_opened() or lab_transport_lost(). */
    void (*open)(lab_transport_t *t);
    /* The write queue gained an entry (its tail) while open: push it out. A negative LAB_E*
     * return means the entry could not even be queued; it is dropped and the error returned. */
    int (*write)(lab_transport_t *t);
    /* Assert (on = 1) or release (on = 0) a BREAK condition; negative LAB_E* if unsupported. */
    int (*send_break)(lab_transport_t *t, int on);
    /* Drop the connection and release its fd/handles (may finish in close callbacks). */
    void (*close)(lab_transport_t *t);
    /* Optional: the transport closes for good (after close); a backend with threads stops them
     * and drops its reference once they are gone. */
    void (*release)(lab_transport_t *t);
} lab_transport_ops_t;

/* A settings struct with the common defaults (9600 8N1, no flow control). */
void lab_transport_settings_init(lab_transport_settings_t *s);
/* Names <-> values for config files: "none"/"even"/"odd", "none"/"rtscts"/"xonxoff",
 * "serial"/"tty"/"tcp"/"auto". -1 for an unknown name. */
int lab_parity_parse(const char *name);
int lab_flow_parse(const char *name);
int lab_transport_kind_parse(const char *name);
const char *lab_transport_state_name(lab_transport_state_t s);

/* Checks the settings (precise message in err_msg when given) and creates a closed transport,
 * which must end in lab_transport_close whether it was opened or not. owner_id tags every log
 * line (and the byte dumps at debug level). */
int lab_transport_new(uv_loop_t *loop, const lab_transport_settings_t *s, const char *owner_id,
                      const lab_transport_callbacks_t *cb, lab_transport_t **out, char *err_msg,
                      size_t err_len);
/* closed -> opening; it keeps trying until lab_transport_close. */
int lab_transport_open(lab_transport_t *t);
/* Queue bytes (copied). Fails at once with LAB_ECONN unless open (LAB_ESTATE once closed);
 * otherwise cb (may be NULL) is called later, never from inside this call. */
int lab_transport_write(lab_transport_t *t, const void *data, size_t len, lab_transport_done_cb cb,
                        void *arg);
/* Hold a BREAK for ms milliseconds without blocking the loop; cb when released. */
int lab_transport_send_break(lab_transport_t *t, unsigned ms, lab_transport_done_cb cb, void *arg);
/* Pending writes and BREAKs complete with LAB_ESHUTDOWN before this returns; no callback
 * afterwards. The memory is freed when the last handle closes. */
void lab_transport_close(lab_transport_t *t);

lab_transport_state_t lab_transport_state(const lab_transport_t *t);
/* The backend in use ("serial", "tty", "tcp", "usb"): a serial transport on a pty reports
 * "tty". */
const char *lab_transport_backend(const lab_transport_t *t);

#endif
