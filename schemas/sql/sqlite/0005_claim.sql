-- Runs claimed from the lab's queue (labloop.queue in PostgreSQL): 'pending' while the claim's
-- transaction in PostgreSQL is still open (the run does not count yet: it has no outbox row),
-- 'held' once PostgreSQL committed the claim. NULL: a run of this cell's own queue.
ALTER TABLE runs ADD COLUMN claim TEXT CHECK (claim IN ('pending', 'held'));
CREATE INDEX runs_claim ON runs (claim) WHERE claim IS NOT NULL;
