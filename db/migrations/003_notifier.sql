-- 003_notifier.sql: the notifier's claim query groups due rows by recipient; this partial index
-- serves both the per-recipient scan and the oldest-first order without touching sent rows.
CREATE INDEX IF NOT EXISTS notifications_pending_recipient
    ON notifications (recipient, created_at, id) WHERE state = 'pending';
