-- Raw 1 s levels, plain PostgreSQL: declarative partitioning by UTC day.
-- Partitions are created ahead (and on demand for late batches) by the ingestion
-- service (ingestion.partitions); there is deliberately no default partition, so a
-- missing partition is an error the service fixes, never a slow catch-all table.

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
) PARTITION BY RANGE (time);

-- Rows arrive nearly in time order: a BRIN index makes time-range scans cheap
-- (aggregate refresh, open-data export) at almost no write cost.
CREATE INDEX levels_time_brin ON levels USING brin (time) WITH (pages_per_range = 32);
