-- Tables of the open API in schema smart (bookkeeping: smart.api_schema_migrations).
-- Open events can only be public noise events: the CHECK makes a security class
-- impossible to store, whatever a bug upstream might try.

CREATE TABLE IF NOT EXISTS api_events (
    id          bigserial PRIMARY KEY,
    event_type  text NOT NULL CHECK (event_type IN ('noise_threshold_exceeded', 'sensor_silent')),
    sensor_id   text NOT NULL,
    started_at  timestamptz NOT NULL,
    value       real,
    threshold   real,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_type, sensor_id, started_at)
);
CREATE INDEX IF NOT EXISTS api_events_created_idx ON api_events (id);

CREATE TABLE IF NOT EXISTS api_webhooks (
    id          uuid PRIMARY KEY,
    url         text NOT NULL CHECK (url ~ '^https?://'),
    secret      text NOT NULL,
    event_types text[] NOT NULL,
    description text,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS api_webhook_deliveries (
    webhook_id      uuid NOT NULL REFERENCES api_webhooks (id) ON DELETE CASCADE,
    event_id        bigint NOT NULL REFERENCES api_events (id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     int,
    last_error      text,
    delivered_at    timestamptz,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX IF NOT EXISTS api_webhook_deliveries_due_idx ON api_webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE IF NOT EXISTS api_export_runs (
    id           bigserial PRIMARY KEY,
    day          date NOT NULL,
    dataset      text NOT NULL,
    status       text NOT NULL CHECK (status IN ('published', 'rejected')),
    rows         int NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    report       jsonb NOT NULL,
    report_path  text,
    file_path    text
);
CREATE INDEX IF NOT EXISTS api_export_runs_day_idx ON api_export_runs (day, dataset, id);
