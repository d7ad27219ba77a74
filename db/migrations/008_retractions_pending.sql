-- 008_retractions_pending.sql: the pending retractions, found without reading the applied and
-- refused ones. After a batch's COPY the evaluator asks whether a pending retraction names a
-- measurement this transaction stored (docs/evaluator.md "Performance"); pending retractions
-- are few (they wait for a measurement not arrived yet), so the question costs a look at this
-- small index instead of a scan of every retraction ever made.
CREATE INDEX IF NOT EXISTS retractions_pending ON retractions (retracts) WHERE state = 'pending';
