/* Liconic STX incubator/storage: ASCII commands over RS-232 (9600 8E1, RTS/CTS).
 * Owns the command and reply grammar, the controller (E0-E5) and handler (DM200) error tables,
 * the load/unload command sequences and the climate data-memory scaling.
 *
 * Sources (facts only), PyLabRobot repository:
 *   pylabrobot/legacy/storage/liconic/liconic_backend.py  (handshake CR -> CC, ST 1801, RD 1915,
 *       plate transfer sequences, DM890/982 temperature, DM893/983 humidity, DM894/984 CO2,
 *       DM895/985 N2, DM39 shaker, error flag 1814 and DM200)
 *   pylabrobot/legacy/storage/liconic/constants.py, errors.py  (E0-E5, handler error codes/texts)
 *   pylabrobot/legacy/storage/liconic/liconic_backend_tests.py  (exact command strings)
 *
 * Framing: the host ends a command with CR; the PLC ends a reply with CR LF. Both directions go
 * through proto_lines_t, which accepts either. */
#ifndef LAB_PROTO_LICONIC_H
#define LAB_PROTO_LICONIC_H

#include <stddef.h>
#include <stdint.h>

#include "protocols/proto.h"

/* Flags (relay bits) set with ST, reset with RS, read with RD. */
enum {
    LICONIC_FLAG_SECOND_TRANSFER_SENSOR = 1807,
    LICONIC_FLAG_ACTIVATE_HANDLING = 1801,
    LICONIC_FLAG_SHOVEL_SENSOR = 1812,
    LICONIC_FLAG_TRANSFER_SENSOR = 1813,
    LICONIC_FLAG_ERROR = 1814,
    LICONIC_FLAG_INIT = 1900,
    LICONIC_FLAG_OPEN_DOOR = 1901,
    LICONIC_FLAG_CLOSE_DOOR = 1902,
    LICONIC_FLAG_TERMINATE_ACCESS = 1903,
    LICONIC_FLAG_PLATE_FROM_TRANSFER = 1904,
    LICONIC_FLAG_PLATE_TO_TRANSFER = 1905,
    LICONIC_FLAG_PICK_FROM_SLOT = 1908,
    LICONIC_FLAG_PLACE_TO_SLOT = 1909,
    LICONIC_FLAG_BARCODE_POSITION = 1910,
    LICONIC_FLAG_SHOVEL_SENSOR_ENABLE = 1911,
    LICONIC_FLAG_SWAP_STATION = 1912,
    LICONIC_FLAG_SHAKER = 1913,
    LICONIC_FLAG_PLATE_READY = 1914,
    LICONIC_FLAG_READY = 1915,
};

/* Data memory words. */
enum {
    LICONIC_DM_CASSETTE = 0,
    LICONIC_DM_SLOT = 5,
    LICONIC_DM_PITCH_STEPS = 23,
    LICONIC_DM_SLOTS_PER_CASSETTE = 25,
    LICONIC_DM_SHAKER_SPEED = 39, /* 0.1 Hz */
    LICONIC_DM_HANDLER_ERROR = 200,
    LICONIC_DM_TEMP_SET = 890,     /* 0.1 degC */
    LICONIC_DM_HUMIDITY_SET = 893, /* 0.1 %RH */
    LICONIC_DM_CO2_SET = 894,      /* 0.01 %vol */
    LICONIC_DM_N2_SET = 895,       /* 0.01 %vol */
    LICONIC_DM_TEMP_ACTUAL = 982,
    LICONIC_DM_HUMIDITY_ACTUAL = 983,
    LICONIC_DM_CO2_ACTUAL = 984,
    LICONIC_DM_N2_ACTUAL = 985,
};

typedef enum liconic_op {
    LICONIC_OP_OPEN,    /* "CR": opens communication, PLC answers CC */
    LICONIC_OP_SET,     /* "ST nnnn" */
    LICONIC_OP_RESET,   /* "RS nnnn" */
    LICONIC_OP_READ,    /* "RD nnnn" (flag) */
    LICONIC_OP_READ_DM, /* "RD DMnnnn" */
    LICONIC_OP_WRITE_DM /* "WR DMnnnn value" */
} liconic_op_t;

typedef struct liconic_cmd {
    liconic_op_t op;
    int addr;  /* flag number or DM index, 0..9999 */
    int value; /* WR only, 0..99999 */
    int width; /* WR only: zero-pad the value to this many digits (0 = none) */
} liconic_cmd_t;

/* Encode a command with its CR into buf. Returns the length or a LAB_E* error. */
int liconic_encode_cmd(const liconic_cmd_t *cmd, char *buf, size_t cap);
/* Parse one command line (terminator already removed), simulator side. */
int liconic_parse_cmd(const char *line, size_t len, liconic_cmd_t *out);

typedef enum liconic_reply_kind {
    LICONIC_REPLY_CC,    /* handshake accepted */
    LICONIC_REPLY_OK,    /* ST/RS/WR accepted */
    LICONIC_REPLY_VALUE, /* RD answer */
    LICONIC_REPLY_ERROR  /* E0..E5 */
} liconic_reply_kind_t;

typedef struct liconic_reply {
    liconic_reply_kind_t kind;
    long value;       /* VALUE */
    int error;        /* ERROR: 0..5 */
    const char *text; /* ERROR: the controller's meaning */
} liconic_reply_t;

/* Parse one reply line. An "E<n>" with an unknown n is LAB_EUNKNOWN; the device's code stays in
 * out->error when it is a number. */
int liconic_parse_reply(const char *line, size_t len, liconic_reply_t *out);
/* Encode a reply with CR LF, simulator side. */
int liconic_encode_reply(const liconic_reply_t *r, char *buf, size_t cap);

/* E0..E5 meaning, NULL if unknown. */
const char *liconic_controller_error_text(int code);

/* Handler error read from DM200 ("00007", 107, ...): group ("import plate", ...) and text. */
typedef struct liconic_handler_error {
    int code;
    const char *group;
    const char *text;
} liconic_handler_error_t;

int liconic_handler_error_lookup(int code, liconic_handler_error_t *out);

/* Plate transfer sequences. A step is a command; a step with poll_ready set is "RD 1915 until the
 * PLC answers 1" (on timeout read flag 1814, and if it is 1 read DM200 for the handler error). */
typedef struct liconic_step {
    liconic_cmd_t cmd;
    int poll_ready;
} liconic_step_t;

typedef struct liconic_site {
    int cassette;    /* 1-based */
    int slot;        /* 1-based */
    int pitch_steps; /* motor steps of the cassette pitch, DM23 */
    int slots;       /* slots in the cassette, DM25 */
} liconic_site_t;

/* Rack (cassette) types: PyLabRobot's model name, the site height and pitch in mm, the slots
 * (DM25) and the motor steps of the pitch (DM23). Source: PyLabRobot
 * pylabrobot/legacy/storage/liconic/racks.py (names, pitch, slots, steps in each docstring) and
 * liconic_backend.py LICONIC_SITE_HEIGHT_TO_STEPS (the steps it writes to DM23), commit
 * 598b58ffb. steps = round(pitch * 1713 / 50) except the 104 mm racks (3563, the formula gives
 * 3769; PyLabRobot's tests mark it as not verified on hardware). */
#define LICONIC_RACKS(X)                                                                           \
    X("liconic_rack_5mm_42", 5, 11, 42, 377)       /* STX44 */                                     \
    X("liconic_rack_5mm_55", 5, 11, 55, 377)       /* STX500 */                                    \
    X("liconic_rack_5mm_111", 5, 11, 111, 377)     /* STX1000 */                                   \
    X("liconic_rack_11mm_28", 11, 17, 28, 582)     /* STX44 */                                     \
    X("liconic_rack_11mm_37", 11, 17, 37, 582)     /* STX500 */                                    \
    X("liconic_rack_11mm_72", 11, 17, 72, 582)     /* STX1000 */                                   \
    X("liconic_rack_12mm_27", 12, 18, 27, 617)     /* STX44 */                                     \
    X("liconic_rack_12mm_35", 12, 18, 35, 617)     /* STX500 */                                    \
    X("liconic_rack_12mm_68", 12, 18, 68, 617)     /* STX1000 */                                   \
    X("liconic_rack_17mm_22", 17, 23, 22, 788)     /* STX44 */                                     \
    X("liconic_rack_17mm_28", 17, 23, 28, 788)     /* STX500 */                                    \
    X("liconic_rack_17mm_53", 17, 23, 53, 788)     /* STX1000 */                                   \
    X("liconic_rack_22mm_17", 22, 28, 17, 959)     /* STX44 */                                     \
    X("liconic_rack_22mm_23", 22, 28, 23, 959)     /* STX500 */                                    \
    X("liconic_rack_22mm_43", 22, 28, 43, 959)     /* STX1000 */                                   \
    X("liconic_rack_23mm_17", 23, 29, 17, 994)     /* STX44 */                                     \
    X("liconic_rack_23mm_22", 23, 29, 22, 994)     /* STX500 */                                    \
    X("liconic_rack_23mm_42", 23, 29, 42, 994)     /* STX1000 */                                   \
    X("liconic_rack_24mm_17", 24, 30, 17, 1028)    /* STX44 */                                     \
    X("liconic_rack_24mm_21", 24, 30, 21, 1028)    /* STX500 */                                    \
    X("liconic_rack_24mm_41", 24, 30, 41, 1028)    /* STX1000 */                                   \
    X("liconic_rack_27mm_15", 27, 33, 15, 1131)    /* STX44 */                                     \
    X("liconic_rack_27mm_19", 27, 33, 19, 1131)    /* STX500 */                                    \
    X("liconic_rack_27mm_37", 27, 33, 37, 1131)    /* STX1000 */                                   \
    X("liconic_rack_44mm_10", 44, 50, 10, 1713)    /* STX44 */                                     \
    X("liconic_rack_44mm_13", 44, 50, 13, 1713)    /* STX500 */                                    \
    X("liconic_rack_44mm_25", 44, 50, 25, 1713)    /* STX1000 */                                   \
    X("liconic_rack_53mm_8", 53, 59, 8, 2021)      /* STX44 */                                     \
    X("liconic_rack_53mm_10", 53, 59, 10, 2021)    /* STX500 */                                    \
    X("liconic_rack_53mm_21", 53, 59, 21, 2021)    /* STX1000 */                                   \
    X("liconic_rack_66mm_7", 66, 72, 7, 2467)      /* STX44 */                                     \
    X("liconic_rack_66mm_8", 66, 72, 8, 2467)      /* STX500 */                                    \
    X("liconic_rack_66mm_17", 66, 72, 17, 2467)    /* STX1000 */                                   \
    X("liconic_rack_104mm_4", 104, 110, 4, 3563)   /* STX44 */                                     \
    X("liconic_rack_104mm_5", 104, 110, 5, 3563)   /* STX500 */                                    \
    X("liconic_rack_104mm_11", 104, 110, 11, 3563) /* STX1000 */

typedef struct liconic_rack {
    const char *name; /* "liconic_rack_17mm_22" */
    int site_height;  /* mm */
    int pitch;        /* mm */
    int slots;        /* DM25 */
    int steps;        /* DM23 */
} liconic_rack_t;

/* Every name, '|'-separated (a config enum's choices). */
#define LICONIC_RACK_CHOICE(name, h, p, n, st) "|" name
#define LICONIC_RACK_CHOICES (LICONIC_RACKS(LICONIC_RACK_CHOICE) + 1)

extern const liconic_rack_t liconic_racks[];
extern const size_t liconic_racks_n;
/* The rack type by name, NULL if unknown. */
const liconic_rack_t *liconic_rack_find(const char *name);
/* Whether the rack's steps follow the documented formula (the 104 mm racks do not). */
int liconic_rack_verified(const liconic_rack_t *r);

/* The cassettes of one incubator, each with its own rack type (cassette c is rack[c - 1]). */
enum { LICONIC_CASSETTES_MAX = 99 };

typedef struct liconic_cassettes {
    int n;
    const liconic_rack_t *rack[LICONIC_CASSETTES_MAX];
} liconic_cassettes_t;

/* The cassettes from the configuration, in one of two forms and never both:
 *   rack_type = NAME (with cassettes = N, default 1): N cassettes of that rack;
 *   rack_types = 1:NAME, 2:NAME, ...: each cassette from 1 up, each once and without gaps.
 * rack_type and rack_types are NULL when absent, cassettes 0 when absent. LAB_OK, or
 * LAB_ESYNTAX with the first problem in err (which key, which entry, why). */
int liconic_cassettes_parse(const char *rack_type, const char *rack_types, int cassettes,
                            liconic_cassettes_t *out, char *err, size_t errlen);
/* Slots of every cassette together. */
int liconic_cassettes_slots(const liconic_cassettes_t *c);

#define LICONIC_SEQ_MAX 16

/* Handshake and activation: CR, ST 1801, wait ready. */
int liconic_seq_open(liconic_step_t *steps, size_t cap);
/* Transfer station -> site ("take in"). */
int liconic_seq_load(const liconic_site_t *site, liconic_step_t *steps, size_t cap);
/* Site -> transfer station ("fetch"). */
int liconic_seq_unload(const liconic_site_t *site, liconic_step_t *steps, size_t cap);

/* Site -> site inside the incubator (pick 1908 at the origin, place 1909 at the destination). */
int liconic_seq_move(const liconic_site_t *from, const liconic_site_t *to, liconic_step_t *steps,
                     size_t cap);

typedef enum liconic_climate {
    LICONIC_CLIMATE_TEMPERATURE, /* degC */
    LICONIC_CLIMATE_HUMIDITY,    /* %RH */
    LICONIC_CLIMATE_CO2,         /* %vol */
    LICONIC_CLIMATE_N2           /* %vol */
} liconic_climate_t;

/* WR DM<set> <value, 5 digits> for a set point in engineering units. */
int liconic_climate_set_cmd(liconic_climate_t what, double value, liconic_cmd_t *out);
/* RD DM<actual> or RD DM<set>. */
int liconic_climate_read_cmd(liconic_climate_t what, int setpoint, liconic_cmd_t *out);
/* Raw DM word to engineering units. */
double liconic_climate_from_raw(liconic_climate_t what, long raw);

#endif
