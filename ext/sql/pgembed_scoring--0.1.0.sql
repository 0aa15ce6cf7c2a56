-- pgembed_scoring 0.1.0: MaxSim over pgvector token arrays in C.
-- Every name is schema-qualified; pgvector's types through the vector extension's schema.
\echo Use "CREATE EXTENSION pgembed_scoring" to load this file. \quit

CREATE FUNCTION pgembed_scoring.maxsim(
    q @extschema:vector@.halfvec[], d @extschema:vector@.halfvec[]) RETURNS double precision
    AS 'MODULE_PATHNAME', 'pgembed_scoring_maxsim_halfvec'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 1000;

COMMENT ON FUNCTION pgembed_scoring.maxsim(@extschema:vector@.halfvec[], @extschema:vector@.halfvec[]) IS
    'MaxSim (Chamfer similarity) in C: sum over query tokens of the max inner product with any document token (float32 dot products, float8 sum). Empty query, a NULL token or tokens of different dimensions: error; empty document: NULL; NULL in: NULL out.';

CREATE FUNCTION pgembed_scoring.maxsim(
    q @extschema:vector@.vector[], d @extschema:vector@.vector[]) RETURNS double precision
    AS 'MODULE_PATHNAME', 'pgembed_scoring_maxsim_vector'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 1000;

COMMENT ON FUNCTION pgembed_scoring.maxsim(@extschema:vector@.vector[], @extschema:vector@.vector[]) IS
    'MaxSim (Chamfer similarity) of vector[] token sets in C: sum over query tokens of the max inner product with any document token (float32 dot products, float8 sum). Empty query, a NULL token or tokens of different dimensions: error; empty document: NULL; NULL in: NULL out.';

CREATE FUNCTION pgembed_scoring.kernel() RETURNS text
    AS 'MODULE_PATHNAME', 'pgembed_scoring_kernel'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION pgembed_scoring.kernel() IS
    'The MaxSim kernel this backend uses: avx2 (AVX2, FMA and F16C, chosen at load time when the CPU has them) or portable (the plain C baseline, or pgembed_scoring.kernel = portable).';
