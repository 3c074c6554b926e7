-- The plate registry (issue 16): each cell's newest document of every plate it has heard of, and
-- the plates' moves, from the outbox kinds plate.state and plate.move. The campaign plates' QC
-- table, which had the name labloop.plates, becomes labloop.plate_qc (same rows).
ALTER TABLE labloop.plates RENAME TO plate_qc;
ALTER INDEX labloop.plates_campaign RENAME TO plate_qc_campaign;

CREATE TABLE labloop.plates (
    cell       text NOT NULL,
    barcode    text NOT NULL,
    state      text NOT NULL,
    instrument text,
    doc        jsonb NOT NULL,
    updated_at timestamptz NOT NULL,
    seq        bigint NOT NULL,
    PRIMARY KEY (cell, barcode)
);
CREATE INDEX plates_state ON labloop.plates (state, instrument);

CREATE TABLE labloop.plate_moves (
    cell     text NOT NULL,
    seq      bigint NOT NULL,
    barcode  text NOT NULL,
    move_seq integer NOT NULL,
    action   text,
    run      uuid,
    by_whom  text,
    outcome  text,
    doc      jsonb NOT NULL,
    at       timestamptz NOT NULL,
    PRIMARY KEY (cell, seq)
);
CREATE INDEX plate_moves_barcode ON labloop.plate_moves (barcode, move_seq);
