-- Minutes whose aggregates still have to be refreshed (plain path), written in the
-- transaction that commits their rows: the broker is acked right after that commit,
-- so marks held only in the service's memory died with a crash and the buckets of
-- acked rows were never computed. The maintainer claims rows (claim = its token),
-- refreshes, and deletes the rows it claimed; a row marked again meanwhile has its
-- claim cleared and stays for the next refresh. Created on both paths (the
-- TimescaleDB path's continuous aggregates do not need it and leave it empty).
CREATE TABLE aggregate_pending (
    sensor_id text NOT NULL,
    minute timestamptz NOT NULL,
    claim bigint,
    PRIMARY KEY (sensor_id, minute)
);
