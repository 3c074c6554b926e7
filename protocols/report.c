/* MQTT report documents: validation, conversion to readings, encoding and topic names. */
#include "protocols/report.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

static const struct {
    const char *suffix, *unit;
} units[] = {
    {"_c", "degC"},  {"_pct", "%"}, {"_nm", "nm"}, {"_ul", "uL"},   {"_ml", "mL"},
    {"_rpm", "rpm"}, {"_s", "s"},   {"_hz", "Hz"}, {"_ppm", "ppm"}, {"_mbar", "mbar"},
};

const char *report_unit(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        size_t k = strlen(units[i].suffix);
        /* The suffix needs a stem before it: "_c" alone is not a temperature. */
        if (n > k && strcmp(name + n - k, units[i].suffix) == 0)
            return units[i].unit;
    }
    return "";
}

/* Drops a UTF-8 character left incomplete at the end of s by a cut (a member's name is quoted
 * in part): the error is answered as JSON text. The codecs stand alone, hence not core/text.h. */
static void trim_utf8(char *s)
{
    size_t n = strlen(s), i = n;
    while (i > 0 && n - i < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return;
    unsigned char c = (unsigned char)s[i - 1];
    size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (need > 1 && 1 + (n - i) < need)
        s[i - 1] = '\0';
}

static int fail(report_error_t *err, int rc, const char *path, const char *fmt, ...)
{
    snprintf(err->path, sizeof err->path, "%s", path);
    trim_utf8(err->path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    trim_utf8(err->message);
    return rc;
}

static int num(const char *s, int n, int lo, int hi, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return v >= lo && v <= hi;
}

int report_ts_valid(const char *ts)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    size_t n = strnlen(ts, REPORT_TS_MAX);
    int y, mo, d, h, mi, s, oh, om;
    if (n >= REPORT_TS_MAX || n < 20)
        return 0;
    if (!num(ts, 4, 0, 9999, &y) || ts[4] != '-' || !num(ts + 5, 2, 1, 12, &mo) || ts[7] != '-' ||
        !num(ts + 8, 2, 1, mdays[mo - 1], &d) || (ts[10] != 'T' && ts[10] != 't') ||
        !num(ts + 11, 2, 0, 23, &h) || ts[13] != ':' || !num(ts + 14, 2, 0, 59, &mi) ||
        ts[16] != ':' || !num(ts + 17, 2, 0, 60, &s))
        return 0;
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return 0;
    const char *p = ts + 19;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return 0;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
        return 1;
    if ((*p == '+' || *p == '-') && num(p + 1, 2, 0, 23, &oh) && p[3] == ':' &&
        num(p + 4, 2, 0, 59, &om) && p[6] == '\0')
        return 1;
    return 0;
}

static int name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= REPORT_NAME_MAX || !islower((unsigned char)name[0]))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!islower((unsigned char)name[i]) && !isdigit((unsigned char)name[i]) && name[i] != '_')
            return 0;
    return 1;
}

/* A name as it may appear in an error path: printable, bounded. */
static void path_of(char *buf, size_t cap, const char *name)
{
    char safe[48];
    size_t i = 0;
    for (; name[i] && i < sizeof safe - 4; i++)
        safe[i] = isprint((unsigned char)name[i]) ? name[i] : '?';
    if (name[i]) {
        memcpy(safe + i, "...", 3);
        i += 3;
    }
    safe[i] = '\0';
    snprintf(buf, cap, "$.values.%s", safe);
}

int report_parse(const char *json, size_t len, report_t *out, report_error_t *err)
{
    json_error_t je;
    int rc = LAB_OK;
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fail(err, LAB_ESYNTAX, "$", "invalid JSON at line %d column %d: %s", je.line,
                    je.column, je.text);
    if (!json_is_object(root)) {
        rc = fail(err, LAB_ESYNTAX, "$", "must be an object");
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "ts") != 0 && strcmp(key, "values") != 0) {
            char path[96];
            snprintf(path, sizeof path, "$.%.40s", key);
            rc = fail(err, LAB_ESYNTAX, path, "unknown member (allowed: ts, values)");
            goto done;
        }
    }
    json_t *ts = json_object_get(root, "ts");
    if (ts) {
        if (!json_is_string(ts)) {
            rc = fail(err, LAB_ESYNTAX, "$.ts", "must be a string");
            goto done;
        }
        if (!report_ts_valid(json_string_value(ts))) {
            rc = fail(err, LAB_ESYNTAX, "$.ts",
                      "must be an RFC 3339 date-time such as 2026-11-23T00:55:31Z");
            goto done;
        }
        out->has_ts = 1;
        snprintf(out->ts, sizeof out->ts, "%s", json_string_value(ts));
    }
    json_t *values = json_object_get(root, "values");
    if (!values) {
        rc = fail(err, LAB_ESYNTAX, "$.values", "missing");
        goto done;
    }
    if (!json_is_object(values)) {
        rc = fail(err, LAB_ESYNTAX, "$.values", "must be an object");
        goto done;
    }
    if (json_object_size(values) == 0) {
        rc = fail(err, LAB_ESYNTAX, "$.values", "must hold at least one reading");
        goto done;
    }
    if (json_object_size(values) > REPORT_MAX_VALUES) {
        rc = fail(err, LAB_ETOOLONG, "$.values", "more than %d readings", REPORT_MAX_VALUES);
        goto done;
    }
    json_object_foreach(values, key, val)
    {
        char path[96];
        path_of(path, sizeof path, key);
        if (!name_valid(key)) {
            rc = fail(err, LAB_ESYNTAX, path,
                      "name must match [a-z][a-z0-9_]* with at most %d characters",
                      REPORT_NAME_MAX - 1);
            goto done;
        }
        if (!json_is_number(val)) {
            rc = fail(err, LAB_ESYNTAX, path, "must be a number");
            goto done;
        }
        double v = json_number_value(val);
        if (!isfinite(v)) {
            rc = fail(err, LAB_ERANGE, path, "must be finite");
            goto done;
        }
        report_value_t *rv = &out->values[out->n++];
        snprintf(rv->name, sizeof rv->name, "%s", key);
        rv->value = v;
        rv->unit = report_unit(key);
    }
done:
    json_decref(root);
    return rc;
}

int report_encode(const report_t *r, char *buf, size_t cap)
{
    int rc = LAB_ESYNTAX;
    json_t *root = json_object(), *values = json_object();
    if (!root || !values) {
        json_decref(values);
        rc = LAB_ENOMEM;
        goto fail;
    }
    json_object_set_new(root, "values", values);
    if (r->has_ts) {
        if (!report_ts_valid(r->ts))
            goto fail;
        json_object_set_new(root, "ts", json_string(r->ts));
    }
    if (r->n == 0 || r->n > REPORT_MAX_VALUES)
        goto fail;
    for (size_t i = 0; i < r->n; i++) {
        if (!name_valid(r->values[i].name) || !isfinite(r->values[i].value) ||
            json_object_get(values, r->values[i].name))
            goto fail;
        json_object_set_new(values, r->values[i].name, json_real(r->values[i].value));
    }
    size_t n =
        json_dumpb(root, buf, cap, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (n == 0 || n >= cap) {
        rc = LAB_ENOSPACE;
        goto fail;
    }
    buf[n] = '\0';
    json_decref(root);
    return (int)n;
fail:
    json_decref(root);
    return rc;
}

static const char topic_prefix[] = "in/instruments/";
static const char topic_suffix[] = "/report";

static int id_valid(const char *id, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (id[i] == '/' || id[i] == '+' || id[i] == '#' || id[i] == '\0')
            return 0;
    return 1;
}

int report_topic(const char *instrument_id, char *buf, size_t cap)
{
    if (!id_valid(instrument_id, strlen(instrument_id)))
        return LAB_ERANGE;
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    proto_out_fmt(&o, "%s", topic_prefix);
    proto_out_mem(&o, instrument_id, strlen(instrument_id));
    proto_out_fmt(&o, "%s", topic_suffix);
    return proto_out_result(&o);
}

int report_topic_parse(const char *topic, char *id, size_t cap)
{
    size_t n = strlen(topic), p = sizeof topic_prefix - 1, s = sizeof topic_suffix - 1;
    if (n <= p + s || memcmp(topic, topic_prefix, p) != 0 ||
        memcmp(topic + n - s, topic_suffix, s) != 0)
        return LAB_ESYNTAX;
    size_t idn = n - p - s;
    if (!id_valid(topic + p, idn))
        return LAB_ESYNTAX;
    if (idn + 1 > cap)
        return LAB_ENOSPACE;
    memcpy(id, topic + p, idn);
    id[idn] = '\0';
    return LAB_OK;
}
