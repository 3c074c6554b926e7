-- Instruments: the newest state document of each instrument of each cell, and every telemetry
-- value as a row (one per named value, with its unit), both fed from the outbox kinds
-- instrument.state and instrument.telemetry.

CREATE TABLE labloop.instruments (
    cell       text NOT NULL,
    id         text NOT NULL,
    kind       text,
    driver     text,
    model      text,
    state      text NOT NULL,
    last_error jsonb,
    doc        jsonb NOT NULL,
    updated_at timestamptz,
    seq        bigint NOT NULL,
    PRIMARY KEY (cell, id)
);

CREATE TABLE labloop.telemetry (
    cell       text NOT NULL,
    seq        bigint NOT NULL,
    ts         timestamptz NOT NULL,
    instrument text NOT NULL,
    name       text NOT NULL,
    value      double precision NOT NULL,
    unit       text NOT NULL DEFAULT '',
    PRIMARY KEY (cell, seq, name)
);
CREATE INDEX telemetry_instrument_name_ts ON labloop.telemetry (cell, instrument, name, ts);
