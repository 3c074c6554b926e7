-- Utilisation: the intervals each instrument spent in one state (outbox kind instrument.interval,
-- one row per ended interval), and views of the seconds per state by UTC day and by campaign.
-- Time a cell's daemon did not run has no interval: it is absent, never guessed.
CREATE TABLE labloop.instrument_states (
    cell       text NOT NULL,
    seq        bigint NOT NULL,
    instrument text NOT NULL,
    state      text NOT NULL,
    from_ts    timestamptz NOT NULL,
    to_ts      timestamptz NOT NULL,
    PRIMARY KEY (cell, seq),
    CHECK (to_ts >= from_ts)
);
CREATE INDEX instrument_states_instrument ON labloop.instrument_states (cell, instrument, from_ts);

-- Seconds per instrument, state and UTC day; an interval across midnight counts in both days.
CREATE VIEW labloop.instrument_utilisation_daily AS
SELECT s.cell, s.instrument, d.day::date AS day, s.state,
       sum(extract(epoch FROM least(s.t1, d.day + interval '1 day') - greatest(s.t0, d.day)))::float8
           AS seconds
FROM (SELECT cell, instrument, state, from_ts AT TIME ZONE 'UTC' AS t0, to_ts AT TIME ZONE 'UTC' AS t1
      FROM labloop.instrument_states WHERE to_ts > from_ts) s
CROSS JOIN LATERAL generate_series(date_trunc('day', s.t0), s.t1 - interval '1 microsecond',
                                   interval '1 day') AS d(day)
GROUP BY s.cell, s.instrument, d.day, s.state;

-- Seconds per instrument and state over everything recorded.
CREATE VIEW labloop.instrument_utilisation AS
SELECT cell, instrument, state, sum(extract(epoch FROM to_ts - from_ts))::float8 AS seconds
FROM labloop.instrument_states GROUP BY cell, instrument, state;

-- Per campaign: the runs that used each instrument and the seconds their steps ran on it.
CREATE VIEW labloop.instrument_utilisation_campaign AS
SELECT r.doc->>'campaign' AS campaign, st.cell, st.instrument, count(DISTINCT st.run) AS runs,
       sum(extract(epoch FROM st.ended_at - st.started_at))::float8 AS busy_s
FROM labloop.steps st JOIN labloop.runs r ON r.id = st.run
WHERE r.doc ? 'campaign' AND st.instrument IS NOT NULL AND st.started_at IS NOT NULL
  AND st.ended_at IS NOT NULL
GROUP BY r.doc->>'campaign', st.cell, st.instrument;
