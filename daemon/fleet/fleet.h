/* The cell in the lab: with [lab] shared_queue = on, this cell publishes itself in
 * labloop.cells (a heartbeat every [lab] heartbeat s), claims from labloop.queue the runs it can
 * perform, as many as its claim window has room for (lab_sched_room), and asks PostgreSQL before
 * a claimed run's first step whether it still holds it (the fence). Everything goes through its
 * own PostgreSQL connection, driven by libpq's asynchronous API on the loop; statements go one
 * at a time, in the order asked, so a claim's open transaction holds nothing else.
 *
 * A claim: BEGIN; labloop.claim_runs(cell, n); the workflow versions they follow that this cell
 * has not stored, from labloop.workflows; the runs into the local store as `pending`; after
 * that commit, COMMIT in PostgreSQL; after that, the runs become `held` with their run.state rows
 * and go to the scheduler. A crash between the two commits leaves `pending` runs that the next
 * connection reconciles with labloop.queue before it claims again. */
#ifndef LAB_FLEET_FLEET_H
#define LAB_FLEET_FLEET_H

#include "core/cfg.h"
#include "core/clock.h"
#include "daemon/instr/instr.h"
#include "daemon/sched/sched.h"
#include "daemon/store/store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct lab_fleet lab_fleet_t;

/* Connects (and keeps reconnecting) and sets the scheduler's gate. cfg must have shared_queue on
 * and [postgres]; LAB_EINVAL otherwise, LAB_ECONFIG for a conninfo libpq cannot read. */
int lab_fleet_start(lab_fleet_t **out, uv_loop_t *loop, const lab_config_t *cfg,
                    const lab_clock_t *clock, lab_store_t *st, lab_instr_t *in, lab_sched_t *sched);
/* A graceful stop: the claimed runs that have not begun leave the scheduler (released) and go
 * back to the lab's queue, a last heartbeat says `stopping`, then the connection closes; cb after
 * that, or after grace_ms whatever is left. Call before the scheduler stops. */
void lab_fleet_stop(lab_fleet_t *f, uint64_t grace_ms, void (*cb)(void *arg), void *arg);

/* A submission into the lab's queue (labloop.submit_run). cb(arg, status, replayed, doc,
 * problems, msg): status 0 with the run as the queue holds it (JSON text; replayed: the key was
 * used before for the same document), LAB_EINVAL with problems (a JSON array of {path, message})
 * and msg, LAB_ECONFLICT (the key was first used for another document) with msg, LAB_ECONN when
 * this cell has no PostgreSQL connection now (answer 503 with Retry-After), LAB_EDB else. sub is
 * borrowed; key may be NULL. cb is called on the loop thread, never from inside the call. */
typedef void (*lab_fleet_submit_cb)(void *arg, int status, bool replayed, const char *doc,
                                    const char *problems, const char *msg);
void lab_fleet_submit(lab_fleet_t *f, const json_t *sub, const char *key, const char *via,
                      const char *by, lab_fleet_submit_cb cb, void *arg);

/* Reads for the lab view: cb(arg, status, result, msg), result a new reference the callee owns
 * (NULL unless status is 0). LAB_ECONN when not connected. */
typedef void (*lab_fleet_read_cb)(void *arg, int status, json_t *result, const char *msg);
/* {"site", "cells": [...], "queue": {state: count}} (GET /v1/lab). */
void lab_fleet_lab(lab_fleet_t *f, lab_fleet_read_cb cb, void *arg);
/* {"items": [...], "next"?}: labloop.lab_runs in submission order after the cursor `after` (a
 * run id, NULL: from the start), optionally of one state and one cell (GET /v1/lab/runs). */
void lab_fleet_lab_runs(lab_fleet_t *f, const char *state, const char *cell, int limit,
                        const char *after, lab_fleet_read_cb cb, void *arg);

/* One run of the lab's queue as a run document (GET /v1/runs/{id} on a cell that does not hold
 * it): the holder's newest document when it wrote one, else the queue's row; with "lab_state"
 * (the queue's state) and "cell" (the holder). LAB_ENOTFOUND when the queue has no such run. */
void lab_fleet_run(lab_fleet_t *f, const char *id, lab_fleet_read_cb cb, void *arg);

/* The ends of runs in the lab's queue (NOTIFY labloop_run_done): fn(ctx, id) for each, and
 * fn(ctx, NULL) after every (re)connect, once this cell reconciled (ends may have been missed).
 * Set before the first connect. */
void lab_fleet_on_run_done(lab_fleet_t *f, void (*fn)(void *ctx, const char *id), void *ctx);
/* One statement on the fleet's connection, in turn with the others: cb(arg, 0, rows) with rows
 * a JSON array of arrays of text (null for SQL NULL), LAB_EDB with PostgreSQL's message,
 * LAB_ECONN when not connected. */
void lab_fleet_query(lab_fleet_t *f, const char *sql, int n, const char *const *vals,
                     lab_fleet_read_cb cb, void *arg);

typedef struct lab_fleet_stats {
    bool connected;
    long connects;
    long claims;        /* runs claimed and held */
    long claim_batches; /* claim transactions that took at least one run */
    long fence_ok;      /* first steps PostgreSQL confirmed */
    long fence_refused; /* runs the fence refused (released) */
    long released;      /* runs given back to the queue (stop, refused, reconcile) */
    long lost_released; /* runs of lost cells this cell's heartbeats sent back to the queue */
    long heartbeats;
    /* claim -> local commit: from labloop.claim_runs' answer to the pending runs' local commit,
     * in ms, over the latest LAB_FLEET_LAT_N claims */
    double lat_p50_ms, lat_p99_ms, lat_max_ms;
    long lat_n;
    const char *last_error; /* valid until the next loop turn */
} lab_fleet_stats_t;
#define LAB_FLEET_LAT_N 4096
void lab_fleet_stats(const lab_fleet_t *f, lab_fleet_stats_t *out);

#endif
