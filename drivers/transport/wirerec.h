/* Wire recording: an instrument's traffic as JSON Lines (the format of docs/wire-format.md):
 * a header, then tx/rx bytes exact in hex, link events, Modbus request/response PDUs, each with
 * lab and wall time, rotated by size. One recorder per instrument, registered under the
 * instrument's id so that its transports (transport.c) and Modbus bus (modbus_bus.c) find it
 * without the driver passing it on.
 *
 * Appending never blocks on I/O: an event is formatted into the recorder's bounded in-memory
 * buffer under a mutex held only for the copy, and one writer thread for the whole process
 * (started with the first recorder, ended with the last) does every write, rename and open of
 * every recorder. When a buffer is full the event is dropped and counted, and a "note" event
 * saying how many were dropped follows in the file. An error on one recorder's file is that
 * recorder's (its status, its drop count); the writer goes on with the others. Any thread may
 * append (the loop thread for transports, a bus's worker thread for Modbus).
 *
 * A recording's file is made by its first event, not by lab_wirerec_start: an instrument that
 * never puts anything on a wire (mqtt-report, manual-mover) leaves no file. */
#ifndef LAB_DRIVERS_WIREREC_H
#define LAB_DRIVERS_WIREREC_H

#include "core/clock.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lab_wirerec lab_wirerec_t;

enum {
    LAB_WIREREC_MAX_BYTES_DEFAULT = 16 * 1024 * 1024, /* per file, before it rotates */
    LAB_WIREREC_KEEP_DEFAULT = 4,                     /* rotated files kept: PATH.1 .. PATH.4 */
    LAB_WIREREC_BUFFER_DEFAULT = 1024 * 1024,         /* in memory, between loop and writer */
};

typedef struct lab_wirerec_opts {
    const char *id;           /* the instrument; registered under it */
    const char *driver;       /* for the header */
    uint64_t max_bytes;       /* 0: the default; a file rotates once it passes this */
    unsigned keep;            /* rotated files kept (0: the live file only) */
    size_t buffer_bytes;      /* 0: the default; at least 4096 */
    const lab_clock_t *clock; /* the lab clock for "t"; NULL: the wall clock */
} lab_wirerec_opts_t;

typedef struct lab_wirerec_status {
    bool on;
    char path[512];   /* the file recorded to (or last recorded to) */
    uint64_t events;  /* written to files */
    uint64_t dropped; /* lost: buffer full, or a write that failed */
    uint64_t pending; /* bytes not yet written (0: the file holds everything appended) */
    char error[300];  /* the last error ("" if none) */
} lab_wirerec_status_t;

/* Creates a recorder (off) and registers it under o->id. Call on the loop thread. */
lab_wirerec_t *lab_wirerec_new(const lab_wirerec_opts_t *o);
/* Starts recording to path: the first event makes a new file there (a non-empty one there is
 * rotated to PATH.1 first); a session without events leaves the old file as it was. The path is
 * checked here (lab_wirerec_check_path, its missing last directory made), so an unwritable path
 * fails at once: LAB_EIO with why in err. The recorder stays off then. */
int lab_wirerec_start(lab_wirerec_t *r, const char *path, char *err, size_t errlen);
/* Stops: what was appended is still written, then the file is closed (by the writer). */
void lab_wirerec_stop(lab_wirerec_t *r);
/* Unregisters, waits until what is buffered is written and the file closed, and drops the
 * owner's reference. The last recorder closed ends the writer thread. */
void lab_wirerec_close(lab_wirerec_t *r);

/* Whether a recording to path could start: path an existing writable file, or a new one in a
 * writable directory; a missing last directory is made when make_dir, or else its parent must
 * be a writable directory. LAB_OK, or LAB_EIO with "cannot record to PATH: why" in err. Creates
 * no file (the daemon's start and `labloopd --check` judge alike). */
int lab_wirerec_check_path(const char *path, bool make_dir, char *err, size_t errlen);
/* Writer threads running in this process: 0 or 1 (for tests). */
int lab_wirerec_writer_threads(void);

/* The recorder registered under id, with a reference taken (NULL: none). */
lab_wirerec_t *lab_wirerec_find(const char *id);
void lab_wirerec_unref(lab_wirerec_t *r);

/* For the header: the transport ("serial", "tcp", "modbus-rtu") and its settings text. */
void lab_wirerec_set_link(lab_wirerec_t *r, const char *transport, const char *settings);

/* Events; each is a no-op (one atomic load) while the recorder is off or r is NULL.
 * dir: "tx" or "rx". */
void lab_wirerec_bytes(lab_wirerec_t *r, const char *dir, const uint8_t *data, size_t len);
/* dir: "req" or "rsp"; pdu is function code then data. */
void lab_wirerec_pdu(lab_wirerec_t *r, const char *dir, int unit, const uint8_t *pdu, size_t len);
/* ev: "open", "offline", "break", "timeout", "note"; text may be NULL. */
void lab_wirerec_event(lab_wirerec_t *r, const char *ev, const char *text);
bool lab_wirerec_on(const lab_wirerec_t *r);

void lab_wirerec_status(lab_wirerec_t *r, lab_wirerec_status_t *out);
/* Waits until everything appended so far is written (tests and benchmarks). */
void lab_wirerec_flush(lab_wirerec_t *r);

#endif
