-- pgembed's hot scoring functions wired to the scoring extension's C functions
-- (pgembed/scoring.py runs this after CREATE EXTENSION pgembed_scoring; unwiring restores the
-- SQL definitions of the schema script pgembed.scoring names). Same signatures, markings,
-- search_path and SECURITY INVOKER as the SQL versions; the C code resolves no names. Its
-- library is found by name, 'pgembed_scoring', through dynamic_library_path, as the
-- extension's own functions are.

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

-- --- residual binary codes (search_binary with b > 1 bits: residual_similarity once per
-- candidate, residual_levels once per query) ----------------------------------------------

CREATE OR REPLACE FUNCTION pgembed.residual_levels(q @extschema:vector@.vector, bits integer,
                                                   OUT codes bit varying[], OUT scales double precision[])
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS 'pgembed_scoring', 'pgembed_scoring_residual_levels';

COMMENT ON FUNCTION pgembed.residual_levels(@extschema:vector@.vector, integer) IS
    'The b-level residual sign code of q (levels in order, as pgembed.vectors.binary.residual_encode) and the scale of each level, in C (extension pgembed_scoring).';

CREATE OR REPLACE FUNCTION pgembed.residual_similarity(
    codes bit varying[], scales double precision[], doc bit varying)
    RETURNS double precision
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    AS 'pgembed_scoring', 'pgembed_scoring_residual_similarity';

COMMENT ON FUNCTION pgembed.residual_similarity(bit varying[], double precision[], bit varying) IS
    'Level-weighted symmetric Hamming score of a stored b-level code `doc` (levels concatenated) against query levels, in C (extension pgembed_scoring): sum over i, j of s_i s_j (d - 2 hamming(q_i, doc_j)), the inner product of the reconstructions with the query''s scales standing in for the unstored document scales. Higher is closer. No levels, NULL levels or scales, levels of different lengths or a doc shorter than the levels: error.';

-- --- the query FDE: the config lookup and its checks stay in PL/pgSQL (as in the SQL
-- version, same errors); the arithmetic runs in C on the config's arrays ------------------

CREATE OR REPLACE FUNCTION pgembed.fde_query(config integer, q @extschema:vector@.vector[])
    RETURNS @extschema:vector@.vector
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cfg record;
BEGIN
    SELECT f.dimension AS d, f.num_repetitions AS r, f.num_simhash_projections AS k,
           f.projection_dimension AS dp, f.output_dimension AS dout,
           f.simhash_vectors IS NULL AS no_sv, f.ams_vectors IS NULL AS no_ams,
           f.simhash, f.ams_index, f.ams_sign, f.final_index, f.final_sign, f.projection
      INTO cfg
      FROM pgembed.fde_configs AS f WHERE f.id = config;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgembed: no FDE config % in pgembed.fde_configs', config
            USING ERRCODE = 'undefined_object';
    END IF;
    IF cfg.k > 0 AND cfg.no_sv THEN
        RAISE EXCEPTION 'pgembed: FDE config % has no simhash_vectors', config
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'fill simhash_vectors: simhash[r, :, b] as vector(d) at 0-based index r*k + b';
    END IF;
    IF cfg.projection <> 'identity'::text AND cfg.no_ams THEN
        RAISE EXCEPTION 'pgembed: FDE config % has no AMS sketch', config
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM pgembed.check_tokens(q, cfg.d, 'query'::text);
    RETURN pgembed_scoring.fde_query(q, cfg.r, cfg.k, cfg.dp, cfg.dout, cfg.simhash,
                                     CASE WHEN cfg.no_ams THEN NULL ELSE cfg.ams_index END,
                                     CASE WHEN cfg.no_ams THEN NULL ELSE cfg.ams_sign END,
                                     cfg.final_index, cfg.final_sign);
END
$fn$;

COMMENT ON FUNCTION pgembed.fde_query(integer, @extschema:vector@.vector[]) IS
    'Query FDE (MUVERA) of token vectors q under FDE config `config`, from the stored matrices: SimHash Gray-code partitions, tokens SUMmed per block (never filled), AMS projection, optional final count sketch; the arithmetic in C (extension pgembed_scoring). Equals Python''s FDEEncoder.encode_query up to float rounding.';
