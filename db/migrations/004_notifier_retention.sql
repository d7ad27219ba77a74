-- 004_notifier_retention.sql: the notifier's retention purge deletes delivered rows oldest
-- first (state 'sent', sent_at past KPI_NOTIFY_RETENTION_DAYS); this partial index finds them
-- without scanning the pending and dead rows.
CREATE INDEX IF NOT EXISTS notifications_sent_at
    ON notifications (sent_at) WHERE state = 'sent';
