/* The local store: SQLite in state_dir (WAL, synchronous=FULL), its migrations, and the outbox.
 *
 * Writes are operations (lab_store_op_t) queued on the loop thread and committed in groups: all
 * operations queued while the previous group was committing go into the next transaction, with
 * one fsync for the lot. Each op's apply() runs on libuv's threadpool inside that transaction,
 * under its own SAVEPOINT (a failing op is rolled back alone); its done() runs on the loop thread
 * after the group committed, and only then may the caller acknowledge anything. One group is in
 * flight at a time, and the write connection is touched only by it.
 *
 * Reads on the loop thread use a separate read connection (WAL lets it read while a group
 * commits); they never block on the writer.
 *
 * The outbox: every state change and measurement is appended with lab_outbox_append() inside an
 * op, and gets a sequence number that increases by one per row. Sinks (PostgreSQL writer, MQTT
 * publisher) read it from their own cursor with lab_outbox_read(). */
#ifndef LAB_STORE_STORE_H
#define LAB_STORE_STORE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct lab_store lab_store_t;

typedef struct lab_store_op {
    /* Worker thread, inside the group's transaction (under a SAVEPOINT). Must touch nothing but
     * db and the op's own memory. Returns 0 or a negative lab error. */
    int (*apply)(struct lab_store_op *op, sqlite3 *db);
    /* Loop thread, after the group committed (status 0), or failed (status < 0; nothing of the op
     * was kept). The op is the caller's again. */
    void (*done)(struct lab_store_op *op, int status);
    /* internal */
    struct lab_store_op *next;
    int status;
    struct lab_audit_note *note; /* the decision this op records (daemon/store/audit.h) */
} lab_store_op_t;

/* Opens (creating if need be) state_dir/labloop.db and applies the embedded SQLite migrations
 * (schemas/sql/sqlite/NNNN_*.sql), recorded in schema_migrations. */
int lab_store_open(lab_store_t **out, uv_loop_t *loop, const char *state_dir);
/* Queues an op for the next group. After lab_store_close began: done(op, LAB_ESHUTDOWN).
 * done is never called from inside lab_store_submit. Ops submitted from done callbacks join the
 * next group; a group holds at most 4096 ops. */
void lab_store_submit(lab_store_t *st, lab_store_op_t *op);
/* Stops taking ops, lets the group in flight and those queued commit (with pending cursors and
 * pruning), then closes both connections and calls cb (on the loop thread, never from inside
 * lab_store_close); st is freed before cb. Opening takes a lock on state_dir/labloop.lock:
 * a second open of the same state_dir fails with LAB_EBUSY until the first is closed. A database
 * whose schema is newer than this binary's migrations fails with LAB_ESTATE. */
void lab_store_close(lab_store_t *st, void (*cb)(void *arg), void *arg);

/* The newest lab time recorded (outbox rows, runs), 0 when none. Loop thread. */
int64_t lab_store_newest_ts(lab_store_t *st);

/* The loop thread's read connection. */
sqlite3 *lab_store_reader(lab_store_t *st);

/* A prepared statement for sql, cached on db (the writer inside apply(), or the reader on the loop
 * thread), so an op pays no parse. It comes reset with no bindings; reset it when done (an
 * unfinished SELECT pins a read snapshot), never finalize it, and do not nest two uses of the same
 * text. NULL (logged) when sql does not compile or db is not a store connection of this thread. */
sqlite3_stmt *lab_store_stmt(sqlite3 *db, const char *sql);

/* Commit listeners: called on the loop thread after every group that appended outbox rows, with
 * the newest sequence number. At most 8. */
typedef void (*lab_store_commit_cb)(void *ctx, int64_t head_seq);
void lab_store_on_commit(lab_store_t *st, lab_store_commit_cb cb, void *ctx);
/* Removes a listener (a sink that stops before the store closes). */
void lab_store_off_commit(lab_store_t *st, lab_store_commit_cb cb, void *ctx);

/* Figures for /metrics and logs. */
typedef struct lab_store_stats {
    int64_t head_seq; /* newest committed outbox seq */
    int64_t groups;   /* transactions committed */
    int64_t ops;      /* operations committed */
    int64_t ops_failed;
    int queued;          /* ops waiting for the next group */
    int64_t rebases;     /* times this process moved its rows onto a history kept elsewhere */
    int64_t rebase_onto; /* the seq the newest rebase moved them past, 0 when none */
} lab_store_stats_t;
void lab_store_stats(const lab_store_t *st, lab_store_stats_t *out);

/* ---- the outbox ---- */

typedef struct lab_outbox_row {
    int64_t seq;
    int64_t ts_ms; /* lab wall time when appended, UTC ms */
    char *kind;    /* e.g. "run.state" (see lab_outbox_kinds in outbox.c) */
    char *key;     /* the entity id, e.g. the run's id */
    char *payload; /* JSON document */
    char *audit;   /* the audit entries this row carries, [{audit_seq, hash, entry}], or NULL */
} lab_outbox_row_t;

/* The kinds the outbox carries, with what a row's key and payload hold; NULL-terminated. */
typedef struct lab_outbox_kind {
    const char *name;
    const char *key;
    const char *payload;
} lab_outbox_kind_t;
extern const lab_outbox_kind_t lab_outbox_kinds[];
const lab_outbox_kind_t *lab_outbox_kind_find(const char *kind);

/* Inside an op's apply(): appends one row and returns its seq (> 0), or a negative error. */
int64_t lab_outbox_append(sqlite3 *db, const char *kind, const char *key, const char *payload,
                          int64_t ts_ms);
/* Loop thread: up to limit rows with seq > after, in order. Caller frees with
 * lab_outbox_rows_free. Returns the count (>= 0) or a negative error. */
int lab_outbox_read(lab_store_t *st, int64_t after, int limit, lab_outbox_row_t **rows);
/* The same, with the oldest seq still kept read in the same snapshot as the rows (0 when no row
 * came back): a reader whose position is below oldest - 1 has lost rows to pruning. */
int lab_outbox_read_oldest(lab_store_t *st, int64_t after, int limit, lab_outbox_row_t **rows,
                           int64_t *oldest);
void lab_outbox_rows_free(lab_outbox_row_t *rows, int n);

/* Sinks: each registers a name; its acknowledged position lets the store prune rows that every
 * sink has delivered. A sink whose cursor lives in the local store (MQTT) saves it with
 * lab_store_cursor_save; PostgreSQL keeps its own cursor in PostgreSQL.
 * Register every sink right after lab_store_open, before the loop runs: with no sink registered
 * nothing is pruned, and rows pruned before a sink registered are beyond its reach. Acknowledge
 * only rows delivered. Pruning happens once every sink is 1024 rows past the last
 * prune (or at close), at most 16384 rows per group. lab_store_sink_register returns the sink's
 * index (the same one for a name registered again), LAB_EINVAL, or LAB_ETOOBIG past 8 sinks. */
int lab_store_sink_register(lab_store_t *st, const char *name);
void lab_store_sink_acked(lab_store_t *st, int sink, int64_t seq);
/* The index of the sink registered under name, or -1 (nothing is registered). */
int lab_store_sink_find(const lab_store_t *st, const char *name);
/* The newest seq the sink acknowledged in this process (0 when none). */
int64_t lab_store_sink_position(const lab_store_t *st, int sink);
/* Rows kept after every sink acknowledged them: the newest `rows` stay (readers such as the event
 * streams resume from them after a reconnect or a restart). 0: pruned as soon as delivered. */
void lab_store_keep(lab_store_t *st, int64_t rows);
/* Reads the saved cursor (0 when none). Loop thread. */
int64_t lab_store_cursor_get(lab_store_t *st, const char *name);
/* Queues a write of the cursor (coalesced: only the newest value is written). */
void lab_store_cursor_save(lab_store_t *st, const char *name, int64_t seq);

/* ---- joining a history kept elsewhere (a reset or restored state_dir) ----
 * The PostgreSQL writer may find that PostgreSQL already holds this cell's rows past the head the
 * store opened with: the store is new, or a restored backup older than the database. The rows this
 * process appended since it opened then carry seqs PostgreSQL already has for other rows.
 * lab_store_rebase moves them (in order, as one op of the next group) to just past `onto`, raises
 * the outbox sequence past them, and sends every sink that had gone past the open head back to it
 * (their rows are under new seqs). Refused (LAB_EINVAL) when onto <= the open head, LAB_EBUSY
 * while one is under way. cb runs on the loop thread after the op, before commit listeners. */
typedef void (*lab_store_rebase_cb)(void *arg, int status);
int64_t lab_store_open_head(const lab_store_t *st);
int lab_store_rebase(lab_store_t *st, int64_t onto, lab_store_rebase_cb cb, void *arg);
/* The number of rebases done so far; *from: the seq the newest started after (sinks past it must
 * read again from it). */
int64_t lab_store_rebase_gen(const lab_store_t *st, int64_t *from);

#endif
