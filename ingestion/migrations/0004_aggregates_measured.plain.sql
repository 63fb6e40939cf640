-- Aggregates count measured frames only (status ok or degraded): fault, calibrating and
-- maintenance frames stay in `levels` but no longer enter any statistic or coverage.
-- The rows computed before this version are recomputed from the raw rows still kept by
-- ingestion.schema.migrate right after this migration (buckets older than the raw
-- retention keep their old values: their frames are gone).
COMMENT ON TABLE levels_1min IS 'Per-minute statistics of measured frames (status ok/degraded)';
COMMENT ON TABLE levels_15min IS 'Per-15-minute statistics of measured frames (status ok/degraded)';
COMMENT ON TABLE levels_1h IS 'Hourly statistics of measured frames (status ok/degraded)';
COMMENT ON TABLE levels_1d IS 'Local-day statistics of measured frames (status ok/degraded)';
