-- The plate registry (daemon/labware/): every plate labloop has heard of, with its newest
-- document, and the history of its moves. Written by the registry in the same store op as the
-- change and its outbox rows (plate.state, plate.move).

-- One row per plate: its newest document. state and instrument are the document's location,
-- kept as columns for GET /v1/plates?location=&instrument=; n orders the list and pages it.
CREATE TABLE plates (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    barcode TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('at', 'outside', 'in_transit', 'unknown')),
    instrument TEXT,
    doc TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX plates_state_n ON plates (state, n);
CREATE INDEX plates_instrument_n ON plates (instrument, n);

-- Every move of a plate, appended: seq counts the plate's own moves from 1. A move is written
-- when its action is queued (outcome NULL: under way) and again when it ends.
CREATE TABLE plate_moves (
    barcode TEXT NOT NULL,
    seq INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (barcode, seq)
);

-- Sites that hold a plate whose identity nobody gave: a manual load without "plate", or a plate
-- the instrument senses where the registry knew of none.
CREATE TABLE site_holds (
    instrument TEXT NOT NULL,
    cassette INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (instrument, cassette, slot)
);
