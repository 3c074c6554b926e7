/* Hamilton Microlab STAR firmware command language: `<module 2><command 2>id####` followed by
 * two-letter lowercase parameters with fixed-width values; per-channel values are space separated
 * and a list shorter than the channel count ends with '&'. Replies echo module, command and id and
 * carry `er##/##` (master) or `er##` (slave module) plus per-module ` XY##/##` entries.
 * Owns: command/reply builder, message parser, the error tables (master codes, module names,
 * per-module trace texts) and the pending-command table that matches replies by id.
 *
 * Sources (facts only), PyLabRobot repository:
 *   pylabrobot/legacy/liquid_handling/backends/hamilton/base.py  (_assemble_command: id first,
 *       list joining and '&', _generate_id modulo 10000, reply matching by id or module+command)
 *   pylabrobot/legacy/liquid_handling/backends/hamilton/STAR_backend.py  (parse_star_fw_string,
 *       check_fw_string_error, error_code_to_exception classes with their texts,
 *       _module_id_to_module_name, trace_information_to_string tables)
 *   pylabrobot/legacy/liquid_handling/backends/hamilton/STAR_tests.py  (command and reply strings)
 *
 * Framing: over USB one bulk transfer is one message. On stream transports (the simulator's pty
 * or TCP link) labloop ends each message with CR LF and splits with proto_lines_t. */
#ifndef LAB_PROTO_STAR_H
#define LAB_PROTO_STAR_H

#include <stddef.h>
#include <stdint.h>

#include "protocols/proto.h"

#define STAR_MAX_PARAMS 96
#define STAR_MAX_ERRORS 40
#define STAR_PENDING_MAX 64
#define STAR_NO_ID (-1)

/* ---- building commands (driver) and replies (simulator) ---- */

typedef struct star_builder {
    proto_out_t o;
} star_builder_t;

/* id STAR_NO_ID leaves the id out (a few commands have none). */
void star_begin(star_builder_t *b, char *buf, size_t cap, const char *module, const char *cmd,
                int id);
/* Decimal, zero padded to width (sign included in the width, as the firmware writes it). */
void star_int(star_builder_t *b, const char *name, long v, int width);
void star_hex(star_builder_t *b, const char *name, unsigned long v, int width);
void star_str(star_builder_t *b, const char *name, const char *s);
/* Per-channel list; '&' ends it when n < channels. */
void star_list(star_builder_t *b, const char *name, const long *v, size_t n, int width,
               size_t channels);

/* A per-channel list for the channels in mask, laid out as PyLabRobot's base.py does
 * (_ops_to_fw_positions, _to_list, _assemble_command): one entry per channel up to the last one
 * in mask, then one more entry when that leaves the list shorter than channels, then '&' if it
 * is still shorter. v is indexed by channel; an entry for a channel outside mask is 0
 * (STAR_FILL_ZERO: tm, xp, yp) or the first channel in mask's value (STAR_FILL_FIRST: the rest,
 * which the firmware ignores where tm is 0). */
typedef enum star_fill { STAR_FILL_ZERO = 0, STAR_FILL_FIRST } star_fill_t;
size_t star_pattern_len(unsigned mask, size_t channels);
void star_list_pattern(star_builder_t *b, const char *name, const long *v, unsigned mask,
                       size_t channels, int width, star_fill_t fill);
/* Reply fields: master `er##/##`, and a module entry ` XY##/##`; slave replies use `er##`. */
void star_error(star_builder_t *b, int code, int trace);
void star_module_error(star_builder_t *b, const char *module, int code, int trace);
void star_slave_error(star_builder_t *b, int trace);
/* Length, or the first error. line = 1 appends CR LF for stream transports. */
int star_end(star_builder_t *b, int line);

/* ---- parsing ---- */

typedef struct star_param {
    char name[3];
    const char *val; /* into the parsed text, not NUL-terminated; list '&' removed */
    size_t len;
} star_param_t;

typedef struct star_err {
    char module[3]; /* "C0", "P1", ... */
    int code;       /* master error code, -1 for slave replies (er##) */
    int trace;      /* trace information */
    const char *module_name;
    const char *code_text;  /* NULL when the code is not in the table */
    const char *trace_text; /* NULL when the trace is not in the module's table */
} star_err_t;

typedef struct star_msg {
    char module[3], cmd[3];
    int id; /* STAR_NO_ID if absent */
    star_param_t params[STAR_MAX_PARAMS];
    size_t n_params;
    int has_er;
    star_err_t errors[STAR_MAX_ERRORS]; /* only entries other than 00 / 00/00 */
    size_t n_errors;
    size_t err_at; /* when star_parse fails: offset of the offending byte */
} star_msg_t;

/* A command (simulator side) or a reply (driver side). Returns LAB_OK even when the reply
 * reports errors: they are in m->errors (use star_msg_failed). Errors take the form
 * check_fw_string_error (STAR_backend.py) reads: the master C0 writes `er##/##` followed by
 * module entries `XY##/##`; every other module writes `er##` (its trace information). A master
 * reply with a bare `er##` is LAB_ESYNTAX: base.py would not see the error in it. */
int star_parse(const char *s, size_t len, star_msg_t *m);
int star_msg_failed(const star_msg_t *m);

const star_param_t *star_param(const star_msg_t *m, const char *name);
int star_param_int(const star_msg_t *m, const char *name, long *out);
int star_param_hex(const star_msg_t *m, const char *name, unsigned long *out);
int star_param_list(const star_msg_t *m, const char *name, long *out, size_t cap, size_t *n);

const char *star_module_name(const char *module);
const char *star_error_text(int code);
const char *star_trace_text(const char *module, int trace);

/* ---- command specifications (parameter names, widths, per-channel lists) ---- */

typedef struct star_param_spec {
    char name[3];
    int width; /* characters per value, sign included */
    int list;  /* one value per channel, space separated */
    int upto;  /* width is a maximum: PyLabRobot writes the value unpadded (C0TR tp/tz/th/te) */
} star_param_spec_t;

typedef struct star_cmd_spec {
    const char *module, *cmd, *title;
    const star_param_spec_t *params;
    size_t n;
} star_cmd_spec_t;

const star_cmd_spec_t *star_cmd_spec(const char *module, const char *cmd);
/* Simulator side: the master trace code the firmware would answer with er01/<code>:
 * 0 command well formed, 30 unknown command, 31 unknown parameter, 32 a value of the wrong width
 * or too many list values, 33 a parameter missing. which receives the offending parameter. */
int star_check_cmd(const star_msg_t *m, size_t channels, char which[3]);

/* ---- pending commands ---- */

typedef struct star_pending_entry {
    int used;
    int id;
    char module[3], cmd[3];
    void *ud;
} star_pending_entry_t;

typedef struct star_pending {
    star_pending_entry_t e[STAR_PENDING_MAX];
    int last_id;
} star_pending_t;

void star_pending_init(star_pending_t *t);
/* Allocates the next free id for module+cmd, counting as base.py's _generate_id does: 1, 2, ..
 * 9999, 0, 1, .. (skipping ids still pending). Returns it, or LAB_EFULL. */
int star_pending_add(star_pending_t *t, const char *module, const char *cmd, void *ud);
/* Registers a command sent without id; its reply is matched by module+command. */
int star_pending_add_noid(star_pending_t *t, const char *module, const char *cmd, void *ud);
/* Removes and returns the entry the reply answers; LAB_ENOMATCH if none. */
int star_pending_take(star_pending_t *t, const star_msg_t *reply, void **ud);
size_t star_pending_count(const star_pending_t *t);

#endif
