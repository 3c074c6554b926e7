-- labloop's system of record in PostgreSQL, schema labloop: what the PostgreSQL writer delivers
-- from each cell's outbox. Rows are keyed by (cell, seq) or by natural ids, so a re-delivery after
-- a crash or a reconnect never duplicates anything.

CREATE SCHEMA IF NOT EXISTS labloop;

-- Applied migrations; the daemon also creates this table before reading it (under its lock).
CREATE TABLE IF NOT EXISTS labloop.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Each sink's position in each cell's outbox, written in the same transaction as the rows.
CREATE TABLE labloop.sink_cursors (
    cell       text NOT NULL,
    sink       text NOT NULL,
    seq        bigint NOT NULL CHECK (seq >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cell, sink)
);

-- Append-only: every outbox row of every cell, as it was appended.
CREATE TABLE labloop.events (
    cell    text NOT NULL,
    seq     bigint NOT NULL,
    ts      timestamptz NOT NULL,
    kind    text NOT NULL,
    key     text NOT NULL,
    payload jsonb NOT NULL,
    PRIMARY KEY (cell, seq)
);
CREATE INDEX events_kind_ts ON labloop.events (kind, ts);
CREATE INDEX events_key ON labloop.events (key, seq);

-- The newest document of each run; seq is the outbox row it came from (older ones never win).
CREATE TABLE labloop.runs (
    id         uuid PRIMARY KEY,
    cell       text NOT NULL,
    state      text NOT NULL,
    workflow   text,
    priority   text,
    score      double precision,
    plate      text,
    doc        jsonb NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    seq        bigint NOT NULL
);
CREATE INDEX runs_cell_state ON labloop.runs (cell, state);
CREATE INDEX runs_created_at ON labloop.runs (created_at);

-- Outbox rows PostgreSQL rejected on their own (bad JSON, a missing id, ...): kept with the error,
-- skipped by the writer. payload is the row's bytes as they were (they may not be valid text).
CREATE TABLE labloop.dead_letters (
    cell       text NOT NULL,
    seq        bigint NOT NULL,
    ts         timestamptz,
    kind       text NOT NULL,
    key        text NOT NULL,
    payload    bytea NOT NULL,
    error      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cell, seq)
);
CREATE INDEX dead_letters_created_at ON labloop.dead_letters (created_at);
