-- Steps and measurements (issue 4). Steps are the "steps" array of each run document
-- (run.state rows): one row per run and step index, replaced only by a newer seq. Measurements
-- are one row per measurement outbox row: a well's value from a read step, with its unit.

CREATE TABLE labloop.steps (
    run          uuid NOT NULL,
    idx          integer NOT NULL,
    cell         text NOT NULL,
    name         text NOT NULL,
    op           text,
    instrument   text,
    state        text NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    started_at   timestamptz,
    ended_at     timestamptz,
    lag_s        double precision,
    lag_violation boolean NOT NULL DEFAULT false,
    error        text,
    doc          jsonb NOT NULL,
    seq          bigint NOT NULL,
    PRIMARY KEY (run, idx)
);
CREATE INDEX steps_instrument_started ON labloop.steps (instrument, started_at);
CREATE INDEX steps_state ON labloop.steps (cell, state);

CREATE TABLE labloop.measurements (
    cell          text NOT NULL,
    seq           bigint NOT NULL,
    run           uuid NOT NULL,
    plate         text,
    step          text,
    instrument    text,
    well          text NOT NULL,
    measure       text NOT NULL,
    value         double precision, -- NULL: the instrument gave no value for the well
    unit          text NOT NULL DEFAULT '',
    wavelength_nm integer,
    at            timestamptz NOT NULL,
    PRIMARY KEY (cell, seq)
);
CREATE INDEX measurements_run ON labloop.measurements (run, well);
CREATE INDEX measurements_plate ON labloop.measurements (plate, well);
