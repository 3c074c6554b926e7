/* Internals shared by the store's files: a connection with its cache of prepared statements, the
 * per-thread list of connections that lab_store_stmt() resolves, and SQLite error mapping. */
#ifndef LAB_STORE_STORE_INT_H
#define LAB_STORE_STORE_INT_H

#include "daemon/store/store.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct lab_stmt_entry {
    char *sql;
    sqlite3_stmt *stmt;
} lab_stmt_entry_t;

typedef struct lab_conn {
    sqlite3 *db;
    lab_stmt_entry_t *stmts;
    int nstmts, cap;
    struct lab_conn *next; /* on the list of the thread using it */
    /* Writer only: the highest outbox seq appended in the running group (lab_outbox_append
     * raises it; a rolled back savepoint restores it). */
    int64_t head;
    /* Writer only: the audit note of the op being applied (NULL when none), and the entries
     * written but not yet carried by an outbox row (a JSON array, NULL when none): the next row
     * the op appends takes them, or the op's end writes them as a row of kind audit. */
    const struct lab_audit_note *note;
    struct json_t *audit_pending;
} lab_conn_t;

/* The audit note open on the loop thread (daemon/store/audit.c): taken by the first op submitted
 * while it is open. open: LAB_EBUSY when one is open already. close: the note when no op took it
 * (the caller's again), else NULL. */
struct lab_store;
struct lab_audit_note;
int lab_store_note_open(struct lab_store *st, struct lab_audit_note *note);
struct lab_audit_note *lab_store_note_close(struct lab_store *st);
/* Submits op carrying note (taken). */
void lab_store_submit_noted(struct lab_store *st, lab_store_op_t *op, struct lab_audit_note *note);

/* The connections the calling thread may use: the loop thread's readers from open to close,
 * and the writer on the worker thread for the duration of a group. */
void lab_conn_attach(lab_conn_t *c);
void lab_conn_detach(lab_conn_t *c);
lab_conn_t *lab_conn_find(sqlite3 *db);

/* A cached statement, reset and with no bindings. NULL when it does not compile (logged). */
sqlite3_stmt *lab_conn_stmt(lab_conn_t *c, const char *sql);
/* Finalizes every cached statement and closes the database. */
void lab_conn_close(lab_conn_t *c);

/* For code that may be handed a connection the store does not own: a cached statement when db
 * is known on this thread, else a fresh one (*owned set; lab_stmt_release finalizes it). */
sqlite3_stmt *lab_stmt_acquire(sqlite3 *db, const char *sql, bool *owned);
void lab_stmt_release(sqlite3_stmt *s, bool owned);

/* Logs what failed with SQLite's message and returns LAB_EDB. */
int lab_sqlite_fail(sqlite3 *db, int rc, const char *what);

#endif
