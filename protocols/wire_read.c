/* The wire recording reader: one JSON object per line, checked key by key against the format's
 * table of event kinds. Every error names the line and the key at fault. */
#include "protocols/wire_read.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "protocols/proto.h"

static const struct {
    const char *name;
    wire_kind_t kind;
    int has_hex;
} kinds[] = {
    {"tx", WIRE_TX, 1},   {"rx", WIRE_RX, 1}, {"req", WIRE_REQ, 1},
    {"rsp", WIRE_RSP, 1}, {"ev", WIRE_EV, 0},
};

static const struct {
    const char *name;
    wire_ev_t ev;
} evs[] = {
    {"open", WIRE_EV_OPEN}, {"offline", WIRE_EV_OFFLINE}, {"break", WIRE_EV_BREAK},
    {"note", WIRE_EV_NOTE}, {"timeout", WIRE_EV_TIMEOUT},
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

const char *wire_kind_name(wire_kind_t k)
{
    if (k == WIRE_HEADER)
        return "header";
    for (size_t i = 0; i < N_OF(kinds); i++)
        if (kinds[i].kind == k)
            return kinds[i].name;
    return "?";
}

static int fail(char *err, size_t cap, int code, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(char *err, size_t cap, int code, int line, const char *fmt, ...)
{
    int n = snprintf(err, cap, "line %d: ", line);
    if (n >= 0 && (size_t)n < cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, cap - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* upper case is refused: the format says lower-case */
}

/* An optional string key copied into dst; present with another type, or too long, is an error. */
static int get_str(json_t *o, const char *key, char *dst, size_t cap, int required, int line,
                   char *err, size_t errcap)
{
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (required)
            return fail(err, errcap, LAB_ESYNTAX, line, "\"%s\" missing", key);
        dst[0] = '\0';
        return 0;
    }
    if (!json_is_string(v))
        return fail(err, errcap, LAB_ESYNTAX, line, "\"%s\" is not a string", key);
    if (json_string_length(v) >= cap)
        return fail(err, errcap, LAB_ETOOLONG, line, "\"%s\" longer than %zu bytes", key, cap - 1);
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int parse_header(json_t *o, int line, wire_item_t *it, char *err, size_t cap)
{
    json_t *v = json_object_get(o, "labloop_wire");
    if (!json_is_integer(v))
        return fail(err, cap, LAB_ESYNTAX, line, "\"labloop_wire\" is not an integer");
    if (json_integer_value(v) != WIRE_VERSION)
        return fail(err, cap, LAB_EUNKNOWN, line, "format version %lld, this reader reads %d",
                    (long long)json_integer_value(v), WIRE_VERSION);
    it->kind = WIRE_HEADER;
    it->version = WIRE_VERSION;
    int r = get_str(o, "id", it->id, sizeof it->id, 1, line, err, cap);
    if (!r)
        r = get_str(o, "driver", it->driver, sizeof it->driver, 0, line, err, cap);
    if (!r)
        r = get_str(o, "transport", it->transport, sizeof it->transport, 0, line, err, cap);
    if (!r)
        r = get_str(o, "settings", it->settings, sizeof it->settings, 0, line, err, cap);
    if (!r)
        r = get_str(o, "started", it->started, sizeof it->started, 0, line, err, cap);
    if (!r && !it->id[0])
        r = fail(err, cap, LAB_ESYNTAX, line, "\"id\" is empty");
    return r;
}

static int parse_hex(json_t *o, int line, wire_item_t *it, char *err, size_t cap)
{
    json_t *v = json_object_get(o, "hex");
    if (!v)
        return fail(err, cap, LAB_ESYNTAX, line, "\"hex\" missing");
    if (!json_is_string(v))
        return fail(err, cap, LAB_ESYNTAX, line, "\"hex\" is not a string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n % 2)
        return fail(err, cap, LAB_ESYNTAX, line, "\"hex\" has an odd number of digits (%zu)", n);
    if (n == 0)
        return fail(err, cap, LAB_ESYNTAX, line, "\"hex\" is empty");
    it->data = malloc(n / 2);
    if (!it->data)
        return fail(err, cap, LAB_ENOMEM, line, "out of memory");
    for (size_t i = 0; i < n; i += 2) {
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0)
            return fail(err, cap, LAB_ESYNTAX, line,
                        "\"hex\" character %zu is '%c', not a lower-case hex digit",
                        i + 1 + (hi >= 0), hi < 0 ? s[i] : s[i + 1]);
        it->data[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    it->len = n / 2;
    return 0;
}

static int parse_event(json_t *o, int line, wire_item_t *it, char *err, size_t cap)
{
    json_t *d = json_object_get(o, "d");
    if (!d)
        return fail(err, cap, LAB_ESYNTAX, line, "neither \"d\" nor \"labloop_wire\"");
    if (!json_is_string(d))
        return fail(err, cap, LAB_ESYNTAX, line, "\"d\" is not a string");
    size_t k = 0;
    while (k < N_OF(kinds) && strcmp(kinds[k].name, json_string_value(d)) != 0)
        k++;
    if (k == N_OF(kinds))
        return fail(err, cap, LAB_EUNKNOWN, line, "\"d\" is \"%.32s\" (tx, rx, req, rsp or ev)",
                    json_string_value(d));
    it->kind = kinds[k].kind;
    json_t *t = json_object_get(o, "t");
    if (!json_is_number(t) || !isfinite(json_number_value(t)) || json_number_value(t) < 0)
        return fail(err, cap, LAB_ESYNTAX, line, "\"t\" %s",
                    t ? "is not a number of seconds >= 0" : "missing");
    it->t = json_number_value(t);
    int r = get_str(o, "wall", it->wall, sizeof it->wall, 1, line, err, cap);
    if (r)
        return r;
    if (kinds[k].has_hex && (r = parse_hex(o, line, it, err, cap)))
        return r;
    if (it->kind == WIRE_REQ || it->kind == WIRE_RSP) {
        json_t *u = json_object_get(o, "unit");
        if (!json_is_integer(u) || json_integer_value(u) < 0 || json_integer_value(u) > 255)
            return fail(err, cap, LAB_ERANGE, line, "\"unit\" %s",
                        u ? "is not an integer 0..255" : "missing");
        it->unit = (int)json_integer_value(u);
    }
    if (it->kind == WIRE_EV) {
        json_t *e = json_object_get(o, "ev");
        if (!json_is_string(e))
            return fail(err, cap, LAB_ESYNTAX, line, "\"ev\" %s",
                        e ? "is not a string" : "missing");
        size_t i = 0;
        while (i < N_OF(evs) && strcmp(evs[i].name, json_string_value(e)) != 0)
            i++;
        if (i == N_OF(evs))
            return fail(err, cap, LAB_EUNKNOWN, line,
                        "\"ev\" is \"%.32s\" (open, offline, break, note or timeout)",
                        json_string_value(e));
        it->ev = evs[i].ev;
        json_t *tx = json_object_get(o, "text");
        if (tx && !json_is_string(tx))
            return fail(err, cap, LAB_ESYNTAX, line, "\"text\" is not a string");
        if (tx && !(it->text = strdup(json_string_value(tx))))
            return fail(err, cap, LAB_ENOMEM, line, "out of memory");
    }
    return 0;
}

int wire_parse_line(const char *text, size_t len, int line, wire_item_t *it, char *err,
                    size_t errcap)
{
    memset(it, 0, sizeof *it);
    it->line = line;
    json_error_t je;
    /* JSON_REJECT_DUPLICATES: a line with a key twice is ambiguous, not a recording. */
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    int r;
    if (!o)
        return fail(err, errcap, LAB_ESYNTAX, line, "not JSON (column %d: %s)", je.column, je.text);
    if (!json_is_object(o))
        r = fail(err, errcap, LAB_ESYNTAX, line, "not a JSON object");
    else if (json_object_get(o, "labloop_wire"))
        r = parse_header(o, line, it, err, errcap);
    else
        r = parse_event(o, line, it, err, errcap);
    json_decref(o);
    if (r) {
        wire_item_clear(it);
        it->line = line;
    }
    return r;
}

void wire_item_clear(wire_item_t *it)
{
    free(it->data);
    free(it->text);
    memset(it, 0, sizeof *it);
}

int wire_reader_open(wire_reader_t *r, const char *path, char *err, size_t errcap)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    r->f = fopen(path, "r");
    if (!r->f) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno));
        return LAB_EIO;
    }
    return 0;
}

int wire_reader_next(wire_reader_t *r, wire_item_t *it, char *err, size_t errcap)
{
    memset(it, 0, sizeof *it);
    ssize_t n = getline(&r->buf, &r->cap, r->f);
    if (n < 0) {
        if (ferror(r->f)) {
            snprintf(err, errcap, "%s:%d: %s", r->path, r->line + 1, strerror(errno));
            return LAB_ESYNTAX;
        }
        if (!r->seen_header) {
            snprintf(err, errcap, "%s: empty, no header line", r->path);
            return LAB_ESYNTAX;
        }
        return 0;
    }
    r->line++;
    char why[384];
    int rc;
    if (r->buf[n - 1] != '\n') {
        rc = fail(why, sizeof why, LAB_EAGAIN, r->line,
                  "not terminated by a newline (a recording cut short?)");
    } else if (memchr(r->buf, '\0', (size_t)n)) {
        rc = fail(why, sizeof why, LAB_ESYNTAX, r->line, "holds a NUL byte");
    } else {
        rc = wire_parse_line(r->buf, (size_t)n - 1, r->line, it, why, sizeof why);
        if (!rc && !r->seen_header && it->kind != WIRE_HEADER) {
            wire_item_clear(it);
            rc = fail(why, sizeof why, LAB_ESYNTAX, r->line,
                      "the first line is not a header ({\"labloop_wire\":1,...})");
        }
    }
    if (rc) {
        /* "line N: reason" becomes "path:N: reason" */
        snprintf(err, errcap, "%s:%d:%s", r->path, r->line, strchr(why, ':') + 1);
        return rc;
    }
    if (it->kind == WIRE_HEADER)
        r->seen_header = 1;
    return 1;
}

void wire_reader_close(wire_reader_t *r)
{
    if (r->f)
        fclose(r->f);
    free(r->buf);
    r->f = NULL;
    r->buf = NULL;
}
