-- The share of its 5-minute window that a noise_threshold_exceeded event's LAeq was
-- measured over (frames with status ok/degraded, weighted by period_s), so a reader
-- can judge the value; NULL for sensor_silent. Rows from before this migration keep
-- NULL: their coverage was never checked.

ALTER TABLE api_events ADD COLUMN IF NOT EXISTS coverage real
    CHECK (coverage IS NULL OR (coverage >= 0 AND coverage <= 1));
