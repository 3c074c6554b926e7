/* Thermo Cytomat automated incubators: the ASCII telegrams of their RS-232 interface (9600 8N1, no
 * flow control). Owns the command and reply grammar, the overview register's bits, the tables of
 * command errors ("er XX"), error register ("ch:be") and warning register ("ch:bw") codes, the
 * slot address of each model, the climate set point and reading forms, and the rack types.
 *
 * Sources (facts only):
 *   PyLabRobot, commit 598b58ffbef97fe33db6e1421b532cc9a389cbcb:
 *     pylabrobot/legacy/storage/cytomat/cytomat.py  (serial settings 84-93, telegram
 *       "type:cmd params" and its terminator per model 107-110, "ok"/"er" and the echoed key of a
 *       check 112-139, the busy/unknown retries 141-156, busy polling and the error register
 *       342-362, slot forms per model 171-193, ll:in, mv:ts, mv:st, rs:be, ch:it/ic/ih/io 385-404)
 *     pylabrobot/legacy/storage/cytomat/constants.py  (overview register bits 5-19, warning
 *       register 22-35, error register 38-52)
 *     pylabrobot/legacy/storage/cytomat/errors.py  (the "er XX" codes 70-87)
 *     pylabrobot/legacy/storage/cytomat/racks.py  (rack types: site height and sites)
 *   open-cytomat (github smartlab-network/open-cytomat), src/cytomat/:
 *     serial_port.py  (a reply ends with CR; "ok XX" carries the overview register)
 *     climate_controller.py  (set points "ll:it %04.1f", "ll:ic %04.1f"; "ch:it" is "set actual")
 *     errors.py  (er 61: shaker not active), status.py  (error codes 0E-14 of the shakers)
 *     tests/test_status.py  (overview 0xC5 = busy, warning, device door, transfer station: bit 0
 *       is busy, bit 7 the transfer station; "PDF P. 11" of the manual)
 *
 * Framing: the host ends a telegram with CR (C2C 425) or CR LF (the other models, PyLabRobot);
 * the device ends a reply with CR. Replies go through proto_lines_t, which accepts CR, LF or
 * CR LF. */
#ifndef LAB_PROTO_CYTOMAT_H
#define LAB_PROTO_CYTOMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocols/proto.h"

/* The overview register ("ch:bs", and the byte after "ok"): one bit each. */
enum {
    CYTOMAT_OV_BUSY = 1 << 0,             /* a command is being carried out */
    CYTOMAT_OV_READY = 1 << 1,            /* PyLabRobot's "ready bit" */
    CYTOMAT_OV_WARNING = 1 << 2,          /* the warning register holds a code */
    CYTOMAT_OV_ERROR = 1 << 3,            /* the error register holds a code */
    CYTOMAT_OV_HANDLER_OCCUPIED = 1 << 4, /* a plate on the handler's shovel */
    CYTOMAT_OV_GATE_OPEN = 1 << 5,        /* the automatic lift door */
    CYTOMAT_OV_DOOR_OPEN = 1 << 6,        /* the device door */
    CYTOMAT_OV_TRANSFER_OCCUPIED = 1 << 7,
};

/* The models PyLabRobot drives; they differ in the telegram terminator and the slot address. */
typedef enum cytomat_model {
    CYTOMAT_C6000,
    CYTOMAT_C6002,
    CYTOMAT_C2C_425,
    CYTOMAT_C2C_450_SHAKE,
    CYTOMAT_C5C,
    CYTOMAT_NMODELS
} cytomat_model_t;

#define CYTOMAT_MODEL_CHOICES "C6000|C6002|C2C_425|C2C_450_SHAKE|C5C"

/* The model by its name (one of CYTOMAT_MODEL_CHOICES), or -1. */
int cytomat_model_find(const char *name);
/* Whether its telegrams end in CR LF (all but the C2C 425, which takes CR alone). */
bool cytomat_model_crlf(cytomat_model_t m);

/* A telegram: two lower-case letters of type ("mv", "ll", "ch", "rs", "se"), a colon, two
 * characters of command ("ts", "h+"), and parameters after a space when there are any. */
#define CYTOMAT_PARAMS_MAX 40

typedef struct cytomat_cmd {
    char type[3];
    char code[3];
    char params[CYTOMAT_PARAMS_MAX + 1]; /* printable ASCII, "" for none */
} cytomat_cmd_t;

/* Fills a command; LAB_ESYNTAX when a part is not of its form. */
int cytomat_cmd(cytomat_cmd_t *c, const char *type, const char *code, const char *params);
/* The telegram with its terminator into buf: its length, or a negative LAB_E*. */
int cytomat_encode_cmd(const cytomat_cmd_t *c, bool crlf, char *buf, size_t cap);
/* One telegram without its terminator (the simulator's side). */
int cytomat_parse_cmd(const char *line, size_t len, cytomat_cmd_t *out);

typedef enum cytomat_reply_kind {
    CYTOMAT_REPLY_OK,    /* "ok XX": an action was accepted; XX the overview register */
    CYTOMAT_REPLY_ERROR, /* "er XX": refused; XX the error code */
    CYTOMAT_REPLY_CHECK, /* "<code> <value>": the answer to ch:<code> */
} cytomat_reply_kind_t;

typedef struct cytomat_reply {
    cytomat_reply_kind_t kind;
    int byte;                           /* OK: the overview register; ERROR: the code */
    char code[3];                       /* CHECK: the key, the command it answers */
    char value[CYTOMAT_PARAMS_MAX + 1]; /* CHECK: what follows the key, spaces trimmed */
} cytomat_reply_t;

/* One reply line (terminator removed). LAB_ESYNTAX for anything else: bytes outside printable
 * ASCII, a missing or malformed hex byte, a key that is not two characters, a value longer
 * than CYTOMAT_PARAMS_MAX. */
int cytomat_parse_reply(const char *line, size_t len, cytomat_reply_t *out);
/* A reply with its CR (the simulator's side). */
int cytomat_encode_reply(const cytomat_reply_t *r, char *buf, size_t cap);

/* A register's value: exactly two hex digits. LAB_ESYNTAX otherwise. */
int cytomat_parse_hex_byte(const char *s, int *out);

/* The meaning of an "er XX" code, of an error register code and of a warning register code;
 * NULL when the sources do not list it. */
const char *cytomat_command_error_text(int code);
const char *cytomat_error_register_text(int code);
const char *cytomat_warning_register_text(int code);

/* A climate reading ("ch:it", "ch:ic", "ch:ih", "ch:io"): "<set point> <actual>", each a decimal
 * with an optional sign ("+37.0 +36.9"). LAB_ESYNTAX otherwise. */
int cytomat_parse_climate(const char *value, double *setpoint, double *actual);

typedef enum cytomat_climate {
    CYTOMAT_CLIMATE_TEMPERATURE, /* "it", degC */
    CYTOMAT_CLIMATE_CO2,         /* "ic", %vol */
    CYTOMAT_CLIMATE_HUMIDITY,    /* "ih", %RH; read only */
    CYTOMAT_CLIMATE_O2,          /* "io", %vol; read only */
} cytomat_climate_t;

/* "ch:it" and the like. */
int cytomat_climate_read_cmd(cytomat_climate_t what, cytomat_cmd_t *out);
/* "ll:it 37.0" / "ll:ic 05.0": set points in 0 .. 99.9 written with one decimal; LAB_ERANGE
 * outside, LAB_EUNKNOWN for a quantity without a set point telegram in the sources. */
int cytomat_climate_set_cmd(cytomat_climate_t what, double value, cytomat_cmd_t *out);

/* Rack types (PyLabRobot's cytomat_rack_* in racks.py): the site height in tenths of mm and the
 * sites. */
#define CYTOMAT_RACKS(X)                                                                           \
    X("cytomat_rack_9mm_51", 90, 51)                                                               \
    X("cytomat_rack_10mm_47", 100, 47)                                                             \
    X("cytomat_rack_17mm_28", 170, 28)                                                             \
    X("cytomat_rack_18mm_26", 180, 26)                                                             \
    X("cytomat_rack_23mm_21", 230, 21)                                                             \
    X("cytomat_rack_26mm_18", 260, 18)                                                             \
    X("cytomat_rack_28mm_17", 280, 17)                                                             \
    X("cytomat_rack_29mm_16", 290, 16)                                                             \
    X("cytomat_rack_33mm_15", 330, 15)                                                             \
    X("cytomat_rack_35mm_14", 350, 14)                                                             \
    X("cytomat_rack_38mm_13", 380, 13)                                                             \
    X("cytomat_rack_43mm_11", 430, 11)                                                             \
    X("cytomat_rack_45.5mm_11", 455, 11)                                                           \
    X("cytomat_rack_50mm_10", 500, 10)                                                             \
    X("cytomat_rack_57mm_9", 570, 9)                                                               \
    X("cytomat_rack_60mm_8", 600, 8)                                                               \
    X("cytomat_rack_69mm_7", 690, 7)                                                               \
    X("cytomat_rack_95mm_5", 950, 5)

typedef struct cytomat_rack {
    const char *name;
    int height_01mm;
    int slots;
} cytomat_rack_t;

#define CYTOMAT_RACK_CHOICE(name, h, n) "|" name
#define CYTOMAT_RACK_CHOICES (&(CYTOMAT_RACKS(CYTOMAT_RACK_CHOICE))[1]) /* without the first | */

extern const cytomat_rack_t cytomat_racks[];
extern const size_t cytomat_racks_n;
const cytomat_rack_t *cytomat_rack_find(const char *name);

enum { CYTOMAT_CASSETTES_MAX = 20 };

/* The cassettes (racks) of one device, each with its rack type: cassette c is rack[c - 1]. */
typedef struct cytomat_cassettes {
    int n;
    const cytomat_rack_t *rack[CYTOMAT_CASSETTES_MAX];
    int slots[CYTOMAT_CASSETTES_MAX]; /* rack[i]->slots */
} cytomat_cassettes_t;

/* The cassettes from the configuration, in one of two forms and never both:
 *   rack_type = NAME (with cassettes = N, default 1): N cassettes of that rack;
 *   rack_types = 1:NAME, 2:NAME, ...: each cassette from 1 up, each once and without gaps.
 * NULL or 0 when absent. LAB_OK, or LAB_ESYNTAX with the first problem in err, which begins
 * with the key it is about ("rack_types: cassette 2 is missing ..."). */
int cytomat_cassettes_parse(const char *rack_type, const char *rack_types, int cassettes,
                            cytomat_cassettes_t *out, char *err, size_t errlen);
/* Slots of every cassette together. */
int cytomat_cassettes_slots(const cytomat_cassettes_t *c);

/* The slot parameter of mv:ts / mv:st for (cassette, slot), both from 1: "NNN", the slot counted
 * through the cassettes before it and then within its own (C6000, C6002, C2C 450 shake, C5C), or
 * "CC SS", both counted from 0 (C2C 425). LAB_ERANGE for a site the cassettes do not have or
 * that does not fit the form. */
int cytomat_slot_param(cytomat_model_t m, int cassette, int slot, const cytomat_cassettes_t *cs,
                       char *buf, size_t cap);
/* The reverse, for the simulator: (cassette, slot) from 1, or LAB_ERANGE / LAB_ESYNTAX. */
int cytomat_slot_parse(cytomat_model_t m, const char *param, const cytomat_cassettes_t *cs,
                       int *cassette, int *slot);

#endif
