-- Run by `deploy/local/services start --secure` and `grants --secure [database]` as the
-- superuser, with -v participants='inventory payment shipping'. Tables are made by the admin
-- role (migrations); each login role gets data access to its own tables and nothing else:
-- saga_orchestrator to the orchestrator's (schema public), saga_<name> to schema <name>.
SELECT set_config('saga.participants', :'participants', false);

DO $$
DECLARE
    name text;
BEGIN
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    GRANT USAGE ON SCHEMA public TO saga_orchestrator;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO saga_orchestrator;
    GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO saga_orchestrator;
    FOREACH name IN ARRAY regexp_split_to_array(trim(current_setting('saga.participants')), '\s+')
    LOOP
        CONTINUE WHEN name = '' OR NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = name);
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', name, 'saga_' || name);
        EXECUTE format(
            'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
            name, 'saga_' || name
        );
        EXECUTE format(
            'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO %I', name, 'saga_' || name
        );
    END LOOP;
END
$$;
