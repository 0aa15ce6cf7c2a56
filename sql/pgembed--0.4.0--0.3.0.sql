-- pgembed 0.4.0 -> 0.3.0: undoes pgembed--0.4.0.sql. Run by migration 0004's downgrade.
--
-- Drops the functions 0.4.0 added, then restores 0.3.0's definition of every other
-- function, exactly as pgembed--0.1.0--0.2.0.sql and pgembed--0.2.0--0.3.0.sql created
-- them (CREATE OR REPLACE, same signatures: the generated column
-- pgembed.fde_configs.ams_vectors stays). These are 0.3.0's definitions, with its
-- search_path of `pg_catalog, <vector's schema>, pg_temp`; see those files.
--
-- The definitions repeat those files on purpose: a downgrade script states the old version
-- whole, as pgvector keeps one full script per version, so that it never depends on
-- re-running an upgrade script that also changed tables.

SELECT pg_catalog.set_config('pgembed.saved_search_path',
                             pg_catalog.current_setting('search_path'), true);
SELECT pg_catalog.set_config('search_path', pg_catalog.format('pg_catalog, %I, pg_temp', n.nspname), true)
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'vector';

-- The lexical kind's functions. Its statistics triggers on collection tables go with
-- pgembed.lexical_stats_update (CASCADE): drop the lexical kind of each collection first
-- (op.drop_lexical) to keep its statistics table consistent.
DROP FUNCTION pgembed.search_hybrid(text, text, vector[], integer, text, text, integer, double precision, double precision, double precision, integer, double precision, double precision, integer);
DROP FUNCTION pgembed.search_hybrid(text, text, vector, integer, text, text, integer, double precision, double precision, double precision, integer, double precision, double precision, integer);
DROP FUNCTION pgembed.fuse(bigint[], double precision[], bigint[], double precision[], integer, text, integer, double precision, double precision, double precision);
DROP FUNCTION pgembed.search_bm25(text, text, integer, double precision, double precision);
DROP FUNCTION pgembed.check_real(text, double precision, double precision, double precision);
DROP FUNCTION pgembed.bm25_tf_table();
DROP FUNCTION pgembed.lexical_stats_recompute(text);
DROP FUNCTION pgembed.lexical_stats_update() CASCADE;
DROP FUNCTION pgembed.distance_sql(text);
DROP FUNCTION pgembed.prepare_query(jsonb, vector, integer);
DROP FUNCTION pgembed.check_cosine_query(vector, halfvec);
DROP FUNCTION pgembed.to_halfvec(vector, text);
DROP FUNCTION pgembed.vector_schema();

CREATE OR REPLACE FUNCTION pgembed.version() RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog
    RETURN '0.3.0';

-- --- helpers -----------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgembed.fail(sqlstate text, message text, hint text DEFAULT NULL)
    RETURNS double precision
    LANGUAGE plpgsql VOLATILE PARALLEL SAFE SECURITY INVOKER
    SET search_path FROM CURRENT
AS $fn$
BEGIN
    -- VOLATILE on purpose: an IMMUTABLE raiser with constant arguments would be folded,
    -- and raise, at plan time even in a CASE branch that is never taken.
    RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, HINT = coalesce(hint, '');
END
$fn$;

COMMENT ON FUNCTION pgembed.fail(text, text, text) IS
    'Raises an error with the given SQLSTATE, message and hint (for pgembed''s SQL-language functions, which cannot RAISE).';

CREATE OR REPLACE FUNCTION pgembed.check_range(name text, value integer, low integer, high integer)
    RETURNS integer
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path FROM CURRENT
AS $fn$
BEGIN
    IF value IS NULL OR value < low OR value > high THEN
        RAISE EXCEPTION 'pgembed: % must be an integer in %..%, got %',
            name, low, high, coalesce(value::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = pg_catalog.format('pass %s between %s and %s', name, low, high);
    END IF;
    RETURN value;
END
$fn$;

COMMENT ON FUNCTION pgembed.check_range(text, integer, integer, integer) IS
    'Returns value when low <= value <= high, else raises invalid_parameter_value naming the parameter.';

CREATE OR REPLACE FUNCTION pgembed.check_vector(q vector, dim integer, what text DEFAULT 'query vector')
    RETURNS vector
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path FROM CURRENT
AS $fn$
BEGIN
    IF q IS NULL THEN
        RAISE EXCEPTION 'pgembed: the % is NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF vector_dims(q) <> dim THEN
        RAISE EXCEPTION 'pgembed: the % has % dimensions; the collection stores %',
            what, vector_dims(q), dim
            USING ERRCODE = 'data_exception',
                  HINT = 'encode the query with the collection''s encoder';
    END IF;
    RETURN q;
END
$fn$;

COMMENT ON FUNCTION pgembed.check_vector(vector, integer, text) IS
    'Returns q when it is non-NULL and has dim dimensions, else raises a pgembed error.';

CREATE OR REPLACE FUNCTION pgembed.check_tokens(q vector[], dim integer, what text DEFAULT 'query')
    RETURNS vector[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path FROM CURRENT
AS $fn$
DECLARE
    bad integer;
BEGIN
    IF q IS NULL OR pg_catalog.cardinality(q) = 0 THEN
        RAISE EXCEPTION 'pgembed: the % has no token vectors', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a multi-vector query needs at least one token vector';
    END IF;
    SELECT vector_dims(t) INTO bad FROM pg_catalog.unnest(q) AS t
    WHERE t IS NULL OR vector_dims(t) <> dim LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'pgembed: the % holds a token vector of % dimensions; expected %',
            what, coalesce(bad::text, 'NULL'), dim
            USING ERRCODE = 'data_exception',
                  HINT = 'encode the query with the collection''s encoder';
    END IF;
    RETURN q;
END
$fn$;

COMMENT ON FUNCTION pgembed.check_tokens(vector[], integer, text) IS
    'Returns q when it holds at least one token vector, all non-NULL with dim dimensions, else raises a pgembed error.';

CREATE OR REPLACE FUNCTION pgembed.collection_info(
    collection text, kind text,
    OUT table_schema text, OUT table_name text, OUT id_column text, OUT kinds jsonb,
    OUT fde_config integer)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path FROM CURRENT
AS $fn$
BEGIN
    IF collection IS NULL THEN
        RAISE EXCEPTION 'pgembed: the collection name is NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT c.table_schema, c.table_name, c.id_column, c.kinds, c.fde_config
      INTO table_schema, table_name, id_column, kinds, fde_config
      FROM pgembed.collections AS c WHERE c.name = collection;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgembed: no collection named %; known collections: %',
            pg_catalog.quote_literal(collection),
            coalesce((SELECT pg_catalog.string_agg(pg_catalog.quote_literal(c.name), ', ' ORDER BY c.name)
                        FROM pgembed.collections AS c), 'none')
            USING ERRCODE = 'undefined_object',
                  HINT = 'collections are listed in pgembed.collections';
    END IF;
    IF kind IS NOT NULL AND NOT kinds ? kind THEN
        RAISE EXCEPTION 'pgembed: collection % does not store the % kind; it stores: %',
            pg_catalog.quote_literal(collection), pg_catalog.quote_literal(kind),
            (SELECT pg_catalog.string_agg(k, ', ' ORDER BY k) FROM pg_catalog.jsonb_object_keys(kinds) AS k)
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'declare the collection with that kind, or use another search';
    END IF;
END
$fn$;

COMMENT ON FUNCTION pgembed.collection_info(text, text) IS
    'Catalog row of a collection (table, id column, kinds, FDE config); raises when the collection is unknown (listing the known ones) or lacks the kind (NULL: any).';

CREATE OR REPLACE FUNCTION pgembed.hnsw_begin(ef_search integer, iterative_scan text, n_rows integer)
    RETURNS text[]
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    SET search_path FROM CURRENT
AS $fn$
DECLARE
    saved text[] := ARRAY[pg_catalog.current_setting('hnsw.ef_search', true),
                          pg_catalog.current_setting('hnsw.iterative_scan', true)];
    current_ef integer := coalesce(nullif(saved[1], '')::integer, 40);
BEGIN
    IF ef_search IS NOT NULL THEN
        PERFORM pgembed.check_range('ef_search', ef_search, 1, 1000);
    END IF;
    IF iterative_scan IS NOT NULL
       AND iterative_scan NOT IN ('off', 'relaxed_order', 'strict_order') THEN
        RAISE EXCEPTION 'pgembed: iterative_scan must be off, relaxed_order or strict_order, got %',
            pg_catalog.quote_literal(iterative_scan)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- HNSW returns at most ef_search rows (without iterative scans): ask for enough.
    PERFORM pg_catalog.set_config('hnsw.ef_search',
        coalesce(ef_search, least(1000, greatest(current_ef, n_rows)))::text, true);
    IF iterative_scan IS NOT NULL THEN
        PERFORM pg_catalog.set_config('hnsw.iterative_scan', iterative_scan, true);
    ELSIF n_rows > 1000 THEN
        -- More rows than ef_search can give: keep scanning.
        PERFORM pg_catalog.set_config('hnsw.iterative_scan', 'relaxed_order', true);
    END IF;
    RETURN saved;
END
$fn$;

COMMENT ON FUNCTION pgembed.hnsw_begin(integer, text, integer) IS
    'Validates and sets hnsw.ef_search (default: max(current setting, n_rows), at most 1000) and hnsw.iterative_scan (default: unchanged, relaxed_order above 1000 rows) for the transaction; returns the previous values for pgembed.hnsw_end.';

CREATE OR REPLACE FUNCTION pgembed.hnsw_end(saved text[]) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    SET search_path FROM CURRENT
AS $fn$
BEGIN
    -- set_config(name, NULL, true) resets to the default when there was no value.
    PERFORM pg_catalog.set_config('hnsw.ef_search', saved[1], true);
    PERFORM pg_catalog.set_config('hnsw.iterative_scan', saved[2], true);
END
$fn$;

COMMENT ON FUNCTION pgembed.hnsw_end(text[]) IS
    'Restores the hnsw.ef_search and hnsw.iterative_scan values saved by pgembed.hnsw_begin.';

-- --- MaxSim ------------------------------------------------------------------------------

-- One correlated scalar subquery per query token over unnest(d): no GROUP BY, no sort,
-- and min(<#>) avoids a negation per pair. Measured (benchmarks/maxsim.py, 32 x 200 tokens
-- x 128 dims): this form, LATERAL or a subquery over unnest(q) all cost the same (the
-- pgvector inner products dominate, about 35 ns each); GROUP BY over a cross join is ~1.5x
-- slower, ProjectSet forms (SELECT unnest(d)) ~1.6x, a PL/pgSQL FOREACH loop ~2x.
-- COST 1000: it is expensive, so the planner may run a big scan that calls it in parallel.
CREATE OR REPLACE FUNCTION pgembed.maxsim(q halfvec[], d halfvec[]) RETURNS double precision
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER COST 1000
    SET search_path FROM CURRENT
    RETURN CASE
        WHEN pg_catalog.cardinality(q) = 0 THEN pgembed.fail('22023',
            'pgembed.maxsim: the query has no token vectors',
            'MaxSim needs at least one query token vector')
        ELSE (SELECT -sum((SELECT min(qt <#> dt) FROM pg_catalog.unnest(d) AS dt)) FROM pg_catalog.unnest(q) AS qt)
    END;

COMMENT ON FUNCTION pgembed.maxsim(halfvec[], halfvec[]) IS
    'MaxSim (Chamfer similarity): sum over query tokens of the max inner product with any document token. Empty query: error; empty document: NULL; NULL in: NULL out.';

CREATE OR REPLACE FUNCTION pgembed.maxsim(q vector[], d vector[]) RETURNS double precision
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER COST 1000
    SET search_path FROM CURRENT
    RETURN CASE
        WHEN pg_catalog.cardinality(q) = 0 THEN pgembed.fail('22023',
            'pgembed.maxsim: the query has no token vectors',
            'MaxSim needs at least one query token vector')
        ELSE (SELECT -sum((SELECT min(qt <#> dt) FROM pg_catalog.unnest(d) AS dt)) FROM pg_catalog.unnest(q) AS qt)
    END;

COMMENT ON FUNCTION pgembed.maxsim(vector[], vector[]) IS
    'MaxSim (Chamfer similarity) of vector[] token sets: sum over query tokens of the max inner product with any document token. Empty query: error; empty document: NULL; NULL in: NULL out.';

-- --- FDE ---------------------------------------------------------------------------------

-- AMS sketch as R*d_proj dense vectors: vector r*d_proj + t holds ams_sign[r, j] where
-- ams_index[r, j] = t, else 0, so projecting a block is d_proj inner products.
CREATE OR REPLACE FUNCTION pgembed.ams_vectors(
    ams_index integer[], ams_sign real[], num_repetitions integer, projection_dimension integer)
    RETURNS vector[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path FROM CURRENT
    RETURN (
        SELECT pg_catalog.array_agg(s.v ORDER BY s.rt)
        FROM (
            SELECT r.r * projection_dimension + t.t AS rt,
                   pg_catalog.array_agg(CASE WHEN ams_index[r.r * dd.d + j.j + 1] = t.t
                                  THEN ams_sign[r.r * dd.d + j.j + 1] ELSE 0 END
                             ORDER BY j.j)::vector AS v
            FROM (SELECT pg_catalog.cardinality(ams_index) / num_repetitions AS d) AS dd,
                 pg_catalog.generate_series(0, num_repetitions - 1) AS r(r),
                 pg_catalog.generate_series(0, projection_dimension - 1) AS t(t),
                 pg_catalog.generate_series(0, dd.d - 1) AS j(j)
            GROUP BY r.r, t.t
        ) AS s
    );

COMMENT ON FUNCTION pgembed.ams_vectors(integer[], real[], integer, integer) IS
    'The AMS sketch of an FDE config as dense vectors (index r*d_proj + t, 0-based): the generated column pgembed.fde_configs.ams_vectors.';

CREATE OR REPLACE FUNCTION pgembed.fde_query(config integer, q vector[]) RETURNS vector
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path FROM CURRENT
AS $fn$
DECLARE
    cfg record;
    nb integer;
    result vector;
BEGIN
    SELECT f.dimension AS d, f.num_repetitions AS r, f.num_simhash_projections AS k,
           f.projection_dimension AS dp, f.output_dimension AS dout,
           f.simhash_vectors AS sv, f.ams_vectors AS ams,
           f.final_index AS fi, f.final_sign AS fs, f.projection
      INTO cfg
      FROM pgembed.fde_configs AS f WHERE f.id = config;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgembed: no FDE config % in pgembed.fde_configs', config
            USING ERRCODE = 'undefined_object';
    END IF;
    IF cfg.k > 0 AND cfg.sv IS NULL THEN
        RAISE EXCEPTION 'pgembed: FDE config % has no simhash_vectors', config
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'fill simhash_vectors: simhash[r, :, b] as vector(d) at 0-based index r*k + b';
    END IF;
    IF cfg.projection <> 'identity' AND cfg.ams IS NULL THEN
        RAISE EXCEPTION 'pgembed: FDE config % has no AMS sketch', config
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM pgembed.check_tokens(q, cfg.d, 'query');
    nb := 1 << cfg.k;

    WITH tok AS (
        SELECT u.t, u.i FROM pg_catalog.unnest(q) WITH ORDINALITY AS u(t, i)
    ), sv AS (
        SELECT s.v, s.n - 1 AS n FROM pg_catalog.unnest(cfg.sv) WITH ORDINALITY AS s(v, n)
    ), bits AS (
        -- sign bit b_j of <token, simhash[r, :, j]>; <#> is the negated inner product
        SELECT tok.i, sv.n / cfg.k AS r, sv.n % cfg.k AS j, ((tok.t <#> sv.v) < 0)::integer AS b
        FROM tok CROSS JOIN sv
    ), part AS (
        -- Gray-code decoding: c_j = b_0 xor ... xor b_j, partition = sum c_j 2^(k-1-j)
        SELECT x.i, x.r, bit_or(((x.c % 2)::integer) << (cfg.k - 1 - x.j)::integer) AS p
        FROM (SELECT bits.i, bits.r, bits.j,
                     sum(bits.b) OVER (PARTITION BY bits.i, bits.r ORDER BY bits.j) AS c
              FROM bits) AS x
        GROUP BY x.i, x.r
    ), blk AS (
        -- queries SUM their tokens per (repetition, partition); k = 0: all in partition 0
        SELECT rr.r, coalesce(part.p, 0) AS p, sum(tok.t) AS v
        FROM tok CROSS JOIN pg_catalog.generate_series(0, cfg.r - 1) AS rr(r)
        LEFT JOIN part ON part.i = tok.i AND part.r = rr.r
        GROUP BY rr.r, coalesce(part.p, 0)
    ), ams AS (
        SELECT a.v, a.n - 1 AS n FROM pg_catalog.unnest(cfg.ams) WITH ORDINALITY AS a(v, n)
    ), val AS (
        SELECT (blk.r * nb + blk.p) * cfg.dp + ams.n % cfg.dp AS pos,
               -(blk.v <#> ams.v) AS x
        FROM blk JOIN ams ON ams.n / cfg.dp = blk.r
        UNION ALL
        SELECT (blk.r * nb + blk.p) * cfg.dp + (e.o - 1)::integer AS pos, e.x::double precision
        FROM blk CROSS JOIN pg_catalog.unnest(blk.v::real[]) WITH ORDINALITY AS e(x, o)
        WHERE cfg.ams IS NULL
    ), fin AS (
        -- optional final count sketch: out[final_index[i]] += final_sign[i] * fde[i]
        SELECT CASE WHEN cfg.fi IS NULL THEN val.pos ELSE cfg.fi[val.pos + 1] END AS pos,
               sum(CASE WHEN cfg.fi IS NULL THEN val.x ELSE cfg.fs[val.pos + 1] * val.x END) AS x
        FROM val GROUP BY 1
    )
    SELECT pg_catalog.array_agg(coalesce(fin.x, 0) ORDER BY g.g)::real[]::vector INTO result
    FROM pg_catalog.generate_series(0, cfg.dout - 1) AS g(g) LEFT JOIN fin ON fin.pos = g.g;
    RETURN result;
END
$fn$;

COMMENT ON FUNCTION pgembed.fde_query(integer, vector[]) IS
    'Query FDE (MUVERA) of token vectors q under FDE config `config`, from the stored matrices: SimHash Gray-code partitions, tokens SUMmed per block (never filled), AMS projection, optional final count sketch. Equals Python''s FDEEncoder.encode_query up to float rounding.';

CREATE OR REPLACE FUNCTION pgembed.fde_query(collection text, q vector[]) RETURNS vector
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path FROM CURRENT
AS $fn$
DECLARE
    c record;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'fde');
    IF c.fde_config IS NULL THEN
        RAISE EXCEPTION 'pgembed: collection % names no FDE config', pg_catalog.quote_literal(collection)
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN pgembed.fde_query(c.fde_config, q);
END
$fn$;

COMMENT ON FUNCTION pgembed.fde_query(text, vector[]) IS
    'Query FDE of token vectors q under the FDE config of collection `collection` (see fde_query(integer, vector[])).';

-- --- residual binary codes ---------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgembed.residual_levels(q vector, bits integer,
                                        OUT codes bit varying[], OUT scales double precision[])
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path FROM CURRENT
AS $fn$
DECLARE
    x double precision[] := q::real[]::double precision[];
    s double precision;
    code bit varying;
BEGIN
    PERFORM pgembed.check_range('bits', bits, 1, 16);
    codes := '{}';
    scales := '{}';
    FOR lvl IN 1..bits LOOP
        -- like pgembed.vectors.binary.residual_encode: scale = mean |residual| rounded to
        -- float32, bit = residual > 0, residual -= scale * sign
        SELECT avg(pg_catalog.abs(u.v))::real::double precision,
               pg_catalog.string_agg(CASE WHEN u.v > 0 THEN '1' ELSE '0' END, '' ORDER BY u.o)::bit varying
          INTO s, code
          FROM pg_catalog.unnest(x) WITH ORDINALITY AS u(v, o);
        codes := codes || code;
        scales := scales || s;
        x := ARRAY(SELECT u.v - CASE WHEN u.v > 0 THEN s ELSE -s END
                   FROM pg_catalog.unnest(x) WITH ORDINALITY AS u(v, o) ORDER BY u.o);
    END LOOP;
END
$fn$;

COMMENT ON FUNCTION pgembed.residual_levels(vector, integer) IS
    'The b-level residual sign code of q (levels in order, as pgembed.vectors.binary.residual_encode) and the scale of each level.';

CREATE OR REPLACE FUNCTION pgembed.residual_similarity(
    codes bit varying[], scales double precision[], doc bit varying)
    RETURNS double precision
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path FROM CURRENT
    RETURN (
        SELECT sum(scales[i] * scales[j]
                   * (pg_catalog.length(codes[i]) - 2 * (codes[i]::bit varying <~> pg_catalog.substring(
                        doc, (j - 1) * pg_catalog.length(codes[i]) + 1, pg_catalog.length(codes[i])))))
        FROM generate_subscripts(codes, 1) AS i, generate_subscripts(codes, 1) AS j
    );

COMMENT ON FUNCTION pgembed.residual_similarity(bit varying[], double precision[], bit varying) IS
    'Level-weighted symmetric Hamming score of a stored b-level code `doc` (levels concatenated) against query levels: sum over i, j of s_i s_j (d - 2 hamming(q_i, doc_j)), the inner product of the reconstructions with the query''s scales standing in for the unstored document scales. Higher is closer.';

CREATE OR REPLACE FUNCTION pgembed.ivfflat_begin(probes integer, iterative_scan text, lists integer)
    RETURNS text[]
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    SET search_path FROM CURRENT
AS $fn$
DECLARE
    saved text[] := ARRAY[pg_catalog.current_setting('ivfflat.probes', true),
                          pg_catalog.current_setting('ivfflat.iterative_scan', true)];
BEGIN
    IF probes IS NOT NULL THEN
        PERFORM pgembed.check_range('probes', probes, 1, lists);
    END IF;
    IF iterative_scan IS NOT NULL
       AND iterative_scan NOT IN ('off', 'relaxed_order', 'strict_order') THEN
        RAISE EXCEPTION 'pgembed: iterative_scan must be off, relaxed_order or strict_order, got %',
            pg_catalog.quote_literal(iterative_scan)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- pgvector's advice: start at sqrt(lists).
    PERFORM pg_catalog.set_config('ivfflat.probes',
        coalesce(probes, ceil(sqrt(lists))::integer)::text, true);
    -- IVFFlat has no strict order, and candidates are reranked anyway. Unless told off,
    -- keep probing until the candidate count is reached.
    PERFORM pg_catalog.set_config('ivfflat.iterative_scan',
        CASE WHEN iterative_scan = 'off' THEN 'off' ELSE 'relaxed_order' END, true);
    RETURN saved;
END
$fn$;

COMMENT ON FUNCTION pgembed.ivfflat_begin(integer, text, integer) IS
    'Validates and sets ivfflat.probes (default: ceil(sqrt(lists))) and ivfflat.iterative_scan (relaxed_order unless iterative_scan is off) for the transaction; returns the previous values for pgembed.ivfflat_end.';

CREATE OR REPLACE FUNCTION pgembed.ivfflat_end(saved text[]) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    SET search_path FROM CURRENT
AS $fn$
BEGIN
    PERFORM pg_catalog.set_config('ivfflat.probes', saved[1], true);
    PERFORM pg_catalog.set_config('ivfflat.iterative_scan', saved[2], true);
END
$fn$;

COMMENT ON FUNCTION pgembed.ivfflat_end(text[]) IS
    'Restores the ivfflat.probes and ivfflat.iterative_scan values saved by pgembed.ivfflat_begin.';

-- --- searches ----------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgembed.search_knn(
    collection text, q vector, k integer DEFAULT 10,
    ef_search integer DEFAULT NULL, iterative_scan text DEFAULT NULL)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER ROWS 10
    SET search_path FROM CURRENT
AS $fn$
DECLARE
    c record;
    s jsonb;
    saved text[];
    stmt text;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'single');
    s := c.kinds -> 'single';
    PERFORM pgembed.check_vector(q, (s ->> 'dim')::integer);
    PERFORM pgembed.check_range('k', k, 1, 100000);
    IF s ->> 'distance' = 'cosine' AND vector_norm(q) = 0 THEN
        RAISE EXCEPTION 'pgembed: the query vector is all zeros; its cosine similarity is undefined'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    saved := pgembed.hnsw_begin(ef_search, iterative_scan, k);
    IF s ->> 'distance' = 'ip' THEN
        stmt := pg_catalog.format('SELECT c.id, -c.d FROM (SELECT %1$I::bigint AS id, %2$I <#> $1 AS d '
                       'FROM %3$I.%4$I ORDER BY d LIMIT $2) AS c ORDER BY c.d, c.id',
                       c.id_column, s ->> 'column', c.table_schema, c.table_name);
    ELSE
        stmt := pg_catalog.format('SELECT c.id, 1 - c.d FROM (SELECT %1$I::bigint AS id, %2$I <=> $1 AS d '
                       'FROM %3$I.%4$I ORDER BY d LIMIT $2) AS c ORDER BY c.d, c.id',
                       c.id_column, s ->> 'column', c.table_schema, c.table_name);
    END IF;
    IF s ->> 'type' = 'halfvec' THEN
        RETURN QUERY EXECUTE stmt USING q::halfvec, k;
    ELSE
        RETURN QUERY EXECUTE stmt USING q, k;
    END IF;
    PERFORM pgembed.hnsw_end(saved);
END
$fn$;

COMMENT ON FUNCTION pgembed.search_knn(text, vector, integer, integer, text) IS
    'Top-k (id, score) of a collection''s single vectors by HNSW, best first. score: cosine similarity (1 - cosine distance) or inner product, per the collection''s distance. ef_search (default: max(session value, k), at most 1000) and iterative_scan apply to this call only.';

CREATE OR REPLACE FUNCTION pgembed.search_funnel(
    collection text, q vector, k integer DEFAULT 10, prefix integer DEFAULT NULL,
    oversample integer DEFAULT 8, ef_search integer DEFAULT NULL,
    iterative_scan text DEFAULT NULL)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER ROWS 10
    SET search_path FROM CURRENT
AS $fn$
DECLARE
    c record;
    s jsonb;
    dims integer[];
    m integer;
    n integer;
    saved text[];
    stmt text;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'matryoshka');
    s := c.kinds -> 'single';
    PERFORM pgembed.check_vector(q, (s ->> 'dim')::integer);
    PERFORM pgembed.check_range('k', k, 1, 100000);
    PERFORM pgembed.check_range('oversample', coalesce(oversample, 8), 1, 1000);
    dims := ARRAY(SELECT jsonb_array_elements_text(c.kinds -> 'matryoshka' -> 'dims')::integer
                  ORDER BY 1);
    m := coalesce(prefix, dims[1]);
    IF NOT m = ANY (dims) THEN
        RAISE EXCEPTION 'pgembed: collection % has no index on prefix %; its prefixes are %',
            pg_catalog.quote_literal(collection), m, array_to_string(dims, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass one of the configured prefixes, or NULL for the smallest';
    END IF;
    IF s ->> 'distance' = 'cosine' AND vector_norm(q) = 0 THEN
        RAISE EXCEPTION 'pgembed: the query vector is all zeros; its cosine similarity is undefined'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := k * coalesce(oversample, 8);
    saved := pgembed.hnsw_begin(ef_search, iterative_scan, n);
    -- Stage 1 uses the prefix index expression verbatim (cosine, like the index);
    -- stage 2 reranks the candidates on the full vector with the collection's distance.
    IF s ->> 'distance' = 'ip' THEN
        stmt := pg_catalog.format('SELECT c.id, -(c.e <#> $1) AS score FROM ('
                       'SELECT %1$I::bigint AS id, %2$I AS e FROM %3$I.%4$I '
                       'ORDER BY subvector(%2$I, 1, %5$s)::%6$I(%5$s) <=> $3 LIMIT $4) AS c '
                       'ORDER BY score DESC, c.id LIMIT $2',
                       c.id_column, s ->> 'column', c.table_schema, c.table_name, m,
                       s ->> 'type');
    ELSE
        stmt := pg_catalog.format('SELECT c.id, 1 - (c.e <=> $1) AS score FROM ('
                       'SELECT %1$I::bigint AS id, %2$I AS e FROM %3$I.%4$I '
                       'ORDER BY subvector(%2$I, 1, %5$s)::%6$I(%5$s) <=> $3 LIMIT $4) AS c '
                       'ORDER BY score DESC, c.id LIMIT $2',
                       c.id_column, s ->> 'column', c.table_schema, c.table_name, m,
                       s ->> 'type');
    END IF;
    IF s ->> 'type' = 'halfvec' THEN
        RETURN QUERY EXECUTE stmt USING q::halfvec, k, subvector(q::halfvec, 1, m), n;
    ELSE
        RETURN QUERY EXECUTE stmt USING q, k, subvector(q, 1, m), n;
    END IF;
    PERFORM pgembed.hnsw_end(saved);
END
$fn$;

COMMENT ON FUNCTION pgembed.search_funnel(text, vector, integer, integer, integer, integer, text) IS
    'Matryoshka funnel: HNSW on the prefix index subvector(embedding, 1, prefix) (cosine, k*oversample candidates; prefix defaults to the smallest configured), then exact full-dimension rerank; top-k (id, score) best first, score as in search_knn.';

CREATE OR REPLACE FUNCTION pgembed.search_binary(
    collection text, q vector, k integer DEFAULT 10, oversample integer DEFAULT 10,
    rescore integer DEFAULT NULL, ef_search integer DEFAULT NULL,
    iterative_scan text DEFAULT NULL, probes integer DEFAULT NULL)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER ROWS 10
    SET search_path FROM CURRENT
AS $fn$
DECLARE
    c record;
    s jsonb;
    bits integer;
    d integer;
    n integer;
    keep integer;
    codes bit varying[];  -- the query's residual levels, b > 1 only (else NULL)
    scales double precision[];
    qh halfvec;
    saved text[];
    stmt text;
    ivf boolean;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'binary');
    s := c.kinds -> 'single';
    d := (s ->> 'dim')::integer;
    PERFORM pgembed.check_vector(q, d);
    PERFORM pgembed.check_range('k', k, 1, 100000);
    PERFORM pgembed.check_range('oversample', coalesce(oversample, 10), 1, 1000);
    n := k * coalesce(oversample, 10);
    bits := coalesce((c.kinds -> 'binary' ->> 'bits')::integer, 1);
    keep := coalesce(rescore, greatest(k, n / 2));
    IF bits > 1 THEN
        PERFORM pgembed.check_range('rescore', keep, k, n);
    END IF;
    IF s ->> 'distance' = 'cosine' AND vector_norm(q) = 0 THEN
        RAISE EXCEPTION 'pgembed: the query vector is all zeros; its cosine similarity is undefined'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    qh := q::halfvec;
    -- No "index" (a row written by hand): HNSW.
    ivf := coalesce(c.kinds -> 'binary' ->> 'index', 'hnsw') = 'ivfflat';
    IF ivf AND ef_search IS NOT NULL THEN
        RAISE EXCEPTION 'pgembed: ef_search applies to an HNSW index, but collection % has an IVFFlat binary index', pg_catalog.quote_literal(collection)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass probes instead';
    ELSIF NOT ivf AND probes IS NOT NULL THEN
        RAISE EXCEPTION 'pgembed: probes applies to an IVFFlat index, but collection % has an HNSW binary index', pg_catalog.quote_literal(collection)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass ef_search instead';
    END IF;
    IF ivf THEN
        saved := pgembed.ivfflat_begin(probes, iterative_scan,
                                       (c.kinds -> 'binary' ->> 'lists')::integer);
    ELSE
        saved := pgembed.hnsw_begin(ef_search, iterative_scan, n);
    END IF;
    -- Stage 1: Hamming ANN (HNSW or IVFFlat) on binary_quantize(embedding)::bit(d), the
    -- index expression.
    -- Stage 2 (b > 1 bits): keep the `rescore` best by residual_similarity.
    -- Stage 3: exact rerank on the full vector, top k.
    IF bits > 1 THEN
        SELECT l.codes, l.scales INTO codes, scales FROM pgembed.residual_levels(q, bits) AS l;
        stmt := pg_catalog.format('WITH cand AS MATERIALIZED ('
                       'SELECT %1$I::bigint AS id, %2$I AS e, %5$I AS b FROM %3$I.%4$I '
                       'ORDER BY binary_quantize(%2$I)::bit(%6$s) <~> $3 LIMIT $4), '
                       'resc AS (SELECT cand.id, cand.e FROM cand ORDER BY '
                       'pgembed.residual_similarity($5, $6, cand.b) DESC, cand.id LIMIT $7) ',
                       c.id_column, s ->> 'column', c.table_schema, c.table_name,
                       c.kinds -> 'binary' ->> 'column', d);
    ELSE
        stmt := pg_catalog.format('WITH resc AS MATERIALIZED ('
                       'SELECT %1$I::bigint AS id, %2$I AS e FROM %3$I.%4$I '
                       'ORDER BY binary_quantize(%2$I)::bit(%5$s) <~> $3 LIMIT $4) ',
                       c.id_column, s ->> 'column', c.table_schema, c.table_name, d);
    END IF;
    IF s ->> 'distance' = 'ip' THEN
        stmt := stmt || 'SELECT resc.id, -(resc.e <#> $1) AS score FROM resc '
                        'ORDER BY score DESC, resc.id LIMIT $2';
    ELSE
        stmt := stmt || 'SELECT resc.id, 1 - (resc.e <=> $1) AS score FROM resc '
                        'ORDER BY score DESC, resc.id LIMIT $2';
    END IF;
    IF s ->> 'type' = 'halfvec' THEN
        RETURN QUERY EXECUTE stmt
            USING qh, k, binary_quantize(qh), n, codes, scales, keep;
    ELSE
        RETURN QUERY EXECUTE stmt
            USING q, k, binary_quantize(q), n, codes, scales, keep;
    END IF;
    IF ivf THEN
        PERFORM pgembed.ivfflat_end(saved);
    ELSE
        PERFORM pgembed.hnsw_end(saved);
    END IF;
END
$fn$;

COMMENT ON FUNCTION pgembed.search_binary(text, vector, integer, integer, integer, integer, text, integer) IS
    'Binary search: Hamming ANN on binary_quantize(embedding) (k*oversample candidates) through the collection''s HNSW index (ef_search) or IVFFlat index (probes, default ceil(sqrt(lists))); with b > 1 stored bits, keep `rescore` (default max(k, k*oversample/2)) by pgembed.residual_similarity of the query''s own residual levels; then exact full-dimension rerank. Top-k (id, score) best first, score as in search_knn.';

CREATE OR REPLACE FUNCTION pgembed.search_multivector(
    collection text, q vector[], k integer DEFAULT 10, candidates integer DEFAULT 100,
    oversample integer DEFAULT 10, ef_search integer DEFAULT NULL,
    iterative_scan text DEFAULT NULL)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER ROWS 10
    SET search_path FROM CURRENT
AS $fn$
DECLARE
    c record;
    f jsonb;
    fq vector;
    n integer;
    saved text[];
    stmt text;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'fde');
    f := c.kinds -> 'fde';
    PERFORM pgembed.check_range('k', k, 1, 100000);
    PERFORM pgembed.check_range('candidates', coalesce(candidates, 100), k, 100000);
    PERFORM pgembed.check_range('oversample', coalesce(oversample, 10), 1, 1000);
    PERFORM pgembed.check_tokens(q, (c.kinds -> 'multivector' ->> 'dim')::integer, 'query');
    IF c.fde_config IS NULL THEN
        RAISE EXCEPTION 'pgembed: collection % names no FDE config', pg_catalog.quote_literal(collection)
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    fq := pgembed.fde_query(c.fde_config, q);
    IF f ->> 'index' = 'bit' THEN
        -- Hamming on the bit index, then a float-FDE rescore to `candidates`: going from bit
        -- candidates straight to MaxSim costs recall (DESIGN.md, MUVERA FDE).
        n := coalesce(candidates, 100) * coalesce(oversample, 10);
        stmt := pg_catalog.format('WITH cand AS MATERIALIZED ('
                       'SELECT %1$I::bigint AS id, %2$I AS f, %5$I AS t FROM %3$I.%4$I '
                       'ORDER BY binary_quantize(%2$I)::bit(%6$s) <~> $5 LIMIT $6), '
                       'resc AS (SELECT cand.id, cand.t FROM cand '
                       'ORDER BY cand.f <#> $3, cand.id LIMIT $4) '
                       'SELECT resc.id, pgembed.maxsim($1, resc.t) AS score FROM resc '
                       'ORDER BY score DESC NULLS LAST, resc.id LIMIT $2',
                       c.id_column, f ->> 'column', c.table_schema, c.table_name,
                       c.kinds -> 'multivector' ->> 'column', (f ->> 'dim')::integer);
    ELSE
        n := coalesce(candidates, 100);
        stmt := pg_catalog.format('WITH cand AS MATERIALIZED ('
                       'SELECT %1$I::bigint AS id, %5$I AS t FROM %3$I.%4$I '
                       'ORDER BY %2$I <#> $3 LIMIT $4) '
                       'SELECT cand.id, pgembed.maxsim($1, cand.t) AS score FROM cand '
                       'ORDER BY score DESC NULLS LAST, cand.id LIMIT $2',
                       c.id_column, f ->> 'column', c.table_schema, c.table_name,
                       c.kinds -> 'multivector' ->> 'column');
    END IF;
    saved := pgembed.hnsw_begin(ef_search, iterative_scan, n);
    RETURN QUERY EXECUTE stmt
        USING q::halfvec[], k, fq::halfvec, coalesce(candidates, 100),
              binary_quantize(fq::halfvec), n;
    PERFORM pgembed.hnsw_end(saved);
END
$fn$;

COMMENT ON FUNCTION pgembed.search_multivector(text, vector[], integer, integer, integer, integer, text) IS
    'Multi-vector search: query FDE (pgembed.fde_query), inner-product HNSW on the fde column (`candidates` rows; with a bit index: Hamming on binary_quantize(fde) for candidates*oversample rows, then a float-FDE rescore to `candidates`), then exact MaxSim on the token vectors. Top-k (id, score) best first, score = MaxSim.';

-- --- restore the installing session's search_path ------------------------------------

SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('pgembed.saved_search_path'), true);
