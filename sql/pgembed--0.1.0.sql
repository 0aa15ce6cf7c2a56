-- pgembed 0.1.0: base functions. Installed by pgembed's migration 0001 into schema pgembed.
-- Every function: search_path pinned, SECURITY INVOKER, PARALLEL SAFE where true, commented.

CREATE FUNCTION pgembed.version() RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog
    RETURN '0.1.0';

COMMENT ON FUNCTION pgembed.version() IS
    'Version of the pgembed SQL functions installed in this database.';
