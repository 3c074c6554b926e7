/* Keyence SR/BL series barcode readers: the serial command set a host uses to trigger a read
 * (ASCII over RS-232, factory default 9600 baud, 7 data bits, even parity, 1 stop bit, no flow
 * control). Owns the command and reply grammar; no I/O.
 *
 * Sources (facts only):
 *   PyLabRobot, commit 598b58ffbef97fe33db6e1421b532cc9a389cbcb:
 *     pylabrobot/legacy/barcode_scanners/keyence/keyence_backend.py  (9600 7E1, no RTS/CTS,
 *       lines 42-52; commands end with CR, replies are CR-terminated, lines 75-90; RMOTOR ->
 *       MOTORON / MOTOROFF at setup, lines 58-73; LON -> the code data, "NG" (reader off) or
 *       "ERR99" (error), then LOFF to release the read beam, lines 95-109)
 *     pylabrobot/legacy/barcode_scanners/keyence/keyence_backend_tests.py  (b"RMOTOR\r" on the
 *       wire, line 24; "MOTORON" read up to CR, line 28; "OK" to LOFF, line 34; LON "ABC123",
 *       "NG", "ERR99", lines 62-76)
 *     pylabrobot/keyence/barcode_scanner.py  (the same set for BL-600HA / BL-1300, lines 25-101)
 *   KEYENCE SR-750 Series User's Manual, 8-1 "Details of Command Communication" and 8-2
 *     "Operation commands" (pages 71-72): a command is answered "OK,<command>" or
 *     "ER,<command>,<ee>" (ee a two-digit error code) before any read result, with the header
 *     and terminator of the command (none + CR); the read result follows the answer to LON; a
 *     LOFF sent while no code was read is answered, then the read error is output ("ERROR",
 *     the default no-read string). Readers set to "SR-600 compatible" (and the BL series) send
 *     no OK/ER answer: the data, "ERROR" or the error alone.
 *
 * A label whose data is literally one of the reply words ("ERROR", "NG", "MOTORON", ...) cannot
 * be told from that reply; a lab's plate barcodes never are. */
#ifndef LAB_PROTO_KEYENCE_H
#define LAB_PROTO_KEYENCE_H

#include <stddef.h>

#include "protocols/proto.h"

/* Code data longer than this is refused (a plate label is at most 64 characters). */
#define KEYENCE_DATA_MAX 256

typedef enum keyence_cmd {
    KEYENCE_CMD_LON,    /* timing (trigger) on: start reading */
    KEYENCE_CMD_LOFF,   /* timing off: stop reading; a read not done yet ends in ERROR */
    KEYENCE_CMD_RMOTOR, /* BL series: is the scanning motor on? */
    KEYENCE_CMD_N
} keyence_cmd_t;

/* "LON", ... */
const char *keyence_cmd_name(keyence_cmd_t c);
/* The command with its CR into buf. Returns the length or a LAB_E* error. */
int keyence_encode_cmd(keyence_cmd_t c, char *buf, size_t cap);
/* One command line (terminator removed), simulator side: LAB_OK, or LAB_EUNKNOWN for a
 * command this codec does not know (the reader answers those with ER,<cmd>,00). */
int keyence_parse_cmd(const char *line, size_t len, keyence_cmd_t *out);

typedef enum keyence_reply_kind {
    KEYENCE_REPLY_DATA,     /* the label's code data */
    KEYENCE_REPLY_NOREAD,   /* "ERROR": no code read in the read time */
    KEYENCE_REPLY_OK,       /* "OK,<cmd>": the command was taken */
    KEYENCE_REPLY_ER,       /* "ER,<cmd>,<ee>": the command was refused */
    KEYENCE_REPLY_ERR,      /* "ERR<nn>": BL series error */
    KEYENCE_REPLY_NG,       /* "NG": the reader cannot read now (off) */
    KEYENCE_REPLY_MOTORON,  /* RMOTOR: the motor runs */
    KEYENCE_REPLY_MOTOROFF, /* RMOTOR: the motor is stopped */
} keyence_reply_kind_t;

typedef struct keyence_reply {
    keyence_reply_kind_t kind;
    /* OK / ER: the command answered, KEYENCE_CMD_N when it is not one of ours (its text is in
     * cmd_text). */
    keyence_cmd_t cmd;
    char cmd_text[16];
    int code; /* ER: ee (0..99); ERR: nn (0..99); else -1 */
    /* DATA: the code data, NUL-terminated (printable ASCII, 1..KEYENCE_DATA_MAX bytes) */
    char data[KEYENCE_DATA_MAX + 1];
    size_t len;
} keyence_reply_t;

/* One reply line, its terminator removed. LAB_OK; LAB_ESYNTAX for an empty line, a byte that
 * is not printable ASCII (the line is 7-bit), or a malformed OK/ER/ERR; LAB_ETOOLONG for data
 * beyond KEYENCE_DATA_MAX. */
int keyence_parse_reply(const char *line, size_t len, keyence_reply_t *out);
/* A reply with its CR, simulator side. Returns the length or a LAB_E* error (data that does
 * not parse back as data is LAB_EINVAL). */
int keyence_encode_reply(const keyence_reply_t *r, char *buf, size_t cap);

#endif
