-- pgembed 0.5.0: every function of schema pgembed, in full. Installed by migration 0006
-- (and by any later revision that reinstalls 0.5.0). CREATE OR REPLACE throughout, with
-- 0.4.0's signatures, except for the four dense searches (search_knn, search_funnel,
-- search_binary, search_multivector) and search_hybrid, which take a last argument
-- `target_recall` and are dropped first (CREATE OR REPLACE cannot add an argument).
-- Objects that depend on the other functions (the generated column
-- pgembed.fde_configs.ams_vectors) stay.
--
-- New in 0.5.0: searches that meet a recall target. pgembed.calibrations (migration 0006)
-- holds, per collection, strategy and setting, the recall@k against exact search and the
-- time per query that `pgembed calibrate` measured; pgembed.calibrated_setting picks the
-- cheapest setting whose recall meets the target. Safer defaults (recall@10 against exact
-- search, MiniLM): search_knn's ef_search is at least 100 (40 kept 0.955 on about 33,000
-- short texts, 100 kept 0.987); search_funnel's oversample 16 (8 kept 0.949 on the
-- Wikipedia sample's passages with a 128-dim prefix, 16 kept 0.979); search_binary's
-- oversample 20 (10 kept 0.968, 20 kept 0.989); search_multivector's candidates 300 (against
-- exact MaxSim, MiniLM token vectors of 6,000 Wikipedia passages: 100 kept 0.939, 200 kept
-- 0.970, 300 kept 0.979). search_hybrid keeps its own dense depths, except with a
-- target_recall, which its dense side meets by its calibrated setting.
--
-- Name resolution (DESIGN.md, "SQL security"). Every function runs with
-- `search_path = pg_catalog, pg_temp`: unqualified functions and operators resolve only in
-- pg_catalog (PostgreSQL never looks for functions or operators in pg_temp), where nobody
-- but a superuser can create anything. pgvector's types, functions and operators are
-- qualified with the vector extension's schema: pgembed.migrate.install_sql replaces
-- @extschema:vector@ below with that schema's name, quoted by the server. The searches'
-- dynamic SQL gets the same name from pgembed.vector_schema(), through format('%I'), and
-- names operators as OPERATOR(schema.<=>). Every call matches an existing signature
-- exactly (explicit casts such as 0::double precision), so an overload planted next to
-- pgvector's, in the vector schema, is never a better match. This script itself runs with
-- the same search_path, so the SQL-standard bodies (RETURN ...) bind only to those objects.
-- If the vector extension is moved later (ALTER EXTENSION vector SET SCHEMA), reinstall:
-- `pgembed db downgrade 0003 && pgembed db upgrade`.
--
-- Dynamic SQL: identifiers only through format('%I'); the integers of type modifiers
-- (`::halfvec(64)`, `::bit(384)`) through format('%s') of integer variables; values always
-- as EXECUTE ... USING parameters.

SELECT pg_catalog.set_config('pgembed.saved_search_path',
                             pg_catalog.current_setting('search_path'), true);
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

CREATE OR REPLACE FUNCTION pgembed.version() RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    RETURN '0.5.0';

COMMENT ON FUNCTION pgembed.version() IS
    'Version of the pgembed SQL functions installed in this database.';

-- --- helpers -----------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgembed.vector_schema() RETURNS name
    LANGUAGE sql STABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    -- Bound to the vector type itself (by oid, when this function was created).
    RETURN (SELECT n.nspname FROM pg_catalog.pg_type AS t
            JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) t.typnamespace
            WHERE t.oid OPERATOR(pg_catalog.=) pg_catalog.pg_typeof(NULL::@extschema:vector@.vector)::pg_catalog.oid);

COMMENT ON FUNCTION pgembed.vector_schema() IS
    'The schema of the vector extension the pgembed functions were installed against (for their dynamic SQL).';

CREATE OR REPLACE FUNCTION pgembed.fail(sqlstate text, message text, hint text DEFAULT NULL)
    RETURNS double precision
    LANGUAGE plpgsql VOLATILE PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- VOLATILE on purpose: an IMMUTABLE raiser with constant arguments would be folded,
    -- and raise, at plan time even in a CASE branch that is never taken.
    RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message,
                          HINT = coalesce(hint, ''::text);
END
$fn$;

COMMENT ON FUNCTION pgembed.fail(text, text, text) IS
    'Raises an error with the given SQLSTATE, message and hint (for pgembed''s SQL-language functions, which cannot RAISE).';

CREATE OR REPLACE FUNCTION pgembed.check_range(name text, value integer, low integer, high integer)
    RETURNS integer
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF value IS NULL OR value < low OR value > high THEN
        RAISE EXCEPTION 'pgembed: % must be an integer in %..%, got %',
            name, low, high, coalesce(value::text, 'NULL'::text)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = pg_catalog.format('pass %s between %s and %s', name, low, high);
    END IF;
    RETURN value;
END
$fn$;

COMMENT ON FUNCTION pgembed.check_range(text, integer, integer, integer) IS
    'Returns value when low <= value <= high, else raises invalid_parameter_value naming the parameter.';

CREATE OR REPLACE FUNCTION pgembed.check_vector(
    q @extschema:vector@.vector, dim integer, what text DEFAULT 'query vector')
    RETURNS @extschema:vector@.vector
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF q IS NULL THEN
        RAISE EXCEPTION 'pgembed: the % is NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF @extschema:vector@.vector_dims(q) <> dim THEN
        RAISE EXCEPTION 'pgembed: the % has % dimensions; the collection stores %',
            what, @extschema:vector@.vector_dims(q), dim
            USING ERRCODE = 'data_exception',
                  HINT = 'encode the query with the collection''s encoder';
    END IF;
    RETURN q;
END
$fn$;

COMMENT ON FUNCTION pgembed.check_vector(@extschema:vector@.vector, integer, text) IS
    'Returns q when it is non-NULL and has dim dimensions, else raises a pgembed error.';

CREATE OR REPLACE FUNCTION pgembed.to_halfvec(
    q @extschema:vector@.vector, what text DEFAULT 'query vector')
    RETURNS @extschema:vector@.halfvec
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    big real;
BEGIN
    -- halfvec's largest value is 65504; from 65520 on a value rounds to infinity, which
    -- pgvector refuses with its own raw error.
    SELECT pg_catalog.max(pg_catalog.abs(x)) INTO big FROM pg_catalog.unnest(q::real[]) AS x;
    IF big >= 65520::real THEN
        RAISE EXCEPTION 'pgembed: the % holds a value of magnitude %, out of range for halfvec (|x| <= 65504)',
            what, big
            USING ERRCODE = 'numeric_value_out_of_range',
                  HINT = 'scale the vector down (cosine similarity ignores scale), or store the collection at vector precision';
    END IF;
    RETURN q::@extschema:vector@.halfvec;
END
$fn$;

COMMENT ON FUNCTION pgembed.to_halfvec(@extschema:vector@.vector, text) IS
    'q as halfvec; raises a pgembed error naming halfvec''s range when a value does not fit.';

-- Not STRICT: qh is NULL for a collection stored at vector precision.
CREATE OR REPLACE FUNCTION pgembed.check_cosine_query(
    q @extschema:vector@.vector, qh @extschema:vector@.halfvec)
    RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF @extschema:vector@.vector_norm(q) = 0::double precision THEN
        RAISE EXCEPTION 'pgembed: the query vector is all zeros; its cosine similarity is undefined'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF qh IS NOT NULL AND @extschema:vector@.l2_norm(qh) = 0::double precision THEN
        RAISE EXCEPTION 'pgembed: the query vector is all zeros as halfvec (its values are below halfvec''s smallest, about 6e-8); its cosine similarity is undefined'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'scale the query vector up (cosine similarity ignores scale), or store the collection at vector precision';
    END IF;
END
$fn$;

COMMENT ON FUNCTION pgembed.check_cosine_query(@extschema:vector@.vector, @extschema:vector@.halfvec) IS
    'Raises a pgembed error when a cosine query q is all zeros, or becomes all zeros as halfvec qh (NULL: not stored as halfvec).';

CREATE OR REPLACE FUNCTION pgembed.check_tokens(
    q @extschema:vector@.vector[], dim integer, what text DEFAULT 'query')
    RETURNS @extschema:vector@.vector[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    bad integer;
BEGIN
    IF q IS NULL OR pg_catalog.cardinality(q) = 0 THEN
        RAISE EXCEPTION 'pgembed: the % has no token vectors', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a multi-vector query needs at least one token vector';
    END IF;
    SELECT @extschema:vector@.vector_dims(t) INTO bad FROM pg_catalog.unnest(q) AS t
    WHERE t IS NULL OR @extschema:vector@.vector_dims(t) <> dim LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'pgembed: the % holds a token vector of % dimensions; expected %',
            what, coalesce(bad::text, 'NULL'::text), dim
            USING ERRCODE = 'data_exception',
                  HINT = 'encode the query with the collection''s encoder';
    END IF;
    RETURN q;
END
$fn$;

COMMENT ON FUNCTION pgembed.check_tokens(@extschema:vector@.vector[], integer, text) IS
    'Returns q when it holds at least one token vector, all non-NULL with dim dimensions, else raises a pgembed error.';

CREATE OR REPLACE FUNCTION pgembed.collection_info(
    collection text, kind text,
    OUT table_schema text, OUT table_name text, OUT id_column text, OUT kinds jsonb,
    OUT fde_config integer)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
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
            coalesce(
                (SELECT pg_catalog.string_agg(pg_catalog.quote_literal(c.name), ', '::text ORDER BY c.name)
                 FROM pgembed.collections AS c), 'none'::text)
            USING ERRCODE = 'undefined_object',
                  HINT = 'collections are listed in pgembed.collections';
    END IF;
    IF kind IS NOT NULL AND NOT kinds ? kind THEN
        RAISE EXCEPTION 'pgembed: collection % does not store the % kind; it stores: %',
            pg_catalog.quote_literal(collection), pg_catalog.quote_literal(kind),
            (SELECT pg_catalog.string_agg(k, ', '::text ORDER BY k)
             FROM pg_catalog.jsonb_object_keys(kinds) AS k)
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
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    saved text[] := ARRAY[pg_catalog.current_setting('hnsw.ef_search', true),
                          pg_catalog.current_setting('hnsw.iterative_scan', true)];
    current_ef integer := coalesce(nullif(saved[1], ''::text)::integer, 40);
BEGIN
    IF ef_search IS NOT NULL THEN
        PERFORM pgembed.check_range('ef_search'::text, ef_search, 1, 1000);
    END IF;
    IF iterative_scan IS NOT NULL
       AND iterative_scan <> ALL (ARRAY['off', 'relaxed_order', 'strict_order']::text[]) THEN
        RAISE EXCEPTION 'pgembed: iterative_scan must be off, relaxed_order or strict_order, got %',
            pg_catalog.quote_literal(iterative_scan)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- HNSW returns at most ef_search rows (without iterative scans): ask for enough.
    PERFORM pg_catalog.set_config('hnsw.ef_search'::text,
        coalesce(ef_search, least(1000, greatest(current_ef, n_rows)))::text,
        true);
    IF iterative_scan IS NOT NULL THEN
        PERFORM pg_catalog.set_config('hnsw.iterative_scan'::text, iterative_scan, true);
    ELSIF n_rows > 1000 THEN
        -- More rows than ef_search can give: keep scanning.
        PERFORM pg_catalog.set_config('hnsw.iterative_scan'::text, 'relaxed_order'::text, true);
    END IF;
    RETURN saved;
END
$fn$;

COMMENT ON FUNCTION pgembed.hnsw_begin(integer, text, integer) IS
    'Validates and sets hnsw.ef_search (default: max(current setting, n_rows), at most 1000) and hnsw.iterative_scan (default: unchanged, relaxed_order above 1000 rows) for the transaction; returns the previous values for pgembed.hnsw_end.';

CREATE OR REPLACE FUNCTION pgembed.hnsw_end(saved text[]) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- set_config(name, NULL, true) resets to the default when there was no value.
    PERFORM pg_catalog.set_config('hnsw.ef_search'::text, saved[1], true);
    PERFORM pg_catalog.set_config('hnsw.iterative_scan'::text, saved[2], true);
END
$fn$;

COMMENT ON FUNCTION pgembed.hnsw_end(text[]) IS
    'Restores the hnsw.ef_search and hnsw.iterative_scan values saved by pgembed.hnsw_begin.';

CREATE OR REPLACE FUNCTION pgembed.ivfflat_begin(probes integer, iterative_scan text, lists integer)
    RETURNS text[]
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    saved text[] := ARRAY[pg_catalog.current_setting('ivfflat.probes', true),
                          pg_catalog.current_setting('ivfflat.iterative_scan', true)];
BEGIN
    IF probes IS NOT NULL THEN
        PERFORM pgembed.check_range('probes'::text, probes, 1, lists);
    END IF;
    IF iterative_scan IS NOT NULL
       AND iterative_scan <> ALL (ARRAY['off', 'relaxed_order', 'strict_order']::text[]) THEN
        RAISE EXCEPTION 'pgembed: iterative_scan must be off, relaxed_order or strict_order, got %',
            pg_catalog.quote_literal(iterative_scan)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- pgvector's advice: start at sqrt(lists).
    PERFORM pg_catalog.set_config('ivfflat.probes'::text,
        coalesce(probes, pg_catalog.ceil(pg_catalog.sqrt(lists::double precision))::integer)::text,
        true);
    -- IVFFlat has no strict order, and candidates are reranked anyway. Unless told off,
    -- keep probing until the candidate count is reached.
    PERFORM pg_catalog.set_config('ivfflat.iterative_scan'::text,
        CASE WHEN iterative_scan = 'off'::text THEN 'off'::text ELSE 'relaxed_order'::text END, true);
    RETURN saved;
END
$fn$;

COMMENT ON FUNCTION pgembed.ivfflat_begin(integer, text, integer) IS
    'Validates and sets ivfflat.probes (default: ceil(sqrt(lists))) and ivfflat.iterative_scan (relaxed_order unless iterative_scan is off) for the transaction; returns the previous values for pgembed.ivfflat_end.';

CREATE OR REPLACE FUNCTION pgembed.ivfflat_end(saved text[]) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pg_catalog.set_config('ivfflat.probes'::text, saved[1], true);
    PERFORM pg_catalog.set_config('ivfflat.iterative_scan'::text, saved[2], true);
END
$fn$;

COMMENT ON FUNCTION pgembed.ivfflat_end(text[]) IS
    'Restores the ivfflat.probes and ivfflat.iterative_scan values saved by pgembed.ivfflat_begin.';

-- --- MaxSim ------------------------------------------------------------------------------

-- One correlated scalar subquery per query token over unnest(d): no GROUP BY, no sort,
-- and min(<#>) avoids a negation per pair (benchmarks/maxsim.py). The `bad` subquery finds
-- the first NULL token, or the first token whose dimension differs from the query's first
-- token, so that MaxSim never skips a token silently nor fails with pgvector's raw error.
-- COST 1000: it is expensive, so the planner may run a big scan that calls it in parallel.
CREATE OR REPLACE FUNCTION pgembed.maxsim(
    q @extschema:vector@.halfvec[], d @extschema:vector@.halfvec[]) RETURNS double precision
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER COST 1000
    SET search_path = pg_catalog, pg_temp
    RETURN (
        SELECT CASE
            WHEN pg_catalog.cardinality(q) OPERATOR(pg_catalog.=) 0 THEN pgembed.fail('22023'::text,
                'pgembed.maxsim: the query has no token vectors'::text,
                'MaxSim needs at least one query token vector'::text)
            WHEN bad.side IS NOT NULL AND bad.t IS NULL THEN pgembed.fail('22004'::text,
                pg_catalog.format('pgembed.maxsim: %s token vector %s is NULL'::text, bad.side, bad.o),
                'remove the NULL elements from the token arrays'::text)
            WHEN bad.side IS NOT NULL THEN pgembed.fail('22000'::text,
                pg_catalog.format('pgembed.maxsim: %s token vector %s has %s dimensions; query token vector 1 has %s'::text,
                                  bad.side, bad.o, @extschema:vector@.vector_dims(bad.t),
                                  @extschema:vector@.vector_dims((SELECT f FROM pg_catalog.unnest(q) AS f LIMIT 1))),
                'encode the query and the documents with the same encoder'::text)
            ELSE (SELECT OPERATOR(pg_catalog.-) pg_catalog.sum(
                        (SELECT pg_catalog.min(qt OPERATOR(@extschema:vector@.<#>) dt)
                         FROM pg_catalog.unnest(d) AS dt))
                  FROM pg_catalog.unnest(q) AS qt)
        END
        FROM (SELECT 1) AS one
        LEFT JOIN (
            SELECT u.side, u.o, u.t
            FROM (SELECT 1 AS s, 'query'::text AS side, x.o, x.t
                  FROM pg_catalog.unnest(q) WITH ORDINALITY AS x(t, o)
                  UNION ALL
                  SELECT 2, 'document'::text, y.o, y.t
                  FROM pg_catalog.unnest(d) WITH ORDINALITY AS y(t, o)) AS u
            WHERE u.t IS NULL
               OR @extschema:vector@.vector_dims(u.t) OPERATOR(pg_catalog.<>)
                  @extschema:vector@.vector_dims((SELECT f FROM pg_catalog.unnest(q) AS f LIMIT 1))
            ORDER BY u.s, u.o LIMIT 1
        ) AS bad ON true
    );

COMMENT ON FUNCTION pgembed.maxsim(@extschema:vector@.halfvec[], @extschema:vector@.halfvec[]) IS
    'MaxSim (Chamfer similarity): sum over query tokens of the max inner product with any document token. Empty query, a NULL token or tokens of different dimensions: error; empty document: NULL; NULL in: NULL out.';

-- The vector[] overload repeats the halfvec[] one: SQL-standard bodies are bound to their
-- argument types when created, so each type needs its own.
CREATE OR REPLACE FUNCTION pgembed.maxsim(
    q @extschema:vector@.vector[], d @extschema:vector@.vector[]) RETURNS double precision
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER COST 1000
    SET search_path = pg_catalog, pg_temp
    RETURN (
        SELECT CASE
            WHEN pg_catalog.cardinality(q) OPERATOR(pg_catalog.=) 0 THEN pgembed.fail('22023'::text,
                'pgembed.maxsim: the query has no token vectors'::text,
                'MaxSim needs at least one query token vector'::text)
            WHEN bad.side IS NOT NULL AND bad.t IS NULL THEN pgembed.fail('22004'::text,
                pg_catalog.format('pgembed.maxsim: %s token vector %s is NULL'::text, bad.side, bad.o),
                'remove the NULL elements from the token arrays'::text)
            WHEN bad.side IS NOT NULL THEN pgembed.fail('22000'::text,
                pg_catalog.format('pgembed.maxsim: %s token vector %s has %s dimensions; query token vector 1 has %s'::text,
                                  bad.side, bad.o, @extschema:vector@.vector_dims(bad.t),
                                  @extschema:vector@.vector_dims((SELECT f FROM pg_catalog.unnest(q) AS f LIMIT 1))),
                'encode the query and the documents with the same encoder'::text)
            ELSE (SELECT OPERATOR(pg_catalog.-) pg_catalog.sum(
                        (SELECT pg_catalog.min(qt OPERATOR(@extschema:vector@.<#>) dt)
                         FROM pg_catalog.unnest(d) AS dt))
                  FROM pg_catalog.unnest(q) AS qt)
        END
        FROM (SELECT 1) AS one
        LEFT JOIN (
            SELECT u.side, u.o, u.t
            FROM (SELECT 1 AS s, 'query'::text AS side, x.o, x.t
                  FROM pg_catalog.unnest(q) WITH ORDINALITY AS x(t, o)
                  UNION ALL
                  SELECT 2, 'document'::text, y.o, y.t
                  FROM pg_catalog.unnest(d) WITH ORDINALITY AS y(t, o)) AS u
            WHERE u.t IS NULL
               OR @extschema:vector@.vector_dims(u.t) OPERATOR(pg_catalog.<>)
                  @extschema:vector@.vector_dims((SELECT f FROM pg_catalog.unnest(q) AS f LIMIT 1))
            ORDER BY u.s, u.o LIMIT 1
        ) AS bad ON true
    );

COMMENT ON FUNCTION pgembed.maxsim(@extschema:vector@.vector[], @extschema:vector@.vector[]) IS
    'MaxSim (Chamfer similarity) of vector[] token sets: sum over query tokens of the max inner product with any document token. Empty query, a NULL token or tokens of different dimensions: error; empty document: NULL; NULL in: NULL out.';

-- --- FDE ---------------------------------------------------------------------------------

-- AMS sketch as R*d_proj dense vectors: vector r*d_proj + t holds ams_sign[r, j] where
-- ams_index[r, j] = t, else 0, so projecting a block is d_proj inner products.
CREATE OR REPLACE FUNCTION pgembed.ams_vectors(
    ams_index integer[], ams_sign real[], num_repetitions integer, projection_dimension integer)
    RETURNS @extschema:vector@.vector[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    RETURN (
        SELECT pg_catalog.array_agg(s.v ORDER BY s.rt)
        FROM (
            SELECT r.r * projection_dimension + t.t AS rt,
                   pg_catalog.array_agg(CASE WHEN ams_index[r.r * dd.d + j.j + 1] = t.t
                                             THEN ams_sign[r.r * dd.d + j.j + 1] ELSE 0::real END
                                        ORDER BY j.j)::@extschema:vector@.vector AS v
            FROM (SELECT pg_catalog.cardinality(ams_index) / num_repetitions AS d) AS dd,
                 pg_catalog.generate_series(0, num_repetitions - 1) AS r(r),
                 pg_catalog.generate_series(0, projection_dimension - 1) AS t(t),
                 pg_catalog.generate_series(0, dd.d - 1) AS j(j)
            GROUP BY r.r, t.t
        ) AS s
    );

COMMENT ON FUNCTION pgembed.ams_vectors(integer[], real[], integer, integer) IS
    'The AMS sketch of an FDE config as dense vectors (index r*d_proj + t, 0-based): the generated column pgembed.fde_configs.ams_vectors.';

CREATE OR REPLACE FUNCTION pgembed.fde_query(config integer, q @extschema:vector@.vector[])
    RETURNS @extschema:vector@.vector
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cfg record;
    nb integer;
    result @extschema:vector@.vector;
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
    IF cfg.projection <> 'identity'::text AND cfg.ams IS NULL THEN
        RAISE EXCEPTION 'pgembed: FDE config % has no AMS sketch', config
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM pgembed.check_tokens(q, cfg.d, 'query'::text);
    nb := 1 << cfg.k;

    -- Ordinals (bigint) are turned into integers once, so all arithmetic below is
    -- integer op integer.
    WITH tok AS (
        SELECT u.t, u.i FROM pg_catalog.unnest(q) WITH ORDINALITY AS u(t, i)
    ), sv AS (
        SELECT s.v, (s.n - 1::bigint)::integer AS n
        FROM pg_catalog.unnest(cfg.sv) WITH ORDINALITY AS s(v, n)
    ), bits AS (
        -- sign bit b_j of <token, simhash[r, :, j]>; <#> is the negated inner product
        SELECT tok.i, sv.n / cfg.k AS r, sv.n % cfg.k AS j,
               ((tok.t OPERATOR(@extschema:vector@.<#>) sv.v) < 0::double precision)::integer AS b
        FROM tok CROSS JOIN sv
    ), part AS (
        -- Gray-code decoding: c_j = b_0 xor ... xor b_j, partition = sum c_j 2^(k-1-j)
        SELECT x.i, x.r, pg_catalog.bit_or((x.c % 2::bigint)::integer << (cfg.k - 1 - x.j)) AS p
        FROM (SELECT bits.i, bits.r, bits.j,
                     pg_catalog.sum(bits.b) OVER (PARTITION BY bits.i, bits.r ORDER BY bits.j) AS c
              FROM bits) AS x
        GROUP BY x.i, x.r
    ), blk AS (
        -- queries SUM their tokens per (repetition, partition); k = 0: all in partition 0
        SELECT rr.r, coalesce(part.p, 0) AS p, @extschema:vector@.sum(tok.t) AS v
        FROM tok CROSS JOIN pg_catalog.generate_series(0, cfg.r - 1) AS rr(r)
        LEFT JOIN part ON part.i = tok.i AND part.r = rr.r
        GROUP BY rr.r, coalesce(part.p, 0)
    ), ams AS (
        SELECT a.v, (a.n - 1::bigint)::integer AS n
        FROM pg_catalog.unnest(cfg.ams) WITH ORDINALITY AS a(v, n)
    ), val AS (
        SELECT (blk.r * nb + blk.p) * cfg.dp + ams.n % cfg.dp AS pos,
               OPERATOR(pg_catalog.-) (blk.v OPERATOR(@extschema:vector@.<#>) ams.v) AS x
        FROM blk JOIN ams ON ams.n / cfg.dp = blk.r
        UNION ALL
        SELECT (blk.r * nb + blk.p) * cfg.dp + (e.o - 1::bigint)::integer AS pos,
               e.x::double precision
        FROM blk CROSS JOIN pg_catalog.unnest(blk.v::real[]) WITH ORDINALITY AS e(x, o)
        WHERE cfg.ams IS NULL
    ), fin AS (
        -- optional final count sketch: out[final_index[i]] += final_sign[i] * fde[i]
        SELECT CASE WHEN cfg.fi IS NULL THEN val.pos ELSE cfg.fi[val.pos + 1] END AS pos,
               pg_catalog.sum(CASE WHEN cfg.fi IS NULL THEN val.x
                                   ELSE cfg.fs[val.pos + 1]::double precision * val.x END) AS x
        FROM val GROUP BY 1
    )
    SELECT pg_catalog.array_agg(coalesce(fin.x, 0::double precision) ORDER BY g.g)::real[]::@extschema:vector@.vector
      INTO result
      FROM pg_catalog.generate_series(0, cfg.dout - 1) AS g(g) LEFT JOIN fin ON fin.pos = g.g;
    RETURN result;
END
$fn$;

COMMENT ON FUNCTION pgembed.fde_query(integer, @extschema:vector@.vector[]) IS
    'Query FDE (MUVERA) of token vectors q under FDE config `config`, from the stored matrices: SimHash Gray-code partitions, tokens SUMmed per block (never filled), AMS projection, optional final count sketch. Equals Python''s FDEEncoder.encode_query up to float rounding.';

CREATE OR REPLACE FUNCTION pgembed.fde_query(collection text, q @extschema:vector@.vector[])
    RETURNS @extschema:vector@.vector
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c record;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'fde'::text);
    IF c.fde_config IS NULL THEN
        RAISE EXCEPTION 'pgembed: collection % names no FDE config', pg_catalog.quote_literal(collection)
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN pgembed.fde_query(c.fde_config, q);
END
$fn$;

COMMENT ON FUNCTION pgembed.fde_query(text, @extschema:vector@.vector[]) IS
    'Query FDE of token vectors q under the FDE config of collection `collection` (see fde_query(integer, vector[])).';

-- --- residual binary codes ---------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgembed.residual_levels(q @extschema:vector@.vector, bits integer,
                                                   OUT codes bit varying[], OUT scales double precision[])
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    x double precision[] := q::real[]::double precision[];
    s double precision;
    code bit varying;
BEGIN
    PERFORM pgembed.check_range('bits'::text, bits, 1, 16);
    codes := '{}';
    scales := '{}';
    FOR lvl IN 1..bits LOOP
        -- like pgembed.vectors.binary.residual_encode: scale = mean |residual| rounded to
        -- float32, bit = residual > 0, residual -= scale * sign
        SELECT pg_catalog.avg(pg_catalog.abs(u.v))::real::double precision,
               pg_catalog.string_agg(CASE WHEN u.v > 0::double precision THEN '1'::text ELSE '0'::text END,
                                     ''::text ORDER BY u.o)::bit varying
          INTO s, code
          FROM pg_catalog.unnest(x) WITH ORDINALITY AS u(v, o);
        codes := pg_catalog.array_append(codes, code);
        scales := pg_catalog.array_append(scales, s);
        x := ARRAY(SELECT u.v - CASE WHEN u.v > 0::double precision THEN s ELSE OPERATOR(pg_catalog.-) s END
                   FROM pg_catalog.unnest(x) WITH ORDINALITY AS u(v, o) ORDER BY u.o);
    END LOOP;
END
$fn$;

COMMENT ON FUNCTION pgembed.residual_levels(@extschema:vector@.vector, integer) IS
    'The b-level residual sign code of q (levels in order, as pgembed.vectors.binary.residual_encode) and the scale of each level.';

-- <~> is pgvector's Hamming distance on (bit, bit): both sides are cast to bit (no type
-- modifier, so no length change) to match it exactly.
CREATE OR REPLACE FUNCTION pgembed.residual_similarity(
    codes bit varying[], scales double precision[], doc bit varying)
    RETURNS double precision
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    RETURN (
        SELECT pg_catalog.sum(scales[i] * scales[j]
                   * (pg_catalog.length(codes[i])::double precision
                      - 2::double precision * (codes[i]::pg_catalog."bit" OPERATOR(@extschema:vector@.<~>)
                          pg_catalog.substring(doc, (j - 1) * pg_catalog.length(codes[i]) + 1,
                                               pg_catalog.length(codes[i]))::pg_catalog."bit")))
        FROM pg_catalog.generate_subscripts(codes, 1) AS i,
             pg_catalog.generate_subscripts(codes, 1) AS j
    );

COMMENT ON FUNCTION pgembed.residual_similarity(bit varying[], double precision[], bit varying) IS
    'Level-weighted symmetric Hamming score of a stored b-level code `doc` (levels concatenated) against query levels: sum over i, j of s_i s_j (d - 2 hamming(q_i, doc_j)), the inner product of the reconstructions with the query''s scales standing in for the unstored document scales. Higher is closer.';

-- --- searches ----------------------------------------------------------------------------

-- The three single-vector searches share their query preparation (pgembed.prepare_query)
-- and their distance (pgembed.distance_sql). Each builds one statement, passes the query
-- once as $1, of type vector, and casts it inside the statement to the column's type
-- ($1::halfvec rounds exactly as pgembed.to_halfvec's cast, which prepare_query has already
-- checked). The cast folds at plan time, so the index expressions still match.

-- A cosine query must not be all zeros, nor become all zeros as halfvec (values below
-- halfvec's smallest, about 6e-8): either would give NaN scores.
CREATE OR REPLACE FUNCTION pgembed.prepare_query(
    single jsonb, q @extschema:vector@.vector, k integer)
    RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    qh @extschema:vector@.halfvec;
BEGIN
    PERFORM pgembed.check_vector(q, (single ->> 'dim'::text)::integer, 'query vector'::text);
    PERFORM pgembed.check_range('k'::text, k, 1, 100000);
    IF single ->> 'type'::text = 'halfvec'::text THEN
        qh := pgembed.to_halfvec(q, 'query vector'::text);
    ELSIF single ->> 'type'::text IS DISTINCT FROM 'vector'::text THEN
        RAISE EXCEPTION 'pgembed: the collection stores its single vectors as %; expected vector or halfvec',
            coalesce(pg_catalog.quote_literal(single ->> 'type'::text), 'NULL'::text)
            USING ERRCODE = 'feature_not_supported';
    END IF;
    -- No "distance" (a row written by hand): cosine, as in pgembed.distance_sql.
    IF coalesce(single ->> 'distance'::text, 'cosine'::text) = 'cosine'::text THEN
        PERFORM pgembed.check_cosine_query(q, qh);
    END IF;
    RETURN pg_catalog.format('%I.%I', pgembed.vector_schema(), single ->> 'type'::text);
END
$fn$;

COMMENT ON FUNCTION pgembed.prepare_query(jsonb, @extschema:vector@.vector, integer) IS
    'Checks a search''s query vector q against a collection''s single-vector spec (non-NULL, its dimensions, fits halfvec when stored as halfvec, not all zeros for cosine) and k (1..100000); returns the column''s type, qualified, as SQL text, for the search''s statement to cast $1 to.';

CREATE OR REPLACE FUNCTION pgembed.distance_sql(distance text, OUT op text, OUT score text)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- score is a prefix, applied to a parenthesized distance: `%s(e %s q)`.
    CASE coalesce(distance, 'cosine'::text)
        WHEN 'ip'::text THEN
            op := pg_catalog.format('OPERATOR(%I.<#>)', pgembed.vector_schema());
            score := 'OPERATOR(pg_catalog.-) '::text;
        WHEN 'cosine'::text THEN
            op := pg_catalog.format('OPERATOR(%I.<=>)', pgembed.vector_schema());
            score := '1::double precision OPERATOR(pg_catalog.-) '::text;
        ELSE
            RAISE EXCEPTION 'pgembed: distance % is not supported; use cosine or ip',
                pg_catalog.quote_literal(distance)
                USING ERRCODE = 'feature_not_supported';
    END CASE;
END
$fn$;

COMMENT ON FUNCTION pgembed.distance_sql(text) IS
    'SQL text for a search statement (format %s) of a collection''s distance (NULL: cosine): op, the qualified pgvector distance operator (ip: <#>, cosine: <=>), and score, a prefix that turns a parenthesized distance into a score, higher is closer (ip: the inner product, cosine: 1 - the cosine distance).';

-- --- recall targets (0.5.0) ----------------------------------------------------------------

-- The four dense searches and search_hybrid take target_recall; 0.4.0's signatures go
-- first, so that a call without it resolves to one function only.
DROP FUNCTION IF EXISTS pgembed.search_hybrid(text, text, @extschema:vector@.vector, integer, text, text, integer, double precision, double precision, double precision, integer, double precision, double precision, integer);
DROP FUNCTION IF EXISTS pgembed.search_hybrid(text, text, @extschema:vector@.vector[], integer, text, text, integer, double precision, double precision, double precision, integer, double precision, double precision, integer);
DROP FUNCTION IF EXISTS pgembed.search_knn(text, @extschema:vector@.vector, integer, integer, text);
DROP FUNCTION IF EXISTS pgembed.search_funnel(text, @extschema:vector@.vector, integer, integer, integer, integer, text);
DROP FUNCTION IF EXISTS pgembed.search_binary(text, @extschema:vector@.vector, integer, integer, integer, integer, text, integer);
DROP FUNCTION IF EXISTS pgembed.search_multivector(text, @extschema:vector@.vector[], integer, integer, integer, integer, text);

-- The cheapest calibrated setting (least median ms per query; at equal time the lower
-- recall, which along a chain of growing settings is the one doing less work: calibration
-- makes times non-decreasing along each chain, so noise yields ties there) whose recall
-- meets the target: its recall_low, the one-sided 95% lower bound over the
-- calibration's queries, so that queries calibration never saw meet it too. `fixed` holds
-- the options the caller gave explicitly (a JSON null: not given): only settings that agree
-- with them count. A funnel setting on a prefix that calibration found weak
-- (pgembed.prefix_quality) comes last, and is picked (with a WARNING) only when no other
-- setting meets the target, or when the caller fixed that prefix. No calibration of the
-- strategy: NULL, with a WARNING (the search uses its defaults). A target no setting
-- meets: an error naming the best measured. (Written with few distinct functions and
-- operators: tests/sql/test_capture.py plants overloads of each.)
CREATE OR REPLACE FUNCTION pgembed.calibrated_setting(
    collection text, strategy text, target_recall double precision, fixed jsonb DEFAULT '{}')
    RETURNS jsonb
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
    best double precision;
    found_k integer;
    chosen jsonb;
    weak boolean;
    given jsonb := coalesce(fixed, '{}'::jsonb);
    own_prefix boolean := (coalesce(fixed, '{}'::jsonb) ->> 'prefix'::text) IS NOT NULL;
BEGIN
    IF target_recall IS NULL OR NOT (target_recall > 0::double precision
                                     AND target_recall <= 1::double precision) THEN
        RAISE EXCEPTION 'pgembed: target_recall must be a number in (0, 1], got %',
            coalesce(target_recall::text, 'NULL'::text)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass the share of exact search''s top-k to keep, e.g. 0.95';
    END IF;
    IF NOT EXISTS (SELECT FROM pgembed.calibrations AS c
                   WHERE c.collection = calibrated_setting.collection
                     AND c.strategy = calibrated_setting.strategy) THEN
        RAISE WARNING 'pgembed: collection % has no calibration of strategy %; searching with its defaults',
            pg_catalog.quote_literal(collection), strategy
            USING HINT = pg_catalog.format('run pgembed calibrate %s', collection);
        RETURN NULL;
    END IF;
    SELECT x.setting, x.weak, pg_catalog.max(x.recall_low) OVER (), pg_catalog.max(x.k) OVER ()
      INTO chosen, weak, best, found_k
      FROM (SELECT c.setting, c.k, c.ms, c.recall, c.recall_low,
                   (NOT own_prefix AND EXISTS (
                        SELECT FROM pgembed.prefix_quality AS p
                        WHERE p.collection = calibrated_setting.collection AND p.weak
                          AND p.prefix::text = c.setting ->> 'prefix'::text)) AS weak
              FROM pgembed.calibrations AS c
             WHERE c.collection = calibrated_setting.collection
               AND c.strategy = calibrated_setting.strategy
               -- agrees with every option given (a JSON null was not given)
               AND NOT EXISTS (SELECT FROM pg_catalog.jsonb_each(given) AS g
                               WHERE g.value <> 'null'::jsonb
                                 AND (c.setting -> g.key) IS DISTINCT FROM g.value)) AS x
     ORDER BY x.recall_low >= target_recall DESC, x.weak, x.ms, x.recall, x.setting::text
     LIMIT 1;
    IF chosen IS NULL OR best < target_recall THEN
        RAISE EXCEPTION 'pgembed: no calibrated % setting of collection % reaches recall@% % (with %); the best measured reaches %',
            strategy, pg_catalog.quote_literal(collection), coalesce(found_k, 0), target_recall,
            CASE WHEN given = '{}'::jsonb THEN 'any options'::text ELSE given::text END,
            coalesce(pg_catalog.round(best::numeric, 4)::text, 'nothing'::text)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'lower target_recall, drop the explicit options, or calibrate a wider grid (pgembed calibrate)';
    END IF;
    IF weak THEN
        RAISE WARNING 'pgembed: target_recall % on collection % runs the funnel on prefix %, which calibration found weak (no stronger prefix meets the target)',
            target_recall, pg_catalog.quote_literal(collection), chosen ->> 'prefix'::text
            USING HINT = 'add larger Matryoshka prefixes, or search with knn';
    END IF;
    RETURN chosen;
END
$fn$;

COMMENT ON FUNCTION pgembed.calibrated_setting(text, text, double precision, jsonb) IS
    'The cheapest setting (jsonb of search options; least median ms per query) in pgembed.calibrations of a collection''s strategy whose recall_low (one-sided 95% lower bound of its recall@k against exact search) is at least target_recall (0 < target_recall <= 1), among those agreeing with `fixed` (the options given explicitly; null: not given); settings on a weak Matryoshka prefix (pgembed.prefix_quality) only when no other meets it, with a WARNING. NULL (with a WARNING) when the strategy has no calibration; an error when no setting meets the target.';

CREATE OR REPLACE FUNCTION pgembed.search_knn(
    collection text, q @extschema:vector@.vector, k integer DEFAULT 10,
    ef_search integer DEFAULT NULL, iterative_scan text DEFAULT NULL,
    target_recall double precision DEFAULT NULL)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c record;
    s jsonb;
    qt text;
    d record;
    saved text[];
    cal jsonb;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'single'::text);
    s := c.kinds -> 'single'::text;
    qt := pgembed.prepare_query(s, q, k);
    SELECT * INTO d FROM pgembed.distance_sql(s ->> 'distance'::text);
    IF target_recall IS NOT NULL THEN
        cal := pgembed.calibrated_setting(collection, 'knn'::text, target_recall,
                                          pg_catalog.format('{"ef_search": %s}', coalesce(ef_search::text, 'null'::text))::jsonb);
        -- HNSW returns at most ef_search rows: never below k.
        ef_search := coalesce(ef_search, least(1000, greatest(k, (cal ->> 'ef_search'::text)::integer)));
    END IF;
    -- Default breadth at least 100 (0.4.0: 40, which kept 0.955 of exact search's top-10).
    saved := pgembed.hnsw_begin(ef_search, iterative_scan, greatest(k, 100));
    RETURN QUERY EXECUTE pg_catalog.format(
        'SELECT c.id, %7$s(c.d) FROM ('
        'SELECT %1$I::bigint AS id, %2$I %6$s $1::%5$s AS d '
        'FROM %3$I.%4$I ORDER BY d LIMIT $2) AS c ORDER BY c.d, c.id',
        c.id_column, s ->> 'column'::text, c.table_schema, c.table_name, qt, d.op, d.score)
        USING q, k;
    PERFORM pgembed.hnsw_end(saved);
END
$fn$;

COMMENT ON FUNCTION pgembed.search_knn(text, @extschema:vector@.vector, integer, integer, text, double precision) IS
    'Top-k (id, score) of a collection''s single vectors by HNSW, best first. score: cosine similarity (1 - cosine distance) or inner product, per the collection''s distance. ef_search (default: max(session value, k, 100), at most 1000) and iterative_scan apply to this call only. target_recall (0 < t <= 1): ef_search from the cheapest calibrated setting meeting it (pgembed.calibrated_setting; an explicit ef_search wins; no calibration: the default).';

CREATE OR REPLACE FUNCTION pgembed.search_funnel(
    collection text, q @extschema:vector@.vector, k integer DEFAULT 10, prefix integer DEFAULT NULL,
    oversample integer DEFAULT NULL, ef_search integer DEFAULT NULL,
    iterative_scan text DEFAULT NULL, target_recall double precision DEFAULT NULL)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c record;
    s jsonb;
    qt text;
    d record;
    dims integer[];
    m integer;
    n integer;
    saved text[];
    cal jsonb;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'matryoshka'::text);
    s := c.kinds -> 'single'::text;
    qt := pgembed.prepare_query(s, q, k);
    SELECT * INTO d FROM pgembed.distance_sql(s ->> 'distance'::text);
    IF target_recall IS NOT NULL THEN
        -- the adaptive dimension: prefix and oversample from the calibration
        cal := pgembed.calibrated_setting(collection, 'funnel'::text, target_recall,
                                          pg_catalog.format('{"prefix": %s, "oversample": %s}',
                                              coalesce(prefix::text, 'null'::text),
                                              coalesce(oversample::text, 'null'::text))::jsonb);
        prefix := coalesce(prefix, (cal ->> 'prefix'::text)::integer);
        oversample := coalesce(oversample, (cal ->> 'oversample'::text)::integer);
    END IF;
    PERFORM pgembed.check_range('oversample'::text, coalesce(oversample, 16), 1, 1000);
    dims := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(c.kinds -> 'matryoshka'::text -> 'dims'::text)::integer
                  ORDER BY 1);
    m := coalesce(prefix, dims[1]);
    IF NOT m = ANY (dims) THEN
        RAISE EXCEPTION 'pgembed: collection % has no index on prefix %; its prefixes are %',
            pg_catalog.quote_literal(collection), m, pg_catalog.array_to_string(dims, ', '::text)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass one of the configured prefixes, or NULL for the smallest';
    END IF;
    -- Stage 1 is cosine on the prefix whatever the collection's distance; prepare_query has
    -- checked that q fits the column's type.
    IF (CASE WHEN s ->> 'type'::text = 'halfvec'::text
             THEN @extschema:vector@.l2_norm(@extschema:vector@.subvector(q::@extschema:vector@.halfvec, 1, m))
             ELSE @extschema:vector@.vector_norm(@extschema:vector@.subvector(q, 1, m)) END)
       = 0::double precision THEN
        RAISE EXCEPTION 'pgembed: the first % dimensions of the query vector are all zeros (as %); the prefix index''s cosine similarity is undefined',
            m, s ->> 'type'::text
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use search_knn for this query, or a larger prefix';
    END IF;
    n := k * coalesce(oversample, 16);
    saved := pgembed.hnsw_begin(ef_search, iterative_scan, n);
    -- Stage 1 uses the prefix index expression verbatim (cosine, like the index);
    -- stage 2 reranks the candidates on the full vector with the collection's distance.
    RETURN QUERY EXECUTE pg_catalog.format(
        'SELECT c.id, %8$s(c.e %9$s $1::%6$s) AS score FROM ('
        'SELECT %1$I::bigint AS id, %2$I AS e FROM %3$I.%4$I '
        'ORDER BY %7$I.subvector(%2$I, 1, %5$s)::%6$s(%5$s) OPERATOR(%7$I.<=>) '
        '%7$I.subvector($1::%6$s, 1, %5$s) LIMIT $3) AS c '
        'ORDER BY score DESC, c.id LIMIT $2',
        c.id_column, s ->> 'column'::text, c.table_schema, c.table_name, m, qt,
        pgembed.vector_schema(), d.score, d.op)
        USING q, k, n;
    PERFORM pgembed.hnsw_end(saved);
END
$fn$;

COMMENT ON FUNCTION pgembed.search_funnel(text, @extschema:vector@.vector, integer, integer, integer, integer, text, double precision) IS
    'Matryoshka funnel: HNSW on the prefix index subvector(embedding, 1, prefix) (cosine, k*oversample candidates; prefix defaults to the smallest configured, oversample to 16), then exact full-dimension rerank; top-k (id, score) best first, score as in search_knn. target_recall (0 < t <= 1): prefix and oversample from the cheapest calibrated setting meeting it, never a weak prefix unless given (pgembed.calibrated_setting; explicit options win; no calibration: the defaults).';

CREATE OR REPLACE FUNCTION pgembed.search_binary(
    collection text, q @extschema:vector@.vector, k integer DEFAULT 10, oversample integer DEFAULT NULL,
    rescore integer DEFAULT NULL, ef_search integer DEFAULT NULL,
    iterative_scan text DEFAULT NULL, probes integer DEFAULT NULL,
    target_recall double precision DEFAULT NULL)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c record;
    s jsonb;
    b jsonb;
    qt text;
    d record;
    bits integer;
    n integer;
    keep integer;
    codes bit varying[];  -- the query's residual levels, b > 1 only (else NULL)
    scales double precision[];
    saved text[];
    ivf boolean;
    cal jsonb;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'binary'::text);
    s := c.kinds -> 'single'::text;
    b := c.kinds -> 'binary'::text;
    qt := pgembed.prepare_query(s, q, k);
    SELECT * INTO d FROM pgembed.distance_sql(s ->> 'distance'::text);
    IF target_recall IS NOT NULL THEN
        cal := pgembed.calibrated_setting(collection, 'binary'::text, target_recall,
                                          pg_catalog.format('{"oversample": %s, "probes": %s}',
                                              coalesce(oversample::text, 'null'::text),
                                              coalesce(probes::text, 'null'::text))::jsonb);
        oversample := coalesce(oversample, (cal ->> 'oversample'::text)::integer);
        probes := coalesce(probes, (cal ->> 'probes'::text)::integer);
    END IF;
    PERFORM pgembed.check_range('oversample'::text, coalesce(oversample, 20), 1, 1000);
    n := k * coalesce(oversample, 20);
    bits := coalesce((b ->> 'bits'::text)::integer, 1);
    keep := coalesce(rescore, greatest(k, n / 2));
    IF bits > 1 THEN
        PERFORM pgembed.check_range('rescore'::text, keep, k, n);
    END IF;
    -- No "index" (a row written by hand): HNSW.
    ivf := coalesce(b ->> 'index'::text, 'hnsw'::text) = 'ivfflat'::text;
    IF ivf AND ef_search IS NOT NULL THEN
        RAISE EXCEPTION 'pgembed: ef_search applies to an HNSW index, but collection % has an IVFFlat binary index', pg_catalog.quote_literal(collection)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass probes instead';
    ELSIF NOT ivf AND probes IS NOT NULL THEN
        RAISE EXCEPTION 'pgembed: probes applies to an IVFFlat index, but collection % has an HNSW binary index', pg_catalog.quote_literal(collection)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass ef_search instead';
    END IF;
    IF ivf THEN
        saved := pgembed.ivfflat_begin(probes, iterative_scan, (b ->> 'lists'::text)::integer);
    ELSE
        saved := pgembed.hnsw_begin(ef_search, iterative_scan, n);
    END IF;
    IF bits > 1 THEN
        SELECT l.codes, l.scales INTO codes, scales FROM pgembed.residual_levels(q, bits) AS l;
    END IF;
    -- Stage 1: Hamming ANN (HNSW or IVFFlat) on binary_quantize(embedding)::bit(d), the
    -- index expression, k*oversample candidates.
    -- Stage 2 (b > 1 bits): keep the `rescore` best by residual_similarity.
    -- Stage 3: exact rerank on the full vector, top k.
    RETURN QUERY EXECUTE pg_catalog.format(
        'WITH cand AS MATERIALIZED ('
        'SELECT %1$I::bigint AS id, %2$I AS e%5$s FROM %3$I.%4$I '
        'ORDER BY %8$I.binary_quantize(%2$I)::bit(%6$s) OPERATOR(%8$I.<~>) '
        '%8$I.binary_quantize($1::%7$s) LIMIT $3), '
        'resc AS (SELECT cand.id, cand.e FROM cand%9$s) '
        'SELECT resc.id, %10$s(resc.e %11$s $1::%7$s) AS score FROM resc '
        'ORDER BY score DESC, resc.id LIMIT $2',
        c.id_column, s ->> 'column'::text, c.table_schema, c.table_name,
        CASE WHEN bits > 1 THEN pg_catalog.format(', %I AS b', b ->> 'column'::text) ELSE ''::text END,
        (s ->> 'dim'::text)::integer, qt, pgembed.vector_schema(),
        CASE WHEN bits > 1
             THEN ' ORDER BY pgembed.residual_similarity($4, $5, cand.b::bit varying) DESC, cand.id LIMIT $6'::text
             ELSE ''::text END,
        d.score, d.op)
        USING q, k, n, codes, scales, keep;
    IF ivf THEN
        PERFORM pgembed.ivfflat_end(saved);
    ELSE
        PERFORM pgembed.hnsw_end(saved);
    END IF;
END
$fn$;

COMMENT ON FUNCTION pgembed.search_binary(text, @extschema:vector@.vector, integer, integer, integer, integer, text, integer, double precision) IS
    'Binary search: Hamming ANN on binary_quantize(embedding) (k*oversample candidates, oversample default 20) through the collection''s HNSW index (ef_search) or IVFFlat index (probes, default ceil(sqrt(lists))); with b > 1 stored bits, keep `rescore` (default max(k, k*oversample/2)) by pgembed.residual_similarity of the query''s own residual levels; then exact full-dimension rerank. Top-k (id, score) best first, score as in search_knn. target_recall (0 < t <= 1): oversample (and probes) from the cheapest calibrated setting meeting it (pgembed.calibrated_setting; explicit options win; no calibration: the defaults).';

CREATE OR REPLACE FUNCTION pgembed.search_multivector(
    collection text, q @extschema:vector@.vector[], k integer DEFAULT 10, candidates integer DEFAULT NULL,
    oversample integer DEFAULT NULL, ef_search integer DEFAULT NULL,
    iterative_scan text DEFAULT NULL, target_recall double precision DEFAULT NULL)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c record;
    f jsonb;
    fq @extschema:vector@.vector;
    fqh @extschema:vector@.halfvec;
    qt @extschema:vector@.halfvec[];
    n integer;
    vs name := pgembed.vector_schema();
    saved text[];
    stmt text;
    cal jsonb;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'fde'::text);
    f := c.kinds -> 'fde'::text;
    PERFORM pgembed.check_range('k'::text, k, 1, 100000);
    IF target_recall IS NOT NULL THEN
        cal := pgembed.calibrated_setting(collection, 'multivector'::text, target_recall,
                                          pg_catalog.format('{"candidates": %s, "oversample": %s}',
                                              coalesce(candidates::text, 'null'::text),
                                              coalesce(oversample::text, 'null'::text))::jsonb);
        -- candidates are never fewer than k
        candidates := coalesce(candidates, greatest(k, (cal ->> 'candidates'::text)::integer));
        oversample := coalesce(oversample, (cal ->> 'oversample'::text)::integer);
    END IF;
    PERFORM pgembed.check_range('candidates'::text, coalesce(candidates, 300), k, 100000);
    PERFORM pgembed.check_range('oversample'::text, coalesce(oversample, 10), 1, 1000);
    PERFORM pgembed.check_tokens(q, (c.kinds -> 'multivector'::text ->> 'dim'::text)::integer, 'query'::text);
    IF c.fde_config IS NULL THEN
        RAISE EXCEPTION 'pgembed: collection % names no FDE config', pg_catalog.quote_literal(collection)
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- The token vectors are stored, and compared, as halfvec.
    qt := ARRAY(SELECT pgembed.to_halfvec(u.t, 'query token vector'::text)
                FROM pg_catalog.unnest(q) WITH ORDINALITY AS u(t, o) ORDER BY u.o);
    IF NOT EXISTS (SELECT FROM pg_catalog.unnest(qt) AS t
                   WHERE @extschema:vector@.l2_norm(t) > 0::double precision) THEN
        RAISE EXCEPTION 'pgembed: every token vector of the query is zero (as halfvec); MaxSim would score every row 0'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'encode the query with the collection''s encoder';
    END IF;
    fq := pgembed.fde_query(c.fde_config, q);
    fqh := pgembed.to_halfvec(fq, 'query FDE'::text);
    IF f ->> 'index'::text = 'bit'::text THEN
        -- Hamming on the bit index, then a float-FDE rescore to `candidates`: going from bit
        -- candidates straight to MaxSim costs recall (DESIGN.md, MUVERA FDE).
        n := coalesce(candidates, 300) * coalesce(oversample, 10);
        stmt := pg_catalog.format('WITH cand AS MATERIALIZED ('
                       'SELECT %1$I::bigint AS id, %2$I AS f, %5$I AS t FROM %3$I.%4$I '
                       'ORDER BY %7$I.binary_quantize(%2$I)::bit(%6$s) OPERATOR(%7$I.<~>) $5 LIMIT $6), '
                       'resc AS (SELECT cand.id, cand.t FROM cand '
                       'ORDER BY cand.f OPERATOR(%7$I.<#>) $3, cand.id LIMIT $4) '
                       'SELECT resc.id, pgembed.maxsim($1, resc.t) AS score FROM resc '
                       'ORDER BY score DESC NULLS LAST, resc.id LIMIT $2',
                       c.id_column, f ->> 'column'::text, c.table_schema, c.table_name,
                       c.kinds -> 'multivector'::text ->> 'column'::text,
                       (f ->> 'dim'::text)::integer, vs);
    ELSE
        n := coalesce(candidates, 300);
        stmt := pg_catalog.format('WITH cand AS MATERIALIZED ('
                       'SELECT %1$I::bigint AS id, %5$I AS t FROM %3$I.%4$I '
                       'ORDER BY %2$I OPERATOR(%6$I.<#>) $3 LIMIT $4) '
                       'SELECT cand.id, pgembed.maxsim($1, cand.t) AS score FROM cand '
                       'ORDER BY score DESC NULLS LAST, cand.id LIMIT $2',
                       c.id_column, f ->> 'column'::text, c.table_schema, c.table_name,
                       c.kinds -> 'multivector'::text ->> 'column'::text, vs);
    END IF;
    saved := pgembed.hnsw_begin(ef_search, iterative_scan, n);
    RETURN QUERY EXECUTE stmt
        USING qt, k, fqh, coalesce(candidates, 300),
              @extschema:vector@.binary_quantize(fqh), n;
    PERFORM pgembed.hnsw_end(saved);
END
$fn$;

COMMENT ON FUNCTION pgembed.search_multivector(text, @extschema:vector@.vector[], integer, integer, integer, integer, text, double precision) IS
    'Multi-vector search: query FDE (pgembed.fde_query), inner-product HNSW on the fde column (`candidates` rows, default 300; with a bit index: Hamming on binary_quantize(fde) for candidates*oversample rows, then a float-FDE rescore to `candidates`), then exact MaxSim on the token vectors. Top-k (id, score) best first, score = MaxSim. target_recall (0 < t <= 1): candidates from the cheapest calibrated setting meeting it (pgembed.calibrated_setting; explicit options win; no calibration: the defaults).';

-- --- lexical: exact Okapi BM25 and hybrid fusion --------------------------------------------
--
-- A collection with the lexical kind has a STORED generated column
--   lexemes tsvector GENERATED ALWAYS AS (to_tsvector('<config>'::regconfig, coalesce(text, '')))
-- with a GIN index, and a statistics table `<table>_lexical_stats` beside it (its name is in
-- pgembed.collections.kinds -> 'lexical' -> 'stats'): one row per lexeme (docs: how many rows
-- hold it, tokens: its total term frequency) and the row lexeme = '' with the number of rows
-- and their total length. A document's length is its number of positions (the tokens
-- to_tsvector kept), a term's frequency its number of positions in that document.
--
-- Statistics: maintained in the write transaction, by statement-level AFTER triggers with
-- transition tables (pgembed.lexical_stats_update), chosen by measurement on 100,000
-- documents of 20-80 words (2 cores, PostgreSQL 18):
--   computed at query time: N by count(*) 14-19 ms, the total length by a scan that unnests
--     every tsvector 2,000-3,000 ms, df of 5 lexemes by GIN bitmap counts 7-10 ms;
--   maintained: one primary-key lookup per query lexeme plus one, under 1 ms.
-- The triggers are transactional, so the statistics are exact under concurrent writers and
-- after a crash (an aborted or killed transaction leaves neither rows nor statistics).
-- Every statement that changes lexemes upserts the '' row first (ORDER BY lexeme), so
-- concurrent writers queue on it instead of deadlocking on lexeme rows; a statement that
-- changes no lexemes (an update of vectors only) touches no statistics. Lexemes whose
-- count falls to 0 keep their row (docs = 0), harmless to scoring.
--
-- Scoring (pgembed.search_bm25): Okapi BM25 as Lucene computes it (BM25Similarity, and bm25s's
-- method "lucene"): sum over the distinct lexemes of to_tsvector(config, query) of
--   ln(1 + (N - df + 0.5)/(df + 0.5)) * tf / (tf + k1 * (1 - b + b * dl / avgdl)),
-- without Okapi's constant factor (k1 + 1), which changes no ranking. Candidates are the rows whose
-- lexemes match the OR of those lexemes through the GIN index, all scored in one statement.
-- Per candidate, everything comes from ts_rank, in C, instead of unnesting the tsvector in
-- SQL (measured 100-150 ms against 20-30 ms for 2,500 candidates):
--   tf: ts_rank(lexemes, one lexeme) depends only on the lexeme's positions count (all at
--     weight D): 0.1 * sum_{j<=tf} 1/j^2 / 1.64493406685, strictly increasing in tf and
--     distinct as real for tf = 1..256 (tsvector keeps at most 256 positions per lexeme).
--     pgembed.bm25_tf_table() holds those values, computed by ts_rank itself, and tf is the
--     index of the candidate's value in it. A lexeme the candidate lacks ranks 0, turned
--     into NULL first: array_position(a, NULL) returns at once on an array without NULLs,
--     where looking 0 up compares all 256 entries (on 100,000 documents that lookup was
--     most of search_bm25's time, measured by benchmarks/hybrid.py);
--   document length: ts_rank(lexemes, q, 2) is ts_rank(lexemes, q, 0) divided by the
--     number of positions, so their ratio, rounded, is the length.
-- pgembed.lexical_stats_recompute(collection) computes the statistics from scratch, for
-- filling a new lexical column and for checking the maintained ones.

CREATE OR REPLACE FUNCTION pgembed.lexical_stats_update() RETURNS trigger
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    l jsonb;
    src text;
BEGIN
    SELECT c.kinds -> 'lexical'::text INTO l FROM pgembed.collections AS c
     WHERE c.table_schema = TG_TABLE_SCHEMA::text AND c.table_name = TG_TABLE_NAME::text;
    IF l IS NULL THEN
        RAISE EXCEPTION 'pgembed: table %.% has lexical statistics triggers but no collection with the lexical kind',
            pg_catalog.quote_ident(TG_TABLE_SCHEMA::text), pg_catalog.quote_ident(TG_TABLE_NAME::text)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'drop the triggers named *_lexical_* on that table, or register its collection again';
    END IF;
    IF TG_OP = 'TRUNCATE'::text THEN
        EXECUTE pg_catalog.format('DELETE FROM %I.%I', TG_TABLE_SCHEMA, l ->> 'stats'::text);
        RETURN NULL;
    END IF;
    src := CASE TG_OP
        WHEN 'INSERT'::text THEN pg_catalog.format('SELECT 1::bigint AS sign, r.%I AS v FROM new_rows AS r', l ->> 'column'::text)
        WHEN 'DELETE'::text THEN pg_catalog.format('SELECT -1::bigint AS sign, r.%I AS v FROM old_rows AS r', l ->> 'column'::text)
        ELSE pg_catalog.format('SELECT 1::bigint AS sign, r.%1$I AS v FROM new_rows AS r '
                               'UNION ALL SELECT -1::bigint, r.%1$I FROM old_rows AS r', l ->> 'column'::text)
    END;
    EXECUTE pg_catalog.format(
        'WITH src AS MATERIALIZED (%1$s), '
        'd AS MATERIALIZED (SELECT u.lexeme, s.sign AS docs, '
        's.sign * coalesce(pg_catalog.cardinality(u.positions), 1)::bigint AS tokens '
        'FROM src AS s, pg_catalog.unnest(s.v) AS u) '
        'INSERT INTO %2$I.%3$I AS st (lexeme, docs, tokens) '
        'SELECT x.lexeme, x.docs, x.tokens FROM ('
        'SELECT d.lexeme, pg_catalog.sum(d.docs)::bigint AS docs, pg_catalog.sum(d.tokens)::bigint AS tokens '
        'FROM d GROUP BY d.lexeme '
        'UNION ALL SELECT ''''::text, coalesce(pg_catalog.sum(src.sign), 0::numeric)::bigint, '
        '(SELECT coalesce(pg_catalog.sum(d.tokens), 0::numeric)::bigint FROM d) FROM src'
        ') AS x WHERE x.docs <> 0::bigint OR x.tokens <> 0::bigint '
        'ORDER BY x.lexeme COLLATE "C" '
        'ON CONFLICT (lexeme) DO UPDATE SET docs = st.docs + excluded.docs, '
        'tokens = st.tokens + excluded.tokens',
        src, TG_TABLE_SCHEMA, l ->> 'stats'::text);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION pgembed.lexical_stats_update() IS
    'Statement-level trigger of lexical collections: adds the documents and lexemes of the statement''s transition tables (new rows counted +1, old rows -1) to the collection''s statistics table (its row '''' holds the number of rows and their total length); TRUNCATE empties it.';

CREATE OR REPLACE FUNCTION pgembed.lexical_stats_recompute(collection text)
    RETURNS TABLE (lexeme text, docs bigint, tokens bigint)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c record;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'lexical'::text);
    RETURN QUERY EXECUTE pg_catalog.format(
        'WITH d AS MATERIALIZED (SELECT u.lexeme, '
        'coalesce(pg_catalog.cardinality(u.positions), 1)::bigint AS tf '
        'FROM %1$I.%2$I AS r, pg_catalog.unnest(r.%3$I) AS u) '
        'SELECT d.lexeme, pg_catalog.count(*), pg_catalog.sum(d.tf)::bigint FROM d GROUP BY d.lexeme '
        'UNION ALL SELECT ''''::text, (SELECT pg_catalog.count(*) FROM %1$I.%2$I), '
        'coalesce((SELECT pg_catalog.sum(d.tf) FROM d), 0::numeric)::bigint',
        c.table_schema, c.table_name, c.kinds -> 'lexical'::text ->> 'column'::text);
END
$fn$;

COMMENT ON FUNCTION pgembed.lexical_stats_recompute(text) IS
    'The lexical statistics of a collection computed from scratch from its rows: (lexeme, documents holding it, its total term frequency) and the row '''' with the number of rows and their total length. What the statistics table maintained by pgembed.lexical_stats_update must equal (bar lexemes at 0).';

CREATE OR REPLACE FUNCTION pgembed.bm25_tf_table() RETURNS real[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    RETURN (
        SELECT pg_catalog.array_agg(pg_catalog.ts_rank(
                   ('x:'::text ||
                    (SELECT pg_catalog.string_agg(j.j::text, ','::text ORDER BY j.j)
                     FROM pg_catalog.generate_series(1, n.n) AS j(j)))::pg_catalog.tsvector,
                   'x'::pg_catalog.tsquery) ORDER BY n.n)
        FROM pg_catalog.generate_series(1, 256) AS n(n)
    );

COMMENT ON FUNCTION pgembed.bm25_tf_table() IS
    'ts_rank(v, q) of a single-lexeme query q against a tsvector v holding that lexeme tf times (weight D), at index tf = 1..256: search_bm25 reads a term frequency back from ts_rank through it.';

CREATE OR REPLACE FUNCTION pgembed.check_real(name text, value double precision,
                                             low double precision, high double precision)
    RETURNS double precision
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF value IS NULL OR NOT (value >= low AND value <= high) THEN
        RAISE EXCEPTION 'pgembed: % must be a number in %..%, got %',
            name, low, high, coalesce(value::text, 'NULL'::text)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = pg_catalog.format('pass %s between %s and %s', name, low, high);
    END IF;
    RETURN value;
END
$fn$;

COMMENT ON FUNCTION pgembed.check_real(text, double precision, double precision, double precision) IS
    'Returns value when low <= value <= high (not NaN), else raises invalid_parameter_value naming the parameter.';

CREATE OR REPLACE FUNCTION pgembed.search_bm25(
    collection text, query text, k integer DEFAULT 10,
    k1 double precision DEFAULT 1.2, b double precision DEFAULT 0.75)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY INVOKER ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c record;
    l jsonb;
    cfg pg_catalog.regconfig;
    lex text[];
    dfs bigint[];
    n bigint;
    total bigint;
    idf double precision[];
    tq pg_catalog.tsquery;
    each pg_catalog.tsquery[];
    terms text;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'lexical'::text);
    l := c.kinds -> 'lexical'::text;
    PERFORM pgembed.check_range('k'::text, k, 1, 100000);
    PERFORM pgembed.check_real('k1'::text, k1, 0::double precision, 100::double precision);
    PERFORM pgembed.check_real('b'::text, b, 0::double precision, 1::double precision);
    IF query IS NULL THEN
        RAISE EXCEPTION 'pgembed: the query text is NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    cfg := (l ->> 'config'::text)::pg_catalog.regconfig;
    SELECT pg_catalog.array_agg(u.lexeme ORDER BY u.lexeme COLLATE "C") INTO lex
      FROM pg_catalog.unnest(pg_catalog.to_tsvector(cfg, query)) AS u;
    IF lex IS NULL THEN
        RAISE EXCEPTION 'pgembed: the query % has no searchable words under text search configuration %: it is empty or holds only stop words',
            pg_catalog.quote_literal(pg_catalog.left(query, 80)), l ->> 'config'::text
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'search with words that carry meaning, or use a dense strategy';
    END IF;
    EXECUTE pg_catalog.format('SELECT s.docs, s.tokens FROM %I.%I AS s WHERE s.lexeme = ''''::text',
                              c.table_schema, l ->> 'stats'::text) INTO n, total;
    IF n IS NULL OR n <= 0::bigint OR total <= 0::bigint THEN
        RETURN;  -- no rows, or none with a lexeme: nothing matches
    END IF;
    EXECUTE pg_catalog.format(
        'SELECT pg_catalog.array_agg(coalesce(s.docs, 0::bigint) ORDER BY q.o) '
        'FROM pg_catalog.unnest($1) WITH ORDINALITY AS q(l, o) LEFT JOIN %I.%I AS s ON s.lexeme = q.l',
        c.table_schema, l ->> 'stats'::text) INTO dfs USING lex;
    idf := ARRAY(SELECT pg_catalog.ln(1::double precision
                       + ((n::double precision - d.df::double precision) + 0.5::double precision)
                         / (d.df::double precision + 0.5::double precision))
                 FROM pg_catalog.unnest(dfs) WITH ORDINALITY AS d(df, o) ORDER BY d.o);
    -- One tsquery operand per lexeme, spelled as tsvector's output spells it (quoted,
    -- quotes and backslashes doubled), which tsquery's input reads back verbatim.
    each := ARRAY(SELECT pg_catalog.array_to_tsvector(ARRAY[x.l])::text::pg_catalog.tsquery
                  FROM pg_catalog.unnest(lex) WITH ORDINALITY AS x(l, o) ORDER BY x.o);
    SELECT pg_catalog.string_agg(pg_catalog.array_to_tsvector(ARRAY[x.l])::text, ' | '::text ORDER BY x.o)::pg_catalog.tsquery
      INTO tq FROM pg_catalog.unnest(lex) WITH ORDINALITY AS x(l, o);
    -- sum over query lexemes i of idf_i * tf_i / (tf_i + k1 * (1 - b + b * dl / avgdl)); a
    -- lexeme the row lacks adds 0 (spelled out: with k1 = 0 its term would be 0 / 0)
    SELECT pg_catalog.string_agg(pg_catalog.format(
               'CASE WHEN c.tf[%1$s] > 0::double precision '
               'THEN ($4[%1$s] * c.tf[%1$s]) / (c.tf[%1$s] + c.norm) '
               'ELSE 0::double precision END', i.i), ' + '::text)
      INTO terms FROM pg_catalog.generate_series(1, pg_catalog.cardinality(lex)) AS i(i);
    RETURN QUERY EXECUTE pg_catalog.format(
        'SELECT c.id, %5$s AS score FROM ('
        'SELECT r.%1$I::bigint AS id, '
        'ARRAY[%6$s]::double precision[] AS tf, '
        '$5 * ((1::double precision - $6) + $6 * (pg_catalog.round('
        'pg_catalog.ts_rank(r.%4$I, $1, 0)::double precision / '
        'pg_catalog.ts_rank(r.%4$I, $1, 2)::double precision) / $7)) AS norm '
        'FROM %2$I.%3$I AS r WHERE r.%4$I @@ $1 OFFSET 0) AS c '
        'ORDER BY score DESC, c.id LIMIT $2',
        c.id_column, c.table_schema, c.table_name, l ->> 'column'::text, terms,
        (SELECT pg_catalog.string_agg(pg_catalog.format(
             'coalesce(pg_catalog.array_position($8, NULLIF(pg_catalog.ts_rank(r.%1$I, $3[%2$s]), 0::real)), 0)',
             l ->> 'column'::text, i.i), ', '::text ORDER BY i.i)
         FROM pg_catalog.generate_series(1, pg_catalog.cardinality(lex)) AS i(i)))
        USING tq, k, each, idf, k1, b, total::double precision / n::double precision,
              pgembed.bm25_tf_table();
END
$fn$;

COMMENT ON FUNCTION pgembed.search_bm25(text, text, integer, double precision, double precision) IS
    'Okapi BM25 top-k (id, score) of a lexical collection, best first, as Lucene scores it: sum over the distinct lexemes of to_tsvector(config, query) of ln(1 + (N - df + 0.5)/(df + 0.5)) * tf / (tf + k1 * (1 - b + b * dl / avgdl)), statistics from the exact statistics table, candidates from the GIN index (any lexeme); k1 in 0..100 (default 1.2), b in 0..1 (default 0.75).';

CREATE OR REPLACE FUNCTION pgembed.fuse(
    lexical_ids bigint[], lexical_scores double precision[],
    dense_ids bigint[], dense_scores double precision[],
    k integer DEFAULT 10, fusion text DEFAULT 'rrf', rrf_k integer DEFAULT 60,
    bm25_weight double precision DEFAULT 1, dense_weight double precision DEFAULT 1,
    alpha double precision DEFAULT 0.5)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY INVOKER ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pgembed.check_range('k'::text, k, 1, 100000);
    IF fusion IS NULL OR fusion <> ALL (ARRAY['rrf', 'convex']::text[]) THEN
        RAISE EXCEPTION 'pgembed: fusion must be rrf or convex, got %',
            coalesce(pg_catalog.quote_literal(fusion), 'NULL'::text)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.cardinality(coalesce(lexical_ids, '{}'::bigint[])) <> pg_catalog.cardinality(coalesce(lexical_scores, '{}'::double precision[]))
       OR pg_catalog.cardinality(coalesce(dense_ids, '{}'::bigint[])) <> pg_catalog.cardinality(coalesce(dense_scores, '{}'::double precision[])) THEN
        RAISE EXCEPTION 'pgembed: each side needs as many scores as ids'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF fusion = 'rrf'::text THEN
        PERFORM pgembed.check_range('rrf_k'::text, rrf_k, 0, 100000);
        PERFORM pgembed.check_real('bm25_weight'::text, bm25_weight, 0::double precision, 1000::double precision);
        PERFORM pgembed.check_real('dense_weight'::text, dense_weight, 0::double precision, 1000::double precision);
        IF bm25_weight = 0::double precision AND dense_weight = 0::double precision THEN
            RAISE EXCEPTION 'pgembed: bm25_weight and dense_weight are both 0, so every score would be 0'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'give at least one side a positive weight';
        END IF;
        -- sum over sides of weight / (rrf_k + rank), rank from 1 in each side's order
        RETURN QUERY
        SELECT f.id, pg_catalog.sum(f.s) AS score FROM (
            SELECT x.i AS id, bm25_weight / (rrf_k::double precision + x.o::double precision) AS s
            FROM pg_catalog.unnest(lexical_ids) WITH ORDINALITY AS x(i, o)
            UNION ALL
            SELECT y.i, dense_weight / (rrf_k::double precision + y.o::double precision)
            FROM pg_catalog.unnest(dense_ids) WITH ORDINALITY AS y(i, o)
        ) AS f GROUP BY f.id ORDER BY score DESC, f.id LIMIT k;
    ELSE
        PERFORM pgembed.check_real('alpha'::text, alpha, 0::double precision, 1::double precision);
        -- min-max normalised per side (a side whose scores are all equal: 1), then
        -- alpha * dense + (1 - alpha) * bm25; a row missing from a side gets 0 there
        RETURN QUERY
        SELECT f.id, pg_catalog.sum(f.s) AS score FROM (
            SELECT x.i AS id, (1::double precision - alpha) * CASE WHEN m.hi > m.lo
                   THEN (x.s - m.lo) / (m.hi - m.lo) ELSE 1::double precision END AS s
            FROM ROWS FROM (pg_catalog.unnest(lexical_ids), pg_catalog.unnest(lexical_scores)) AS x(i, s),
                 (SELECT pg_catalog.min(z) AS lo, pg_catalog.max(z) AS hi
                  FROM pg_catalog.unnest(lexical_scores) AS z) AS m
            UNION ALL
            SELECT y.i, alpha * CASE WHEN m.hi > m.lo
                   THEN (y.s - m.lo) / (m.hi - m.lo) ELSE 1::double precision END
            FROM ROWS FROM (pg_catalog.unnest(dense_ids), pg_catalog.unnest(dense_scores)) AS y(i, s),
                 (SELECT pg_catalog.min(z) AS lo, pg_catalog.max(z) AS hi
                  FROM pg_catalog.unnest(dense_scores) AS z) AS m
        ) AS f GROUP BY f.id ORDER BY score DESC, f.id LIMIT k;
    END IF;
END
$fn$;

COMMENT ON FUNCTION pgembed.fuse(bigint[], double precision[], bigint[], double precision[], integer, text, integer, double precision, double precision, double precision) IS
    'Fuses two ranked lists (ids best first, with their scores) into the top k: rrf, sum of weight / (rrf_k + rank) over the lists holding a row (bm25_weight, dense_weight in 0..1000, rrf_k 0..100000); convex, alpha * dense + (1 - alpha) * bm25 of the min-max normalised scores (alpha in 0..1; a list of equal scores normalises to 1; a missing row counts 0). Ties by id.';

CREATE OR REPLACE FUNCTION pgembed.search_hybrid(
    collection text, query text, q @extschema:vector@.vector, k integer DEFAULT 10,
    dense text DEFAULT 'knn', fusion text DEFAULT 'rrf', rrf_k integer DEFAULT 60,
    bm25_weight double precision DEFAULT 1, dense_weight double precision DEFAULT 1,
    alpha double precision DEFAULT 0.5, depth integer DEFAULT NULL,
    k1 double precision DEFAULT 1.2, b double precision DEFAULT 0.75,
    ef_search integer DEFAULT NULL, target_recall double precision DEFAULT NULL)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    kind text;
    n integer;
    li bigint[];
    ls double precision[];
    di bigint[];
    ds double precision[];
BEGIN
    kind := CASE dense WHEN 'knn'::text THEN 'single'::text WHEN 'funnel'::text THEN 'matryoshka'::text
                       WHEN 'binary'::text THEN 'binary'::text END;
    IF kind IS NULL THEN
        RAISE EXCEPTION 'pgembed: dense must be knn, funnel or binary with a query vector, got %',
            coalesce(pg_catalog.quote_literal(dense), 'NULL'::text)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'for multivector, pass the query''s token vectors (vector[]) instead';
    END IF;
    PERFORM pgembed.collection_info(collection, 'lexical'::text);
    PERFORM pgembed.collection_info(collection, kind);
    PERFORM pgembed.check_range('k'::text, k, 1, 100000);
    n := pgembed.check_range('depth'::text, coalesce(depth, greatest(k, 100)), k, 100000);
    -- fusion arguments first, so that a bad one fails before any search runs
    PERFORM * FROM pgembed.fuse('{}'::bigint[], '{}'::double precision[], '{}'::bigint[],
                                '{}'::double precision[], k, fusion, rrf_k, bm25_weight,
                                dense_weight, alpha);
    SELECT pg_catalog.array_agg(s.id ORDER BY s.score DESC, s.id), pg_catalog.array_agg(s.score ORDER BY s.score DESC, s.id)
      INTO li, ls FROM pgembed.search_bm25(collection, query, n, k1, b) AS s;
    IF dense = 'knn'::text THEN
        SELECT pg_catalog.array_agg(s.id ORDER BY s.score DESC, s.id), pg_catalog.array_agg(s.score ORDER BY s.score DESC, s.id)
          INTO di, ds FROM pgembed.search_knn(collection, q, n, ef_search, NULL::text, target_recall) AS s;
    ELSIF dense = 'funnel'::text THEN
        SELECT pg_catalog.array_agg(s.id ORDER BY s.score DESC, s.id), pg_catalog.array_agg(s.score ORDER BY s.score DESC, s.id)
          INTO di, ds FROM pgembed.search_funnel(collection, q, n, NULL::integer,
                                            CASE WHEN target_recall IS NULL THEN 8 END, ef_search,
                                            NULL::text, target_recall) AS s;
    ELSE
        SELECT pg_catalog.array_agg(s.id ORDER BY s.score DESC, s.id), pg_catalog.array_agg(s.score ORDER BY s.score DESC, s.id)
          INTO di, ds FROM pgembed.search_binary(collection, q, n, CASE WHEN target_recall IS NULL THEN 10 END,
                                            NULL::integer, ef_search, NULL::text, NULL::integer,
                                            target_recall) AS s;
    END IF;
    RETURN QUERY SELECT f.id, f.score FROM pgembed.fuse(li, ls, di, ds, k, fusion, rrf_k, bm25_weight, dense_weight, alpha) AS f;
END
$fn$;

COMMENT ON FUNCTION pgembed.search_hybrid(text, text, @extschema:vector@.vector, integer, text, text, integer, double precision, double precision, double precision, integer, double precision, double precision, integer, double precision) IS
    'Hybrid search: pgembed.search_bm25 of the query text and a dense search (dense: knn, funnel or binary) of the query vector q, each to `depth` rows (default max(k, 100)), fused by pgembed.fuse (rrf with rrf_k and per-side weights, or convex with alpha, the dense side''s weight). ef_search goes to the dense side. target_recall (0 < t <= 1) goes to the dense side too, which then takes its calibrated setting (pgembed.calibrated_setting; its oversample or candidates too, instead of hybrid''s own; an explicit ef_search wins); its depth stays `depth`. Top-k (id, score) best first.';

CREATE OR REPLACE FUNCTION pgembed.search_hybrid(
    collection text, query text, q @extschema:vector@.vector[], k integer DEFAULT 10,
    dense text DEFAULT 'multivector', fusion text DEFAULT 'rrf', rrf_k integer DEFAULT 60,
    bm25_weight double precision DEFAULT 1, dense_weight double precision DEFAULT 1,
    alpha double precision DEFAULT 0.5, depth integer DEFAULT NULL,
    k1 double precision DEFAULT 1.2, b double precision DEFAULT 0.75,
    ef_search integer DEFAULT NULL, target_recall double precision DEFAULT NULL)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY INVOKER ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n integer;
    li bigint[];
    ls double precision[];
    di bigint[];
    ds double precision[];
BEGIN
    IF dense IS DISTINCT FROM 'multivector'::text THEN
        RAISE EXCEPTION 'pgembed: a query of token vectors (vector[]) goes with dense => multivector, got %',
            coalesce(pg_catalog.quote_literal(dense), 'NULL'::text)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'for knn, funnel or binary, pass one query vector';
    END IF;
    PERFORM pgembed.collection_info(collection, 'lexical'::text);
    PERFORM pgembed.collection_info(collection, 'fde'::text);
    PERFORM pgembed.check_range('k'::text, k, 1, 100000);
    n := pgembed.check_range('depth'::text, coalesce(depth, greatest(k, 100)), k, 100000);
    PERFORM * FROM pgembed.fuse('{}'::bigint[], '{}'::double precision[], '{}'::bigint[],
                                '{}'::double precision[], k, fusion, rrf_k, bm25_weight,
                                dense_weight, alpha);
    SELECT pg_catalog.array_agg(s.id ORDER BY s.score DESC, s.id), pg_catalog.array_agg(s.score ORDER BY s.score DESC, s.id)
      INTO li, ls FROM pgembed.search_bm25(collection, query, n, k1, b) AS s;
    SELECT pg_catalog.array_agg(s.id ORDER BY s.score DESC, s.id), pg_catalog.array_agg(s.score ORDER BY s.score DESC, s.id)
      INTO di, ds FROM pgembed.search_multivector(collection, q, n,
                                              CASE WHEN target_recall IS NULL THEN greatest(n, 100) END,
                                              CASE WHEN target_recall IS NULL THEN 10 END, ef_search,
                                              NULL::text, target_recall) AS s;
    RETURN QUERY SELECT f.id, f.score FROM pgembed.fuse(li, ls, di, ds, k, fusion, rrf_k, bm25_weight, dense_weight, alpha) AS f;
END
$fn$;

COMMENT ON FUNCTION pgembed.search_hybrid(text, text, @extschema:vector@.vector[], integer, text, text, integer, double precision, double precision, double precision, integer, double precision, double precision, integer, double precision) IS
    'Hybrid search with a multi-vector dense side: pgembed.search_bm25 of the query text and pgembed.search_multivector of the query''s token vectors q (candidates max(depth, 100)), each to `depth` rows (default max(k, 100)), fused by pgembed.fuse as in search_hybrid(text, text, vector, ...). target_recall (0 < t <= 1): candidates and oversample from search_multivector''s calibrated setting instead (pgembed.calibrated_setting).';

-- --- restore the installing session's search_path ------------------------------------

SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('pgembed.saved_search_path'), true);
