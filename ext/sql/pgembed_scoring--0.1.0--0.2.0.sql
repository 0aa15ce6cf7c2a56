-- pgembed_scoring 0.1.0 to 0.2.0: residual binary codes and the query FDE in C.
\echo Use "ALTER EXTENSION pgembed_scoring UPDATE TO '0.2.0'" to load this file. \quit

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
