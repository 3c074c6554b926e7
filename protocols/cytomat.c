/* Thermo Cytomat telegram codec, code tables, climate forms, rack types and slot addresses.
 * Sources are listed in cytomat.h. */
#include "protocols/cytomat.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const model_names[CYTOMAT_NMODELS] = {
    [CYTOMAT_C6000] = "C6000",     [CYTOMAT_C6002] = "C6002",
    [CYTOMAT_C2C_425] = "C2C_425", [CYTOMAT_C2C_450_SHAKE] = "C2C_450_SHAKE",
    [CYTOMAT_C5C] = "C5C",
};

int cytomat_model_find(const char *name)
{
    for (int i = 0; name && i < CYTOMAT_NMODELS; i++)
        if (strcmp(model_names[i], name) == 0)
            return i;
    return -1;
}

bool cytomat_model_crlf(cytomat_model_t m)
{
    return m != CYTOMAT_C2C_425;
}

/* ---- code tables ---- */

typedef struct code_text {
    int code;
    const char *text;
} code_text_t;

/* "er XX" (PyLabRobot errors.py 70-87; 0x61 open-cytomat errors.py) */
static const code_text_t command_errors[] = {
    {0x01, "Device still busy, new command not accepted"},
    {0x02, "Command unknown"},
    {0x03, "Telegram structure error"},
    {0x04, "Incorrect parameter in telegram"},
    {0x05, "Unknown location number specified"},
    {0x11, "Incorrect handler (start) position"},
    {0x12, "Command cannot be executed as shovel is extended"},
    {0x21, "Handler already occupied"},
    {0x22, "Handler empty"},
    {0x31, "Transfer station empty"},
    {0x32, "Transfer station occupied"},
    {0x33, "Transfer station not in position"},
    {0x41, "Automatic lift door not configured"},
    {0x42, "Automatic lift door not open"},
    {0x51, "Error while accessing internal memory"},
    {0x52, "Incorrect password / unauthorized access"},
    {0x61, "Shaker not active"},
    {0, NULL},
};

/* "ch:be" (PyLabRobot constants.py 38-52, errors.py 142-178; 0E-14 open-cytomat status.py) */
static const code_text_t error_register[] = {
    {0x00, "No error"},
    {0x01, "Communication with motor controllers interrupted"},
    {0x02, "MTP not loaded on handler shovel"},
    {0x03, "MTP not unloaded from handler shovel"},
    {0x04, "Shovel not extended, automatic unit position error"},
    {0x05, "Process timeout"},
    {0x06, "Automatic lift door not open"},
    {0x07, "Automatic lift door not closed"},
    {0x08, "Shovel not retracted"},
    {0x0A, "Stepper motor controller temperature too high"},
    {0x0B, "Other stepper motor controller error"},
    {0x0C, "Transfer station not rotated"},
    {0x0D, "Communication with heating controllers and gas supply disturbed"},
    {0x0E, "Communication with shaker disturbed"},
    {0x0F, "Shaker configuration out of order"},
    {0x10, "Shaker not started"},
    {0x13, "Shaker clamp not open"},
    {0x14, "Shaker clamp not closed"},
    {0xFF, "Fatal error occurred during error routine"},
    {0, NULL},
};

/* "ch:bw" (PyLabRobot constants.py 22-35) */
static const code_text_t warning_register[] = {
    {0x00, "No warning"},
    {0x01, "Communication with motor controllers interrupted"},
    {0x02, "MTP not loaded on handler shovel"},
    {0x03, "MTP not unloaded from handler shovel"},
    {0x04, "Shovel not extended, handler movement error"},
    {0x05, "Process timeout"},
    {0x06, "Automatic lift door not open"},
    {0x07, "Automatic lift door not closed"},
    {0x08, "Shovel not retracted"},
    {0x09, "Initialization due to open device door"},
    {0x0C, "Transfer station not rotated"},
    {0x0D, "Other motor fault, init Phytron"},
    {0x0E, "Reinitialization carousel"},
    {0, NULL},
};

static const char *code_find(const code_text_t *t, int code)
{
    for (; t->text; t++)
        if (t->code == code)
            return t->text;
    return NULL;
}

const char *cytomat_command_error_text(int code)
{
    return code == 0 ? NULL : code_find(command_errors, code);
}

const char *cytomat_error_register_text(int code)
{
    return code_find(error_register, code);
}

const char *cytomat_warning_register_text(int code)
{
    return code_find(warning_register, code);
}

/* ---- telegrams ---- */

static bool printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* A command character: a lower-case letter, a digit, '+' or '-' ("h+", "c1"). */
static bool code_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '-';
}

int cytomat_cmd(cytomat_cmd_t *c, const char *type, const char *code, const char *params)
{
    memset(c, 0, sizeof *c);
    if (!type || strlen(type) != 2 || !islower((unsigned char)type[0]) ||
        !islower((unsigned char)type[1]) || !code || strlen(code) != 2 || !code_char(code[0]) ||
        !code_char(code[1]))
        return LAB_ESYNTAX;
    size_t pl = params ? strlen(params) : 0;
    if (pl > CYTOMAT_PARAMS_MAX || !printable(params ? params : "", pl) ||
        (pl && (params[0] == ' ' || params[pl - 1] == ' ')))
        return LAB_ESYNTAX;
    memcpy(c->type, type, 2);
    memcpy(c->code, code, 2);
    if (pl)
        memcpy(c->params, params, pl);
    return LAB_OK;
}

int cytomat_encode_cmd(const cytomat_cmd_t *c, bool crlf, char *buf, size_t cap)
{
    cytomat_cmd_t check;
    if (cytomat_cmd(&check, c->type, c->code, c->params) != LAB_OK)
        return LAB_ESYNTAX;
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    proto_out_fmt(&o, "%s:%s%s%s%s", c->type, c->code, c->params[0] ? " " : "", c->params,
                  crlf ? "\r\n" : "\r");
    return proto_out_result(&o);
}

int cytomat_parse_cmd(const char *line, size_t len, cytomat_cmd_t *out)
{
    memset(out, 0, sizeof *out);
    if (len < 5 || line[2] != ':' || (len > 5 && line[5] != ' ') || !printable(line, len))
        return LAB_ESYNTAX;
    char type[3] = {line[0], line[1], 0}, code[3] = {line[3], line[4], 0};
    char params[CYTOMAT_PARAMS_MAX + 1] = "";
    if (len > 6) {
        if (len - 6 > CYTOMAT_PARAMS_MAX)
            return LAB_ESYNTAX;
        memcpy(params, line + 6, len - 6);
        params[len - 6] = 0;
    } else if (len == 6) {
        return LAB_ESYNTAX; /* a space and nothing after it */
    }
    return cytomat_cmd(out, type, code, params);
}

int cytomat_parse_hex_byte(const char *s, int *out)
{
    int v = 0;
    for (int i = 0; i < 2; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0)
            return LAB_ESYNTAX;
        v = v * 16 + d;
    }
    if (s[2])
        return LAB_ESYNTAX;
    *out = v;
    return LAB_OK;
}

int cytomat_parse_reply(const char *line, size_t len, cytomat_reply_t *out)
{
    memset(out, 0, sizeof *out);
    if (!printable(line, len))
        return LAB_ESYNTAX;
    /* Surrounding spaces are not part of a reply (the sources split it on white space). */
    while (len && line[0] == ' ')
        line++, len--;
    while (len && line[len - 1] == ' ')
        len--;
    if (len < 2 || (len > 2 && line[2] != ' ') || !code_char(line[0]) || !code_char(line[1]))
        return LAB_ESYNTAX;
    const char *v = line + 2;
    size_t vl = len - 2;
    while (vl && *v == ' ')
        v++, vl--;
    if (vl > CYTOMAT_PARAMS_MAX)
        return LAB_ESYNTAX;
    char value[CYTOMAT_PARAMS_MAX + 1];
    memcpy(value, v, vl);
    value[vl] = 0;
    if (memcmp(line, "ok", 2) == 0 || memcmp(line, "er", 2) == 0) {
        out->kind = line[0] == 'o' ? CYTOMAT_REPLY_OK : CYTOMAT_REPLY_ERROR;
        return cytomat_parse_hex_byte(value, &out->byte);
    }
    out->kind = CYTOMAT_REPLY_CHECK;
    memcpy(out->code, line, 2);
    memcpy(out->value, value, vl + 1);
    return LAB_OK;
}

int cytomat_encode_reply(const cytomat_reply_t *r, char *buf, size_t cap)
{
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    switch (r->kind) {
    case CYTOMAT_REPLY_OK:
    case CYTOMAT_REPLY_ERROR:
        if (r->byte < 0 || r->byte > 0xFF)
            return LAB_ERANGE;
        proto_out_fmt(&o, "%s %02X\r", r->kind == CYTOMAT_REPLY_OK ? "ok" : "er", r->byte);
        break;
    case CYTOMAT_REPLY_CHECK:
        if (strlen(r->code) != 2 || !code_char(r->code[0]) || !code_char(r->code[1]) ||
            strlen(r->value) > CYTOMAT_PARAMS_MAX || !printable(r->value, strlen(r->value)))
            return LAB_ESYNTAX;
        proto_out_fmt(&o, "%s%s%s\r", r->code, r->value[0] ? " " : "", r->value);
        break;
    default:
        return LAB_EUNKNOWN;
    }
    return proto_out_result(&o);
}

/* ---- climate ---- */

static const char *const climate_codes[] = {
    [CYTOMAT_CLIMATE_TEMPERATURE] = "it",
    [CYTOMAT_CLIMATE_CO2] = "ic",
    [CYTOMAT_CLIMATE_HUMIDITY] = "ih",
    [CYTOMAT_CLIMATE_O2] = "io",
};

static bool climate_ok(cytomat_climate_t what)
{
    return (int)what >= 0 && (size_t)what < sizeof climate_codes / sizeof climate_codes[0];
}

int cytomat_climate_read_cmd(cytomat_climate_t what, cytomat_cmd_t *out)
{
    if (!climate_ok(what))
        return LAB_EUNKNOWN;
    return cytomat_cmd(out, "ch", climate_codes[what], NULL);
}

int cytomat_climate_set_cmd(cytomat_climate_t what, double value, cytomat_cmd_t *out)
{
    if (what != CYTOMAT_CLIMATE_TEMPERATURE && what != CYTOMAT_CLIMATE_CO2)
        return LAB_EUNKNOWN;
    /* open-cytomat refuses outside 0..100; "%04.1f" has room for 99.9 at most */
    if (!isfinite(value) || value < 0 || lround(value * 10) > 999)
        return LAB_ERANGE;
    char p[8];
    snprintf(p, sizeof p, "%04.1f", (double)lround(value * 10) / 10.0);
    return cytomat_cmd(out, "ll", climate_codes[what], p);
}

/* One decimal with an optional sign; advances *s past it. */
static int take_decimal(const char **s, double *out)
{
    const char *p = *s;
    if (*p == '+' || *p == '-')
        p++;
    int digits = 0, dots = 0;
    const char *start = *s;
    for (; (*p >= '0' && *p <= '9') || *p == '.'; p++) {
        if (*p == '.')
            dots++;
        else
            digits++;
    }
    if (!digits || dots > 1 || digits > 9)
        return LAB_ESYNTAX;
    char buf[16];
    size_t n = (size_t)(p - start);
    memcpy(buf, start, n);
    buf[n] = 0;
    *out = strtod(buf, NULL);
    *s = p;
    return LAB_OK;
}

int cytomat_parse_climate(const char *value, double *setpoint, double *actual)
{
    const char *p = value;
    double a, b;
    if (take_decimal(&p, &a) != LAB_OK || *p != ' ')
        return LAB_ESYNTAX;
    while (*p == ' ')
        p++;
    if (take_decimal(&p, &b) != LAB_OK || *p)
        return LAB_ESYNTAX;
    *setpoint = a;
    *actual = b;
    return LAB_OK;
}

/* ---- racks and slots ---- */

#define CYTOMAT_RACK_ROW(name, h, n) {name, h, n},
const cytomat_rack_t cytomat_racks[] = {CYTOMAT_RACKS(CYTOMAT_RACK_ROW)};
const size_t cytomat_racks_n = sizeof cytomat_racks / sizeof cytomat_racks[0];

const cytomat_rack_t *cytomat_rack_find(const char *name)
{
    for (size_t i = 0; name && i < cytomat_racks_n; i++)
        if (strcmp(cytomat_racks[i].name, name) == 0)
            return &cytomat_racks[i];
    return NULL;
}

/* ---- cassettes ---- */

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

static void cassette_set(cytomat_cassettes_t *out, int c, const cytomat_rack_t *r)
{
    out->rack[c - 1] = r;
    out->slots[c - 1] = r->slots;
    if (c > out->n)
        out->n = c;
}

/* One "N:NAME" entry of rack_types, spaces around either part allowed. */
static int cassettes_entry(const char *s, size_t len, int k, cytomat_cassettes_t *out, char *err,
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
                              "(e.g. 1:cytomat_rack_17mm_28)",
                              k, (int)(len > 64 ? 64 : len), s);
    size_t dl = (size_t)(colon - s);
    while (dl && isspace((unsigned char)s[dl - 1]))
        dl--;
    int c = 0;
    for (size_t i = 0; i < dl; i++)
        c = isdigit((unsigned char)s[i]) && c >= 0 && c <= CYTOMAT_CASSETTES_MAX
                ? c * 10 + (s[i] - '0')
                : -1;
    if (c < 1 || c > CYTOMAT_CASSETTES_MAX)
        return cassettes_fail(err, errlen,
                              "rack_types: entry %d: cassette '%.*s' is not a number from 1 to %d",
                              k, (int)(dl > 16 ? 16 : dl), s, CYTOMAT_CASSETTES_MAX);
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
    const cytomat_rack_t *r = cytomat_rack_find(buf);
    if (!r)
        return cassettes_fail(err, errlen,
                              "rack_types: cassette %d: '%s' is not a known rack type (one of %s)",
                              c, buf, CYTOMAT_RACK_CHOICES);
    if (out->rack[c - 1])
        return cassettes_fail(err, errlen, "rack_types: cassette %d is given twice", c);
    cassette_set(out, c, r);
    return LAB_OK;
}

int cytomat_cassettes_parse(const char *rack_type, const char *rack_types, int cassettes,
                            cytomat_cassettes_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (rack_type && rack_types)
        return cassettes_fail(err, errlen,
                              "rack_type and rack_types are both given; give one: rack_type = "
                              "NAME (with cassettes = N), or rack_types = 1:NAME, 2:NAME, ...");
    if (!rack_type && !rack_types)
        return cassettes_fail(err, errlen,
                              "rack_type: none given: give rack_type = NAME (with cassettes = N), "
                              "or rack_types = 1:NAME, 2:NAME, ...");
    if (rack_type) {
        const cytomat_rack_t *r = cytomat_rack_find(rack_type);
        if (!r)
            return cassettes_fail(err, errlen,
                                  "rack_type: '%s' is not a known rack type (one of %s)", rack_type,
                                  CYTOMAT_RACK_CHOICES);
        if (cassettes < 0 || cassettes > CYTOMAT_CASSETTES_MAX)
            return cassettes_fail(err, errlen, "cassettes: %d is not from 1 to %d", cassettes,
                                  CYTOMAT_CASSETTES_MAX);
        for (int c = 1; c <= (cassettes ? cassettes : 1); c++)
            cassette_set(out, c, r);
        return LAB_OK;
    }
    if (cassettes)
        return cassettes_fail(err, errlen,
                              "cassettes: rack_types names every cassette, so leave out cassettes");
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

int cytomat_cassettes_slots(const cytomat_cassettes_t *c)
{
    int n = 0;
    for (int i = 0; i < c->n && i < CYTOMAT_CASSETTES_MAX; i++)
        n += c->slots[i];
    return n;
}

/* ---- slots ---- */

static bool site_ok(int cassette, int slot, const cytomat_cassettes_t *cs)
{
    return cs->n >= 1 && cs->n <= CYTOMAT_CASSETTES_MAX && cassette >= 1 && cassette <= cs->n &&
           slot >= 1 && slot <= cs->slots[cassette - 1];
}

int cytomat_slot_param(cytomat_model_t m, int cassette, int slot, const cytomat_cassettes_t *cs,
                       char *buf, size_t cap)
{
    if ((int)m < 0 || m >= CYTOMAT_NMODELS || !site_ok(cassette, slot, cs))
        return LAB_ERANGE;
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    if (m == CYTOMAT_C2C_425) {
        if (cassette > 100 || slot > 100)
            return LAB_ERANGE;
        proto_out_fmt(&o, "%02d %02d", cassette - 1, slot - 1);
    } else {
        /* PyLabRobot cytomat.py:188-189: the capacities of the racks before it, then its own */
        int abs = slot;
        for (int c = 1; c < cassette; c++)
            abs += cs->slots[c - 1];
        if (abs > 999)
            return LAB_ERANGE;
        proto_out_fmt(&o, "%03d", abs);
    }
    return proto_out_result(&o);
}

static int digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return LAB_ESYNTAX;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return LAB_OK;
}

int cytomat_slot_parse(cytomat_model_t m, const char *param, const cytomat_cassettes_t *cs,
                       int *cassette, int *slot)
{
    size_t n = strlen(param);
    int c, s;
    if (m == CYTOMAT_C2C_425) {
        if (n != 5 || param[2] != ' ' || digits(param, 2, &c) || digits(param + 3, 2, &s))
            return LAB_ESYNTAX;
        c++, s++;
    } else {
        int abs;
        if (n != 3 || digits(param, 3, &abs))
            return LAB_ESYNTAX;
        if (abs < 1)
            return LAB_ERANGE;
        for (c = 1, s = abs; c <= cs->n && c <= CYTOMAT_CASSETTES_MAX && s > cs->slots[c - 1]; c++)
            s -= cs->slots[c - 1];
    }
    if (!site_ok(c, s, cs))
        return LAB_ERANGE;
    *cassette = c;
    *slot = s;
    return LAB_OK;
}
