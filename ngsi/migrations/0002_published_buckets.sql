-- What ngsi-sync has published per aggregate bucket, so late frames can be caught up.
-- The forward cursor never looks back; each round the sync re-examines buckets that ended
-- within ngsi.revisit_hours behind the cursor and (re)sends those that now qualify but were
-- never published, or whose n_seconds changed since (the ingestion recomputed them from
-- late frames). Rows older than the window are pruned every round, so the table holds at
-- most one row per sensor and bucket of the window (see docs/ngsi.md for the sizes).
-- Parked entities (refused by the broker) are recorded too (rejected = true): they are
-- retried only when their data change, not every round.
CREATE TABLE ngsi_published (
    stream text NOT NULL CHECK (stream IN ('1min', '15min', '1h', '1d')),
    bucket timestamptz NOT NULL,
    sensor_id text NOT NULL,
    n_seconds int NOT NULL CHECK (n_seconds >= 0),
    coverage real NOT NULL,
    rejected boolean NOT NULL DEFAULT false,
    pushed_at timestamptz NOT NULL DEFAULT now(),
    -- (stream, bucket) leading: the window join and the pruning are range scans on it
    PRIMARY KEY (stream, bucket, sensor_id)
);
