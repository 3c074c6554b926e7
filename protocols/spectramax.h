/* Molecular Devices SpectraMax plate readers (M5, 384 Plus): ASCII commands ("!WAVELENGTH 450")
 * ended by CR, replies in fields each ended by '>' (a command's reply has a known number of
 * fields: "OK>" for most, "OK>" and a data field for !STATUS, !TEMP, !TRANSFER, ...), "FAIL\t NNN"
 * in a field for the reader's error NNN, the status word ("IDLE"), the temperature field (set
 * point and current), and the data a !TRANSFER gives for an absorbance read (a header with time
 * and temperature, "L:" wavelength lines, then one line per plate column, "N:" and one value per
 * row, "#SAT" for a saturated well).
 * Both sides: the driver encodes commands and parses replies; the simulator parses commands and
 * encodes replies.
 *
 * Sources (facts only), PyLabRobot repository, commit 598b58ffbef97fe33db6e1421b532cc9a389cbcb:
 *   pylabrobot/legacy/plate_reading/molecular_devices/backend.py  (RES_TERM_CHAR and
 *       COMMAND_TERMINATORS lines 16-63, ERROR_CODES 90-139, 9600 baud 254-259, "!" at setup 263,
 *       CR after a command 283, the '>' count 291, FAIL and OK 299-324, !STATUS 332-336, !TEMP
 *       347-361, _parse_data 404-483, the absorbance commands 485-631 and their order 694-745)
 *   pylabrobot/legacy/plate_reading/molecular_devices/spectramax_384_plus_backend.py (the 384
 *       Plus: "!READTYPE PLA" with one field, no !NVRAM and no !TAG, lines 25-34)
 *   pylabrobot/legacy/plate_reading/molecular_devices/backend_tests.py  (commands lines 57-494,
 *       data strings 1390-1536, replies 1649-1698)
 *   pylabrobot/molecular_devices/spectramax/base.py  ("!TEMP 0" to switch incubation off, line
 *       725) */
#ifndef LAB_PROTO_SPECTRAMAX_H
#define LAB_PROTO_SPECTRAMAX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocols/proto.h"

#define SMAX_TERM '>'
#define SMAX_CMD_MAX 96     /* the longest command the driver sends, CR included */
#define SMAX_FIELD_MAX 8192 /* a 384-well transfer is about 3.5 kB */
#define SMAX_ROWS_MAX 16
#define SMAX_COLS_MAX 24

/* The reply fields of a command, by its first word ("!STATUS" 2), PyLabRobot's table; 1 for a
 * word the table does not know. 0 when cmd is not a command at all (empty, or not '!'). */
int smax_reply_fields(const char *cmd, size_t len);

/* A command: text + CR. The text is printable ASCII without '>' (a terminator on the other
 * side); LAB_ESYNTAX otherwise, LAB_ENOSPACE when it does not fit. Returns the length. */
int smax_encode_cmd(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- receiving reply fields (driver side) ---- */

/* Called per field (err LAB_OK: field up to its '>' excluded, NUL-terminated, whitespace at
 * both ends removed) or per error: LAB_EGARBAGE for a byte that no reply holds (a control byte
 * other than TAB, CR, LF; anything above 0x7e), LAB_ETOOLONG for a field past SMAX_FIELD_MAX.
 * After an error the rest of that field is skipped, up to its '>'. Non-zero stops the feed and
 * smax_rx_feed returns the bytes consumed. */
typedef int (*smax_field_cb)(void *ud, const char *field, size_t len, int err);

typedef struct smax_rx {
    char buf[SMAX_FIELD_MAX + 1];
    size_t len;
    int skip; /* an error was reported: bytes dropped up to the next '>' */
} smax_rx_t;

void smax_rx_init(smax_rx_t *rx);
size_t smax_rx_feed(smax_rx_t *rx, const uint8_t *data, size_t n, smax_field_cb cb, void *ud);

/* What a field says: OK (the command was taken; text may follow, a warning), FAIL with the
 * reader's error code in *code, or data. A FAIL without a number is LAB_ESYNTAX. */
typedef enum smax_kind { SMAX_OK = 0, SMAX_FAIL = 1, SMAX_DATA = 2 } smax_kind_t;
int smax_field_kind(const char *field, size_t len, int *code);

/* The reader's text for an error code and its class ("command", "firmware", "hardware",
 * "motion", "NVRAM"); NULL for a code the table does not hold. */
const char *smax_error_text(int code, const char **cls);

/* The !STATUS data field: its second word is the state ("IDLE"); the first one's meaning is not
 * documented. LAB_ESYNTAX with fewer than two words, LAB_ENOSPACE when the word does not fit. */
int smax_parse_status(const char *field, size_t len, char *state, size_t cap);

/* The !TEMP data field: set point then current temperature, degC. */
int smax_parse_temp(const char *field, size_t len, double *setpoint, double *current);

/* ---- absorbance data (!TRANSFER) ---- */

enum { SMAX_WELL_ABSENT = 0, SMAX_WELL_VALUE, SMAX_WELL_SAT, SMAX_WELL_NOVALUE };

typedef struct smax_plate {
    int rows, cols;
    double time;        /* the header's first field */
    double temperature; /* the header's second field, degC */
    int wavelength_nm;  /* of the data block */
    double value[SMAX_ROWS_MAX][SMAX_COLS_MAX];
    uint8_t state[SMAX_ROWS_MAX][SMAX_COLS_MAX]; /* SMAX_WELL_* */
    size_t err_at;                               /* when parsing fails: the offending byte */
} smax_plate_t;

/* A single-wavelength endpoint read of a rows x cols plate: the header, the wavelength lines,
 * exactly one data block, its columns 1..cols in order with rows values each (a number, "#SAT",
 * or any other word: no value, as PyLabRobot's nan); a byte that is not printable ASCII (TAB, CR
 * and LF aside) is LAB_ESYNTAX. LAB_ESYNTAX (err_at set) for what
 * is not that form, LAB_ERANGE for a plate size outside 1..16 x 1..24. */
int smax_parse_data(const char *data, size_t len, int rows, int cols, smax_plate_t *out);

/* Simulator side: the data field of such a read (no '>' appended), values printed with four
 * decimals, SAT and NOVALUE wells as "#SAT" and "-". */
int smax_encode_data(const smax_plate_t *p, char *buf, size_t cap);

/* ---- receiving commands (simulator side) ---- */

/* A command line (CR or LF ended, CR LF is one) split into at most SMAX_ARGS_MAX words. */
#define SMAX_ARGS_MAX 8
typedef struct smax_cmd {
    char line[SMAX_CMD_MAX * 2];
    int argc;
    char *argv[SMAX_ARGS_MAX];
} smax_cmd_t;

/* Splits a line (NUL-terminated, copied) into words; LAB_ESYNTAX for an empty line, more words
 * than SMAX_ARGS_MAX, or one not starting with '!'; LAB_ETOOLONG for a line that does not fit. */
int smax_cmd_parse(const char *line, size_t len, smax_cmd_t *out);

#endif
