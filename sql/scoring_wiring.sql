-- pgembed.maxsim wired to the scoring extension's C functions (pgembed/scoring.py runs this
-- after CREATE EXTENSION pgembed_scoring; unwiring restores the SQL definitions of
-- pgembed--0.4.0.sql). Same signatures, markings, search_path and SECURITY INVOKER as the
-- SQL versions; the C code resolves no names. Its library is found by name, 'pgembed_scoring',
-- through dynamic_library_path, as the extension's own functions are.

CREATE OR REPLACE FUNCTION pgembed.maxsim(
    q @extschema:vector@.halfvec[], d @extschema:vector@.halfvec[]) RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER COST 1000
    SET search_path = pg_catalog, pg_temp
    AS 'pgembed_scoring', 'pgembed_scoring_maxsim_halfvec';

COMMENT ON FUNCTION pgembed.maxsim(@extschema:vector@.halfvec[], @extschema:vector@.halfvec[]) IS
    'MaxSim (Chamfer similarity), in C (extension pgembed_scoring): sum over query tokens of the max inner product with any document token. Empty query, a NULL token or tokens of different dimensions: error; empty document: NULL; NULL in: NULL out.';

CREATE OR REPLACE FUNCTION pgembed.maxsim(
    q @extschema:vector@.vector[], d @extschema:vector@.vector[]) RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER COST 1000
    SET search_path = pg_catalog, pg_temp
    AS 'pgembed_scoring', 'pgembed_scoring_maxsim_vector';

COMMENT ON FUNCTION pgembed.maxsim(@extschema:vector@.vector[], @extschema:vector@.vector[]) IS
    'MaxSim (Chamfer similarity) of vector[] token sets, in C (extension pgembed_scoring): sum over query tokens of the max inner product with any document token. Empty query, a NULL token or tokens of different dimensions: error; empty document: NULL; NULL in: NULL out.';
