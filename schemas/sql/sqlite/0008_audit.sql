-- The audit trail: one hash-chained entry per state change, operator decision, manual instrument
-- action, configuration reload and learner proposal, written in the transaction of the change it
-- records (daemon/store/audit.c). `entry` is the canonical JSON the hash covers (core/chain.h);
-- the other columns are copies of its fields for lookups, checked against it by the verifier.
-- wall_ms and lab_ms serve only filters: the times of record are in the entry.
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    who TEXT NOT NULL,
    what TEXT NOT NULL,
    subject TEXT,
    why TEXT,
    lab_ms INTEGER NOT NULL,
    wall_ms INTEGER NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX audit_subject ON audit (subject, seq);
CREATE INDEX audit_who ON audit (who, seq);

-- The entries travel to PostgreSQL and MQTT with the outbox row of the change they record
-- (a JSON array of {audit_seq, hash, entry}), so the outbox keeps one row per change; an entry
-- with no row of its own change (an action, a reload) is a row of kind `audit`.
ALTER TABLE outbox ADD COLUMN audit TEXT;

-- Append-only: the daemon never changes an entry. Someone with the file can drop these, which is
-- why the chain exists; they stop a mistake, not an adversary.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit entries are never changed');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit entries are never deleted');
END;
