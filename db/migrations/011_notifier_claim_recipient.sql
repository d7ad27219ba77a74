-- 011_notifier_claim_recipient.sql: the notifier's claim finds each chosen recipient's due rows
-- through this index (services/notifier/nf_send.c, SQL_CLAIM; docs/notifier.md, "Performance",
-- fourth round), by recipient and the range state >= 'pending' AND state <= 'pending', which
-- reads that recipient's pending entries only. It replaces notifications_pending_recipient,
-- which only the claim used: a partial index is costed from its last ANALYZE, and one that
-- ran while nothing was pending leaves it at 0 tuples, so the planner read every pending row
-- on each claim, however many waited. This index covers every row and is costed from the
-- table's size; the range, unlike "state = 'pending'", does not let the planner pick a partial
-- index instead.
CREATE INDEX IF NOT EXISTS notifications_recipient_state
    ON notifications (recipient, state, created_at, id);
DROP INDEX IF EXISTS notifications_pending_recipient;
