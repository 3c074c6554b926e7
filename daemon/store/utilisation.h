/* Utilisation: how long each instrument was in each state (busy, idle, paused, fault, offline), as
 * intervals in the instrument_states table. An interval ends at the next change of state, at a
 * clean stop, or (after a kill -9) at the last minute the daemon knew it lasted; each ended
 * interval is an `instrument.interval` outbox row (PostgreSQL labloop.instrument_states), so
 * every figure can be recomputed from the records. Time the daemon did not run is unrecorded. */
#ifndef LAB_STORE_UTILISATION_H
#define LAB_STORE_UTILISATION_H

#include "daemon/store/store.h"

#include <jansson.h>
#include <stdint.h>

/* How often the open intervals are marked as still lasting (lab_util_seen), in ms. */
#define LAB_UTIL_SEEN_MS 60000
/* The longest span one question covers (GET /v1/instruments/{id}/utilisation): 366 days. */
#define LAB_UTIL_SPAN_MAX_MS (366LL * 86400000LL)

/* Inside an op: the instrument's open interval ends at ts_ms and one in state begins; nothing
 * when the open interval is in that state already. */
int lab_util_change(sqlite3 *db, const char *instrument, const char *state, int64_t ts_ms);

/* From the loop thread, each an op of its own. close_stale: every interval still open ends at
 * its seen_ms (a daemon that stopped without saying; call before the first change). seen: every
 * open interval lasted until ts_ms. close_all: every open interval ends at ts_ms (a clean
 * stop). */
void lab_util_close_stale(lab_store_t *st);
void lab_util_seen(lab_store_t *st, int64_t ts_ms);
void lab_util_close_all(lab_store_t *st, int64_t ts_ms);

/* Loop thread, read connection. The seconds the instrument spent in each state on each UTC day
 * of [from_ms, to_ms) (an open interval counts until now_ms), and "unrecorded" for the time of
 * those days up to now_ms that no interval covers: [{"day": "YYYY-MM-DD", "seconds": {state: s,
 * ..., "unrecorded": s}}]. */
int lab_util_days(lab_store_t *st, const char *instrument, int64_t from_ms, int64_t to_ms,
                  int64_t now_ms, json_t **out);

/* Loop thread, read connection. Per campaign whose runs used the instrument: the runs and the
 * seconds their steps ran on it, [{"campaign", "runs", "busy_s"}], most busy first. */
int lab_util_campaigns(lab_store_t *st, const char *instrument, json_t **out);

#endif
