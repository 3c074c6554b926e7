/* The MQTT topic table: every topic labloop publishes or subscribes to, relative to the cell's
 * root (topic_root/site/cell), with its direction, QoS, retain flag and the outbox kind that
 * feeds it. schemas/mqtt.md documents the same table; a new topic is a new row in both. */
#ifndef LAB_BUS_TOPICS_H
#define LAB_BUS_TOPICS_H

#include <stdbool.h>
#include <stddef.h>

typedef enum lab_topic_id {
    LAB_TOPIC_STATUS,
    LAB_TOPIC_INSTRUMENT_STATE,
    LAB_TOPIC_INSTRUMENT_TELEMETRY,
    LAB_TOPIC_RUN_STATE,
    LAB_TOPIC_MEASUREMENTS,
    LAB_TOPIC_CAMPAIGN_RESULTS,
    LAB_TOPIC_BATCH_DONE,
    LAB_TOPIC_INSTRUMENT_CONSUMABLES,
    LAB_TOPIC_AUDIT_HEAD,
    LAB_TOPIC_IN_RUNS,
    LAB_TOPIC_IN_BATCHES,
    LAB_TOPIC_IN_REPORT,
    LAB_TOPIC_PLATE_STATE,
    LAB_TOPIC_PLATE_MOVES,
    LAB_TOPIC_COUNT
} lab_topic_id_t;

typedef enum lab_topic_dir { LAB_TOPIC_OUT, LAB_TOPIC_IN } lab_topic_dir_t;

typedef struct lab_topic {
    lab_topic_id_t id;
    const char *name;    /* short name for logs */
    const char *pattern; /* relative to the root; {placeholders} are one topic level each */
    lab_topic_dir_t dir;
    int qos;
    bool retained;
    const char *kind; /* the outbox kind published here, or NULL */
} lab_topic_t;

/* Indexed by lab_topic_id_t. */
extern const lab_topic_t lab_topics[LAB_TOPIC_COUNT];

const lab_topic_t *lab_topic_get(lab_topic_id_t id);
/* The out topic an outbox kind maps to, or NULL when the kind is not published. */
const lab_topic_t *lab_topic_for_kind(const char *kind);
/* How many {placeholders} the pattern has. */
int lab_topic_nvars(const lab_topic_t *t);

/* root = topic_root "/" site "/" cell; malloc'd. */
char *lab_topic_root(const char *topic_root, const char *site, const char *cell);
/* Whether s may fill one topic level: not empty, no '/', '+', '#' or control characters, and
 * at most 256 bytes. */
bool lab_topic_level_ok(const char *s);
/* root "/" pattern with its placeholders filled from vars, in order. LAB_EINVAL when a value is
 * missing or not lab_topic_level_ok; *out is malloc'd. */
int lab_topic_format(const lab_topic_t *t, const char *root, const char *const *vars, int nvars,
                     char **out);
/* root "/" pattern with every placeholder as '+': the subscription filter; malloc'd. */
char *lab_topic_filter(const lab_topic_t *t, const char *root);
/* Whether an answer may be published to topic (a response topic or reply_to from outside): not
 * empty, at most 65535 bytes, no wildcard ('+', '#': the broker would drop the connection over
 * it), not a '$' topic (the broker's own). NULL when fine, else why not. UTF-8 is Paho's check. */
const char *lab_topic_reply_check(const char *topic);
/* MQTT filter matching ('+' one level, '#' the rest). */
bool lab_topic_match(const char *filter, const char *topic);

#endif
