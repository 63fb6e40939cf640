-- The purge journals itself. purge_expired(cutoff) returned its counts and left the
-- journal entry to its Python caller (0001 said otherwise): a purge run by hand, e.g. a
-- mistaken "SELECT safe.purge_expired(now())", deleted journal entries and left no trace.
-- It now writes its own "purge" entry (cutoff and counts, which a caller cannot
-- overwrite), after the deletes and in the same transaction. The caller may give the
-- time of the purge (a test's clock), the actor and extra details (retention_days);
-- by hand the entry says now() and the database role that ran it.
DROP FUNCTION purge_expired(timestamptz);

CREATE FUNCTION purge_expired(
    cutoff    timestamptz,
    purged_at timestamptz DEFAULT now(),
    actor     text DEFAULT session_user,
    extra     jsonb DEFAULT '{}'::jsonb
)
RETURNS TABLE (incidents bigint, journal_entries bigint, quarantined bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    n_inc bigint;
    n_jou bigint;
    n_qua bigint;
BEGIN
    IF cutoff IS NULL OR purged_at IS NULL OR actor IS NULL OR length(actor) = 0 THEN
        RAISE EXCEPTION 'purge_expired: cutoff, purged_at and actor are required (got %, %, %)', cutoff, purged_at, actor;
    END IF;
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
    INSERT INTO journal (at, actor, action, incident_id, details)
    VALUES (purged_at, actor, 'purge', NULL,
            coalesce(extra, '{}'::jsonb) || jsonb_build_object('cutoff', cutoff, 'incidents', n_inc,
                                                               'journal_entries', n_jou, 'quarantined', n_qua));
    RETURN QUERY SELECT n_inc, n_jou, n_qua;
END $$;

-- A function is executable by PUBLIC by default; only the safe role (its owner) purges.
-- (The schema is closed to other roles already; this holds if it is ever opened to one.)
REVOKE ALL ON FUNCTION purge_expired(timestamptz, timestamptz, text, jsonb) FROM PUBLIC;
