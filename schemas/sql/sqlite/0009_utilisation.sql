-- How long each instrument was in each state: one row per interval, from a change of state to the
-- next. to_ms is NULL while the interval lasts; seen_ms is the last time the daemon knew it still
-- lasted (written every minute), so after a kill -9 the interval ends there and the time until the
-- restart is unrecorded rather than guessed.
CREATE TABLE instrument_states (
    id INTEGER PRIMARY KEY,
    instrument TEXT NOT NULL,
    state TEXT NOT NULL,
    from_ms INTEGER NOT NULL,
    to_ms INTEGER,
    seen_ms INTEGER NOT NULL
);
CREATE INDEX instrument_states_from ON instrument_states (instrument, from_ms);
CREATE INDEX instrument_states_open ON instrument_states (instrument) WHERE to_ms IS NULL;
