/* The audit trail in the local store: one append-only, hash-chained log (table audit, migration
 * 0008) per cell. Every entry is written on the store's writer inside the transaction of the
 * change it records, so the chain's order is commit order and no change is kept without its
 * entry (a rolled back op takes its entries with it).
 *
 * Two sources of entries:
 * - state changes: lab_outbox_append() writes one for every row of a kind in lab_audit_kinds
 *   (what = the row's name there, subject = the row's key, doc = the row's payload);
 * - decisions and actions: a note (who, what, subject, why, doc) opened with lab_audit_begin()
 *   on the loop thread rides on the first op submitted before lab_audit_end(); its entry is
 *   written under that op's savepoint, just before the op's own changes, and those changes'
 *   entries carry the note's who and why. A note no op took is written by an op of its own.
 *
 * Each entry travels to PostgreSQL's labloop.audit and the retained MQTT topic audit/head with
 * the outbox row of the change it records (its audit column: [{audit_seq, hash, entry}]), so the
 * outbox still holds one row per change; a decision's entry rides on the first row its op
 * appends. An entry with no such row (an action, a reload, a decision whose op appended none) is
 * a row of kind "audit" (payload {audit_seq, hash, entry}). */
#ifndef LAB_STORE_AUDIT_H
#define LAB_STORE_AUDIT_H

#include "daemon/store/store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* Who state changes are attributed to when no person's decision caused them. */
#define LAB_AUDIT_SYSTEM "labloop"

/* Outbox kinds recorded as state changes, and the `what` their entries get. NULL-terminated. */
typedef struct lab_audit_kind {
    const char *kind;
    const char *what;
} lab_audit_kind_t;
extern const lab_audit_kind_t lab_audit_kinds[];
const lab_audit_kind_t *lab_audit_kind_find(const char *kind);

/* Loop thread: opens a note for the ops submitted until lab_audit_end. who is required; what
 * NULL: no entry of its own, the op's state changes are only attributed to who; subject, why may
 * be NULL; doc (taken, may be NULL) holds the details. A signed decision's doc
 * has "signature": {"name", "meaning", "at"} (lab_audit_signature). Notes do not nest: a second
 * begin before end is refused with LAB_EBUSY (and doc is released). */
int lab_audit_begin(lab_store_t *st, const char *who, const char *what, const char *subject,
                    const char *why, json_t *doc, int64_t lab_ms);
/* Closes the note. When no op took it: with record, submits an op that writes it alone (the
 * decision changed nothing in the store); without (the decision was refused), drops it. */
void lab_audit_end(lab_store_t *st, bool record);
/* A note written by an op of its own (an action or a reload that changes nothing in the store):
 * begin and end at once. */
void lab_audit_record(lab_store_t *st, const char *who, const char *what, const char *subject,
                      const char *why, json_t *doc, int64_t lab_ms);
/* {"name": who, "meaning": meaning, "at": now (wall time)}: what an electronic signature of a
 * decision records (21 CFR 11.50). */
json_t *lab_audit_signature(const char *who, const char *meaning);

/* ---- used by the store itself (worker thread, inside a group) ---- */
typedef struct lab_audit_note lab_audit_note_t;
/* The note's entry. 0 or a negative error. */
int lab_audit_note_write(sqlite3 *db, const lab_audit_note_t *note);
void lab_audit_note_free(lab_audit_note_t *note);
/* A state change's entry (lab_outbox_append calls it for kinds in lab_audit_kinds); note is the
 * op's, or NULL. */
int lab_audit_state_write(sqlite3 *db, const lab_audit_kind_t *k, const char *key,
                          const char *payload, int64_t ts_ms, const lab_audit_note_t *note);
/* The entries written since the last row, for the row being appended (a JSON array, malloc'd),
 * or NULL. */
char *lab_audit_take(sqlite3 *db);
/* At the end of an op: entries no row took are written as rows of kind audit. At a rollback:
 * they are dropped with it. */
int lab_audit_flush(sqlite3 *db, const lab_audit_note_t *note);
void lab_audit_drop(sqlite3 *db);

/* ---- reading and checking (loop thread, read connection) ---- */
typedef struct lab_audit_filter {
    const char *subject; /* a run, instrument or campaign id */
    const char *who;
    int64_t since_ms; /* wall time, 0: any */
    int64_t after;    /* seq cursor, 0: from the start */
} lab_audit_filter_t;
/* Up to limit entries after the cursor as a JSON array (each the entry with its "hash");
 * *next: the cursor of the following page, 0 when none. 0 or a negative error. */
int lab_audit_list(lab_store_t *st, const lab_audit_filter_t *f, int limit, json_t **out,
                   int64_t *next);
/* The newest entry as the outbox carries it, {audit_seq, hash, entry}; NULL when none. */
json_t *lab_audit_head(lab_store_t *st);
/* Checks the whole chain: {ok, entries, head: {seq, hash} | null, problems: [{seq, problem}]}.
 * NULL on a read error. */
json_t *lab_audit_verify(lab_store_t *st);

#endif
