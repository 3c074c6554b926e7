-- A liquid handler's consumables: one row per instrument with its newest document (tips left,
-- what each trough holds, the last change and who made it), written with its `consumable`
-- outbox row, so the counts survive a restart and a kill -9.
CREATE TABLE consumables (
    instrument TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
