/* One PostgreSQL connection on libuv, shared by the outbox writer (daemon/store/pg.c) and the
 * cell's side of the lab's queue (daemon/fleet/fleet.c): PQconnectStartParams with keepalives and
 * UTF8 forced, a timer that bounds the connect (libpq ignores connect_timeout in async connects),
 * PQconnectPoll driving a uv_poll that is renewed whenever PQsocket changes, the poll stopped
 * before libpq closes its socket, and the jittered exponential backoff between attempts. The owner
 * keeps its own phases: it hears "connected", "io" (input consumed, results may be waiting) and
 * "down (why)", and it decides when to retry. */
#ifndef LAB_DAEMON_STORE_PQ_LINK_H
#define LAB_DAEMON_STORE_PQ_LINK_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define LAB_PQ_BACKOFF_MIN_MS 100

typedef struct lab_pq_link lab_pq_link_t;

typedef struct lab_pq_link_ops {
    /* A connect attempt starts (the first and each retry); may be NULL. */
    void (*connecting)(void *ctx);
    /* The connection is up and watched for reading. */
    void (*connected)(void *ctx, PGconn *conn);
    /* Input was consumed (or the socket failed and libpq read its last words): results may wait. */
    void (*io)(void *ctx);
    /* The link found the connection broken (`why` is one line or more of libpq's). The owner calls
     * lab_pq_link_drop, then lab_pq_link_retry or lab_pq_link_close. */
    void (*down)(void *ctx, const char *why);
} lab_pq_link_ops_t;

typedef struct lab_pq_link_cfg {
    const char *conninfo;
    const char *app_name; /* fallback_application_name */
    const char *log_tag;  /* the owner's module name in log lines */
    double connect_timeout_s;
    double retry_max_s;
} lab_pq_link_cfg_t;

/* Copies what it keeps of cfg; does not connect yet. */
lab_pq_link_t *lab_pq_link_new(uv_loop_t *loop, const lab_pq_link_cfg_t *cfg,
                               const lab_pq_link_ops_t *ops, void *ctx);
/* Starts an attempt now (an earlier connection must have been dropped). */
void lab_pq_link_connect(lab_pq_link_t *l);
/* The connection, NULL while connecting or down. */
PGconn *lab_pq_link_conn(const lab_pq_link_t *l);
/* Sends what libpq buffered, watching for writability while some is left; false when it went
 * down instead (the down callback ran). */
bool lab_pq_link_flush(lab_pq_link_t *l);
/* Stops watching and closes the connection; nothing is called back. */
void lab_pq_link_drop(lab_pq_link_t *l);
/* After a drop: the next attempt after the backoff (half fixed, half random; doubling up to
 * retry_max_s). */
void lab_pq_link_retry(lab_pq_link_t *l);
/* The connection proved itself: the next backoff starts from the minimum again. */
void lab_pq_link_backoff_reset(lab_pq_link_t *l);
/* Drops the connection and closes the handles; closed(ctx) once they are, then the link is freed.
 */
void lab_pq_link_close(lab_pq_link_t *l, void (*closed)(void *ctx));

/* The backoff step on its own: the delay to wait now, and *backoff_ms doubled up to cap_ms (never
 * below LAB_PQ_BACKOFF_MIN_MS). The delay is in [backoff/2, backoff]. */
uint64_t lab_pq_backoff_next(uint64_t *backoff_ms, uint64_t *rng, uint64_t cap_ms);

#endif
