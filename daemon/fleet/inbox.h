/* in/runs over MQTT: a run document published on the cell's `{root}/{site}/{cell}/in/runs` goes
 * through the submission path as POST /v1/runs would (its `cell` rule included); with the
 * shared queue on, the site's `{root}/{site}/in/runs` too, through the shared subscription
 * `$share/labloop/...` (one cell of the site gets each message), always into the shared queue.
 * The MQTT 5 user property `idempotency-key` is the key; the answer goes to the Response Topic
 * (or the document's reply_to) with the request's Correlation Data (schemas/mqtt.md). */
#ifndef LAB_FLEET_INBOX_H
#define LAB_FLEET_INBOX_H

#include "daemon/bus/mqtt.h"
#include "daemon/fleet/submit.h"

#include <stdbool.h>

typedef struct lab_inbox lab_inbox_t;

/* Subscribes the cell's in/runs, and the site's when shared ([lab] shared_queue = on). */
int lab_inbox_start(lab_inbox_t **out, lab_mqtt_t *mqtt, lab_submit_t *sub, const char *topic_root,
                    const char *site, bool shared);
/* The bridge is going away: answers still to come are logged, not sent. */
void lab_inbox_detach(lab_inbox_t *x);
/* Frees it once every submission it made was answered (at once when none is waiting). */
void lab_inbox_free(lab_inbox_t *x);

/* The payload limit of a run document on in/runs (bytes). */
#define LAB_INBOX_MAX_BYTES (1024 * 1024)

#endif
