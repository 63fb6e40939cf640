-- NGSI-LD publisher state (ngsi/), next to the ingestion's tables in schema smart.
-- Bookkeeping in smart.ngsi_schema_migrations (own numbering).

-- Where each stream stands: everything ordered before (position_at, position_key) has
-- reached the broker (or been parked below). A broker outage leaves the cursor where
-- it was, so the next round catches up from there.
CREATE TABLE ngsi_sync_cursor (
    stream text PRIMARY KEY CHECK (stream IN ('devices', '1min', '15min', '1h', '1d')),
    position_at timestamptz NOT NULL,
    position_key text NOT NULL DEFAULT '',
    pushed bigint NOT NULL DEFAULT 0 CHECK (pushed >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Entities the broker refused (4xx ProblemDetails), parked with the reason instead of
-- blocking the stream or being dropped silently. Re-sent entities that succeed later
-- are removed from here.
CREATE TABLE ngsi_rejected (
    entity_id text PRIMARY KEY,
    stream text NOT NULL,
    status int,
    problem_type text,
    reason text NOT NULL,
    attempts int NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ngsi_rejected_stream_idx ON ngsi_rejected (stream, last_seen);
