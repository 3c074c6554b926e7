-- The local store's first schema: the outbox, the sinks' cursors, runs and idempotency records.
-- schema_migrations itself is created by the store before any migration runs.

-- Every state change and measurement, in commit order. AUTOINCREMENT so a seq is never reused,
-- even after the rows below it were pruned; sqlite_sequence holds the head.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL
);

-- Positions of sinks whose cursor lives here (the MQTT publisher's).
CREATE TABLE sink_cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;

-- n gives submission order and the paging cursor; seq is the outbox row of the latest change.
CREATE TABLE runs (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    doc TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX runs_state_n ON runs (state, n);

-- What a POST with an Idempotency-Key answered, to replay it.
CREATE TABLE idempotency (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (owner, key)
) WITHOUT ROWID;
