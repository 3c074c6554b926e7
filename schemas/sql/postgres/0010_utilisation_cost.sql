-- Utilisation and cost: the intervals each instrument spent in one state (outbox kind
-- instrument.interval, one row per ended interval), views of the seconds per state by UTC day and
-- by campaign, and views of the costs the run documents carry.
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

-- Cost: every run that began carries its cost in its document (cost: quantities, prices and
-- costs side by side, from the prices of the cell's [costs]); these views add them up.
CREATE VIEW labloop.run_costs AS
SELECT r.id AS run, r.cell, r.plate, r.doc->>'campaign' AS campaign, r.state,
       r.doc->'cost'->>'currency' AS currency,
       (r.doc->'cost'->>'total')::float8 AS total,
       (r.doc->'cost'->>'plate')::float8 AS plate_cost,
       (SELECT coalesce(sum((x->>'seconds')::float8), 0) / 60
        FROM jsonb_array_elements(r.doc->'cost'->'instruments') x) AS instrument_minutes,
       (SELECT coalesce(sum((x->>'cost')::float8), 0)
        FROM jsonb_array_elements(r.doc->'cost'->'instruments') x) AS instrument_cost,
       (r.doc->'cost'->'tips'->>'count')::int AS tips,
       (r.doc->'cost'->'tips'->>'cost')::float8 AS tip_cost,
       (SELECT coalesce(sum((x->>'ul')::float8), 0)
        FROM jsonb_array_elements(r.doc->'cost'->'reagents') x) AS reagent_ul,
       (SELECT coalesce(sum((x->>'cost')::float8), 0)
        FROM jsonb_array_elements(r.doc->'cost'->'reagents') x) AS reagent_cost,
       (r.doc->>'ended_at')::timestamptz AS ended_at
FROM labloop.runs r
WHERE jsonb_typeof(r.doc->'cost') = 'object';

-- Per campaign: its plate runs' cost (QC failures and re-runs included) and that cost per
-- candidate with a result.
CREATE VIEW labloop.campaign_costs AS
SELECT c.campaign, min(c.currency) AS currency, count(*) AS runs, sum(c.total) AS total,
       sum(c.instrument_minutes) AS instrument_minutes, sum(c.tips) AS tips,
       sum(c.reagent_ul) AS reagent_ul, r.candidates,
       sum(c.total) / nullif(r.candidates, 0) AS per_candidate
FROM labloop.run_costs c
LEFT JOIN (SELECT campaign, count(DISTINCT candidate) AS candidates FROM labloop.results
           GROUP BY campaign) r ON r.campaign = c.campaign
WHERE c.campaign IS NOT NULL
GROUP BY c.campaign, r.candidates;
