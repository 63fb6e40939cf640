-- Pre-rendered NGSI-LD temporal instances of settled UTC days of 1-minute values
-- (ngsi/temporal_days.py). A day of minutes is 1,440 buckets x up to 13 attributes;
-- rendering them per request cost ~30 ms, reading them back costs ~2 ms. Each row is
-- one attribute's instances array (normalized form, UTF-8 JSON) of one sensor and day,
-- stamped with what it was rendered from: the day's bucket count and total n_seconds in
-- levels_1min (1 s rows are only ever added, never changed: ON CONFLICT DO NOTHING, so
-- late frames always change the total; the same stamp ngsi-sync uses, and one that the
-- TimescaleDB path's continuous aggregates have too). The context source uses a row only
-- while both still match, so late frames or a purge are never answered from a stale rendering.
-- ~165 kB per sensor-day after TOAST compression; kept for ngsi.day_documents_keep_days.
CREATE TABLE ngsi_temporal_days (
    sensor_id text NOT NULL,
    day date NOT NULL,
    attr text NOT NULL,
    n_buckets int NOT NULL CHECK (n_buckets > 0),
    n_seconds bigint NOT NULL,
    instances bytea NOT NULL,
    rendered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, day, attr)
);
CREATE INDEX ngsi_temporal_days_day_idx ON ngsi_temporal_days (day);
