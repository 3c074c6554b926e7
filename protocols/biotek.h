/* BioTek Synergy / Cytation plate readers: single-character commands, ACK (0x06) / ETX (0x03)
 * framing, the absorbance read definition with its well rectangle, wavelength and `sum % 100`
 * checksum, the plate geometry ('y'), the incubation set point ('g'), the status a reader sends
 * after a command's parameter (none, "0000", or the read definition's 37 digits), the measurement
 * body (22-byte header, `row,col,value` triples, rows separated by "\r\n,", serpentine order,
 * "*******" for an unmeasured well), version, serial number and temperature replies.
 * Both sides: the driver encodes commands and parses replies; the simulator parses commands and
 * encodes replies.
 *
 * Sources (facts only), PyLabRobot repository:
 *   pylabrobot/legacy/plate_reading/agilent/biotek_backend.py  (send_command/_read_until framing,
 *       command letters, read_absorbance parameter string and checksum, _parse_body)
 *   pylabrobot/legacy/plate_reading/agilent/biotek_tests.py  (transcripts: version, temperature,
 *       absorbance 96-well read, asterisk body) */
#ifndef LAB_PROTO_BIOTEK_H
#define LAB_PROTO_BIOTEK_H

#include <stddef.h>
#include <stdint.h>

#include "protocols/proto.h"

#define BIOTEK_ACK 0x06
#define BIOTEK_ETX 0x03
#define BIOTEK_MAX_ROWS 16
#define BIOTEK_MAX_COLS 24
#define BIOTEK_FRAME_MAX 16384

/* How a command's parameter is delimited after the reader ACKs the command letter. */
typedef enum biotek_param {
    BIOTEK_PARAM_NONE,  /* no parameter; the reply ends with ETX */
    BIOTEK_PARAM_FIXED, /* exactly `len` characters, no terminator */
    BIOTEK_PARAM_ETX,   /* characters up to and including ETX */
} biotek_param_t;

typedef struct biotek_cmd_info {
    char letter;
    biotek_param_t param;
    int len;
    int silent; /* the reader sends nothing back (abort) */
    const char *name;
} biotek_cmd_info_t;

const biotek_cmd_info_t *biotek_cmd_info(char letter);

/* ---- receiving replies (driver side) ---- */

typedef enum biotek_expect {
    BIOTEK_EXPECT_ACK, /* a lone ACK: the reader accepted a command letter, send the parameter */
    BIOTEK_EXPECT_ETX, /* a frame ending in ETX (optionally starting with ACK) */
} biotek_expect_t;

typedef struct biotek_frame {
    int ack;             /* frame started with ACK */
    const char *payload; /* between ACK (if any) and ETX; NUL-terminated */
    size_t len;
} biotek_frame_t;

typedef int (*biotek_frame_cb)(void *ud, const biotek_frame_t *f, int err);

typedef struct biotek_rx {
    biotek_expect_t expect;
    char buf[BIOTEK_FRAME_MAX + 1];
    size_t len;
    int overflow;
} biotek_rx_t;

void biotek_rx_init(biotek_rx_t *rx);
/* What the driver waits for next; the wire alone cannot tell a lone ACK from a frame's first
 * byte, so the driver says which one it awaits (as the vendor software does). */
void biotek_rx_expect(biotek_rx_t *rx, biotek_expect_t e);
/* Feeds bytes; calls cb per frame or error. A callback that must change the expectation before
 * the next byte (a lone ACK followed by the parameter's reply) returns non-zero: feeding stops
 * after that byte and the return value says how many bytes were consumed. Call
 * biotek_rx_expect only between frames: it drops a partial frame. */
size_t biotek_rx_feed(biotek_rx_t *rx, const uint8_t *data, size_t n, biotek_frame_cb cb, void *ud);

/* Absorbance read definition for command 'D' (with ETX). Rows/cols are 1-based and inclusive. */
typedef struct biotek_rect {
    int row0, col0, row1, col1;
} biotek_rect_t;

int biotek_encode_absorbance(const biotek_rect_t *r, int wavelength_nm, char *buf, size_t cap);
/* Simulator side: parse such a definition (without the ETX), checking the checksum. */
int biotek_parse_absorbance(const char *s, size_t len, biotek_rect_t *r, int *wavelength_nm);

/* Plate geometry, the parameter of 'y', in 0.01 mm (the reader's unit): well centres of A1 and of
 * the last well, y from the plate's back edge (row A), x from its left edge (column 1), and the
 * plate's outer size; 2 + 2 digits of rows and columns, 5 digits per length, 4 for the height. */
typedef struct biotek_geometry {
    int rows, cols;
    int a1_y, last_y, a1_x, last_x;
    int size_y, size_x, size_z;
} biotek_geometry_t;

#define BIOTEK_GEOMETRY_LEN 38
int biotek_encode_geometry(const biotek_geometry_t *g, char *buf, size_t cap); /* ETX appended */
int biotek_parse_geometry(const char *s, size_t len, biotek_geometry_t *g);    /* without ETX */

/* The parameter of 'g': the incubation set point in thousandths of a degree, five digits
 * (37 degC = "37000"); 0 switches incubation off ("00000"). */
int biotek_encode_setpoint(double celsius, char *buf, size_t cap);
int biotek_parse_setpoint(const char *s, size_t len, double *celsius);

/* What a reader sends after a command's parameter, up to ETX: nothing (plate geometry), a 4-digit
 * status ("0000" done), or, after a read definition, a 37-digit status whose fields are not
 * documented. Returns the kind, or LAB_ESYNTAX with *bad_at the offset of the first byte that
 * is none of these. */
typedef enum biotek_status {
    BIOTEK_STATUS_EMPTY,
    BIOTEK_STATUS_OK,   /* "0000" */
    BIOTEK_STATUS_CODE, /* four digits, not "0000" */
    BIOTEK_STATUS_READ, /* BIOTEK_READ_STATUS_LEN digits */
} biotek_status_t;

#define BIOTEK_READ_STATUS_LEN 37
int biotek_parse_status(const char *payload, size_t len, size_t *bad_at);

/* Serial number reply payload "00000000        0000": the first field. */
int biotek_parse_serial(const char *payload, size_t len, char *serial, size_t cap);

/* Version reply payload "1650200  Version 1.04   0000": part number and version. */
int biotek_parse_version(const char *payload, size_t len, char *part, size_t part_cap,
                         char *version, size_t version_cap);
/* Temperature reply payload "2360000": 1e-5 degC units. */
int biotek_parse_temperature(const char *payload, size_t len, double *celsius);
int biotek_encode_temperature(double celsius, char *buf, size_t cap);

/* Measurement body. */
typedef struct biotek_plate {
    int rows, cols;
    double value[BIOTEK_MAX_ROWS][BIOTEK_MAX_COLS];
    uint8_t state[BIOTEK_MAX_ROWS][BIOTEK_MAX_COLS]; /* BIOTEK_WELL_* */
    int n_triples;
    int code;      /* the three-digit field opening and closing the body */
    int trailer;   /* second trailer field, meaning not documented */
    int status;    /* last trailer field, 0000 in every documented read */
    size_t err_at; /* when parsing fails: offset of the offending field or byte */
} biotek_plate_t;

enum { BIOTEK_WELL_ABSENT = 0, BIOTEK_WELL_VALUE = 1, BIOTEK_WELL_NOVALUE = 2 };

/* Parse a body (the payload of the frame that follows "O"'s "0000" reply, ETX removed) for a
 * plate of rows x cols (8x12 or 16x24). Wells outside the plate are LAB_ERANGE. */
int biotek_parse_body(const char *body, size_t len, int rows, int cols, biotek_plate_t *out);

typedef enum biotek_value_fmt {
    BIOTEK_FMT_ABSORBANCE, /* "+0.1917" */
    BIOTEK_FMT_COUNTS,     /* "0000003" */
} biotek_value_fmt_t;

/* Simulator side: encode the body for rectangle r of a plate whose wells hold `plate` values
 * (NOVALUE wells are written as "*******"), in serpentine row order, ETX appended. `code` is the
 * three-digit field that opens and closes the body (228 in the documented absorbance read). */
int biotek_encode_body(const biotek_plate_t *plate, const biotek_rect_t *r, biotek_value_fmt_t fmt,
                       int code, char *buf, size_t cap);

/* ACK + payload + ETX, simulator side. */
int biotek_encode_reply(const char *payload, char *buf, size_t cap);
/* payload + ETX without ACK: the reply to a command's parameter, simulator side. */
int biotek_encode_status(const char *payload, char *buf, size_t cap);

/* ---- receiving commands (simulator side) ---- */

typedef struct biotek_cmd {
    char letter;
    char param[BIOTEK_FRAME_MAX + 1];
    size_t param_len;
} biotek_cmd_t;

/* Called when a letter arrives (phase 0: ACK it now if it takes a parameter) and when the
 * command is complete (phase 1), or with err for an unknown letter / over-long parameter. */
typedef int (*biotek_cmd_cb)(void *ud, const biotek_cmd_t *cmd, int phase, int err);

typedef struct biotek_cmd_rx {
    const biotek_cmd_info_t *cur;
    biotek_cmd_t cmd;
    int overflow;
} biotek_cmd_rx_t;

void biotek_cmd_rx_init(biotek_cmd_rx_t *rx);
size_t biotek_cmd_rx_feed(biotek_cmd_rx_t *rx, const uint8_t *data, size_t n, biotek_cmd_cb cb,
                          void *ud);

#endif
