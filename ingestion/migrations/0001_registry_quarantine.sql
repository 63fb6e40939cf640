-- Sensor registry and quarantine: identical on both storage paths.
-- The smart schema holds no camera, no alert and no security class, by design.

CREATE TABLE sensors (
    sensor_id text PRIMARY KEY CHECK (sensor_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name text NOT NULL,
    latitude float8 NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude float8 NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    street text,
    place text,
    sonometer_class smallint NOT NULL DEFAULT 2 CHECK (sonometer_class IN (1, 2)),
    installed_on date,
    calibration_offset_db real NOT NULL DEFAULT 0 CHECK (calibration_offset_db BETWEEN -30 AND 30),
    timezone text NOT NULL DEFAULT 'Europe/Paris',
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Everything the ingestion refused, with why: nothing is silently dropped.
CREATE TABLE quarantine (
    id bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL,
    sensor_id text,
    reason_code text NOT NULL,
    reason text NOT NULL,
    payload text NOT NULL,
    payload_bytes int NOT NULL CHECK (payload_bytes >= 0)
);
CREATE INDEX quarantine_received_at_idx ON quarantine (received_at);
CREATE INDEX quarantine_reason_idx ON quarantine (reason_code, received_at);
