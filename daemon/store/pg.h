/* The PostgreSQL adapter and writer: libpq's asynchronous API on uv_poll, never a blocking call on
 * the loop thread. Connects with a timer-enforced timeout, reconnects with backoff, applies the
 * embedded migrations (schemas/sql/postgres/) under an advisory lock, then drains the outbox into
 * schema `labloop` in batches, idempotently, with its cursor (labloop.sink_cursors) advanced in
 * the same transaction. */
#ifndef LAB_STORE_PG_H
#define LAB_STORE_PG_H

/* The writer's name among the store's sinks. */
#define LAB_PG_SINK_NAME "postgres"

#include "core/cfg.h"
#include "daemon/store/store.h"

#include <stdint.h>
#include <uv.h>

typedef struct lab_pg lab_pg_t;

typedef enum lab_sink_state {
    LAB_SINK_DISABLED, /* not configured */
    LAB_SINK_CONNECTING,
    LAB_SINK_UP,   /* connected; draining or caught up */
    LAB_SINK_DOWN, /* waiting to reconnect */
} lab_sink_state_t;
const char *lab_sink_state_name(lab_sink_state_t s);

typedef struct lab_sink_stats {
    lab_sink_state_t state;
    int64_t cursor;    /* last seq delivered and acknowledged */
    int64_t delivered; /* rows delivered since start */
    int64_t batches;
    int64_t errors;
    int64_t connects;
    const char *last_error; /* owned by the sink; valid until its next call */
} lab_sink_stats_t;

int lab_pg_start(lab_pg_t **out, uv_loop_t *loop, const lab_config_t *cfg, lab_store_t *st);
/* Drains until caught up with the outbox head, the server is unreachable, or grace_ms passed;
 * then closes and calls cb on the loop thread. The struct is freed before cb. */
void lab_pg_stop(lab_pg_t *pg, uint64_t grace_ms, void (*cb)(void *arg), void *arg);
void lab_pg_stats(const lab_pg_t *pg, lab_sink_stats_t *out);

#endif
