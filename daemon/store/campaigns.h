/* The closed loop's records in the local store: campaigns, batches and candidates, each a whole
 * JSON document, and their outbox rows ("campaign", "batch", "candidate", keyed by the campaign's
 * id). One write (lab_campaigns_write_t) changes any number of them, appends further outbox rows
 * (results, batch.done) and inserts the campaign's new plate runs, all in one savepoint: a
 * candidate is never staged on a plate that was not stored, nor a result kept without its
 * candidate's change. */
#ifndef LAB_STORE_CAMPAIGNS_H
#define LAB_STORE_CAMPAIGNS_H

#include "daemon/store/runs.h"
#include "daemon/store/store.h"

#include <stdint.h>

typedef enum lab_campaigns_table {
    LAB_CAMPAIGNS_TABLE_CAMPAIGN,
    LAB_CAMPAIGNS_TABLE_BATCH,
    LAB_CAMPAIGNS_TABLE_CANDIDATE,
} lab_campaigns_table_t;

typedef struct lab_campaigns_put {
    lab_campaigns_table_t table;
    char *campaign; /* the campaign's id (the row's key for LAB_CAMPAIGNS_TABLE_CAMPAIGN) */
    char *id;       /* batch or candidate id; NULL for a campaign */
    char *state;    /* campaign or candidate state; NULL for a batch */
    int64_t ord;    /* a candidate's order of arrival */
    char *doc;      /* the whole document, also the outbox row's payload */
} lab_campaigns_put_t;

typedef struct lab_campaigns_write {
    lab_store_op_t op;
    int64_t ts_ms;
    lab_campaigns_put_t *puts;
    int nputs, capputs;
    char **row_kind, **row_key, **row_payload; /* further outbox rows */
    int nrows, caprows;
    lab_run_insert_t **runs; /* plate runs to insert */
    int nruns, capruns;
    void *arg; /* the caller's */
} lab_campaigns_write_t;

lab_campaigns_write_t *lab_campaigns_write_new(int64_t ts_ms);
void lab_campaigns_write_free(lab_campaigns_write_t *w);
/* Each takes a copy of its strings. */
void lab_campaigns_write_put(lab_campaigns_write_t *w, lab_campaigns_table_t table,
                             const char *campaign, const char *id, const char *state, int64_t ord,
                             const char *doc);
void lab_campaigns_write_row(lab_campaigns_write_t *w, const char *kind, const char *key,
                             const char *payload);
/* Takes the insert over. */
void lab_campaigns_write_run(lab_campaigns_write_t *w, lab_run_insert_t *ins);

/* Loop thread, at start: every record of a table, in order (campaigns by id; batches and
 * candidates by campaign, then order of arrival). cb gets the campaign, the id (NULL for a
 * campaign), and the document text, valid during the call. Returns the count or an error. */
int lab_campaigns_load(lab_store_t *st, lab_campaigns_table_t table,
                       void (*cb)(void *ctx, const char *campaign, const char *id, const char *doc),
                       void *ctx);

#endif
