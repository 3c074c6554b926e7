/* The MQTT bridge: the only caller of Paho. Paho's callbacks run on its threads; they copy what
 * they got into a lab_tq item and return, and everything else happens on the loop thread. Publishes
 * the retained `status` (with a Will of "offline"), and the outbox at QoS 1: each message carries
 * cell, seq and ts; the cursor (saved in the local store) advances on acknowledgement, in order. */
#ifndef LAB_BUS_MQTT_H
#define LAB_BUS_MQTT_H

#include "daemon/core/cfg.h"
#include "daemon/core/clock.h"
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

#endif
