-- Workflow versions of each cell, as stored by its daemon (kind "workflow" in the outbox).
CREATE TABLE labloop.workflows (
    cell       text NOT NULL,
    name       text NOT NULL,
    version    integer NOT NULL,
    doc        jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    seq        bigint NOT NULL,
    PRIMARY KEY (cell, name, version)
);
