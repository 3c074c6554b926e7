/* Liconic STX command/reply codec, error tables, transfer sequences and climate scaling.
 * Sources are listed in liconic.h. */
#include "protocols/liconic.h"

#include <ctype.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const controller_errors[] = {
    "Controller system error. Undefined timer, counter, data memory, check if requested unit is "
    "valid",
    "Controller system error. Invalid command, check if communication is opened by CR, check "
    "command sent to controller, check for interruptions during string transmission",
    "Controller system error. Firmware lost, reprogram controller",
    "Controller hardware error, turn controller ON/OFF, controller is faulty has to be replaced",
    "Controller system error. Unauthorized Access",
    "Controller system error. Unauthorized Access",
};

const char *liconic_controller_error_text(int code)
{
    if (code < 0 || code >= (int)(sizeof controller_errors / sizeof controller_errors[0]))
        return NULL;
    return controller_errors[code];
}

/* Handler errors: the hundreds digit names the procedure; groups 0 and 3..7 share the same
 * sub-codes, import (1xx) and export (2xx) have their own. */
typedef struct code_text {
    int code;
    const char *text;
} code_text_t;

static const code_text_t general_errors[] = {
    {1, "Handling action could not be performed in time"},
    {7, "Gate could not reach upper position or Gate did not reach upper position in time"},
    {8, "Gate could not reach lower position or Gate did not reach lower position in time"},
    {9, "Handler-Lift could not reach desired level position or does not move"},
    {10, "Unauthorized user access in combination with manual rotation of carrousel"},
    {11, "Stacker slot cannot be reached"},
    {12, "Undefined stacker level has been requested"},
    {13, "Export operation while plate is on transfer station"},
    {14, "Lift could not be initialized"},
    {15, "Trying to load a plate, when a plate is already on the shovel"},
    {16, "Trying to remove or place plate with no plate on the shovel"},
    {17, "Recovery was not possible"},
    {0, NULL},
};

static const code_text_t import_errors[] = {
    {0, "Carrousel could not reach desired radial position or Lift could not reach transfer "
        "level"},
    {1, "Handler could not reach outer turn position at transfer level"},
    {2, "Shovel could not reach outer position at transfer level"},
    {3, "Lift did not reach upper pick position at transfer level"},
    {4, "Shovel could not reach inner position at transfer level"},
    {5, "Handler could not reach inner turn position at transfer level"},
    {6, "Lift could not reach desired stacker level"},
    {7, "Shovel could not reach front position on stacker access"},
    {8, "Lift could not reach stacker place level"},
    {9, "Shovel could not reach inner position at stacker plate placement"},
    {10, "Lift could not reach zero level"},
    {11, "Lift could not be initialized after Import Plate procedure"},
    {-1, NULL},
};

static const code_text_t export_errors[] = {
    {0, "Carrousel could not reach desired radial position or Lift could not reach desired "
        "stacker level"},
    {1, "Shovel could not reach front position on stacker access"},
    {2, "Lift could not reach stacker pick level"},
    {3, "Shovel could not reach inner position at stacker plate pick"},
    {4, "Lift could not reach transfer level"},
    {5, "Handler could not reach outer turn position at transfer level"},
    {6, "Shovel could not reach outer position at transfer level"},
    {7, "Lift did not reach lower place position at transfer level"},
    {8, "Shovel could not reach inner position at transfer level"},
    {9, "Handler could not reach inner turn position at transfer level"},
    {10, "Lift could not reach Zero position"},
    {11, "Lift could not be initialized after Export Plate procedure"},
    {-1, NULL},
};

static const struct {
    const char *name;
    const code_text_t *table;
} handler_groups[8] = {
    {"general handling", general_errors}, {"import plate", import_errors},
    {"export plate", export_errors},      {"plate remove", general_errors},
    {"barcode read", general_errors},     {"plate place", general_errors},
    {"plate set", general_errors},        {"plate get", general_errors},
};

int liconic_handler_error_lookup(int code, liconic_handler_error_t *out)
{
    if (code < 0 || code > 799)
        return LAB_EUNKNOWN;
    int group = code / 100, sub = code % 100;
    const code_text_t *t = handler_groups[group].table;
    /* Group 0 has no sub-code 0: "00000" means no error, which is not an error to look up. */
    for (; t->text; t++) {
        if (t->code == sub) {
            out->code = code;
            out->group = handler_groups[group].name;
            out->text = t->text;
            return LAB_OK;
        }
    }
    return LAB_EUNKNOWN;
}

/* ---- commands ---- */

typedef struct op_syntax {
    liconic_op_t op;
    const char *verb;
    int dm;    /* the address is written "DMnnnn" */
    int value; /* a value follows */
} op_syntax_t;

static const op_syntax_t ops[] = {
    {LICONIC_OP_OPEN, "CR", 0, 0},    {LICONIC_OP_SET, "ST", 0, 0},
    {LICONIC_OP_RESET, "RS", 0, 0},   {LICONIC_OP_READ, "RD", 0, 0},
    {LICONIC_OP_READ_DM, "RD", 1, 0}, {LICONIC_OP_WRITE_DM, "WR", 1, 1},
};

static const op_syntax_t *op_find(liconic_op_t op)
{
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (ops[i].op == op)
            return &ops[i];
    return NULL;
}

int liconic_encode_cmd(const liconic_cmd_t *cmd, char *buf, size_t cap)
{
    const op_syntax_t *s = op_find(cmd->op);
    if (!s)
        return LAB_EUNKNOWN;
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    if (cmd->op == LICONIC_OP_OPEN) {
        proto_out_fmt(&o, "CR\r");
        return proto_out_result(&o);
    }
    if (cmd->addr < 0 || cmd->addr > 9999)
        return LAB_ERANGE;
    proto_out_fmt(&o, "%s %s%d", s->verb, s->dm ? "DM" : "", cmd->addr);
    if (s->value) {
        if (cmd->value < 0 || cmd->value > 99999 || cmd->width < 0 || cmd->width > 5)
            return LAB_ERANGE;
        proto_out_fmt(&o, " %0*d", cmd->width, cmd->value);
    }
    proto_out_mem(&o, "\r", 1);
    return proto_out_result(&o);
}

/* Unsigned decimal of 1..max_digits digits at *p; advances *p. */
static int take_uint(const char **p, const char *end, int max_digits, long *out, int *ndigits)
{
    long v = 0;
    int n = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        if (++n > max_digits)
            return LAB_ERANGE;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    if (n == 0)
        return LAB_ESYNTAX;
    *out = v;
    if (ndigits)
        *ndigits = n;
    return LAB_OK;
}

int liconic_parse_cmd(const char *line, size_t len, liconic_cmd_t *out)
{
    const char *p = line, *end = line + len;
    memset(out, 0, sizeof *out);
    if (len == 2 && memcmp(line, "CR", 2) == 0) {
        out->op = LICONIC_OP_OPEN;
        return LAB_OK;
    }
    if (len < 4 || line[2] != ' ')
        return LAB_ESYNTAX;
    int dm = end - p >= 5 && memcmp(p + 3, "DM", 2) == 0;
    const op_syntax_t *s = NULL;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (ops[i].op != LICONIC_OP_OPEN && memcmp(ops[i].verb, p, 2) == 0 && ops[i].dm == dm)
            s = &ops[i];
    if (!s)
        return LAB_EUNKNOWN;
    p += 3 + (dm ? 2 : 0);
    long addr, value;
    int rc = take_uint(&p, end, 4, &addr, NULL);
    if (rc)
        return rc;
    out->op = s->op;
    out->addr = (int)addr;
    if (s->value) {
        int nd;
        if (p == end || *p != ' ')
            return LAB_ESYNTAX;
        p++;
        rc = take_uint(&p, end, 5, &value, &nd);
        if (rc)
            return rc;
        out->value = (int)value;
        out->width = nd;
    }
    return p == end ? LAB_OK : LAB_ESYNTAX;
}

/* ---- replies ---- */

int liconic_parse_reply(const char *line, size_t len, liconic_reply_t *out)
{
    memset(out, 0, sizeof *out);
    /* Replies may carry trailing spaces on some firmware; they are not part of the value. */
    while (len > 0 && line[len - 1] == ' ')
        len--;
    if (len == 2 && memcmp(line, "CC", 2) == 0) {
        out->kind = LICONIC_REPLY_CC;
        return LAB_OK;
    }
    if (len == 2 && memcmp(line, "OK", 2) == 0) {
        out->kind = LICONIC_REPLY_OK;
        return LAB_OK;
    }
    const char *p = line, *end = line + len;
    if (len >= 2 && line[0] == 'E') {
        long code;
        p++;
        int rc = take_uint(&p, end, 2, &code, NULL);
        if (rc || p != end)
            return LAB_ESYNTAX;
        out->kind = LICONIC_REPLY_ERROR;
        out->error = (int)code;
        out->text = liconic_controller_error_text((int)code);
        return out->text ? LAB_OK : LAB_EUNKNOWN;
    }
    int neg = p < end && *p == '-';
    p += neg;
    long v;
    int rc = take_uint(&p, end, 9, &v, NULL);
    if (rc || p != end)
        return LAB_ESYNTAX;
    out->kind = LICONIC_REPLY_VALUE;
    out->value = neg ? -v : v;
    return LAB_OK;
}

int liconic_encode_reply(const liconic_reply_t *r, char *buf, size_t cap)
{
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    switch (r->kind) {
    case LICONIC_REPLY_CC:
        proto_out_fmt(&o, "CC\r\n");
        break;
    case LICONIC_REPLY_OK:
        proto_out_fmt(&o, "OK\r\n");
        break;
    case LICONIC_REPLY_VALUE:
        proto_out_fmt(&o, "%ld\r\n", r->value);
        break;
    case LICONIC_REPLY_ERROR:
        if (!liconic_controller_error_text(r->error))
            return LAB_EUNKNOWN;
        proto_out_fmt(&o, "E%d\r\n", r->error);
        break;
    default:
        return LAB_EUNKNOWN;
    }
    return proto_out_result(&o);
}

/* ---- sequences ---- */

typedef struct seq {
    liconic_step_t *steps;
    size_t cap, n;
} seq_t;

static void seq_add(seq_t *s, liconic_op_t op, int addr, int value, int poll)
{
    if (s->n < s->cap)
        s->steps[s->n] = (liconic_step_t){{op, addr, value, 0}, poll};
    s->n++;
}

static int seq_done(const seq_t *s)
{
    return s->n > s->cap ? LAB_ENOSPACE : (int)s->n;
}

int liconic_seq_open(liconic_step_t *steps, size_t cap)
{
    seq_t s = {steps, cap, 0};
    seq_add(&s, LICONIC_OP_OPEN, 0, 0, 0);
    seq_add(&s, LICONIC_OP_SET, LICONIC_FLAG_ACTIVATE_HANDLING, 0, 0);
    seq_add(&s, LICONIC_OP_READ, LICONIC_FLAG_READY, 0, 1);
    return seq_done(&s);
}

static int site_check(const liconic_site_t *site)
{
    if (site->cassette < 1 || site->cassette > 99 || site->slot < 1 || site->slots < 1 ||
        site->slot > site->slots || site->slots > 999 || site->pitch_steps < 1 ||
        site->pitch_steps > 99999)
        return LAB_ERANGE;
    return LAB_OK;
}

static void seq_site(seq_t *s, const liconic_site_t *site)
{
    seq_add(s, LICONIC_OP_WRITE_DM, LICONIC_DM_CASSETTE, site->cassette, 0);
    seq_add(s, LICONIC_OP_WRITE_DM, LICONIC_DM_PITCH_STEPS, site->pitch_steps, 0);
    seq_add(s, LICONIC_OP_WRITE_DM, LICONIC_DM_SLOTS_PER_CASSETTE, site->slots, 0);
    seq_add(s, LICONIC_OP_WRITE_DM, LICONIC_DM_SLOT, site->slot, 0);
}

static int seq_transfer(const liconic_site_t *site, int flag, liconic_step_t *steps, size_t cap)
{
    int rc = site_check(site);
    if (rc)
        return rc;
    seq_t s = {steps, cap, 0};
    seq_site(&s, site);
    seq_add(&s, LICONIC_OP_SET, flag, 0, 0);
    seq_add(&s, LICONIC_OP_READ, LICONIC_FLAG_READY, 0, 1);
    seq_add(&s, LICONIC_OP_SET, LICONIC_FLAG_TERMINATE_ACCESS, 0, 0);
    return seq_done(&s);
}

int liconic_seq_load(const liconic_site_t *site, liconic_step_t *steps, size_t cap)
{
    return seq_transfer(site, LICONIC_FLAG_PLATE_FROM_TRANSFER, steps, cap);
}

int liconic_seq_unload(const liconic_site_t *site, liconic_step_t *steps, size_t cap)
{
    return seq_transfer(site, LICONIC_FLAG_PLATE_TO_TRANSFER, steps, cap);
}

int liconic_seq_move(const liconic_site_t *from, const liconic_site_t *to, liconic_step_t *steps,
                     size_t cap)
{
    int rc = site_check(from);
    if (!rc)
        rc = site_check(to);
    if (rc)
        return rc;
    seq_t s = {steps, cap, 0};
    seq_site(&s, from);
    seq_add(&s, LICONIC_OP_SET, LICONIC_FLAG_PICK_FROM_SLOT, 0, 0);
    seq_add(&s, LICONIC_OP_READ, LICONIC_FLAG_READY, 0, 1);
    /* The cassette word is rewritten only when it changes, as the vendor sequence does. */
    if (to->cassette != from->cassette)
        seq_add(&s, LICONIC_OP_WRITE_DM, LICONIC_DM_CASSETTE, to->cassette, 0);
    seq_add(&s, LICONIC_OP_WRITE_DM, LICONIC_DM_PITCH_STEPS, to->pitch_steps, 0);
    seq_add(&s, LICONIC_OP_WRITE_DM, LICONIC_DM_SLOTS_PER_CASSETTE, to->slots, 0);
    seq_add(&s, LICONIC_OP_WRITE_DM, LICONIC_DM_SLOT, to->slot, 0);
    seq_add(&s, LICONIC_OP_SET, LICONIC_FLAG_PLACE_TO_SLOT, 0, 0);
    seq_add(&s, LICONIC_OP_READ, LICONIC_FLAG_READY, 0, 1);
    seq_add(&s, LICONIC_OP_SET, LICONIC_FLAG_TERMINATE_ACCESS, 0, 0);
    return seq_done(&s);
}

/* ---- climate ---- */

static const struct {
    int set_dm, actual_dm;
    double per_unit; /* raw counts per engineering unit */
    double min, max;
} climate[] = {
    [LICONIC_CLIMATE_TEMPERATURE] = {LICONIC_DM_TEMP_SET, LICONIC_DM_TEMP_ACTUAL, 10, 0, 99},
    [LICONIC_CLIMATE_HUMIDITY] = {LICONIC_DM_HUMIDITY_SET, LICONIC_DM_HUMIDITY_ACTUAL, 10, 0, 100},
    [LICONIC_CLIMATE_CO2] = {LICONIC_DM_CO2_SET, LICONIC_DM_CO2_ACTUAL, 100, 0, 100},
    [LICONIC_CLIMATE_N2] = {LICONIC_DM_N2_SET, LICONIC_DM_N2_ACTUAL, 100, 0, 100},
};

static int climate_ok(liconic_climate_t what)
{
    return (int)what >= 0 && (size_t)what < sizeof climate / sizeof climate[0];
}

int liconic_climate_set_cmd(liconic_climate_t what, double value, liconic_cmd_t *out)
{
    if (!climate_ok(what))
        return LAB_EUNKNOWN;
    if (!isfinite(value) || value < climate[what].min || value > climate[what].max)
        return LAB_ERANGE;
    long raw = lround(value * climate[what].per_unit);
    /* The PLC word carries no sign: set points below 0 degC are not writable this way. */
    if (raw < 0 || raw > 99999)
        return LAB_ERANGE;
    *out = (liconic_cmd_t){LICONIC_OP_WRITE_DM, climate[what].set_dm, (int)raw, 5};
    return LAB_OK;
}

int liconic_climate_read_cmd(liconic_climate_t what, int setpoint, liconic_cmd_t *out)
{
    if (!climate_ok(what))
        return LAB_EUNKNOWN;
    *out = (liconic_cmd_t){LICONIC_OP_READ_DM,
                           setpoint ? climate[what].set_dm : climate[what].actual_dm, 0, 0};
    return LAB_OK;
}

double liconic_climate_from_raw(liconic_climate_t what, long raw)
{
    if (!climate_ok(what))
        return NAN;
    return (double)raw / climate[what].per_unit;
}

/* ---- rack types ---- */

#define LICONIC_RACK_ROW(name, h, p, n, st) {name, h, p, n, st},
const liconic_rack_t liconic_racks[] = {LICONIC_RACKS(LICONIC_RACK_ROW)};
const size_t liconic_racks_n = sizeof liconic_racks / sizeof liconic_racks[0];

const liconic_rack_t *liconic_rack_find(const char *name)
{
    for (size_t i = 0; name && i < liconic_racks_n; i++)
        if (strcmp(liconic_racks[i].name, name) == 0)
            return &liconic_racks[i];
    return NULL;
}

int liconic_rack_verified(const liconic_rack_t *r)
{
    /* Liconic's documented reference points: 788 steps for 23 mm, 1713 for 50 mm. */
    return r->steps == (r->pitch * 1713 + 25) / 50;
}

/* ---- cassettes ---- */

#define CASSETTE_FORMS                                                                             \
    "rack_type = NAME (with cassettes = N) for cassettes of one rack, or rack_types = "            \
    "1:NAME, 2:NAME, ... per cassette"

static int cassettes_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int cassettes_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return LAB_ESYNTAX;
}

/* One "N:NAME" entry of rack_types, spaces around either part allowed. */
static int cassettes_entry(const char *s, size_t len, int k, liconic_cassettes_t *out, char *err,
                           size_t errlen)
{
    while (len && isspace((unsigned char)*s))
        s++, len--;
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    const char *colon = memchr(s, ':', len);
    if (!len || !colon || colon == s)
        return cassettes_fail(err, errlen,
                              "rack_types: entry %d '%.*s' is not CASSETTE:RACK "
                              "(e.g. 1:liconic_rack_17mm_22)",
                              k, (int)(len > 64 ? 64 : len), s);
    size_t dl = (size_t)(colon - s);
    while (dl && isspace((unsigned char)s[dl - 1]))
        dl--;
    int c = 0;
    for (size_t i = 0; i < dl; i++)
        c = isdigit((unsigned char)s[i]) && c <= LICONIC_CASSETTES_MAX ? c * 10 + (s[i] - '0') : -1;
    if (c < 1 || c > LICONIC_CASSETTES_MAX)
        return cassettes_fail(err, errlen,
                              "rack_types: entry %d: cassette '%.*s' is not a number from 1 to %d",
                              k, (int)dl, s, LICONIC_CASSETTES_MAX);
    const char *name = colon + 1;
    size_t nlen = len - (size_t)(name - s);
    while (nlen && isspace((unsigned char)*name))
        name++, nlen--;
    char buf[64];
    if (!nlen || nlen >= sizeof buf)
        return cassettes_fail(err, errlen, "rack_types: cassette %d: no rack type%s", c,
                              nlen ? " of that length" : " after ':'");
    memcpy(buf, name, nlen);
    buf[nlen] = 0;
    const liconic_rack_t *r = liconic_rack_find(buf);
    if (!r)
        return cassettes_fail(err, errlen,
                              "rack_types: cassette %d: '%s' is not a known rack type (one of %s)",
                              c, buf, LICONIC_RACK_CHOICES);
    if (out->rack[c - 1])
        return cassettes_fail(err, errlen, "rack_types: cassette %d is given twice", c);
    out->rack[c - 1] = r;
    if (c > out->n)
        out->n = c;
    return LAB_OK;
}

int liconic_cassettes_parse(const char *rack_type, const char *rack_types, int cassettes,
                            liconic_cassettes_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (rack_type && rack_types)
        return cassettes_fail(err, errlen,
                              "rack_type and rack_types are both given; give one: " CASSETTE_FORMS);
    if (!rack_type && !rack_types)
        return cassettes_fail(err, errlen, "no rack type: give " CASSETTE_FORMS);
    if (rack_type) {
        const liconic_rack_t *r = liconic_rack_find(rack_type);
        if (!r)
            return cassettes_fail(err, errlen,
                                  "rack_type: '%s' is not a known rack type (one of %s)", rack_type,
                                  LICONIC_RACK_CHOICES);
        if (cassettes < 0 || cassettes > LICONIC_CASSETTES_MAX)
            return cassettes_fail(err, errlen, "cassettes: %d is not from 1 to %d", cassettes,
                                  LICONIC_CASSETTES_MAX);
        out->n = cassettes ? cassettes : 1;
        for (int c = 0; c < out->n; c++)
            out->rack[c] = r;
        return LAB_OK;
    }
    if (cassettes)
        return cassettes_fail(err, errlen,
                              "cassettes and rack_types are both given; rack_types names every "
                              "cassette, so leave out cassettes");
    int k = 1;
    for (const char *s = rack_types;; k++) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        int rc = cassettes_entry(s, len, k, out, err, errlen);
        if (rc != LAB_OK) {
            memset(out, 0, sizeof *out);
            return rc;
        }
        if (!comma)
            break;
        s = comma + 1;
    }
    for (int c = 0; c < out->n; c++)
        if (!out->rack[c]) {
            int n = out->n;
            memset(out, 0, sizeof *out);
            return cassettes_fail(err, errlen,
                                  "rack_types: cassette %d is missing (cassettes are numbered from "
                                  "1 without gaps; the highest given is %d)",
                                  c + 1, n);
        }
    return LAB_OK;
}

int liconic_cassettes_slots(const liconic_cassettes_t *c)
{
    int n = 0;
    for (int i = 0; i < c->n; i++)
        n += c->rack[i]->slots;
    return n;
}
