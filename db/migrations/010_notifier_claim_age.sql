-- 010_notifier_claim_age.sql: the notifier's claim walks the pending rows oldest first and stops
-- after KPI_NOTIFY_BATCH of the due ones (services/notifier/nf_send.c, SQL_CLAIM), so a claim
-- costs the same with 100 or 100,000 rows waiting; before, it grouped every due row by
-- recipient on each claim (docs/notifier.md, "Performance"). The index on next_attempt_at
-- served only that old scan (expiry uses this one): dropping it leaves the claim's lease, which
-- changes next_attempt_at alone, without any index entry to write.
CREATE INDEX IF NOT EXISTS notifications_pending_age
    ON notifications (created_at, id) WHERE state = 'pending';
DROP INDEX IF EXISTS notifications_due;
