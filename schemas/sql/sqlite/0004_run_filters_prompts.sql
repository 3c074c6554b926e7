-- Runs found by plate, workflow and priority in the store (GET /v1/runs?plate=&workflow=&priority=),
-- and the prompts: what waits for a person, open or answered.

-- Read from the run document, never written apart from it: they cannot disagree with it.
ALTER TABLE runs ADD COLUMN plate TEXT GENERATED ALWAYS AS (json_extract(doc, '$.plate')) VIRTUAL;
ALTER TABLE runs ADD COLUMN workflow TEXT
    GENERATED ALWAYS AS (json_extract(doc, '$.workflow')) VIRTUAL;
ALTER TABLE runs ADD COLUMN priority TEXT
    GENERATED ALWAYS AS (coalesce(json_extract(doc, '$.priority'), 'normal')) VIRTUAL;
-- A filter is served by its index in list order (n), so a page is a range scan however few match.
CREATE INDEX runs_plate_n ON runs (plate, n);
CREATE INDEX runs_workflow_n ON runs (workflow, n);
CREATE INDEX runs_priority_n ON runs (priority, n);

-- One row per prompt id (run:ID:paused, instrument:ID:fault, move:ID): its newest document.
-- An answered prompt stays until the same id opens again.
CREATE TABLE prompts (
    id TEXT PRIMARY KEY,
    open INTEGER NOT NULL,
    doc TEXT NOT NULL,
    opened_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX prompts_open ON prompts (open, opened_ms);
