-- An event is marked once its alert went out (live feed, webhooks, cameras). The event
-- is committed before it is alerted, so a bridge that stops between the two leaves an
-- event without a mark; the next start finds it and alerts it then, as "recovered".
-- Events stored before this migration were alerted by the bridge that stored them.
ALTER TABLE events ADD COLUMN alerted_at timestamptz;
UPDATE events SET alerted_at = received_at;
CREATE INDEX events_unalerted ON events (received_at) WHERE alerted_at IS NULL;
