/* Reading labloop's wire recordings (format version 1: JSON Lines, a header line, then one
 * event per line). Reader only, no I/O beyond a FILE: the replaying simulator uses
 * it today and an instrument's recorder can check its own output with it. Strict: a line that is
 * not what the format says is an error naming its line; keys the format does not know are
 * ignored, as the format asks of readers. */
#ifndef LAB_PROTO_WIRE_READ_H
#define LAB_PROTO_WIRE_READ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define WIRE_VERSION 1

typedef enum wire_kind {
    WIRE_HEADER, /* {"labloop_wire":1,...}: the first line, and again after each rotation */
    WIRE_TX,     /* bytes the host wrote to the device */
    WIRE_RX,     /* bytes the device sent, as one read delivered them */
    WIRE_REQ,    /* Modbus request PDU */
    WIRE_RSP,    /* Modbus response PDU (high bit of the function code: exception) */
    WIRE_EV,     /* link event, see wire_ev_t */
} wire_kind_t;

typedef enum wire_ev {
    WIRE_EV_NONE,
    WIRE_EV_OPEN,
    WIRE_EV_OFFLINE,
    WIRE_EV_BREAK,
    WIRE_EV_NOTE,
    WIRE_EV_TIMEOUT, /* a Modbus request that got no answer */
} wire_ev_t;

/* One line. Strings and data point into storage owned by the item (wire_item_clear frees it). */
typedef struct wire_item {
    wire_kind_t kind;
    int line;
    /* header */
    int version;
    char id[64];
    char driver[64];
    char transport[32];
    char settings[64];
    char started[32];
    /* events */
    double t;      /* lab seconds */
    char wall[32]; /* UTC, ms */
    wire_ev_t ev;  /* WIRE_EV */
    char *text;    /* WIRE_EV: the optional "text", NULL when absent */
    int unit;      /* WIRE_REQ / WIRE_RSP: Modbus slave id */
    uint8_t *data; /* WIRE_TX/RX/REQ/RSP: the bytes of "hex" */
    size_t len;
} wire_item_t;

/* Parses one line (without its '\n'). Returns 0, or a negative LAB_E* with the reason in err
 * ("line N: ..."); item is then empty. line is the 1-based line number used in messages. */
int wire_parse_line(const char *text, size_t len, int line, wire_item_t *item, char *err,
                    size_t errcap);
void wire_item_clear(wire_item_t *item);

/* A file being read line by line. The first line must be a header. */
typedef struct wire_reader {
    FILE *f;
    const char *path;
    int line;
    int seen_header;
    char *buf;
    size_t cap;
} wire_reader_t;

/* Opens path: 0, or LAB_EIO with "path: reason" in err. */
int wire_reader_open(wire_reader_t *r, const char *path, char *err, size_t errcap);
/* The next line: 1 with item filled, 0 at the end of the file, negative LAB_E* with
 * "path:line: reason" in err. */
int wire_reader_next(wire_reader_t *r, wire_item_t *item, char *err, size_t errcap);
void wire_reader_close(wire_reader_t *r);

const char *wire_kind_name(wire_kind_t k);
#endif
