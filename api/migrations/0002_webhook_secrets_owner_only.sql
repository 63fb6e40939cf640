-- Webhook signing secrets: readable by the owner (the API, as the smart role) only.
-- db-init gives the read-only role of schema smart (Grafana, whose viewers can send
-- SQL through its datasource) SELECT on every new table by default privilege; a
-- reader of api_webhooks.secret could forge signed deliveries to every subscriber,
-- so every grant on this table is taken back, whoever it went to (no role name here:
-- the roles are db-init's business). db-init keeps it off (sonopolis/reader.py).

DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole::text
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'api_webhooks'::regclass AND a.grantee NOT IN (c.relowner, 0)
    LOOP
        EXECUTE format('REVOKE ALL ON api_webhooks FROM %s', grantee);
    END LOOP;
END
$$;
REVOKE ALL ON api_webhooks FROM PUBLIC;
