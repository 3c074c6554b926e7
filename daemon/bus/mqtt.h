/* The MQTT bridge: the only caller of Paho. Paho's callbacks run on its threads; they copy what
 * they got into a lab_tq item and return, and everything else happens on the loop thread. Publishes
 * the retained `status` (with a Will of "offline"), and the outbox at QoS 1: each message carries
 * cell, seq and ts; the cursor (saved in the local store) advances on acknowledgement, in order. */
#ifndef LAB_BUS_MQTT_H
#define LAB_BUS_MQTT_H

#include "core/cfg.h"
#include "core/clock.h"
#include "daemon/bus/topics.h"
#include "daemon/store/pg.h" /* lab_sink_stats_t */
#include "daemon/store/store.h"

#include <uv.h>

typedef struct lab_mqtt lab_mqtt_t;

int lab_mqtt_start(lab_mqtt_t **out, uv_loop_t *loop, const lab_config_t *cfg, lab_store_t *st,
                   const lab_clock_t *clock);
/* Publishes until caught up, the broker is unreachable, or grace_ms passed; then publishes the
 * retained status "offline", disconnects, and calls cb. The struct is freed before cb. */
void lab_mqtt_stop(lab_mqtt_t *m, uint64_t grace_ms, void (*cb)(void *arg), void *arg);
void lab_mqtt_stats(const lab_mqtt_t *m, lab_sink_stats_t *out);

/* The cell's topic root: topic_root/site/cell. */
const char *lab_mqtt_root(const lab_mqtt_t *m);

/* One MQTT 5 user property of an inbound message. */
typedef struct lab_mqtt_prop {
    const char *name, *value;
} lab_mqtt_prop_t;

/* An inbound message, on the loop thread; everything is valid during the callback only.
 * payload is NUL-terminated (len excludes the NUL); response_topic is the MQTT 5 Response Topic
 * or NULL; corr is the Correlation Data (corr_len bytes) or NULL; props are the user properties
 * in the order they came (at most LAB_MQTT_PROPS_MAX are kept). */
typedef struct lab_mqtt_in {
    const char *topic;
    const char *payload;
    size_t len;
    const char *response_topic;
    const void *corr;
    size_t corr_len;
    const lab_mqtt_prop_t *props;
    int nprops;
} lab_mqtt_in_t;
#define LAB_MQTT_PROPS_MAX 32
typedef void (*lab_mqtt_msg_cb)(void *ctx, const lab_mqtt_in_t *msg);
/* The value of the first user property called name, or NULL. */
const char *lab_mqtt_in_prop(const lab_mqtt_in_t *msg, const char *name);

/* Adds a filter to the subscription table: subscribed now when connected, and again on every
 * connect (a clean start loses subscriptions). A message goes to the first entry whose filter
 * matches; a shared subscription ($share/GROUP/FILTER) matches as FILTER. LAB_EINVAL for a bad
 * filter or QoS, LAB_ETOOBIG past 32 entries. */
int lab_mqtt_subscribe(lab_mqtt_t *m, const char *filter, int qos, lab_mqtt_msg_cb cb, void *ctx);

/* Where the answer to an inbound message goes: its response topic (or a reply_to the handler
 * found in the payload; NULL: nowhere), with the request's Correlation Data, which every answer
 * echoes, and the topic the request came on (for the log when it cannot be answered). An
 * asynchronous handler keeps one with lab_mqtt_return_new and frees it after answering. */
typedef struct lab_mqtt_return {
    char *topic;
    void *corr;
    size_t corr_len;
    char *from;
} lab_mqtt_return_t;
/* A copy of msg's return address; fallback when it has no response topic (or an empty one). */
lab_mqtt_return_t *lab_mqtt_return_new(const lab_mqtt_in_t *msg, const char *fallback);
void lab_mqtt_return_free(lab_mqtt_return_t *r);

/* An answer to an inbound message (its response topic), QoS 1, outside the outbox: answers are
 * for whoever waits now. The Correlation Data (corr, corr_len; NULL: none) goes back as it came.
 * LAB_EINVAL for a topic no answer may go to (lab_topic_reply_check), LAB_ECONN when the broker
 * is not connected or Paho refused it. Every answer not sent is logged with why and its text, and
 * counted. */
int lab_mqtt_reply(lab_mqtt_t *m, const char *topic, const void *corr, size_t corr_len,
                   const char *payload);
/* The same to a kept return address: answered, or (no topic) counted as unanswered. */
int lab_mqtt_answer(lab_mqtt_t *m, const lab_mqtt_return_t *r, const char *payload);

/* Why an inbound message got no answer; each is counted (labloop_mqtt_unanswered_total). */
typedef enum lab_mqtt_why {
    LAB_MQTT_NO_REPLY_TOPIC,  /* neither a response topic nor reply_to */
    LAB_MQTT_BAD_REPLY_TOPIC, /* one no answer may be published to */
    LAB_MQTT_NOT_SENT,        /* the broker not connected, or Paho refused it */
    LAB_MQTT_NO_SUBSCRIPTION, /* it matched none of ours */
    LAB_MQTT_STOPPING,        /* it came while the bridge was closing */
    LAB_MQTT_WHY_COUNT
} lab_mqtt_why_t;
extern const char *const lab_mqtt_why_names[LAB_MQTT_WHY_COUNT];
/* For a handler that has an answer and nowhere to send it: logs it with the inbound topic and
 * counts it. */
void lab_mqtt_unanswered(lab_mqtt_t *m, const char *topic, lab_mqtt_why_t why, const char *answer);

/* Inbound traffic for /metrics. */
typedef struct lab_mqtt_inbound {
    int64_t received[LAB_TOPIC_COUNT]; /* by the inbound topic of the table it came on */
    int64_t received_other;            /* on no topic of the table */
    int64_t answered;
    int64_t unanswered[LAB_MQTT_WHY_COUNT];
} lab_mqtt_inbound_t;
void lab_mqtt_inbound(const lab_mqtt_t *m, lab_mqtt_inbound_t *out);

#endif
