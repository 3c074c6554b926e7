/* The PostgreSQL writer: one connection (a lab_pq_link_t: libpq's asynchronous API on a uv_poll,
 * the connect bounded by a timer, the backoff between attempts), through three phases. CONNECT:
 * the link's attempt. SETUP: simple queries one after another (advisory lock,
 * migrations each in its transaction, the embedded JSON Schemas into labloop.json_schemas, unlock,
 * the cursor). PIPE: pipeline mode; each outbox batch
 * is one transaction sent in one round trip, its rows as binary column arrays expanded server-side,
 * and two are in flight so that reading and encoding the next overlaps PostgreSQL's work. A batch
 * PostgreSQL rejects for its data is retried row by row; a row rejected alone goes to
 * labloop.dead_letters. Any connection trouble sends it DOWN: everything in flight is dropped
 * (PostgreSQL rolls it back) and the next connect resumes from the cursor stored in PostgreSQL. */
#include "daemon/store/pg.h"
#include "daemon/store/pq_link.h"

#include "core/embed.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"

#include <libpq-fe.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_SINK_NAME LAB_PG_SINK_NAME
/* Any fixed key shared by every labloopd: "labloop" in ASCII. */
#define PG_MIGRATE_LOCK "7813586417577072"
#define PG_MIGRATIONS_DIR "sql/postgres/"
#define PG_SCHEMAS_DIR "json/"
/* Batches in flight at once: while PostgreSQL runs one, the next is read, encoded and sent. */
#define PG_WINDOW 2

typedef enum pg_seg { SEG_BATCH, SEG_ROW, SEG_DEAD } pg_seg_t;
typedef enum pg_phase { PH_IDLE, PH_CONNECT, PH_SETUP, PH_PIPE } pg_phase_t;
typedef enum pg_step {
    ST_LOCK,
    ST_BOOT,
    ST_VERSIONS,
    ST_MIGRATE,
    ST_SCHEMAS,
    ST_UNLOCK,
    ST_CURSOR
} pg_step_t;

typedef struct pg_buf {
    char *p;
    size_t n, cap;
} pg_buf_t;

struct lab_pg {
    uv_loop_t *loop;
    lab_store_t *st;
    char *conninfo;
    char *cell;
    double connect_timeout_s;
    double retry_max_s;
    int batch_rows;
    int sink;

    lab_sink_state_t state;
    pg_phase_t phase;
    PGconn *conn;
    lab_pq_link_t *link;
    uv_timer_t timer; /* the outbox read again after it failed */
    uv_timer_t grace; /* lab_pg_stop's deadline */
    int handles; /* open uv handles and the link; the struct is freed when the last one closed */

    /* SETUP */
    pg_step_t step;
    int *applied; /* versions already in labloop.schema_migrations */
    int napplied;
    int mig_next; /* index into lab_embedded_files where the migration scan resumes */
    char *step_err;

    /* PIPE: up to PG_WINDOW segments in flight, answered in order */
    struct pg_flight {
        pg_seg_t seg;
        lab_outbox_row_t *rows; /* SEG_BATCH: its rows; NULL for the others */
        int n;
    } flight[PG_WINDOW];
    int flight_head, nflight;
    int pending_syncs;
    char seg_state[6]; /* SQLSTATE of the answering segment's first error, "" when none */
    char *seg_err;
    bool seg_cursor_ok; /* its cursor update matched: it followed on from the cursor */
    bool need_rollback;
    bool window_broken;     /* a batch failed: those behind it are dropped and re-read */
    int64_t sent;           /* the last seq handed to PostgreSQL */
    lab_outbox_row_t *rows; /* a batch being retried row by row, NULL when none */
    int nrows;
    int row_i;

    int64_t cursor;
    /* The first cursor read of this process was checked against the store's open head, and the
     * store rebased when PostgreSQL was ahead of it; no batch goes out before then. */
    bool joined, rebasing;
    int64_t delivered, batches, errors, connects;
    char *last_error;

    bool stopping, closing;
    void (*stop_cb)(void *arg);
    void *stop_arg;
};

/* Per kind, the statement that maps its rows onto a table, besides labloop.events which gets
 * every row. It runs after the events insert in the same transaction and reads the batch back
 * from there ($1 cell, $2..$3 the batch's seq range): each payload is sent and parsed once.
 * Runs: only a newer seq replaces a row, and a batch holding several changes of one run keeps its
 * newest (ON CONFLICT cannot touch a row twice in one command). A run of the lab's queue is the
 * holder's (labloop.queue.cell): another cell's rows of it, e.g. of a cell that lost it, stay in
 * labloop.events only; seqs are compared only within one cell, since each cell counts its own. */
/* The run of the row (e) is not in labloop.queue, or this cell ($1) holds it there. */
#define PG_RUN_HELD                                                                                \
    "coalesce((SELECT q.cell IS NOT DISTINCT FROM $1 FROM labloop.queue q "                        \
    "WHERE q.id = (e.payload->>'id')::uuid), true)"

typedef struct pg_kind {
    const char *kind;
    const char *sql;
} pg_kind_t;

static const pg_kind_t pg_kinds[] = {
    {"run.state",
     "INSERT INTO labloop.runs AS t (id, cell, state, workflow, priority, score, plate, doc, "
     "created_at, updated_at, seq) "
     "SELECT DISTINCT ON ((e.payload->>'id')::uuid) (e.payload->>'id')::uuid, $1, "
     "e.payload->>'state', e.payload->>'workflow', e.payload->>'priority', "
     "(e.payload->>'score')::float8, e.payload->>'plate', e.payload, "
     "(e.payload->>'created_at')::timestamptz, (e.payload->>'updated_at')::timestamptz, e.seq "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'run.state' AND " PG_RUN_HELD " ORDER BY (e.payload->>'id')::uuid, e.seq DESC "
     "ON CONFLICT (id) DO UPDATE SET cell = EXCLUDED.cell, state = EXCLUDED.state, "
     "workflow = EXCLUDED.workflow, priority = EXCLUDED.priority, score = EXCLUDED.score, "
     "plate = EXCLUDED.plate, doc = EXCLUDED.doc, created_at = EXCLUDED.created_at, "
     "updated_at = EXCLUDED.updated_at, seq = EXCLUDED.seq "
     "WHERE t.seq < EXCLUDED.seq OR t.cell <> EXCLUDED.cell"},
    {"instrument.state",
     "INSERT INTO labloop.instruments AS t (cell, id, kind, driver, model, state, last_error, doc, "
     "updated_at, seq) "
     "SELECT DISTINCT ON (e.key) $1, e.key, e.payload->>'kind', e.payload->>'driver', "
     "e.payload->>'model', e.payload->>'state', e.payload->'last_error', e.payload, e.ts, e.seq "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'instrument.state' ORDER BY e.key, e.seq DESC "
     "ON CONFLICT (cell, id) DO UPDATE SET kind = EXCLUDED.kind, driver = EXCLUDED.driver, "
     "model = EXCLUDED.model, state = EXCLUDED.state, last_error = EXCLUDED.last_error, "
     "doc = EXCLUDED.doc, updated_at = EXCLUDED.updated_at, seq = EXCLUDED.seq "
     "WHERE t.seq < EXCLUDED.seq"},
    {"instrument.interval",
     "INSERT INTO labloop.instrument_states (cell, seq, instrument, state, from_ts, to_ts) "
     "SELECT $1, e.seq, e.key, e.payload->>'state', (e.payload->>'from')::timestamptz, "
     "(e.payload->>'to')::timestamptz "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'instrument.interval' ON CONFLICT (cell, seq) DO NOTHING"},
    {"instrument.telemetry",
     "INSERT INTO labloop.telemetry (cell, seq, ts, instrument, name, value, unit) "
     "SELECT $1, e.seq, e.ts, e.key, v.key, (v.value #>> '{}')::float8, "
     "coalesce(e.payload->'units'->>v.key, '') "
     "FROM labloop.events e, jsonb_each(e.payload->'values') v "
     "WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'instrument.telemetry' AND jsonb_typeof(v.value) = 'number' "
     "ON CONFLICT (cell, seq, name) DO NOTHING"},
    {"run.state",
     "INSERT INTO labloop.steps AS t (run, idx, cell, name, op, instrument, state, attempts, "
     "started_at, ended_at, lag_s, lag_violation, error, doc, seq) "
     "SELECT DISTINCT ON ((e.payload->>'id')::uuid, x.i) (e.payload->>'id')::uuid, "
     "(x.i - 1)::int, $1, x.s->>'name', x.s->>'op', x.s->>'instrument', x.s->>'state', "
     "coalesce((x.s->>'attempts')::int, 0), (x.s->>'started_at')::timestamptz, "
     "(x.s->>'ended_at')::timestamptz, (x.s->>'lag_s')::float8, "
     "coalesce((x.s->>'lag_violation')::boolean, false), x.s->>'error', x.s, e.seq "
     "FROM labloop.events e, jsonb_array_elements(CASE jsonb_typeof(e.payload->'steps') "
     "WHEN 'array' THEN e.payload->'steps' ELSE '[]'::jsonb END) WITH ORDINALITY AS x(s, i) "
     "WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint AND e.kind = 'run.state' "
     "AND " PG_RUN_HELD " ORDER BY (e.payload->>'id')::uuid, x.i, e.seq DESC "
     "ON CONFLICT (run, idx) DO UPDATE SET cell = EXCLUDED.cell, name = EXCLUDED.name, "
     "op = EXCLUDED.op, instrument = EXCLUDED.instrument, state = EXCLUDED.state, "
     "attempts = EXCLUDED.attempts, started_at = EXCLUDED.started_at, "
     "ended_at = EXCLUDED.ended_at, lag_s = EXCLUDED.lag_s, "
     "lag_violation = EXCLUDED.lag_violation, error = EXCLUDED.error, doc = EXCLUDED.doc, "
     "seq = EXCLUDED.seq WHERE t.seq < EXCLUDED.seq OR t.cell <> EXCLUDED.cell"},
    {"measurement",
     "INSERT INTO labloop.measurements (cell, seq, run, plate, step, instrument, well, measure, "
     "value, unit, wavelength_nm, at) "
     "SELECT $1, e.seq, (e.payload->>'run')::uuid, e.payload->>'plate', e.payload->>'step', "
     "e.payload->>'instrument', e.payload->>'well', e.payload->>'measure', "
     "(e.payload->>'value')::float8, coalesce(e.payload->>'unit', ''), "
     "(e.payload->>'wavelength_nm')::int, coalesce((e.payload->>'at')::timestamptz, e.ts) "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'measurement' ON CONFLICT (cell, seq) DO NOTHING"},
    {"workflow",
     "INSERT INTO labloop.workflows (cell, name, version, doc, created_at, seq) "
     "SELECT $1, e.key, (e.payload->>'version')::int, e.payload, e.ts, e.seq "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'workflow' ON CONFLICT (cell, name, version) DO NOTHING"},
    {"campaign",
     "INSERT INTO labloop.campaigns AS t (id, cell, state, workflow, doc, created_at, updated_at, "
     "seq) SELECT DISTINCT ON (e.key) e.key, $1, e.payload->>'state', e.payload->>'workflow', "
     "e.payload, (e.payload->>'created_at')::timestamptz, "
     "(e.payload->>'updated_at')::timestamptz, e.seq "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'campaign' ORDER BY e.key, e.seq DESC "
     "ON CONFLICT (id) DO UPDATE SET cell = EXCLUDED.cell, state = EXCLUDED.state, "
     "workflow = EXCLUDED.workflow, doc = EXCLUDED.doc, created_at = EXCLUDED.created_at, "
     "updated_at = EXCLUDED.updated_at, seq = EXCLUDED.seq WHERE t.seq < EXCLUDED.seq"},
    {"batch",
     "INSERT INTO labloop.batches AS t (campaign, batch, cell, state, model_name, model_version, "
     "doc, received_at, done_at, seq) "
     "SELECT DISTINCT ON (e.key, e.payload->>'batch') e.key, e.payload->>'batch', $1, "
     "coalesce(e.payload->>'state', 'open'), e.payload->'model'->>'name', "
     "e.payload->'model'->>'version', e.payload, (e.payload->>'received_at')::timestamptz, "
     "(e.payload->>'done_at')::timestamptz, e.seq "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'batch' ORDER BY e.key, e.payload->>'batch', e.seq DESC "
     "ON CONFLICT (campaign, batch) DO UPDATE SET cell = EXCLUDED.cell, state = EXCLUDED.state, "
     "model_name = EXCLUDED.model_name, model_version = EXCLUDED.model_version, "
     "doc = EXCLUDED.doc, received_at = EXCLUDED.received_at, done_at = EXCLUDED.done_at, "
     "seq = EXCLUDED.seq WHERE t.seq < EXCLUDED.seq"},
    {"candidate",
     "INSERT INTO labloop.candidates AS t (campaign, id, cell, batch, state, params, score, "
     "uncertainty, run, plate, reason, doc, updated_at, seq) "
     "SELECT DISTINCT ON (e.key, e.payload->>'id') e.key, e.payload->>'id', $1, "
     "e.payload->>'batch', e.payload->>'state', e.payload->'params', "
     "(e.payload->>'score')::float8, (e.payload->>'uncertainty')::float8, "
     "(e.payload->>'run')::uuid, e.payload->>'plate', e.payload->>'reason', e.payload, "
     "(e.payload->>'updated_at')::timestamptz, e.seq "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'candidate' ORDER BY e.key, e.payload->>'id', e.seq DESC "
     "ON CONFLICT (campaign, id) DO UPDATE SET cell = EXCLUDED.cell, batch = EXCLUDED.batch, "
     "state = EXCLUDED.state, params = EXCLUDED.params, score = EXCLUDED.score, "
     "uncertainty = EXCLUDED.uncertainty, run = EXCLUDED.run, plate = EXCLUDED.plate, "
     "reason = EXCLUDED.reason, doc = EXCLUDED.doc, updated_at = EXCLUDED.updated_at, "
     "seq = EXCLUDED.seq WHERE t.seq < EXCLUDED.seq"},
    {"plate",
     "INSERT INTO labloop.plate_qc (cell, seq, campaign, plate, run, passed, z_prime, mu_pos, "
     "sd_pos, mu_neg, sd_neg, reason, layout, at) "
     "SELECT $1, e.seq, e.key, e.payload->>'plate', (e.payload->>'run')::uuid, "
     "(e.payload->>'passed')::boolean, (e.payload->>'z_prime')::float8, "
     "(e.payload->>'mu_pos')::float8, (e.payload->>'sd_pos')::float8, "
     "(e.payload->>'mu_neg')::float8, (e.payload->>'sd_neg')::float8, e.payload->>'reason', "
     "e.payload->'layout', coalesce((e.payload->>'at')::timestamptz, e.ts) "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'plate' ON CONFLICT (cell, seq) DO NOTHING"},
    /* The plate registry: a plate's newest document per cell, and its moves appended. */
    {"plate.state",
     "INSERT INTO labloop.plates AS t (cell, barcode, state, instrument, doc, updated_at, seq) "
     "SELECT DISTINCT ON (e.key) $1, e.key, e.payload->'location'->>'state', "
     "e.payload->'location'->>'instrument', e.payload, "
     "coalesce((e.payload->>'updated_at')::timestamptz, e.ts), e.seq "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'plate.state' ORDER BY e.key, e.seq DESC "
     "ON CONFLICT (cell, barcode) DO UPDATE SET state = EXCLUDED.state, "
     "instrument = EXCLUDED.instrument, doc = EXCLUDED.doc, updated_at = EXCLUDED.updated_at, "
     "seq = EXCLUDED.seq WHERE t.seq < EXCLUDED.seq"},
    {"plate.move",
     "INSERT INTO labloop.plate_moves (cell, seq, barcode, move_seq, action, run, by_whom, "
     "outcome, doc, at) "
     "SELECT $1, e.seq, e.key, (e.payload->>'seq')::int, e.payload->>'action', "
     "(e.payload->>'run')::uuid, e.payload->>'by', e.payload->>'outcome', e.payload, "
     "coalesce((e.payload->>'at')::timestamptz, e.ts) "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'plate.move' ON CONFLICT (cell, seq) DO NOTHING"},
    {"campaign.result",
     "INSERT INTO labloop.results (cell, seq, campaign, candidate, batch, model_name, "
     "model_version, params, value, sd, replicates, raw, wells, plate, run, z_prime, doc, at) "
     "SELECT $1, e.seq, e.key, e.payload->>'candidate', e.payload->>'batch', "
     "e.payload->'model'->>'name', e.payload->'model'->>'version', e.payload->'params', "
     "(e.payload->>'value')::float8, (e.payload->>'sd')::float8, e.payload->'replicates', "
     "e.payload->'raw', e.payload->'wells', e.payload->>'plate', (e.payload->>'run')::uuid, "
     "(e.payload->>'z_prime')::float8, e.payload, coalesce((e.payload->>'at')::timestamptz, e.ts) "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'campaign.result' ON CONFLICT (cell, seq) DO NOTHING"},
    {"consumable",
     "INSERT INTO labloop.consumables AS t (cell, instrument, tips_left, tips_total, doc, "
     "updated_at, seq) "
     "SELECT DISTINCT ON (e.key) $1, e.key, (e.payload->'tips'->>'left')::int, "
     "(e.payload->'tips'->>'total')::int, e.payload, e.ts, e.seq "
     "FROM labloop.events e WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint "
     "AND e.kind = 'consumable' ORDER BY e.key, e.seq DESC "
     "ON CONFLICT (cell, instrument) DO UPDATE SET tips_left = EXCLUDED.tips_left, "
     "tips_total = EXCLUDED.tips_total, doc = EXCLUDED.doc, updated_at = EXCLUDED.updated_at, "
     "seq = EXCLUDED.seq WHERE t.seq < EXCLUDED.seq"},
    /* Insert-only (0009_audit.sql): a redelivered entry is the same entry, kept once. */
    {"audit",
     "INSERT INTO labloop.audit (cell, seq, prev_hash, hash, who, what, subject, why, lab_time, "
     "wall_time, doc, entry) "
     "SELECT $1, (a.j->>'seq')::bigint, a.j->>'prev_hash', e.payload->>'hash', a.j->>'who', "
     "a.j->>'what', a.j->>'subject', a.j->>'why', (a.j->>'lab_time')::timestamptz, "
     "(a.j->>'wall_time')::timestamptz, a.j->'doc', e.payload->>'entry' "
     "FROM labloop.events e, LATERAL (SELECT (e.payload->>'entry')::jsonb AS j) a "
     "WHERE e.cell = $1 AND e.seq BETWEEN $2::bigint AND $3::bigint AND e.kind = 'audit' "
     "ON CONFLICT (cell, seq) DO NOTHING"},
    {NULL, NULL},
};

/* The audit entries the batch's rows carry ($2: each row's audit column, '' when none), in the
 * same transaction as the rows: PostgreSQL never has a change without its entry. */
static const char pg_sql_audit[] =
    "INSERT INTO labloop.audit (cell, seq, prev_hash, hash, who, what, subject, why, lab_time, "
    "wall_time, doc, entry) "
    "SELECT $1, (a.j->>'seq')::bigint, a.j->>'prev_hash', x.p->>'hash', a.j->>'who', "
    "a.j->>'what', a.j->>'subject', a.j->>'why', (a.j->>'lab_time')::timestamptz, "
    "(a.j->>'wall_time')::timestamptz, a.j->'doc', x.p->>'entry' "
    "FROM unnest($2::text[]) AS r(t), "
    "jsonb_array_elements(CASE WHEN r.t = '' THEN '[]'::jsonb ELSE r.t::jsonb END) AS x(p), "
    "LATERAL (SELECT (x.p->>'entry')::jsonb AS j) a "
    "ON CONFLICT (cell, seq) DO NOTHING";

static const char pg_sql_events[] =
    "INSERT INTO labloop.events (cell, seq, ts, kind, key, payload) "
    "SELECT $1, r.seq, to_timestamp(r.ts / 1000.0), r.kind, r.key, r.payload::jsonb "
    "FROM unnest($2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[]) "
    "AS r(seq, ts, kind, key, payload) ON CONFLICT (cell, seq) DO NOTHING";

/* Moves the cursor only from where this segment was read ($4): a segment that does not follow on
 * (one before it failed) changes nothing, and its answer says so (no row returned). */
static const char pg_sql_cursor_save[] =
    "UPDATE labloop.sink_cursors SET seq = $3::bigint, updated_at = now() "
    "WHERE cell = $1 AND sink = $2 AND seq = $4::bigint RETURNING seq";

/* Creates the cursor at 0 the first time, so that every batch only ever updates it. */
static const char pg_sql_cursor_get[] =
    "WITH ins AS (INSERT INTO labloop.sink_cursors (cell, sink, seq) VALUES ($1, $2, 0) "
    "ON CONFLICT (cell, sink) DO NOTHING RETURNING seq) "
    "SELECT seq FROM ins UNION ALL "
    "SELECT seq FROM labloop.sink_cursors WHERE cell = $1 AND sink = $2";

/* kind, key and payload go in as bytes: a row that PostgreSQL rejected may not even be text. */
static const char pg_sql_dead[] =
    "INSERT INTO labloop.dead_letters (cell, seq, ts, kind, key, payload, error) "
    "VALUES ($1, $2::bigint, to_timestamp($3::bigint / 1000.0), encode($4::bytea, 'escape'), "
    "encode($5::bytea, 'escape'), $6::bytea, $7) "
    "ON CONFLICT (cell, seq) DO UPDATE SET error = EXCLUDED.error, created_at = now()";

/* SQLSTATE classes that blame the rows rather than the connection or the server: the batch is
 * retried row by row and the culprit set aside. Anything else reconnects and retries. */
static const char *const pg_data_classes[] = {"22", "23", NULL};

static void pg_pump(lab_pg_t *pg);
static void pg_finish(lab_pg_t *pg);
static void pg_step_send(lab_pg_t *pg);
static void pg_results(lab_pg_t *pg);

const char *lab_sink_state_name(lab_sink_state_t s)
{
    static const char *const names[] = {
        [LAB_SINK_DISABLED] = "disabled",
        [LAB_SINK_CONNECTING] = "connecting",
        [LAB_SINK_UP] = "up",
        [LAB_SINK_DOWN] = "down",
    };
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown";
}

/* ---- small helpers ---- */

static void buf_reserve(pg_buf_t *b, size_t more)
{
    if (b->n + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more + 1)
        cap *= 2;
    b->p = lab_realloc(b->p, cap);
    b->cap = cap;
}

static void buf_add(pg_buf_t *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* PostgreSQL's binary array format (array_recv): the batch goes in as five column arrays that
 * the server takes without parsing; only the payloads are parsed, once, into jsonb. */
#define PG_OID_INT8 20
#define PG_OID_TEXT 25

static void buf_add_be32(pg_buf_t *b, uint32_t v)
{
    unsigned char x[4] = {v >> 24, v >> 16, v >> 8, v};
    buf_add(b, (const char *)x, 4);
}

static void pg_array_begin(pg_buf_t *b, uint32_t oid, int n)
{
    b->n = 0;
    buf_add_be32(b, 1); /* dimensions */
    buf_add_be32(b, 0); /* no NULLs */
    buf_add_be32(b, oid);
    buf_add_be32(b, (uint32_t)n);
    buf_add_be32(b, 1); /* lower bound */
}

static void pg_array_int8(pg_buf_t *b, const lab_outbox_row_t *rows, int n, size_t field)
{
    pg_array_begin(b, PG_OID_INT8, n);
    for (int i = 0; i < n; i++) {
        uint64_t v = (uint64_t) * (const int64_t *)((const char *)&rows[i] + field);
        buf_add_be32(b, 8);
        buf_add_be32(b, (uint32_t)(v >> 32));
        buf_add_be32(b, (uint32_t)v);
    }
}

static void pg_array_text(pg_buf_t *b, const lab_outbox_row_t *rows, int n, size_t field)
{
    pg_array_begin(b, PG_OID_TEXT, n);
    for (int i = 0; i < n; i++) {
        const char *v = *(char *const *)((const char *)&rows[i] + field);
        size_t len = v ? strlen(v) : 0;
        buf_add_be32(b, (uint32_t)len);
        buf_add(b, v ? v : "", len);
    }
}

static bool pg_rows_have(const lab_outbox_row_t *rows, int n, const char *kind)
{
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].kind, kind) == 0)
            return true;
    return false;
}

static void pg_set_error(lab_pg_t *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pg_set_error(lab_pg_t *pg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s)
        return;
    /* libpq's messages span lines (DETAIL, HINT); logs and stats want one line. */
    for (size_t n = strlen(s); n && (s[n - 1] == '\n' || s[n - 1] == ' '); n--)
        s[n - 1] = '\0';
    for (char *c = s; *c; c++)
        if (*c == '\n' || *c == '\t')
            *c = ' ';
    free(pg->last_error);
    pg->last_error = s;
    pg->errors++;
}

static bool pg_is_data_error(const char *sqlstate)
{
    for (const char *const *c = pg_data_classes; *c; c++)
        if (strncmp(sqlstate, *c, 2) == 0)
            return true;
    return false;
}

static void pg_rows_drop(lab_pg_t *pg)
{
    if (pg->rows)
        lab_outbox_rows_free(pg->rows, pg->nrows);
    pg->rows = NULL;
    pg->nrows = 0;
    pg->row_i = 0;
    for (; pg->nflight; pg->nflight--, pg->flight_head = (pg->flight_head + 1) % PG_WINDOW) {
        struct pg_flight *f = &pg->flight[pg->flight_head];
        if (f->rows)
            lab_outbox_rows_free(f->rows, f->n);
        f->rows = NULL;
    }
    pg->flight_head = 0;
    pg->window_broken = false;
}

/* ---- handles ---- */

/* One of the struct's handles finished closing; the last one frees it and reports the stop. */
static void pg_unref(lab_pg_t *pg)
{
    if (--pg->handles > 0)
        return;
    void (*cb)(void *) = pg->stop_cb;
    void *arg = pg->stop_arg;
    free(pg->applied);
    free(pg->step_err);
    free(pg->seg_err);
    free(pg->last_error);
    free(pg->conninfo);
    free(pg->cell);
    free(pg);
    if (cb)
        cb(arg);
}

static void pg_handle_closed(uv_handle_t *h)
{
    pg_unref(h->data);
}

static void pg_down(lab_pg_t *pg, const char *why);

/* ---- connection lifecycle ---- */

/* Drops the connection and everything in flight, then waits before trying again. */
static void pg_down(lab_pg_t *pg, const char *why)
{
    if (why)
        pg_set_error(pg, "%s", why);
    log_warn("pg", "down: %s", pg->last_error ? pg->last_error : "unknown");
    lab_pq_link_drop(pg->link);
    pg->conn = NULL;
    pg->phase = PH_IDLE;
    pg->pending_syncs = 0;
    pg_rows_drop(pg);
    pg->state = LAB_SINK_DOWN;
    uv_timer_stop(&pg->timer);
    if (pg->stopping) {
        pg_finish(pg);
        return;
    }
    lab_pq_link_retry(pg->link);
}

static void pg_down_conn(lab_pg_t *pg, const char *what)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s", what,
             pg->conn ? PQerrorMessage(pg->conn) : "no connection");
    pg_down(pg, msg);
}

/* The link's side: its connect attempts, the connection it brought up, input, trouble. */
static void pg_link_connecting(void *ctx)
{
    lab_pg_t *pg = ctx;
    pg->state = LAB_SINK_CONNECTING;
    pg->phase = PH_CONNECT;
}

static void pg_link_connected(void *ctx, PGconn *conn)
{
    lab_pg_t *pg = ctx;
    pg->conn = conn;
    pg->connects++;
    log_info("pg", "connected server_version=%d", PQserverVersion(conn));
    pg->phase = PH_SETUP;
    pg->step = ST_LOCK;
    pg_step_send(pg);
}

static void pg_link_io(void *ctx)
{
    lab_pg_t *pg = ctx;
    if (pg->conn)
        pg_results(pg);
}

static void pg_link_down(void *ctx, const char *why)
{
    pg_down(ctx, why);
}

static void pg_link_closed(void *ctx)
{
    pg_unref(ctx);
}

/* Sends what libpq buffered; false when it went down instead. */
static bool pg_flush(lab_pg_t *pg)
{
    return lab_pq_link_flush(pg->link);
}

/* ---- SETUP: simple queries one after another ---- */

static bool pg_migration_parse(const lab_embedded_t *f, int *version, const char **name)
{
    if (strncmp(f->name, PG_MIGRATIONS_DIR, strlen(PG_MIGRATIONS_DIR)) != 0)
        return false;
    const char *base = f->name + strlen(PG_MIGRATIONS_DIR);
    char *end;
    long v = strtol(base, &end, 10);
    if (end - base != 4 || *end != '_' || v <= 0)
        return false;
    *version = (int)v;
    *name = base;
    return true;
}

static bool pg_applied(const lab_pg_t *pg, int version)
{
    for (int i = 0; i < pg->napplied; i++)
        if (pg->applied[i] == version)
            return true;
    return false;
}

/* One upsert of every embedded schemas/json/NAME.schema.json into labloop.json_schemas, so that
 * labloop.run_problems checks with the very documents this daemon does; NULL when it went down. */
static char *pg_schemas_sql(lab_pg_t *pg)
{
    static const char suffix[] = ".schema.json";
    pg_buf_t b = {0};
    const char *head = "INSERT INTO labloop.json_schemas AS t (name, doc, updated_at) VALUES ";
    buf_add(&b, head, strlen(head));
    int n = 0;
    for (const lab_embedded_t *f = lab_embedded_files; f->name; f++) {
        size_t len = strlen(f->name);
        if (strncmp(f->name, PG_SCHEMAS_DIR, strlen(PG_SCHEMAS_DIR)) != 0 ||
            len < strlen(PG_SCHEMAS_DIR) + sizeof suffix ||
            strcmp(f->name + len - strlen(suffix), suffix) != 0 ||
            strchr(f->name + strlen(PG_SCHEMAS_DIR), '/'))
            continue;
        const char *base = f->name + strlen(PG_SCHEMAS_DIR);
        char *name = PQescapeLiteral(pg->conn, base, strlen(base));
        char *doc = PQescapeLiteral(pg->conn, f->text, f->len);
        if (!name || !doc) {
            PQfreemem(name);
            PQfreemem(doc);
            free(b.p);
            pg_down_conn(pg, "schema text");
            return NULL;
        }
        if (n++)
            buf_add(&b, ", ", 2);
        buf_add(&b, "(", 1);
        buf_add(&b, name, strlen(name));
        buf_add(&b, ", ", 2);
        buf_add(&b, doc, strlen(doc));
        buf_add(&b, "::jsonb, now())", 15);
        PQfreemem(name);
        PQfreemem(doc);
    }
    if (n == 0) {
        free(b.p);
        return lab_strdup("SELECT 1"); /* nothing embedded: a build without schemas/json */
    }
    /* updated_at says when the document last changed, not when a cell last connected. */
    const char *tail = " ON CONFLICT (name) DO UPDATE SET doc = EXCLUDED.doc, "
                       "updated_at = EXCLUDED.updated_at WHERE t.doc IS DISTINCT FROM EXCLUDED.doc";
    buf_add(&b, tail, strlen(tail));
    return b.p;
}

static void pg_step_send(lab_pg_t *pg)
{
    static const char boot[] =
        "CREATE SCHEMA IF NOT EXISTS labloop; "
        "CREATE TABLE IF NOT EXISTS labloop.schema_migrations (version integer PRIMARY KEY, "
        "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())";
    const char *params[2] = {pg->cell, PG_SINK_NAME};
    char *sql = NULL;
    int ok = 0;
    switch (pg->step) {
    case ST_LOCK:
        ok = PQsendQuery(pg->conn, "SELECT pg_advisory_lock(" PG_MIGRATE_LOCK ")");
        break;
    case ST_BOOT:
        ok = PQsendQuery(pg->conn, boot);
        break;
    case ST_VERSIONS:
        ok = PQsendQuery(pg->conn, "SELECT version FROM labloop.schema_migrations");
        break;
    case ST_MIGRATE:
        for (; lab_embedded_files[pg->mig_next].name; pg->mig_next++) {
            const lab_embedded_t *f = &lab_embedded_files[pg->mig_next];
            int version;
            const char *name;
            if (!pg_migration_parse(f, &version, &name) || pg_applied(pg, version))
                continue;
            char *lit = PQescapeLiteral(pg->conn, name, strlen(name));
            if (!lit) {
                pg_down_conn(pg, "migration name");
                return;
            }
            log_info("pg", "applying migration %s", name);
            /* One transaction per file, its record inside it. */
            sql = lab_asprintf("BEGIN;\n%s\n;INSERT INTO labloop.schema_migrations (version, name) "
                               "VALUES (%d, %s);\nCOMMIT;",
                               f->text, version, lit);
            PQfreemem(lit);
            pg->mig_next++;
            break;
        }
        if (!sql) {
            pg->step = ST_SCHEMAS;
            pg_step_send(pg);
            return;
        }
        ok = PQsendQuery(pg->conn, sql);
        break;
    case ST_SCHEMAS:
        sql = pg_schemas_sql(pg);
        if (!sql)
            return; /* went down */
        ok = PQsendQuery(pg->conn, sql);
        break;
    case ST_UNLOCK:
        ok = PQsendQuery(pg->conn, "SELECT pg_advisory_unlock(" PG_MIGRATE_LOCK ")");
        break;
    case ST_CURSOR:
        ok = PQsendQueryParams(pg->conn, pg_sql_cursor_get, 2, NULL, params, NULL, NULL, 0);
        break;
    }
    free(sql);
    if (!ok) {
        pg_down_conn(pg, "setup");
        return;
    }
    pg_flush(pg);
}

static void pg_step_result(lab_pg_t *pg, PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
        if (!pg->step_err)
            pg->step_err = lab_strdup(PQresultErrorMessage(r));
        return;
    }
    if (pg->step == ST_VERSIONS && s == PGRES_TUPLES_OK) {
        int n = PQntuples(r);
        pg->applied = lab_realloc(pg->applied, (size_t)(n ? n : 1) * sizeof *pg->applied);
        pg->napplied = n;
        for (int i = 0; i < n; i++)
            pg->applied[i] = atoi(PQgetvalue(r, i, 0));
    } else if (pg->step == ST_CURSOR && s == PGRES_TUPLES_OK) {
        pg->cursor = PQntuples(r) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    }
}

static void pg_on_rebased(void *arg, int status)
{
    lab_pg_t *pg = arg;
    pg->rebasing = false;
    if (pg->closing) {
        pg_unref(pg);
        return;
    }
    pg->handles--;
    if (status) {
        pg_set_error(pg, "rebase onto seq=%lld failed: %s", (long long)pg->cursor,
                     lab_strerror(status));
        log_error("pg", "%s; trying again after a reconnect", pg->last_error);
        if (pg->phase != PH_IDLE)
            pg_down(pg, NULL);
        return;
    }
    pg->joined = true;
    if (pg->phase == PH_PIPE) {
        lab_store_sink_acked(pg->st, pg->sink, pg->cursor);
        pg->sent = pg->cursor;
        pg_pump(pg);
    }
}

/* The first cursor of this process against the store's open head. PostgreSQL past it means the
 * state_dir is new or a restored backup older than the database: the rows appended since the
 * store opened carry seqs PostgreSQL holds for other rows, so the store moves them past the cursor
 * before any is sent. False when the writer went down. */
static bool pg_join(lab_pg_t *pg)
{
    lab_store_stats_t ss;
    lab_store_stats(pg->st, &ss);
    /* What this process delivered itself (an earlier writer on the same store) is no news. */
    int64_t open = lab_store_open_head(pg->st);
    int64_t mine = lab_store_sink_position(pg->st, pg->sink);
    int64_t known = mine > open ? mine : open;
    if (pg->joined || pg->rebasing || pg->cursor <= known) {
        pg->joined = pg->joined || (!pg->rebasing && pg->cursor <= known);
        if (pg->joined && pg->cursor <= ss.head_seq)
            lab_store_sink_acked(pg->st, pg->sink, pg->cursor);
        return true;
    }
    if (mine > open) {
        /* Rows of this process are in PostgreSQL already: moving them would write them twice. */
        char msg[256];
        snprintf(msg, sizeof msg,
                 "cursor seq=%lld in PostgreSQL moved past seq=%lld, which this process "
                 "delivered: is another labloopd writing as cell=%.64s?",
                 (long long)pg->cursor, (long long)mine, pg->cell);
        log_error("pg", "%s", msg);
        pg_down(pg, msg);
        return false;
    }
    log_error("pg",
              "cell=%s: PostgreSQL holds this cell's outbox up to seq=%lld but the local store "
              "opened at seq=%lld (a new or restored state_dir); moving the %lld rows appended "
              "since then to seq=%lld and up, and going on from there",
              pg->cell, (long long)pg->cursor, (long long)open, (long long)(ss.head_seq - open),
              (long long)pg->cursor + 1);
    int rc = lab_store_rebase(pg->st, pg->cursor, pg_on_rebased, pg);
    if (rc) {
        char msg[160];
        snprintf(msg, sizeof msg, "rebase onto seq=%lld: %s", (long long)pg->cursor,
                 lab_strerror(rc));
        pg_down(pg, msg);
        return false;
    }
    pg->rebasing = true;
    pg->handles++; /* the store calls back even after a stop */
    return true;
}

/* The step's query finished: on to the next one, or into pipeline mode when all are done. */
static void pg_step_done(lab_pg_t *pg)
{
    if (pg->step_err) {
        char msg[1024];
        snprintf(msg, sizeof msg, "setup step %d: %s", (int)pg->step, pg->step_err);
        free(pg->step_err);
        pg->step_err = NULL;
        if (pg->step == ST_MIGRATE)
            log_error("pg", "migration failed: %s", msg);
        /* Closing the session releases the advisory lock and rolls the transaction back. */
        pg_down(pg, msg);
        return;
    }
    switch (pg->step) {
    case ST_LOCK:
    case ST_BOOT:
    case ST_SCHEMAS:
    case ST_UNLOCK:
        pg->step++;
        break;
    case ST_VERSIONS:
        pg->mig_next = 0;
        pg->step = ST_MIGRATE;
        break;
    case ST_MIGRATE:
        break; /* the next file, if any */
    case ST_CURSOR: {
        if (!pg_join(pg))
            return;
        if (!PQenterPipelineMode(pg->conn)) {
            pg_down_conn(pg, "pipeline mode");
            return;
        }
        pg->phase = PH_PIPE;
        pg->state = LAB_SINK_UP;
        pg->need_rollback = false;
        pg->sent = pg->cursor;
        pg->seg_state[0] = '\0';
        pg->seg_cursor_ok = false;
        lab_pq_link_backoff_reset(pg->link);
        log_info("pg", "up cell=%s cursor=%lld", pg->cell, (long long)pg->cursor);
        pg_pump(pg);
        return;
    }
    }
    pg_step_send(pg);
}

/* ---- PIPE: segments (a transaction ended by a sync), up to PG_WINDOW in flight ---- */

static bool pg_send(lab_pg_t *pg, const char *sql, int n, const char *const *vals, const int *lens,
                    const int *fmts)
{
    return PQsendQueryParams(pg->conn, sql, n, NULL, vals, lens, fmts, 0) == 1;
}

/* BEGIN, the rows' statements, the cursor update, COMMIT, sync: one round trip. `after` is the
 * cursor this segment follows on from. */
static void pg_seg_send(lab_pg_t *pg, pg_seg_t seg, const lab_outbox_row_t *rows, int n,
                        int64_t after, const char *dead_error)
{
    char seqtxt[24], tstxt[24], aftertxt[24];
    snprintf(seqtxt, sizeof seqtxt, "%lld", (long long)rows[n - 1].seq);
    snprintf(aftertxt, sizeof aftertxt, "%lld", (long long)after);
    const char *cur[4] = {pg->cell, PG_SINK_NAME, seqtxt, aftertxt};
    bool ok = true;
    if (pg->need_rollback)
        ok = pg_send(pg, "ROLLBACK", 0, NULL, NULL, NULL);
    pg->need_rollback = false;
    ok = ok && pg_send(pg, "BEGIN", 0, NULL, NULL, NULL);
    if (seg == SEG_DEAD) {
        snprintf(tstxt, sizeof tstxt, "%lld", (long long)rows[0].ts_ms);
        const char *key = rows[0].key ? rows[0].key : "";
        const char *payload = rows[0].payload ? rows[0].payload : "";
        const char *v[7] = {pg->cell, seqtxt, tstxt, rows[0].kind, key, payload, dead_error};
        int lens[7] = {0, 0, 0, (int)strlen(rows[0].kind), (int)strlen(key), (int)strlen(payload),
                       0};
        int fmts[7] = {0, 0, 0, 1, 1, 1, 0};
        ok = ok && pg_send(pg, pg_sql_dead, 7, v, lens, fmts);
    } else {
        char firsttxt[24];
        snprintf(firsttxt, sizeof firsttxt, "%lld", (long long)rows[0].seq);
        pg_buf_t cols[5] = {{0}};
        pg_array_int8(&cols[0], rows, n, offsetof(lab_outbox_row_t, seq));
        pg_array_int8(&cols[1], rows, n, offsetof(lab_outbox_row_t, ts_ms));
        pg_array_text(&cols[2], rows, n, offsetof(lab_outbox_row_t, kind));
        pg_array_text(&cols[3], rows, n, offsetof(lab_outbox_row_t, key));
        pg_array_text(&cols[4], rows, n, offsetof(lab_outbox_row_t, payload));
        const char *v[6] = {pg->cell, cols[0].p, cols[1].p, cols[2].p, cols[3].p, cols[4].p};
        int lens[6] = {0};
        int fmts[6] = {0, 1, 1, 1, 1, 1};
        for (int i = 0; i < 5; i++)
            lens[i + 1] = (int)cols[i].n;
        ok = ok && pg_send(pg, pg_sql_events, 6, v, lens, fmts);
        for (int i = 0; i < 5; i++)
            free(cols[i].p);
        const char *range[3] = {pg->cell, firsttxt, seqtxt};
        for (const pg_kind_t *k = pg_kinds; ok && k->kind; k++)
            if (pg_rows_have(rows, n, k->kind))
                ok = pg_send(pg, k->sql, 3, range, NULL, NULL);
        bool audited = false;
        for (int i = 0; i < n && !audited; i++)
            audited = rows[i].audit != NULL;
        if (ok && audited) {
            pg_buf_t col = {0};
            pg_array_text(&col, rows, n, offsetof(lab_outbox_row_t, audit));
            const char *av[2] = {pg->cell, col.p};
            int alens[2] = {0, (int)col.n}, afmts[2] = {0, 1};
            ok = pg_send(pg, pg_sql_audit, 2, av, alens, afmts);
            free(col.p);
        }
    }
    ok = ok && pg_send(pg, pg_sql_cursor_save, 4, cur, NULL, NULL);
    ok = ok && pg_send(pg, "COMMIT", 0, NULL, NULL, NULL);
    ok = ok && PQpipelineSync(pg->conn) == 1;
    if (!ok) {
        pg_down_conn(pg, "send batch");
        return;
    }
    LAB_ASSERT(pg->nflight < PG_WINDOW);
    struct pg_flight *f = &pg->flight[(pg->flight_head + pg->nflight) % PG_WINDOW];
    f->seg = seg;
    f->rows = NULL;
    f->n = n;
    pg->nflight++;
    pg->pending_syncs++;
    pg_flush(pg);
}

static void pg_on_pump_retry(uv_timer_t *t)
{
    pg_pump(t->data);
}

/* Fills the window with batches read after the last one sent. */
static void pg_pump(lab_pg_t *pg)
{
    while (pg->phase == PH_PIPE && pg->joined && !pg->rows && !pg->window_broken && !pg->closing &&
           pg->nflight < PG_WINDOW) {
        lab_outbox_row_t *rows;
        int n = lab_outbox_read(pg->st, pg->sent, pg->batch_rows, &rows);
        if (n < 0) {
            pg_set_error(pg, "outbox read: %s", lab_strerror(n));
            log_error("pg", "outbox read after seq=%lld: %s", (long long)pg->sent, lab_strerror(n));
            uv_timer_start(&pg->timer, pg_on_pump_retry, 1000, 0); /* idle while UP */
            return;
        }
        if (n == 0) {
            if (pg->stopping && pg->nflight == 0)
                pg_finish(pg);
            return;
        }
        int64_t after = pg->sent;
        pg->sent = rows[n - 1].seq;
        int slot = (pg->flight_head + pg->nflight) % PG_WINDOW;
        pg_seg_send(pg, SEG_BATCH, rows, n, after, NULL);
        if (pg->phase != PH_PIPE) { /* went down while sending */
            lab_outbox_rows_free(rows, n);
            return;
        }
        pg->flight[slot].rows = rows;
    }
}

static void pg_advance(lab_pg_t *pg, int64_t seq, int delivered)
{
    pg->cursor = seq;
    pg->delivered += delivered;
    lab_store_sink_acked(pg->st, pg->sink, seq);
}

/* The next row of a batch being retried row by row; then back to batches from the cursor. */
static void pg_row_next(lab_pg_t *pg)
{
    if (pg->row_i < pg->nrows) {
        pg_seg_send(pg, SEG_ROW, pg->rows + pg->row_i, 1, pg->cursor, NULL);
        return;
    }
    pg->batches++;
    pg_rows_drop(pg);
    pg->sent = pg->cursor;
    pg_pump(pg);
}

/* Once the window drained after a failed batch: its rows one by one, or re-read the lot. */
static void pg_window_resume(lab_pg_t *pg)
{
    pg->window_broken = false;
    pg->sent = pg->cursor;
    if (pg->rows) {
        log_warn("pg", "batch of %d rows after seq=%lld rejected, retrying row by row", pg->nrows,
                 (long long)pg->cursor);
        pg->row_i = 0;
        pg_row_next(pg);
        return;
    }
    pg_pump(pg);
}

static void pg_batch_done(lab_pg_t *pg, struct pg_flight *f)
{
    bool ok = !*pg->seg_state && pg->seg_cursor_ok;
    if (!pg->window_broken && ok) {
        pg_advance(pg, f->rows[f->n - 1].seq, f->n);
        pg->batches++;
        lab_outbox_rows_free(f->rows, f->n);
        pg_pump(pg);
        return;
    }
    if (!pg->window_broken && !*pg->seg_state) {
        /* Committed, but the cursor was not where this writer left it: someone moved it. */
        lab_outbox_rows_free(f->rows, f->n);
        pg_down(pg, "cursor in labloop.sink_cursors moved under the writer; reading it again");
        return;
    }
    if (*pg->seg_state && !pg->window_broken && !pg_is_data_error(pg->seg_state)) {
        char msg[1024];
        snprintf(msg, sizeof msg, "batch after seq=%lld: %s %s", (long long)pg->cursor,
                 pg->seg_state, pg->seg_err ? pg->seg_err : "");
        lab_outbox_rows_free(f->rows, f->n);
        pg_down(pg, msg);
        return;
    }
    /* The first failed batch is kept for the row-by-row retry; those behind it failed only
     * because it did (its transaction stayed aborted), and are read again. */
    if (!pg->window_broken && *pg->seg_state) {
        pg->rows = f->rows;
        pg->nrows = f->n;
    } else {
        log_info("pg", "batch of %d rows up to seq=%lld dropped behind a failed one (%s)", f->n,
                 (long long)f->rows[f->n - 1].seq, *pg->seg_state ? pg->seg_state : "cursor");
        lab_outbox_rows_free(f->rows, f->n);
    }
    pg->window_broken = true;
    pg->need_rollback = true;
    if (pg->nflight == 0)
        pg_window_resume(pg);
}

static void pg_row_done(lab_pg_t *pg, pg_seg_t seg)
{
    if (!*pg->seg_state && pg->seg_cursor_ok) {
        pg_advance(pg, pg->rows[pg->row_i].seq, seg == SEG_ROW);
        pg->row_i++;
        pg_row_next(pg);
        return;
    }
    pg->need_rollback = true;
    if (!*pg->seg_state || !pg_is_data_error(pg->seg_state) || seg == SEG_DEAD) {
        char msg[1024];
        snprintf(msg, sizeof msg, "row seq=%lld: %s %s", (long long)pg->rows[pg->row_i].seq,
                 *pg->seg_state ? pg->seg_state : "cursor moved", pg->seg_err ? pg->seg_err : "");
        pg_down(pg, msg);
        return;
    }
    const lab_outbox_row_t *row = &pg->rows[pg->row_i];
    pg_set_error(pg, "seq=%lld kind=%s rejected: %s %s", (long long)row->seq, row->kind,
                 pg->seg_state, pg->seg_err ? pg->seg_err : "");
    log_error("pg", "row %s; moved to labloop.dead_letters", pg->last_error);
    char *err = lab_strdup(pg->last_error);
    pg_seg_send(pg, SEG_DEAD, row, 1, pg->cursor, err);
    free(err);
}

/* A segment's sync arrived: its answers are all in. */
static void pg_seg_done(lab_pg_t *pg)
{
    LAB_ASSERT(pg->nflight > 0);
    struct pg_flight f = pg->flight[pg->flight_head];
    pg->flight[pg->flight_head].rows = NULL;
    pg->flight_head = (pg->flight_head + 1) % PG_WINDOW;
    pg->nflight--;
    if (f.seg == SEG_BATCH)
        pg_batch_done(pg, &f);
    else
        pg_row_done(pg, f.seg);
    /* The next segment's answers start now. */
    pg->seg_state[0] = '\0';
    free(pg->seg_err);
    pg->seg_err = NULL;
    pg->seg_cursor_ok = false;
}

static void pg_pipe_result(lab_pg_t *pg, PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_TUPLES_OK) /* only the cursor update returns rows */
        pg->seg_cursor_ok = PQntuples(r) == 1;
    if (s != PGRES_FATAL_ERROR || *pg->seg_state)
        return;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(pg->seg_state, sizeof pg->seg_state, "%s", state && *state ? state : "XX000");
    pg->seg_err = lab_strdup(PQresultErrorMessage(r));
}

/* Everything libpq can hand over without waiting. */
static void pg_results(lab_pg_t *pg)
{
    PGconn *conn = pg->conn;
    int nulls = 0;
    while (pg->conn == conn && !PQisBusy(conn)) {
        if (pg->phase == PH_PIPE && pg->pending_syncs == 0)
            break;
        PGresult *r = PQgetResult(conn);
        if (!r) {
            if (pg->phase == PH_SETUP) {
                pg_step_done(pg);
                break; /* the next query's answer cannot be here yet */
            }
            /* In pipeline mode NULL ends each statement; two in a row mean nothing is left. */
            if (++nulls > 1)
                break;
            continue;
        }
        nulls = 0;
        if (pg->phase == PH_SETUP) {
            pg_step_result(pg, r);
        } else if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            pg->pending_syncs--;
            PQclear(r);
            pg_seg_done(pg);
            continue;
        } else {
            pg_pipe_result(pg, r);
        }
        PQclear(r);
    }
    if (pg->conn == conn && PQstatus(conn) == CONNECTION_BAD)
        pg_down_conn(pg, "connection lost");
}

/* ---- start, stop, stats ---- */

static void pg_on_commit(void *ctx, int64_t head_seq)
{
    pg_pump(ctx);
}

static void pg_on_grace(uv_timer_t *t)
{
    lab_pg_t *pg = t->data;
    log_warn("pg", "stop: grace over at cursor=%lld", (long long)pg->cursor);
    pg_finish(pg);
}

int lab_pg_start(lab_pg_t **out, uv_loop_t *loop, const lab_config_t *cfg, lab_store_t *st)
{
    *out = NULL;
    if (!loop || !cfg || !st || !cfg->pg_enabled || !cfg->pg_conninfo || cfg->pg_batch_rows < 1)
        return LAB_EINVAL;
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(cfg->pg_conninfo, &perr);
    if (!opts) {
        log_error("pg", "conninfo: %.*s", perr ? (int)strcspn(perr, "\n") : 7,
                  perr ? perr : "invalid");
        PQfreemem(perr);
        return LAB_ECONFIG;
    }
    PQconninfoFree(opts);
    int sink = lab_store_sink_register(st, PG_SINK_NAME);
    if (sink < 0)
        return sink;
    lab_pg_t *pg = LAB_NEW(lab_pg_t);
    pg->loop = loop;
    pg->st = st;
    pg->sink = sink;
    pg->conninfo = lab_strdup(cfg->pg_conninfo);
    pg->cell = lab_strdup(cfg->cell ? cfg->cell : "default");
    pg->connect_timeout_s = cfg->pg_connect_timeout_s > 0 ? cfg->pg_connect_timeout_s : 5;
    pg->retry_max_s = cfg->pg_retry_max_s > 0 ? cfg->pg_retry_max_s : 30;
    pg->batch_rows = cfg->pg_batch_rows;
    uv_timer_init(loop, &pg->timer);
    uv_timer_init(loop, &pg->grace);
    pg->timer.data = pg->grace.data = pg;
    static const lab_pq_link_ops_t ops = {pg_link_connecting, pg_link_connected, pg_link_io,
                                          pg_link_down};
    lab_pq_link_cfg_t lc = {pg->conninfo, "labloopd", "pg", pg->connect_timeout_s, pg->retry_max_s};
    pg->link = lab_pq_link_new(loop, &lc, &ops, pg);
    pg->handles = 3;
    lab_store_on_commit(st, pg_on_commit, pg);
    *out = pg;
    lab_pq_link_connect(pg->link);
    return 0;
}

static void pg_finish(lab_pg_t *pg)
{
    if (pg->closing)
        return;
    pg->closing = true;
    log_info("pg", "stopped cursor=%lld delivered=%lld", (long long)pg->cursor,
             (long long)pg->delivered);
    lab_store_off_commit(pg->st, pg_on_commit, pg);
    lab_pq_link_close(pg->link, pg_link_closed);
    pg->conn = NULL;
    pg->phase = PH_IDLE;
    pg_rows_drop(pg);
    uv_close((uv_handle_t *)&pg->timer, pg_handle_closed);
    uv_close((uv_handle_t *)&pg->grace, pg_handle_closed);
}

void lab_pg_stop(lab_pg_t *pg, uint64_t grace_ms, void (*cb)(void *arg), void *arg)
{
    if (!pg || pg->stopping)
        return;
    pg->stopping = true;
    pg->stop_cb = cb;
    pg->stop_arg = arg;
    if (pg->state == LAB_SINK_DOWN || pg->phase == PH_IDLE) {
        pg_finish(pg);
        return;
    }
    uv_timer_start(&pg->grace, pg_on_grace, grace_ms, 0);
    pg_pump(pg);
}

void lab_pg_stats(const lab_pg_t *pg, lab_sink_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!pg) {
        out->state = LAB_SINK_DISABLED;
        return;
    }
    out->state = pg->state;
    out->cursor = pg->cursor;
    out->delivered = pg->delivered;
    out->batches = pg->batches;
    out->errors = pg->errors;
    out->connects = pg->connects;
    out->last_error = pg->last_error;
}
