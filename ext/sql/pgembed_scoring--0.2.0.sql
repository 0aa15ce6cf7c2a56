-- pgembed_scoring 0.2.0: MaxSim over pgvector token arrays, residual binary codes and the
-- query FDE, in C.
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

CREATE FUNCTION pgembed_scoring.residual_levels(
    q @extschema:vector@.vector, bits integer,
    OUT codes bit varying[], OUT scales double precision[])
    AS 'MODULE_PATHNAME', 'pgembed_scoring_residual_levels'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION pgembed_scoring.residual_levels(@extschema:vector@.vector, integer) IS
    'The b-level residual sign code of q (levels in order, as pgembed.vectors.binary.residual_encode) and the scale of each level (mean |residual| rounded to float4), in C. bits in 1..16.';

CREATE FUNCTION pgembed_scoring.residual_similarity(
    codes bit varying[], scales double precision[], doc bit varying) RETURNS double precision
    AS 'MODULE_PATHNAME', 'pgembed_scoring_residual_similarity'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION pgembed_scoring.residual_similarity(bit varying[], double precision[], bit varying) IS
    'Level-weighted Hamming score of a stored code `doc` (levels concatenated) against query levels, in C: sum over i, j of s_i s_j (len - 2 hamming(codes[i], level j of doc)). No levels, a NULL level or scale, levels of different lengths, fewer scales than levels or a doc shorter than the levels: error.';

CREATE FUNCTION pgembed_scoring.fde_query(
    q @extschema:vector@.vector[], num_repetitions integer, num_simhash_projections integer,
    projection_dimension integer, output_dimension integer, simhash real[],
    ams_index integer[], ams_sign real[], final_index integer[], final_sign real[])
    RETURNS @extschema:vector@.vector
    AS 'MODULE_PATHNAME', 'pgembed_scoring_fde_query'
    LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;

COMMENT ON FUNCTION pgembed_scoring.fde_query(@extschema:vector@.vector[], integer, integer, integer, integer, real[], integer[], real[], integer[], real[]) IS
    'Query FDE (MUVERA) of token vectors q from an FDE config''s matrices (the columns of pgembed.fde_configs: simhash (R, d, k), ams_index/ams_sign (R, d) or NULL for identity, final_index/final_sign or NULL for none), in C: SimHash Gray-code partitions, tokens summed per block, AMS projection, optional final count sketch. NULL q: NULL; bad lengths, NULL elements or out-of-range indices: error.';

-- pgembed.fde_query (PL/pgSQL, wired) calls pgembed_scoring.fde_query by name, so every role
-- that may search needs the schema; its functions are pure computations, EXECUTE is PUBLIC.
GRANT USAGE ON SCHEMA pgembed_scoring TO PUBLIC;
