-- Aggregates, plain PostgreSQL: tables maintained by the ingestion service
-- (ingestion.aggregates.refresh recomputes exactly the buckets a write touched).
-- bucket = start of the bucket (UTC-aligned for 1 min / 15 min / 1 h; local midnight
-- of the sensor's time zone for 1 d). laeq and bands are energetic means; la10/la50/la90
-- are exceedance levels of the 1 s LAeq values (LA10 = 90th percentile).

CREATE TABLE levels_1min (
    sensor_id text NOT NULL,
    bucket timestamptz NOT NULL,
    laeq real,
    lamax real,
    lamin real,
    la10 real,
    la50 real,
    la90 real,
    bands real[],
    coverage real NOT NULL,
    n_seconds int NOT NULL,
    car_horn int NOT NULL,
    siren int NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, bucket)
);
CREATE INDEX levels_1min_bucket_idx ON levels_1min (bucket);

CREATE TABLE levels_15min (
    sensor_id text NOT NULL,
    bucket timestamptz NOT NULL,
    laeq real,
    lamax real,
    lamin real,
    la10 real,
    la50 real,
    la90 real,
    bands real[],
    coverage real NOT NULL,
    n_seconds int NOT NULL,
    car_horn int NOT NULL,
    siren int NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, bucket)
);
CREATE INDEX levels_15min_bucket_idx ON levels_15min (bucket);

CREATE TABLE levels_1h (
    sensor_id text NOT NULL,
    bucket timestamptz NOT NULL,
    laeq real,
    lamax real,
    lamin real,
    la10 real,
    la50 real,
    la90 real,
    bands real[],
    coverage real NOT NULL,
    n_seconds int NOT NULL,
    car_horn int NOT NULL,
    siren int NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, bucket)
);
CREATE INDEX levels_1h_bucket_idx ON levels_1h (bucket);

CREATE TABLE levels_1d (
    sensor_id text NOT NULL,
    bucket timestamptz NOT NULL,
    laeq real,
    lamax real,
    lamin real,
    la10 real,
    la50 real,
    la90 real,
    bands real[],
    coverage real NOT NULL,
    n_seconds int NOT NULL,
    car_horn int NOT NULL,
    siren int NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, bucket)
);
CREATE INDEX levels_1d_bucket_idx ON levels_1d (bucket);

-- Daily Lden per local day of the sensor's zone (23 h / 25 h on DST change days:
-- the night period then lasts 7 h / 9 h and is weighted by its real duration).
CREATE TABLE lden_daily (
    sensor_id text NOT NULL,
    day date NOT NULL,
    lden real,
    lday real,
    levening real,
    lnight real,
    coverage real NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, day)
);
CREATE INDEX lden_daily_day_idx ON lden_daily (day);
