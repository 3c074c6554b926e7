-- The closed loop (issue 5): campaigns, the batches pipelines pushed, and their candidates. Each
-- row keeps the entity's whole document; state (and a candidate's place in its batch) are
-- columns for listing, ord the order of arrival. A campaign's plates are runs (runs.doc has "campaign").
CREATE TABLE campaigns (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    doc TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE batches (
    campaign TEXT NOT NULL,
    batch TEXT NOT NULL,
    ord INTEGER NOT NULL,
    doc TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (campaign, batch)
) WITHOUT ROWID;

CREATE TABLE candidates (
    campaign TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    ord INTEGER NOT NULL,
    doc TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (campaign, id)
) WITHOUT ROWID;
CREATE INDEX candidates_state ON candidates (campaign, state);
