/* The one way a run is submitted, for HTTP (POST /v1/runs) and MQTT (in/runs) alike: the
 * document checked against run.schema.json, the `cell` rule that picks the queue, and then either
 * this cell's queue (the workflow version rules, the insert with its idempotency record in the
 * local store, the hand-over to the scheduler) or the lab's shared queue through a hook (main.c
 * wires it to the fleet). Every submission ends in exactly one answer through its callback. */
#ifndef LAB_FLEET_SUBMIT_H
#define LAB_FLEET_SUBMIT_H

#include "core/clock.h"
#include "daemon/sched/sched.h"
#include "daemon/store/store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct lab_submit lab_submit_t;

/* What became of a submission; each refusal stands for one HTTP status and problem type. */
typedef enum lab_submit_why {
    LAB_SUBMIT_ACCEPTED,    /* 201, or the stored status of a replay */
    LAB_SUBMIT_MALFORMED,   /* 400: not JSON */
    LAB_SUBMIT_BAD_KEY,     /* 400: the idempotency key is empty or longer than 255 bytes */
    LAB_SUBMIT_IN_PROGRESS, /* 409: the first submission with this key is still committing */
    LAB_SUBMIT_CONFLICT,    /* 409: another submission with this key committed first */
    LAB_SUBMIT_INVALID,     /* 422: every problem in errors */
    LAB_SUBMIT_KEY_REUSED,  /* 422: the key was first used for another document */
    LAB_SUBMIT_INTERNAL,    /* 500 */
    LAB_SUBMIT_UNAVAILABLE, /* 503: stopping, or the shared queue is not reachable */
    LAB_SUBMIT_TOO_LARGE,   /* 413: over a transport's limit (in/runs) */
} lab_submit_why_t;

typedef struct lab_submit_answer {
    lab_submit_why_t why;
    int code;        /* the HTTP status it stands for */
    bool replayed;   /* the answer of an earlier submission with the same key */
    bool shared;     /* the run went to (or was found in) the lab's shared queue */
    const char *id;  /* accepted: the run's id */
    const char *doc; /* accepted: the run document (local) or the queue row (shared), JSON */
    json_t *errors;  /* refused: [{path, message}] (JSON Pointers), never NULL */
    const char *detail;
    int retry_after_s; /* 503 from the shared queue: when to try again; 0: not said */
} lab_submit_answer_t;

/* The problem type of a refusal as the HTTP API names it (urn:labloop:problem:SLUG). */
const char *lab_submit_why_slug(lab_submit_why_t why);

/* The answer; everything in it is valid during the call only. */
typedef void (*lab_submit_cb)(void *arg, const lab_submit_answer_t *a);

typedef struct lab_submission {
    const char *body; /* the document as received, len bytes (need not be NUL-terminated) */
    size_t len;
    const char *key;    /* the idempotency key, or NULL */
    const char *owner;  /* whose key it is in the local records, and the run's submitted_by */
    const char *hash;   /* what the key stands for (64 hex digits); NULL: SHA-256 of the body */
    const char *origin; /* the local run document's origin ("api", "mqtt") */
    const char *via;    /* how it came, for the shared queue ("http", "mqtt") */
    bool shared_only;   /* the site's in/runs: always the shared queue, no local records */
} lab_submission_t;

/* The shared queue: takes a valid submission (sub borrowed: copy what outlives the call) and
 * calls cb exactly once, later or before it returns: status 0 (doc = the queue row, replayed
 * when the key was used before for the same document), LAB_EINVAL (problems = the JSON array
 * [{path, message}] as text), LAB_ECONFLICT (the key was used for another document), LAB_ECONN
 * (the database is not reachable), or another negative code with msg. The fleet's
 * lab_fleet_submit has this shape. */
typedef void (*lab_submit_shared_cb)(void *arg, int status, bool replayed, const char *doc,
                                     const char *problems, const char *msg);
typedef void (*lab_submit_shared_fn)(void *ctx, json_t *sub, const char *key, const char *via,
                                     const char *by, lab_submit_shared_cb cb, void *arg);

/* cell: this cell's name; shared: [lab] shared_queue. sched may be NULL (runs are stored, not
 * carried out). */
int lab_submit_new(lab_submit_t **out, lab_store_t *st, lab_sched_t *sched,
                   const lab_clock_t *clock, const char *cell, bool shared);
/* The hook to the shared queue (NULL: none; then `any` or another cell answers 503 "the shared
 * queue is not running"). */
void lab_submit_set_shared(lab_submit_t *s, lab_submit_shared_fn fn, void *ctx);
/* Stopping: every submission from now on answers 503. */
void lab_submit_stop(lab_submit_t *s);
/* The scheduler is gone: inserts that commit from now on are stored only. */
void lab_submit_forget_sched(lab_submit_t *s);
/* Submissions whose answer has not come yet. */
int lab_submit_in_flight(const lab_submit_t *s);
/* After every submission was answered. */
void lab_submit_free(lab_submit_t *s);

/* Submits one run; cb gets its answer. Returns 0 when cb was called already, 1 when the answer
 * comes later (after the store's commit or the shared queue's reply). */
int lab_submit_run(lab_submit_t *s, const lab_submission_t *in, lab_submit_cb cb, void *arg);

#endif
