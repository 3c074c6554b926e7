/* The local store's side of claims from the lab's queue: the runs table's `claim` column
 * (schemas/sql/sqlite/0005_claim.sql). A claimed run is inserted `pending` (no outbox row) while
 * the claim's transaction in PostgreSQL is open, becomes `held` with its run.state row once
 * PostgreSQL committed, or is dropped when the claim did not survive. */
#ifndef LAB_FLEET_LOCAL_H
#define LAB_FLEET_LOCAL_H

#include "daemon/store/store.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum lab_claim_verb { LAB_CLAIM_PENDING, LAB_CLAIM_HOLD, LAB_CLAIM_DROP } lab_claim_verb_t;

/* One op over many runs: PENDING inserts (id, doc) as claim 'pending', state queued, replacing
 * only a row this cell had released; HOLD sets 'pending' rows 'held' and appends their run.state
 * rows (doc); DROP deletes 'pending' rows. A run the op cannot apply to is skipped (skip[i]),
 * not an error. */
typedef struct lab_claim_op {
    lab_store_op_t op;
    lab_claim_verb_t verb;
    char **ids, **docs; /* owned */
    bool *skip;         /* out */
    int n, cap;
    int64_t ts_ms;
    void *arg; /* the caller's */
} lab_claim_op_t;

lab_claim_op_t *lab_claim_op_new(lab_claim_verb_t verb, int64_t ts_ms);
/* Adds a run (doc may be NULL for DROP); both copied. */
void lab_claim_op_add(lab_claim_op_t *c, const char *id, const char *doc);
void lab_claim_op_free(lab_claim_op_t *c);

/* Loop thread: claimed runs (claim not NULL) that have not begun (state queued or planned), up
 * to max; ids into ids[] (LAB_UUID_LEN + 1 each), held[i] false for 'pending'. The count. */
int lab_claims_not_begun(lab_store_t *st, char (*ids)[37], bool *held, int max);
/* Loop thread: the run's claim: 1 held or pending, 0 none (a local run), LAB_ENOTFOUND. */
int lab_claim_get(lab_store_t *st, const char *id);

#endif
