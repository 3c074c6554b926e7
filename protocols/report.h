/* Instrument readings reported over MQTT on in/instruments/{id}/report. Owns the topic name, the
 * document's definition, its validation with precise errors (JSON path + message) and its
 * conversion into (name, value, unit) readings; the simulator uses the encoder.
 *
 * The document:
 *   {"ts": "2026-11-23T00:55:31.250Z",          optional, RFC 3339 with seconds and an offset
 *    "values": {"temperature_c": 23.4, ...}}    required, 1..REPORT_MAX_VALUES members
 * No other members. A value is a finite JSON number (not a boolean, string or null). A name
 * matches [a-z][a-z0-9_]* (at most REPORT_NAME_MAX - 1 characters); its unit comes from its
 * suffix (_c degC, _pct %, _nm nm, _ul uL, _ml mL, _rpm rpm, _s s, _hz Hz, _ppm ppm,
 * _mbar mbar); a name without a known suffix is dimensionless (unit ""). */
#ifndef LAB_PROTO_REPORT_H
#define LAB_PROTO_REPORT_H

#include <stddef.h>

#include "protocols/proto.h"

#define REPORT_MAX_VALUES 256
#define REPORT_NAME_MAX 64
#define REPORT_TS_MAX 40

typedef struct report_value {
    char name[REPORT_NAME_MAX];
    double value;
    const char *unit;
} report_value_t;

typedef struct report {
    int has_ts;
    char ts[REPORT_TS_MAX];
    size_t n;
    report_value_t values[REPORT_MAX_VALUES];
} report_t;

typedef struct report_error {
    char path[96];
    char message[160];
} report_error_t;

/* Parse and validate. On error returns LAB_ESYNTAX (or LAB_ERANGE / LAB_ETOOLONG) and
 * fills err; out is then unspecified. */
int report_parse(const char *json, size_t len, report_t *out, report_error_t *err);
/* Compact JSON into buf (NUL-terminated); length or LAB_ENOSPACE / LAB_ESYNTAX. */
int report_encode(const report_t *r, char *buf, size_t cap);

/* The unit of a name from its suffix; "" if none is known. */
const char *report_unit(const char *name);
/* RFC 3339 date-time check ("2026-11-23T00:55:31Z", fractions and +hh:mm offsets allowed). */
int report_ts_valid(const char *ts);

/* "in/instruments/{id}/report", relative to the topic root labloop/v1/{site}/{cell}
 * (schemas/mqtt.md; docs/design.md, MQTT); id must be non-empty without '/', '+', '#'. */
int report_topic(const char *instrument_id, char *buf, size_t cap);
/* The instrument id of such a topic, copied into id. */
int report_topic_parse(const char *topic, char *id, size_t cap);

#endif
