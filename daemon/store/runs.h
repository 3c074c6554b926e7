/* Runs in the local store: the runs table, idempotency records, and the outbox rows that every run
 * change appends ("run.state", keyed by the run's id, payload = the run document). */
#ifndef LAB_STORE_RUNS_H
#define LAB_STORE_RUNS_H

#include "daemon/store/store.h"

#include <jansson.h>

/* Inserts a new run. The caller fills the inputs, sets op.done, and submits &ins->op. */
typedef struct lab_run_insert {
    lab_store_op_t op;
    /* inputs, owned by the struct (freed by lab_run_insert_free) */
    char *id;      /* UUID */
    char *state;   /* "queued" */
    char *doc;     /* the whole run document, JSON text */
    int64_t ts_ms; /* created_at, lab wall time */
    /* optional idempotency record, written in the same transaction */
    char *idem_owner; /* token name (or "anonymous") */
    char *idem_key;   /* the Idempotency-Key header */
    char *idem_hash;  /* hash of method, path and body */
    int idem_status;  /* the HTTP status to replay */
    void *arg;        /* the caller's, for its done */
    /* outputs */
    int64_t seq; /* the outbox row's seq */
} lab_run_insert_t;

lab_run_insert_t *lab_run_insert_new(void);
void lab_run_insert_free(lab_run_insert_t *ins);

/* Changes a run: its state and whole document (the caller's state machine decided the change),
 * with its "run.state" outbox row and, when idem_key is set, an idempotency record (body = doc),
 * all in one savepoint. With `from` set, the change applies only while the run is still in that
 * state, else LAB_ESTATE (it moved on meanwhile). LAB_ENOTFOUND when there is no such run,
 * LAB_ECONFLICT for a used idempotency key. */
typedef struct lab_run_update {
    lab_store_op_t op;
    /* inputs, owned by the struct (freed by lab_run_update_free) */
    char *id;
    char *state;
    char *doc;
    int64_t ts_ms; /* updated_at, lab wall time */
    char *from;    /* optional: the state the change expects */
    char *idem_owner, *idem_key, *idem_hash;
    int idem_status;
    void *arg; /* the caller's, for its done */
    /* optional: more outbox rows keyed by the run's id (measurements), appended in the same
     * savepoint after the run's own row; both arrays own their strings */
    char **extra_kind, **extra_payload;
    int nextra;
    /* optional: a prompt opened or answered with the change (lab_prompt_write), owned */
    char *prompt_id;
    json_t *prompt;
    /* outputs */
    int64_t seq;
} lab_run_update_t;

/* Appends one extra outbox row (kind, payload taken over) to an update. */
void lab_run_update_add_row(lab_run_update_t *upd, const char *kind, char *payload);

lab_run_update_t *lab_run_update_new(void);
void lab_run_update_free(lab_run_update_t *upd);

/* Loop thread, read connection. *doc is malloc'd JSON text. LAB_ENOTFOUND when absent. */
int lab_runs_get(lab_store_t *st, const char *id, char **doc);

/* Loop thread: runs (optionally in one state) in submission order after the cursor `after`
 * (0: from the start). Up to limit docs into *docs (malloc'd array of malloc'd JSON texts);
 * *next is the cursor for the following page, or 0 when there is none. Returns the count. */
int lab_runs_list(lab_store_t *st, const char *state, int64_t after, int limit, char ***docs,
                  int64_t *next);
int lab_runs_count(lab_store_t *st, const char *state);

/* Which runs a list holds: each set field must equal the run's (state, plate, workflow,
 * priority; a run without a priority is "normal"), NULL ones take any. */
typedef struct lab_runs_filter {
    const char *state, *plate, *workflow, *priority;
    bool newest_first; /* the list from the newest run back; the cursor then goes back too */
} lab_runs_filter_t;

/* lab_runs_list with filters: the page after the cursor in the filter's order, *next the cursor
 * of the following page (0: none). Returns the count, or a negative error. */
int lab_runs_find(lab_store_t *st, const lab_runs_filter_t *f, int64_t after, int limit,
                  char ***docs, int64_t *next);

/* Loop thread: a stored idempotency record. LAB_ENOTFOUND when none. The body is the run
 * document that the first request answered with (status idem_status). */
int lab_idem_get(lab_store_t *st, const char *owner, const char *key, char **hash, int *status,
                 char **body);

#endif
