-- 001_init.sql: the catalog mirror, measurements, attainment, offsets, outbox and mail queue.
-- Applied once by kpi_pg_migrate (under an advisory lock, in one transaction, recorded in
-- schema_migrations); IF NOT EXISTS guards keep a manual re-run harmless too.

CREATE TABLE IF NOT EXISTS measures (
    id                   text PRIMARY KEY,
    goal                 integer NOT NULL,
    goal_name            text,
    program              text NOT NULL,
    name                 text NOT NULL,
    indicator            text NOT NULL,
    unit                 text NOT NULL,
    kind                 text NOT NULL CHECK (kind IN ('level','cumulative','ratio','maintain','milestone')),
    direction            text NOT NULL CHECK (direction IN ('increase','decrease')),
    baseline_fy          integer NOT NULL,
    baseline             double precision NOT NULL,
    target_fy            integer NOT NULL,
    target               double precision NOT NULL,
    window_from_fy       integer,
    window_to_fy         integer,
    owner                text NOT NULL,
    watchers             text[] NOT NULL DEFAULT '{}',
    report_interval_days integer NOT NULL DEFAULT 365,
    catalog_version      integer NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- One row per distinct event: the primary key is what makes replays count once.
CREATE TABLE IF NOT EXISTS measurements (
    event_id        uuid PRIMARY KEY,
    measure_id      text NOT NULL,
    department      text NOT NULL,
    observed_at     timestamptz NOT NULL,
    observed_day    date NOT NULL,          -- Japan calendar date of observed_at
    fiscal_year     integer NOT NULL,       -- Japanese FY of observed_day
    value           double precision NOT NULL,
    unit            text NOT NULL,
    component       text CHECK (component IN ('numerator','denominator')),
    note            text,
    received_at     timestamptz NOT NULL,
    kafka_partition integer,
    kafka_offset    bigint,
    stored_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS measurements_measure_time
    ON measurements (measure_id, observed_at, received_at);

-- The current attainment of each measure (docs/evaluator.md).
CREATE TABLE IF NOT EXISTS attainment (
    measure_id       text PRIMARY KEY,
    as_of            date NOT NULL,
    value            double precision,
    progress         double precision,
    expected         double precision NOT NULL,
    status           text NOT NULL CHECK (status IN ('no_data','on_track','lagging','achieved','failed')),
    stale            boolean NOT NULL DEFAULT false,
    last_observed_at timestamptz,
    events           bigint NOT NULL DEFAULT 0,
    alert_state      text,                  -- status (or 'stale') of the open alert episode
    episode          integer NOT NULL DEFAULT 0,
    last_alert_on    date,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS attainment_history (
    id          bigserial PRIMARY KEY,
    measure_id  text NOT NULL,
    as_of       date NOT NULL,
    value       double precision,
    progress    double precision,
    expected    double precision NOT NULL,
    status      text NOT NULL,
    stale       boolean NOT NULL DEFAULT false,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS attainment_history_measure ON attainment_history (measure_id, id);

-- Next Kafka offset to read, written in the same transaction as the data it covers.
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    partition      integer NOT NULL,
    next_offset    bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Transactional outbox: alerts decided in a transaction, published after commit.
CREATE TABLE IF NOT EXISTS outbox (
    id         bigserial PRIMARY KEY,
    alert_id   uuid NOT NULL UNIQUE,
    topic      text NOT NULL,
    msg_key    text NOT NULL,
    payload    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz,
    attempts   integer NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Durable mail queue: one row per alert and recipient.
CREATE TABLE IF NOT EXISTS notifications (
    id              bigserial PRIMARY KEY,
    alert_id        uuid NOT NULL,
    recipient       text NOT NULL,
    measure_id      text NOT NULL,
    alert_type      text NOT NULL,
    payload         text NOT NULL,           -- the kpi.alert/1 record
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending','sent','dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    message_id      text,
    smtp_reply      text,
    last_error      text,
    UNIQUE (alert_id, recipient)
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
