-- The lab's one queue (issue 15). Runs that are not for "this cell only" are submitted here, by
-- SQL (labloop.submit_run), MQTT or HTTP through a cell; each cell claims the ones it can run with
-- FOR UPDATE SKIP LOCKED in a transaction it keeps open until the runs are in its local store, and
-- asks PostgreSQL (labloop.start_run, the fence) before a run's first step. Cells keep a row in
-- labloop.cells with a heartbeat; a cell not heard from for its lease is lost and its claimed,
-- unstarted runs go back to the queue. Every time is PostgreSQL's clock, never a cell's.

-- The JSON Schemas the daemon validates with (schemas/json/*.schema.json), upserted by every
-- labloopd when it connects, so the database checks a submission with the very same documents.
CREATE TABLE labloop.json_schemas (
    name       text PRIMARY KEY,
    doc        jsonb NOT NULL,
    updated_at timestamptz
);

CREATE TABLE labloop.cells (
    cell         text PRIMARY KEY,
    site         text NOT NULL,
    state        text NOT NULL CHECK (state IN ('up', 'stopping', 'lost')),
    capabilities jsonb NOT NULL, -- {"kinds": [..], "instruments": [{"id","kind","state"}], "window": n}
    queue        jsonb NOT NULL DEFAULT '{}', -- the cell's local run counts by state
    api          text,
    lease_s      double precision NOT NULL CHECK (lease_s > 0),
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

CREATE TABLE labloop.queue (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    idempotency_key text UNIQUE,
    request_hash    text NOT NULL, -- sha256 of the document as submitted, before any default
    doc             jsonb NOT NULL,
    workflow        text NOT NULL,
    needs           text[], -- the workflow version's step "on" values; NULL until it is stored
    pin_cell        text,
    priority        smallint NOT NULL CHECK (priority BETWEEN 0 AND 3), -- 0 urgent .. 3 low
    deadline        timestamptz,
    score           double precision NOT NULL DEFAULT 0,
    via             text NOT NULL CHECK (via IN ('sql', 'mqtt', 'http')),
    submitted_by    text NOT NULL,
    submitted_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'claimed', 'started', 'finished', 'cancelled')),
    cell            text,
    claimed_at      timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    claims          int NOT NULL DEFAULT 0,
    cancel_reason   text,
    -- A held run names its holder; a queued one names none.
    CHECK ((state = 'queued') = (cell IS NULL) OR state IN ('finished', 'cancelled'))
);
-- The claim order, over queued rows only: a claim walks it and stops after n it can run.
CREATE INDEX queue_claim ON labloop.queue (priority, deadline NULLS LAST, score DESC,
                                           submitted_at, id) WHERE state = 'queued';
-- Runs waiting for their workflow, found again when a version of it is stored.
CREATE INDEX queue_awaiting ON labloop.queue (workflow) WHERE needs IS NULL AND state = 'queued';
CREATE INDEX queue_cell_state ON labloop.queue (cell, state) WHERE cell IS NOT NULL;

-- ---- the JSON Schema check ----

-- RFC 3339 date-time as core/clock.c reads it: a zone is required; the date must exist.
CREATE FUNCTION labloop.is_date_time(s text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    m text[];
BEGIN
    m := regexp_match(s, '^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})'
                         '(\.[0-9]+)?([Zz]|[+-]([0-9]{2}):([0-9]{2}))$');
    IF m IS NULL OR m[4]::int > 23 OR m[5]::int > 59 OR m[6]::int > 60
       OR coalesce(m[9]::int, 0) > 23 OR coalesce(m[10]::int, 0) > 59 THEN
        RETURN false;
    END IF;
    -- make_date refuses a day the month does not have (2026-02-30) and month 0 or 13.
    PERFORM make_date(m[1]::int, m[2]::int, m[3]::int);
    RETURN true;
EXCEPTION WHEN datetime_field_overflow OR invalid_datetime_format
               OR numeric_value_out_of_range THEN
    RETURN false;
END $$;

-- "/" + token with ~ and / escaped (RFC 6901).
CREATE FUNCTION labloop.json_pointer(base text, token text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT base || '/' || replace(replace(token, '~', '~0'), '/', '~1')
$$;

-- The type name the messages use: integer for a number written without fraction or exponent.
CREATE FUNCTION labloop.json_type(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'number' THEN CASE WHEN v::text ~ '^-?[0-9]+$' THEN 'integer' ELSE 'number' END
        ELSE jsonb_typeof(v) END
$$;

CREATE FUNCTION labloop.json_type_matches(t text, v jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE t
        WHEN 'integer' THEN jsonb_typeof(v) = 'number' AND v::text::numeric = trunc(v::text::numeric)
        ELSE jsonb_typeof(v) = t END
$$;

-- Every problem of v against schema as a JSON array of {"path","message"}, paths under ptr. The
-- subset core/jschema.c implements for the documents labloop takes (type, enum, const, required,
-- properties, additionalProperties, items, min/maxItems, min/maxLength in characters, pattern,
-- minimum/maximum and their exclusive forms, format date-time and uuid); a schema that uses
-- anything else is refused rather than half-checked. Messages are the C validator's.
CREATE FUNCTION labloop.json_problems(schema jsonb, v jsonb, ptr text DEFAULT '') RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    res jsonb := '[]';
    k text;
    kv jsonb;
    t text;
    expected text;
    ok boolean;
    s text;
    n numeric;
    len int;
    sub jsonb;
    i int;
BEGIN
    IF schema = 'true'::jsonb THEN
        RETURN res;
    ELSIF schema = 'false'::jsonb THEN
        RETURN jsonb_build_array(jsonb_build_object('path', ptr, 'message', 'not allowed'));
    END IF;
    -- One operator, not a loop over the keys: this runs for every value checked.
    IF schema ?| ARRAY['$ref', '$dynamicRef', 'allOf', 'anyOf', 'oneOf', 'not', 'if', 'then',
                       'else', 'dependentRequired', 'dependentSchemas', 'patternProperties',
                       'propertyNames', 'minProperties', 'maxProperties', 'unevaluatedProperties',
                       'unevaluatedItems', 'prefixItems', 'contains', 'minContains', 'maxContains',
                       'uniqueItems', 'multipleOf']
       OR (schema ? 'format' AND schema->>'format' NOT IN ('date-time', 'uuid')) THEN
        RAISE EXCEPTION 'JSON Schema keyword of % is not supported by labloop.json_problems',
            left(schema::text, 200) USING ERRCODE = 'feature_not_supported';
    END IF;

    kv := schema->'type';
    IF kv IS NOT NULL THEN
        IF jsonb_typeof(kv) = 'array' THEN
            SELECT bool_or(labloop.json_type_matches(x, v)), string_agg(x, ', ')
              INTO ok, expected FROM jsonb_array_elements_text(kv) x;
        ELSE
            expected := kv #>> '{}';
            ok := labloop.json_type_matches(expected, v);
        END IF;
        IF NOT coalesce(ok, false) THEN
            -- Nothing else about a value of the wrong type is worth saying.
            RETURN jsonb_build_array(jsonb_build_object(
                'path', ptr, 'message',
                format('expected %s, got %s', expected, labloop.json_type(v))));
        END IF;
    END IF;

    kv := schema->'enum';
    IF kv IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(kv) e WHERE e = v) THEN
        res := res || jsonb_build_object('path', ptr, 'message', format('must be one of %s',
            (SELECT string_agg(CASE jsonb_typeof(e) WHEN 'string' THEN e #>> '{}' ELSE e::text END,
                               ', ') FROM jsonb_array_elements(kv) e)));
    END IF;
    kv := schema->'const';
    IF kv IS NOT NULL AND kv <> v THEN
        res := res || jsonb_build_object('path', ptr, 'message', format('must be %s', kv::text));
    END IF;

    t := jsonb_typeof(v);
    IF t = 'number' THEN
        n := v::text::numeric;
        IF n < (schema->>'minimum')::numeric THEN
            res := res || jsonb_build_object('path', ptr, 'message',
                                             format('must be >= %s', schema->>'minimum'));
        END IF;
        IF n > (schema->>'maximum')::numeric THEN
            res := res || jsonb_build_object('path', ptr, 'message',
                                             format('must be <= %s', schema->>'maximum'));
        END IF;
        IF n <= (schema->>'exclusiveMinimum')::numeric THEN
            res := res || jsonb_build_object('path', ptr, 'message',
                                             format('must be > %s', schema->>'exclusiveMinimum'));
        END IF;
        IF n >= (schema->>'exclusiveMaximum')::numeric THEN
            res := res || jsonb_build_object('path', ptr, 'message',
                                             format('must be < %s', schema->>'exclusiveMaximum'));
        END IF;
    ELSIF t = 'string' THEN
        s := v #>> '{}';
        len := char_length(s); -- characters, not bytes: the database is UTF-8
        IF len < (schema->>'minLength')::int THEN
            res := res || jsonb_build_object('path', ptr, 'message',
                format('must be at least %s characters long', schema->>'minLength'));
        END IF;
        IF len > (schema->>'maxLength')::int THEN
            res := res || jsonb_build_object('path', ptr, 'message',
                format('must be at most %s characters long', schema->>'maxLength'));
        END IF;
        IF schema ? 'pattern' AND s !~ (schema->>'pattern') THEN
            res := res || jsonb_build_object('path', ptr, 'message',
                format('does not match the pattern %s', schema->>'pattern'));
        END IF;
        IF schema->>'format' = 'date-time' AND NOT labloop.is_date_time(s) THEN
            res := res || jsonb_build_object('path', ptr, 'message',
                'not a date-time (RFC 3339, e.g. 2026-11-22T10:00:00Z)');
        ELSIF schema->>'format' = 'uuid' AND s !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
            res := res || jsonb_build_object('path', ptr, 'message', 'not a UUID');
        END IF;
    ELSIF t = 'array' THEN
        len := jsonb_array_length(v);
        IF len < (schema->>'minItems')::int THEN
            res := res || jsonb_build_object('path', ptr, 'message',
                format('must have at least %s items', schema->>'minItems'));
        END IF;
        IF len > (schema->>'maxItems')::int THEN
            res := res || jsonb_build_object('path', ptr, 'message',
                format('must have at most %s items', schema->>'maxItems'));
        END IF;
        IF schema ? 'items' THEN
            FOR i IN 0 .. len - 1 LOOP
                res := res || labloop.json_problems(schema->'items', v->i, ptr || '/' || i);
            END LOOP;
        END IF;
    ELSIF t = 'object' THEN
        FOR k IN SELECT jsonb_array_elements_text(schema->'required') LOOP
            IF NOT v ? k THEN
                res := res || jsonb_build_object('path', labloop.json_pointer(ptr, k),
                                                 'message', 'required field missing');
            END IF;
        END LOOP;
        FOR k, sub IN SELECT e.key, e.value FROM jsonb_each(v) e LOOP
            IF schema->'properties' ? k THEN
                res := res || labloop.json_problems(schema->'properties'->k, sub,
                                                    labloop.json_pointer(ptr, k));
            ELSIF schema->'additionalProperties' = 'false'::jsonb THEN
                res := res || jsonb_build_object('path', labloop.json_pointer(ptr, k),
                                                 'message', 'unknown field');
            ELSIF schema ? 'additionalProperties' THEN
                res := res || labloop.json_problems(schema->'additionalProperties', sub,
                                                    labloop.json_pointer(ptr, k));
            END IF;
        END LOOP;
    END IF;
    RETURN res;
END $$;

-- ---- submissions ----

-- The problems of one run document as a JSON array: the run.schema.json check, then (only for a
-- document the schema accepts, as POST /v1/runs does) the workflow rules against the workflows
-- the cells stored.
CREATE FUNCTION labloop.run_problems_json(doc jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    schema jsonb;
    res jsonb;
    wf text;
BEGIN
    SELECT s.doc INTO schema FROM labloop.json_schemas s WHERE s.name = 'run.schema.json';
    IF schema IS NULL THEN
        RAISE EXCEPTION 'labloop.json_schemas has no run.schema.json'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'a labloopd with [postgres] stores it when it connects';
    END IF;
    res := labloop.json_problems(schema, coalesce(doc, 'null'), ''); -- SQL NULL: as JSON null
    IF res <> '[]'::jsonb THEN
        RETURN res;
    END IF;
    wf := doc->>'workflow';
    IF NOT EXISTS (SELECT 1 FROM labloop.workflows w WHERE w.name = wf) THEN
        IF doc->'await_workflow' IS DISTINCT FROM 'true'::jsonb THEN
            res := res || jsonb_build_object('path', '/workflow',
                                             'message', 'no workflow of this name is stored');
        END IF;
    ELSIF doc ? 'workflow_version' AND NOT EXISTS (
            SELECT 1 FROM labloop.workflows w
             WHERE w.name = wf AND w.version = (doc->>'workflow_version')::numeric) THEN
        res := res || jsonb_build_object('path', '/workflow_version',
                                         'message', 'no such version of this workflow');
    END IF;
    RETURN res;
END $$;

CREATE FUNCTION labloop.run_problems(doc jsonb) RETURNS TABLE(path text, message text)
LANGUAGE sql STABLE AS $$
    SELECT p->>'path', p->>'message' FROM jsonb_array_elements(labloop.run_problems_json(doc)) p
$$;

-- The step "on" values of a stored workflow version (every cell's copy of it).
CREATE FUNCTION labloop.workflow_needs(wf text, version bigint) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN count(w.*) = 0 THEN NULL
                ELSE coalesce(array_agg(DISTINCT s->>'on') FILTER (WHERE s ? 'on'), '{}') END
      FROM labloop.workflows w
      LEFT JOIN LATERAL jsonb_array_elements(CASE jsonb_typeof(w.doc->'steps')
                WHEN 'array' THEN w.doc->'steps' ELSE '[]' END) s ON true
     WHERE w.name = wf AND w.version = workflow_needs.version
$$;

-- Valid documents into the queue in one statement, their ids in order (no NOTIFY: the callers
-- send one per call). A key's first document wins: a key already stored, or repeated in docs,
-- gives the first id when the document is the same (request_hash) and SQLSTATE 23505 when not. A
-- concurrent insert of the same key waits for the other transaction, then reads its row.
CREATE FUNCTION labloop.queue_insert_all(docs jsonb, keys text[], via text, submitted_by text)
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    n int := jsonb_array_length(docs);
    ids uuid[] := ARRAY(SELECT gen_random_uuid() FROM generate_series(1, n));
    hashes text[] := ARRAY(SELECT encode(sha256(convert_to(x.doc::text, 'UTF8')), 'hex')
                             FROM jsonb_array_elements(docs) WITH ORDINALITY x(doc, i)
                            ORDER BY x.i);
    out_ids uuid[];
    bad text;
    unseen text;
BEGIN
    IF via IS NULL OR via NOT IN ('sql', 'mqtt', 'http') THEN
        RAISE EXCEPTION 'via must be sql, mqtt or http' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT k INTO bad FROM unnest(keys) k
     WHERE k IS NOT NULL AND octet_length(k) NOT BETWEEN 1 AND 255 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'idempotency key must have 1 to 255 bytes (has %)', octet_length(bad)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO labloop.queue AS q (id, idempotency_key, request_hash, doc, workflow, needs,
                                    pin_cell, priority, deadline, score, via, submitted_by)
    SELECT s.id, s.key, s.hash, s.d, s.wf,
           CASE WHEN s.ver IS NULL THEN NULL ELSE labloop.workflow_needs(s.wf, s.ver) END,
           s.pin,
           CASE coalesce(s.d->>'priority', 'normal')
               WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END,
           upper(s.d->>'deadline')::timestamptz, coalesce((s.d->>'score')::float8, 0), via,
           coalesce(submitted_by, current_user)
      FROM (SELECT x.i, ids[x.i] AS id, keys[x.i] AS key, hashes[x.i] AS hash,
                   x.doc->>'workflow' AS wf, nullif(x.doc->>'cell', 'any') AS pin,
                   CASE WHEN v.ver IS NULL THEN x.doc - 'await_workflow' - 'cell'
                        ELSE x.doc - 'await_workflow' - 'cell'
                             || jsonb_build_object('workflow_version', v.ver) END AS d,
                   coalesce((x.doc->>'workflow_version')::numeric::bigint, v.ver) AS ver
              FROM jsonb_array_elements(docs) WITH ORDINALITY x(doc, i)
              -- absent version: the newest stored, written into the document
              LEFT JOIN LATERAL (SELECT max(w.version)::bigint AS ver FROM labloop.workflows w
                                  WHERE w.name = x.doc->>'workflow') v
                ON NOT x.doc ? 'workflow_version') s
     ORDER BY s.i
    ON CONFLICT (idempotency_key) DO NOTHING;
    SELECT array_agg(coalesce(qi.id, qk.id) ORDER BY s.i),
           min(s.key) FILTER (WHERE qi.id IS NULL AND qk.request_hash <> hashes[s.i]),
           min(s.key) FILTER (WHERE qi.id IS NULL AND qk.id IS NULL)
      INTO out_ids, bad, unseen
      FROM unnest(ids, keys) WITH ORDINALITY s(id, key, i)
      LEFT JOIN labloop.queue qi ON qi.id = s.id
      LEFT JOIN labloop.queue qk ON qi.id IS NULL AND qk.idempotency_key = s.key;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'idempotency key "%" was first used for a different run document', bad
            USING ERRCODE = 'unique_violation';
    END IF;
    IF unseen IS NOT NULL THEN
        -- Another transaction holds the key in a snapshot this one cannot see (REPEATABLE READ).
        RAISE EXCEPTION 'idempotency key "%" was taken by a transaction this one cannot see',
            unseen USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN QUERY SELECT x FROM unnest(out_ids) x;
END $$;

CREATE FUNCTION labloop.submit_run(doc jsonb, idempotency_key text DEFAULT NULL,
                                   via text DEFAULT 'sql', submitted_by text DEFAULT current_user)
RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    problems jsonb := labloop.run_problems_json(doc);
    rid uuid;
BEGIN
    IF jsonb_array_length(problems) > 0 THEN
        RAISE EXCEPTION 'run document has % problem(s)', jsonb_array_length(problems)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = problems::text;
    END IF;
    SELECT x INTO rid
      FROM labloop.queue_insert_all(jsonb_build_array(doc), ARRAY[idempotency_key], via,
                                    submitted_by) x;
    PERFORM pg_notify('labloop_queue', '');
    RETURN rid;
END $$;

-- All or nothing: every document is checked first and every problem of the lot is reported,
-- each path prefixed with the document's index ("/3/deadline").
CREATE FUNCTION labloop.submit_runs(docs jsonb, idempotency_keys text[] DEFAULT NULL,
                                    via text DEFAULT 'sql',
                                    submitted_by text DEFAULT current_user)
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    problems jsonb := '[]';
    n int;
    i int := 0;
    d jsonb;
    p jsonb;
BEGIN
    IF docs IS NULL OR jsonb_typeof(docs) <> 'array' THEN
        RAISE EXCEPTION 'run document has 1 problem(s)' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = jsonb_build_array(jsonb_build_object('path', '', 'message',
                format('expected array, got %s', coalesce(labloop.json_type(docs), 'null'))))::text;
    END IF;
    n := jsonb_array_length(docs);
    IF idempotency_keys IS NOT NULL AND cardinality(idempotency_keys) <> n THEN
        RAISE EXCEPTION '% idempotency keys for % run documents', cardinality(idempotency_keys), n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR d IN SELECT jsonb_array_elements(docs) LOOP
        p := labloop.run_problems_json(d);
        IF p <> '[]'::jsonb THEN
            problems := problems || (SELECT jsonb_agg(jsonb_build_object(
                            'path', '/' || i || (e->>'path'), 'message', e->'message'))
                          FROM jsonb_array_elements(p) e);
        END IF;
        i := i + 1;
    END LOOP;
    IF jsonb_array_length(problems) > 0 THEN
        RAISE EXCEPTION 'run document has % problem(s)', jsonb_array_length(problems)
            USING ERRCODE = 'invalid_parameter_value', DETAIL = problems::text;
    END IF;
    RETURN QUERY SELECT x FROM labloop.queue_insert_all(docs, idempotency_keys, via,
                                                        submitted_by) x;
    IF n > 0 THEN
        PERFORM pg_notify('labloop_queue', '');
    END IF;
END $$;

-- A workflow version stored by any cell gives the runs that waited for it their needs (and their
-- version, the newest stored) and wakes the cells.
CREATE FUNCTION labloop.workflows_stored() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    woke int;
BEGIN
    UPDATE labloop.queue q
       SET doc = CASE WHEN q.doc ? 'workflow_version' THEN q.doc
                      ELSE q.doc || jsonb_build_object('workflow_version', NEW.version) END,
           needs = labloop.workflow_needs(q.workflow, coalesce((q.doc->>'workflow_version')::numeric::bigint,
                                                              NEW.version))
     WHERE q.workflow = NEW.name AND q.needs IS NULL AND q.state = 'queued'
       AND coalesce((q.doc->>'workflow_version')::numeric::bigint, NEW.version) = NEW.version;
    GET DIAGNOSTICS woke = ROW_COUNT;
    IF woke > 0 THEN
        PERFORM pg_notify('labloop_queue', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER workflows_stored AFTER INSERT ON labloop.workflows
    FOR EACH ROW EXECUTE FUNCTION labloop.workflows_stored();

-- ---- cells ----

-- What a cell can run: its instrument kinds and its instruments' ids.
CREATE FUNCTION labloop.cell_can(capabilities jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(x), '{}') FROM (
        SELECT jsonb_array_elements_text(CASE jsonb_typeof(capabilities->'kinds')
                   WHEN 'array' THEN capabilities->'kinds' ELSE '[]' END) x
        UNION
        SELECT i->>'id' FROM jsonb_array_elements(CASE jsonb_typeof(capabilities->'instruments')
                   WHEN 'array' THEN capabilities->'instruments' ELSE '[]' END) i
         WHERE i->>'id' IS NOT NULL) c
$$;

-- Called inside the cell's own transaction, kept open until the runs are committed locally. The
-- cell's row is locked FOR SHARE: a heartbeat that declares this cell lost waits for the claim
-- to end and then releases what it claimed, so no claim survives its cell's loss. The claim
-- walks queue_claim in order and stops after n: sorting every queued row instead (the plan
-- PostgreSQL picks when it underestimates how many rows a cell can run, e.g. right after a bulk
-- submission, before ANALYZE) costs ~30 ms a claim at 40,000 queued runs; enable_sort = off
-- keeps the walk, and jit = off keeps the disabled sort's cost from compiling every claim.
CREATE FUNCTION labloop.claim_runs(cell text, n int)
RETURNS TABLE(id uuid, doc jsonb, via text, submitted_by text, submitted_at timestamptz)
LANGUAGE plpgsql VOLATILE SET enable_sort = off SET jit = off AS $$
#variable_conflict use_variable
DECLARE
    can text[];
BEGIN
    SELECT labloop.cell_can(c.capabilities) INTO can FROM labloop.cells c
     WHERE c.cell = claim_runs.cell AND c.state = 'up' FOR SHARE;
    IF can IS NULL OR n IS NULL OR n < 1 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH pick AS (
        SELECT q.id FROM labloop.queue q
         WHERE q.state = 'queued' AND q.needs IS NOT NULL AND q.needs <@ can
           AND (q.pin_cell IS NULL OR q.pin_cell = claim_runs.cell)
         ORDER BY q.priority, q.deadline NULLS LAST, q.score DESC, q.submitted_at, q.id
         LIMIT n FOR UPDATE SKIP LOCKED),
    upd AS (
        UPDATE labloop.queue q SET state = 'claimed', cell = claim_runs.cell,
               claimed_at = clock_timestamp(), claims = q.claims + 1
          FROM pick WHERE q.id = pick.id
        RETURNING q.id, q.doc, q.via, q.submitted_by, q.submitted_at, q.priority, q.deadline,
                  q.score)
    SELECT u.id, u.doc, u.via, u.submitted_by, u.submitted_at FROM upd u
     ORDER BY u.priority, u.deadline NULLS LAST, u.score DESC, u.submitted_at, u.id;
END $$;

-- The fence: a cell starts a run's first step only after this said true.
CREATE FUNCTION labloop.start_run(id uuid, cell text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    st text;
BEGIN
    UPDATE labloop.queue q SET state = 'started', started_at = clock_timestamp()
     WHERE q.id = start_run.id AND q.cell = start_run.cell AND q.state = 'claimed';
    IF FOUND THEN
        RETURN true;
    END IF;
    SELECT q.state INTO st FROM labloop.queue q
     WHERE q.id = start_run.id AND q.cell = start_run.cell;
    RETURN coalesce(st = 'started', false);
END $$;

CREATE FUNCTION labloop.release_runs(cell text, ids uuid[]) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    n int;
BEGIN
    UPDATE labloop.queue q SET state = 'queued', cell = NULL, claimed_at = NULL
     WHERE q.id = ANY (ids) AND q.cell = release_runs.cell AND q.state = 'claimed';
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('labloop_queue', '');
    END IF;
    RETURN n;
END $$;

-- The cell's own row, then every other cell whose lease ran out is lost and its claimed runs go
-- back to the queue (started ones stay: the plate is there). Two statements, so the release sees
-- the claims of a transaction the first one waited for. A lease also counts from PostgreSQL's own
-- start: while it was down no cell could be heard, so the first cell back must not find the others
-- lost and take their claims away (they wait for the fence meanwhile and confirm when they return).
CREATE FUNCTION labloop.cell_heartbeat(cell text, site text, capabilities jsonb, queue jsonb,
                                       api text, lease_s double precision, state text)
RETURNS TABLE(released int)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    lost text[];
    n int := 0;
    t timestamptz := clock_timestamp();
BEGIN
    INSERT INTO labloop.cells AS c (cell, site, state, capabilities, queue, api, lease_s,
                                    started_at, heartbeat_at)
    VALUES (cell_heartbeat.cell, site, state, capabilities, coalesce(queue, '{}'), api, lease_s,
            t, t)
    ON CONFLICT ON CONSTRAINT cells_pkey DO UPDATE
       SET site = EXCLUDED.site, state = EXCLUDED.state, capabilities = EXCLUDED.capabilities,
           queue = EXCLUDED.queue, api = EXCLUDED.api, lease_s = EXCLUDED.lease_s,
           heartbeat_at = EXCLUDED.heartbeat_at,
           started_at = CASE WHEN c.state = 'up' THEN c.started_at ELSE EXCLUDED.started_at END;
    WITH l AS (
        UPDATE labloop.cells c SET state = 'lost'
         WHERE c.cell <> cell_heartbeat.cell AND c.state IN ('up', 'stopping')
           AND greatest(c.heartbeat_at, pg_postmaster_start_time())
               < clock_timestamp() - c.lease_s * interval '1 second'
        RETURNING c.cell)
    SELECT array_agg(l.cell) INTO lost FROM l;
    IF lost IS NOT NULL THEN
        UPDATE labloop.queue q SET state = 'queued', cell = NULL, claimed_at = NULL
         WHERE q.cell = ANY (lost) AND q.state = 'claimed';
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            PERFORM pg_notify('labloop_queue', '');
        END IF;
    END IF;
    released := n;
    RETURN NEXT;
END $$;

CREATE FUNCTION labloop.cancel_run(id uuid, by text, reason text) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    q labloop.queue;
    cst text;
BEGIN
    SELECT * INTO q FROM labloop.queue x WHERE x.id = cancel_run.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no run % in labloop.queue', id USING ERRCODE = 'no_data_found';
    END IF;
    IF q.state IN ('finished', 'cancelled') THEN
        RETURN q.state;
    END IF;
    IF q.state IN ('claimed', 'started') THEN
        SELECT c.state INTO cst FROM labloop.cells c WHERE c.cell = q.cell;
        IF cst IS DISTINCT FROM 'lost' THEN
            RAISE EXCEPTION 'run % is held by cell % (%): cancel it there', id, q.cell,
                coalesce(cst, 'unknown') USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END IF;
    UPDATE labloop.queue x SET state = 'cancelled', finished_at = clock_timestamp(),
           cancel_reason = format('%s (by %s)', coalesce(nullif(reason, ''), 'cancelled'),
                                  coalesce(by, current_user))
     WHERE x.id = cancel_run.id;
    RETURN 'cancelled';
END $$;

-- The writer's labloop.runs rows end a queue row: only the holder's (pg.c applies no other).
CREATE FUNCTION labloop.runs_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state NOT IN ('done', 'failed', 'cancelled')
       OR (TG_OP = 'UPDATE' AND OLD.state = NEW.state AND OLD.cell = NEW.cell) THEN
        RETURN NULL;
    END IF;
    UPDATE labloop.queue q
       SET state = CASE NEW.state WHEN 'cancelled' THEN 'cancelled' ELSE 'finished' END,
           finished_at = clock_timestamp()
     WHERE q.id = NEW.id AND q.cell = NEW.cell AND q.state IN ('claimed', 'started');
    IF FOUND THEN
        PERFORM pg_notify('labloop_run_done', NEW.id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_ended AFTER INSERT OR UPDATE OF state, cell ON labloop.runs
    FOR EACH ROW EXECUTE FUNCTION labloop.runs_ended();

-- ---- views ----

CREATE VIEW labloop.lab_runs AS
SELECT q.id, q.idempotency_key, q.doc, q.workflow, q.needs, q.pin_cell, q.priority, q.deadline,
       q.score, q.via, q.submitted_by, q.submitted_at, q.state, q.cell, q.claimed_at,
       q.started_at, q.finished_at, q.claims, q.cancel_reason,
       r.state AS local_state,
       (q.state IN ('claimed', 'started') AND c.state = 'lost') AS stranded,
       CASE WHEN q.state IN ('claimed', 'started') AND c.state = 'lost'
            THEN format('cell %s has not been heard from since %s', q.cell,
                        to_char(c.heartbeat_at AT TIME ZONE 'UTC',
                                'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
       END AS stranded_reason
  FROM labloop.queue q
  LEFT JOIN labloop.cells c ON c.cell = q.cell
  LEFT JOIN labloop.runs r ON r.id = q.id AND r.cell = q.cell;

CREATE VIEW labloop.lab_cells AS
SELECT c.cell, c.site, c.state, c.capabilities, c.queue, c.api, c.lease_s, c.started_at,
       c.heartbeat_at,
       extract(epoch FROM clock_timestamp() - c.heartbeat_at)::float8 AS heartbeat_age_s,
       (clock_timestamp() - c.heartbeat_at > c.lease_s * interval '1 second') AS expired,
       (SELECT count(*) FROM labloop.queue q WHERE q.cell = c.cell AND q.state = 'claimed')
           AS claimed,
       (SELECT count(*) FROM labloop.queue q WHERE q.cell = c.cell AND q.state = 'started')
           AS started
  FROM labloop.cells c;
