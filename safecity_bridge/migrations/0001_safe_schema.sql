-- Safe schema: incidents, their events, camera moves, the append-only audit journal,
-- the quarantine of rejected messages and legal holds. Applied by the safe role in its
-- own schema (search_path is set by the runner); nothing here is visible to the smart role.

CREATE TABLE incidents (
    incident_id     uuid PRIMARY KEY,
    opened_at       timestamptz NOT NULL,
    first_onset     timestamptz NOT NULL,
    event_class     text NOT NULL,
    sensor_ids      text[] NOT NULL,
    n_events        int NOT NULL DEFAULT 1 CHECK (n_events >= 1),
    confidence      real NOT NULL DEFAULT 0 CHECK (confidence BETWEEN 0 AND 1),
    latitude        float8 NOT NULL,
    longitude       float8 NOT NULL,
    uncertainty_m   real NOT NULL,
    locate_method   text NOT NULL CHECK (locate_method IN ('tdoa', 'sensor')),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'qualified')),
    qualification   text CHECK (qualification IN ('serious', 'not_serious', 'false_alarm')),
    acknowledged_by text,
    acknowledged_at timestamptz,
    qualified_by    text,
    qualified_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incidents_opened_at ON incidents (opened_at);

CREATE TABLE events (
    event_id     uuid PRIMARY KEY,
    incident_id  uuid NOT NULL REFERENCES incidents (incident_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    sensor_id    text NOT NULL,
    event_class  text NOT NULL,
    confidence   real NOT NULL,
    onset        timestamptz NOT NULL,
    level_db     real NOT NULL,
    duration_ms  int NOT NULL,
    model        text NOT NULL DEFAULT '',
    received_at  timestamptz NOT NULL
);
CREATE INDEX events_incident ON events (incident_id);

CREATE TABLE camera_moves (
    id           bigserial PRIMARY KEY,
    incident_id  uuid NOT NULL REFERENCES incidents (incident_id) ON DELETE CASCADE,
    camera_id    text NOT NULL,
    outcome      text NOT NULL,
    preset       text,
    pan          real,
    tilt         real,
    zoom         real,
    reason       text,
    latency_ms   real,
    at           timestamptz NOT NULL
);
CREATE INDEX camera_moves_incident ON camera_moves (incident_id);

CREATE TABLE quarantine (
    id             bigserial PRIMARY KEY,
    received_at    timestamptz NOT NULL,
    topic          text NOT NULL,
    sensor_id      text,
    event_id       text,
    reason_code    text NOT NULL,
    reason         text NOT NULL,
    payload        text NOT NULL,
    payload_bytes  int NOT NULL
);
CREATE INDEX quarantine_received_at ON quarantine (received_at);

CREATE TABLE legal_holds (
    incident_id  uuid PRIMARY KEY REFERENCES incidents (incident_id),
    reason       text NOT NULL CHECK (length(reason) >= 3),
    placed_by    text NOT NULL,
    placed_at    timestamptz NOT NULL
);

-- The audit journal: who did what, when. Append-only: UPDATE, DELETE and TRUNCATE are
-- refused by triggers, except DELETE inside purge_expired() (retention), which itself
-- writes a journal entry. (The owning role could drop the trigger: this guards the
-- application and mistakes, not a hostile DBA; the DB audit log covers that.)
CREATE TABLE journal (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL,
    actor        text NOT NULL,
    action       text NOT NULL,
    incident_id  uuid,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX journal_at ON journal (at);
CREATE INDEX journal_incident ON journal (incident_id);

CREATE FUNCTION journal_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('sonopolis.purging', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit journal is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER journal_no_update BEFORE UPDATE OR DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION journal_append_only();
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION journal_append_only();

-- Retention: everything older than the cutoff goes, except incidents under legal hold
-- and the journal entries about them. Returns the counts; the caller journals them.
CREATE FUNCTION purge_expired(cutoff timestamptz)
RETURNS TABLE (incidents bigint, journal_entries bigint, quarantined bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    n_inc bigint;
    n_jou bigint;
    n_qua bigint;
BEGIN
    PERFORM set_config('sonopolis.purging', 'on', true);
    DELETE FROM incidents i
     WHERE i.opened_at < cutoff
       AND NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.incident_id = i.incident_id);
    GET DIAGNOSTICS n_inc = ROW_COUNT;
    DELETE FROM journal j
     WHERE j.at < cutoff
       AND (j.incident_id IS NULL
            OR NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.incident_id = j.incident_id));
    GET DIAGNOSTICS n_jou = ROW_COUNT;
    DELETE FROM quarantine q WHERE q.received_at < cutoff;
    GET DIAGNOSTICS n_qua = ROW_COUNT;
    PERFORM set_config('sonopolis.purging', 'off', true);
    RETURN QUERY SELECT n_inc, n_jou, n_qua;
END $$;
