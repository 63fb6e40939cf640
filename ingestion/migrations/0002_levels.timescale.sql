-- Raw 1 s levels, TimescaleDB: a hypertable with daily chunks, compression and retention.
-- Same columns and key as the plain path (see docs/CONTRACTS.md).

CREATE TABLE levels (
    sensor_id text NOT NULL,
    time timestamptz NOT NULL,
    period_s real NOT NULL,
    laeq real NOT NULL,
    lafmax real NOT NULL,
    lafmin real NOT NULL,
    lcpeak real NOT NULL,
    bands real[] NOT NULL,
    status text NOT NULL,
    car_horn smallint NOT NULL DEFAULT 0,
    siren smallint NOT NULL DEFAULT 0,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, time)
);

SELECT create_hypertable('levels', by_range('time', INTERVAL '1 day'));

ALTER TABLE levels SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'sensor_id',
    timescaledb.compress_orderby = 'time DESC'
);
SELECT add_compression_policy('levels', INTERVAL '2 days');

-- Raw seconds are kept 90 days; the continuous aggregates keep their history because
-- their refresh policies' start_offset (<= 3 days) is shorter than this drop_after.
SELECT add_retention_policy('levels', INTERVAL '90 days');
