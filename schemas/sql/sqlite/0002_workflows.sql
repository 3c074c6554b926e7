-- Workflow versions: a stored version never changes (runs name the version they follow).
-- canon is the document without its version, keys sorted: the same text is the same workflow.
CREATE TABLE workflows (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    canon TEXT NOT NULL,
    doc TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
