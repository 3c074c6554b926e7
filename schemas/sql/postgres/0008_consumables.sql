-- A liquid handler's consumables per cell and instrument: the newest document of the outbox
-- kind `consumable` (tips left of how many, each trough's µL left of how many, the last change).
CREATE TABLE labloop.consumables (
    cell       text NOT NULL,
    instrument text NOT NULL,
    tips_left  integer,
    tips_total integer,
    doc        jsonb NOT NULL,
    updated_at timestamptz,
    seq        bigint NOT NULL,
    PRIMARY KEY (cell, instrument)
);
