/* The shared base of the serial stream drivers (an ASCII or byte protocol over a transport, one
 * command at a time). It owns the transport and its state (offline and back), exactly one
 * command in flight with its reply timer, the connect sequence and its retry, deferring an end
 * out of invoke, and resynchronisation: after garbage, an unexpected reply or a timeout the line
 * is drained until it has been quiet for quiet_ms, and the driver's connect sequence starts the
 * exchange again. A byte that arrives while no command waits is dropped and pushes the next
 * command back by quiet_ms, so a late reply is never taken for the answer to a later command.
 *
 * The driver owns the protocol: a framer (feed: received bytes in, lab_stream_reply or
 * lab_stream_garbage out; or the base's line framer), the sequences it runs (begin), what a
 * reply means (reply) and how a sequence ends (end). It embeds a lab_stream_t in its private
 * data:
 *
 *   open:   lab_stream_init(&p->st, d, &ops, &conf, err, errlen)
 *   start:  lab_stream_start(&p->st)        stop: lab_stream_stop    close: lab_stream_close
 *   invoke: build the steps, lab_stream_run(&p->st)  (or lab_stream_refuse(&p->st, &err))
 *   begin:  lab_stream_send(s, bytes, n, 0) the first command
 *   reply:  lab_stream_send the next, lab_stream_end(s, NULL / &err) or lab_stream_unexpected
 *   abort:  lab_stream_abort(&p->st)
 */
#ifndef LAB_DRIVERS_STREAM_H
#define LAB_DRIVERS_STREAM_H

#include "drivers/driver.h"
#include "protocols/proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Who the running sequence belongs to. */
typedef enum lab_stream_owner {
    LAB_STREAM_NONE = 0,
    LAB_STREAM_CONNECT, /* the connect (and resync) sequence: the link is down until it ends */
    LAB_STREAM_OP,      /* the operation the framework invoked */
} lab_stream_owner_t;

typedef struct lab_stream lab_stream_t;

typedef struct lab_stream_ops {
    /* The framer: takes received bytes, calls lab_stream_reply for each complete reply and
     * lab_stream_garbage for bytes that cannot be one. NULL: the base's line framer
     * (lab_stream_lines_feed), for a protocol whose replies are lines. */
    void (*feed)(lab_stream_t *s, const uint8_t *data, size_t len);
    /* Optional, with a framer of the driver's own: forgets its partial frame, before each
     * command is written (half a frame then is nobody's reply) and on every resynchronisation.
     * Keeps what the driver set up for the command. The base's line framer is reset by the base
     * at the same moments. */
    void (*reset)(lab_stream_t *s);
    /* Optional, with the line framer: one complete line, its terminator stripped; the driver
     * checks it and passes it on (lab_stream_reply or lab_stream_garbage). NULL: every line is a
     * reply. */
    void (*line)(lab_stream_t *s, const char *line, size_t len);
    /* Starts a sequence: sends its first command (lab_stream_send) or ends it
     * (lab_stream_end_later). CONNECT runs on a quiet line; OP after lab_stream_run. */
    void (*begin)(lab_stream_t *s, lab_stream_owner_t owner);
    /* A reply to the command in flight (no longer in flight): send the next or end. */
    void (*reply)(lab_stream_t *s, const char *data, size_t len);
    /* The sequence ended (err NULL: success). CONNECT: on success the link is up and the driver
     * reports idle or fault; on an error the base reports offline (fault when the link was up on
     * this connection before) and connects again after retry_ms, unless the driver called
     * lab_stream_link_up. OP: the driver calls lab_drv_done. */
    void (*end)(lab_stream_t *s, lab_stream_owner_t owner, const lab_drv_error_t *err);
    /* Optional: the driver's text for a reply timeout (e is preset to the base's). */
    void (*timeout)(lab_stream_t *s, lab_drv_error_t *e);
} lab_stream_ops_t;

typedef struct lab_stream_conf {
    const char *tag;   /* log subsystem, "liconic" */
    unsigned reply_ms; /* a command's reply timeout when lab_stream_send gets 0 */
    unsigned quiet_ms; /* no byte for this long before the exchange starts (again) */
    unsigned retry_ms; /* between two failed connect sequences */
    unsigned break_ms; /* > 0: a BREAK of this length before each connect sequence */
    bool skip_echo;    /* a reply equal to the command sent (terminators aside) is dropped */
} lab_stream_conf_t;

#define LAB_STREAM_SENT_MAX 96
#define LAB_STREAM_OUT_MAX 2048

/* Embedded in the driver's private data; every field is the base's (read them through the
 * functions below). */
struct lab_stream {
    lab_driver_t *d;
    const lab_stream_ops_t *ops;
    lab_stream_conf_t conf;
    lab_transport_t *t;
    uv_timer_t reply_timer;  /* the command in flight */
    uv_timer_t quiet_timer;  /* resynchronisation: waits for quiet_ms without a byte */
    uv_timer_t send_timer;   /* a command held until the line is quiet */
    uv_timer_t later_timer;  /* an end deferred out of invoke or a write */
    uv_timer_t wait_timer;   /* the driver's own delay (lab_stream_wait) */
    uv_timer_t refuse_timer; /* an operation refused in invoke, whatever else runs */
    int timers_open;
    lab_stream_owner_t owner;
    bool linked;     /* the connect sequence succeeded on this connection, since any resync */
    bool resyncing;  /* draining: waiting for quiet_ms without a byte */
    bool op_pending; /* an operation waits for the link */
    bool in_flight;  /* a command waits for its reply */
    bool was_linked; /* the link was up on this connection: a failed resync is a fault */
    bool noisy;      /* reported: the line is never quiet */
    bool echo_seen;
    uint64_t quiet_until;           /* no command before this (uv_now ms) */
    uint64_t not_before;            /* no connect sequence before this */
    uint64_t resync_since;          /* when the resync began */
    unsigned reply_ms;              /* of the command in flight */
    char sent[LAB_STREAM_SENT_MAX]; /* the command in flight, printable, for messages */
    uint8_t out[LAB_STREAM_OUT_MAX];
    size_t out_len;   /* a command held by send_timer */
    uint8_t tail[16]; /* the last bytes dropped, for messages */
    size_t tail_len;
    lab_drv_error_t later, refused;
    void (*wait_cb)(lab_stream_t *s);
    proto_lines_t lines; /* the line framer's partial line */
};

/* Creates the transport from the driver's serial keys and the timers. 0, or -1 with err. */
int lab_stream_init(lab_stream_t *s, lab_driver_t *d, const lab_stream_ops_t *ops,
                    const lab_stream_conf_t *conf, char *err, size_t errlen);
/* Reports offline and opens the transport; the connect sequence runs once the line is quiet. */
void lab_stream_start(lab_stream_t *s);
/* Drops the connection and every sequence without an end callback. */
void lab_stream_stop(lab_stream_t *s);
/* lab_stream_stop, then closes the timers; lab_drv_closed(d) once the last one closed. Only for
 * a stream lab_stream_init was called on (it may have failed): a driver whose open refused its
 * configuration before that calls lab_drv_closed itself (s->d is NULL then). */
void lab_stream_close(lab_stream_t *s);

/* Runs the operation invoke prepared: at once when the link is up, else when it is. */
void lab_stream_run(lab_stream_t *s);
/* Ends the operation invoke is starting with err, from the loop (nothing was sent). */
void lab_stream_refuse(lab_stream_t *s, const lab_drv_error_t *err);
/* The framework stopped waiting for the operation: it is forgotten (no end callback); a command
 * still in flight makes the line resynchronise. */
void lab_stream_abort(lab_stream_t *s);

/* Sends a command (copied) and waits reply_ms (0: conf.reply_ms) for its reply; held while the
 * line must stay quiet. A write that fails ends the sequence with EOFFLINE, from the loop. */
void lab_stream_send(lab_stream_t *s, const void *data, size_t len, unsigned reply_ms);
/* More bytes of the command in flight (a parameter after an ACK); no new reply timer. */
int lab_stream_write(lab_stream_t *s, const void *data, size_t len);
/* Waits for a further reply to the same command (after an ACK) for ms (0: conf.reply_ms). */
void lab_stream_expect(lab_stream_t *s, unsigned ms);
/* Calls fn after ms (a polling delay inside a sequence); stopped by any end. */
void lab_stream_wait(lab_stream_t *s, unsigned ms, void (*fn)(lab_stream_t *s));

/* The line framer: CR, LF or CR LF end a line and empty lines are skipped (proto_lines_feed);
 * each line goes to ops->line, or to lab_stream_reply without one; a line longer than
 * PROTO_LINE_MAX is garbage. It is the framer when ops->feed is NULL; a driver's own feed calls
 * it for a link that carries lines (the STAR: lines on serial and TCP, whole messages on USB). */
void lab_stream_lines_feed(lab_stream_t *s, const uint8_t *data, size_t len);

/* From the framer: one complete reply, or bytes that cannot be one (why: the framer's reason). */
void lab_stream_reply(lab_stream_t *s, const char *data, size_t len);
void lab_stream_garbage(lab_stream_t *s, const void *data, size_t len, const char *why);

/* Ends the running sequence (err NULL: success). */
void lab_stream_end(lab_stream_t *s, const lab_drv_error_t *err);
/* The same from the loop: never from inside invoke or a write. */
void lab_stream_end_later(lab_stream_t *s, const lab_drv_error_t *err);
/* The exchange is out of step: ends the sequence with err and resynchronises. */
void lab_stream_end_resync(lab_stream_t *s, const lab_drv_error_t *err);
/* A reply the command in flight cannot have: EPROTO naming the reply, the command and what was
 * expected, then end and resynchronise. */
void lab_stream_unexpected(lab_stream_t *s, const char *data, size_t len, const char *expected);
/* From end(CONNECT, err): the link is up all the same (the driver reports the state). */
void lab_stream_link_up(lab_stream_t *s);

/* The command in flight (or last sent), printable. */
const char *lab_stream_sent(const lab_stream_t *s);
bool lab_stream_linked(const lab_stream_t *s);
lab_driver_t *lab_stream_driver(lab_stream_t *s);

/* Bytes as text for error messages: printable ASCII as is, every other byte as \xNN. Returns
 * the index of the first byte that is not printable ASCII, or len when there is none. */
size_t lab_stream_printable(const void *data, size_t len, char *out, size_t cap);

#endif
