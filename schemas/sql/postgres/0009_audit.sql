-- The audit trail: each cell's hash-chained entries (daemon/store/audit.h), delivered by the
-- writer from the outbox kind `audit`. Insert-only: a trigger refuses UPDATE, DELETE and
-- TRUNCATE whoever asks, and the privileges leave INSERT and SELECT only.
--
-- `entry` is the canonical JSON text the hash covers (core/chain.h); the other columns are its
-- fields for queries. `labloop audit verify` recomputes every hash from `entry` and checks the
-- columns against it, the links (prev_hash) and the seqs, without trusting the daemon.
--
-- For the grants to mean something the writer's role must not own this table: an owner may
-- grant itself the privileges back and disable the triggers. A lab applies the migrations as an
-- owner role (or, as a superuser afterwards: ALTER TABLE labloop.audit OWNER TO labloop_owner)
-- and gives the writer's login role only: GRANT USAGE ON SCHEMA labloop; GRANT INSERT, SELECT ON
-- labloop.audit. Reviewers get SELECT. The revocation below only takes effect for such a writer.
CREATE TABLE labloop.audit (
    cell        text NOT NULL,
    seq         bigint NOT NULL CHECK (seq > 0),
    prev_hash   text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash        text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    who         text NOT NULL,
    what        text NOT NULL,
    subject     text,
    why         text,
    lab_time    timestamptz NOT NULL,
    wall_time   timestamptz NOT NULL,
    doc         jsonb NOT NULL,
    entry       text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cell, seq)
);
CREATE INDEX audit_subject ON labloop.audit (subject, cell, seq);
CREATE INDEX audit_who ON labloop.audit (who, wall_time);

CREATE FUNCTION labloop.audit_refuse() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'labloop.audit is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON labloop.audit
    FOR EACH ROW EXECUTE FUNCTION labloop.audit_refuse();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON labloop.audit
    FOR EACH STATEMENT EXECUTE FUNCTION labloop.audit_refuse();

REVOKE ALL ON labloop.audit FROM PUBLIC;
GRANT SELECT ON labloop.audit TO PUBLIC;
DO $$
BEGIN
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON labloop.audit FROM %I',
                   current_user);
END
$$;
