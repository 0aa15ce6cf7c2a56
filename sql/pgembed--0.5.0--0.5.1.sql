-- pgembed 0.5.0 -> 0.5.1 (migration 0010): a search with target_recall on a strategy that has
-- no calibration runs the strategy's defaults. In 0.5.0 search_knn then ran ef_search = k and
-- search_multivector candidates = k (greatest(k, NULL) is k), far below the defaults (100 and
-- 300): asking for recall gave less. The downgrade reinstalls 0.5.0's definitions of these
-- functions from pgembed--0.5.0.sql. pgembed.calibrated_setting's messages: without a
-- calibration it no longer says it searches (it only picks), and a target that the measured
-- recall meets but whose lower bound the sample is too small to claim asks for more queries,
-- naming how many, instead of a wider grid.

CREATE OR REPLACE FUNCTION pgembed.version() RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    RETURN '0.5.1';

COMMENT ON FUNCTION pgembed.version() IS
    'Version of the pgembed SQL functions installed in this database.';

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
        -- No calibration (NULL): the defaults below, never less. HNSW returns at most
        -- ef_search rows: never below k.
        IF cal IS NOT NULL THEN
            ef_search := coalesce(ef_search, least(1000, greatest(k, (cal ->> 'ef_search'::text)::integer)));
        END IF;
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
        -- No calibration (NULL): the defaults below, never less. Candidates are never
        -- fewer than k.
        IF cal IS NOT NULL THEN
            candidates := coalesce(candidates, greatest(k, (cal ->> 'candidates'::text)::integer));
            oversample := coalesce(oversample, (cal ->> 'oversample'::text)::integer);
        END IF;
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
    top double precision;
    n_queries integer;
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
        RAISE WARNING 'pgembed: collection % has no calibration of strategy %; a search with target_recall runs the strategy''s defaults',
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
        SELECT pg_catalog.max(c.recall), pg_catalog.min(c.queries) INTO top, n_queries
          FROM pgembed.calibrations AS c
         WHERE c.collection = calibrated_setting.collection
           AND c.strategy = calibrated_setting.strategy
           AND NOT EXISTS (SELECT FROM pg_catalog.jsonb_each(given) AS g
                           WHERE g.value <> 'null'::jsonb
                             AND (c.setting -> g.key) IS DISTINCT FROM g.value);
        IF top >= target_recall THEN
            -- Measured high enough, but too few queries to claim it: with n queries even
            -- perfect recall bounds at (n - 0.3225) / (n + 1) (pgembed.calibration.lower_bound).
            RAISE EXCEPTION 'pgembed: no calibrated % setting of collection % can claim recall@% % from % queries: the best measured recall is %, but its 95%% lower bound reaches only % (% queries bound even perfect recall at %)',
                strategy, pg_catalog.quote_literal(collection), coalesce(found_k, 0), target_recall,
                n_queries, pg_catalog.round(top::numeric, 4), coalesce(pg_catalog.round(best::numeric, 4)::text, 'nothing'::text),
                n_queries, pg_catalog.round(((n_queries - 0.3225) / (n_queries + 1))::numeric, 4)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE WHEN target_recall < 1::double precision
                                  THEN pg_catalog.format('calibrate with at least %s queries (pgembed calibrate --sample N, Collection.calibrate(sample=N)), or lower target_recall',
                                                         pg_catalog.ceil((target_recall + 0.3225::double precision) / (1::double precision - target_recall))::integer)
                                  ELSE 'no sample can claim recall 1 with confidence: lower target_recall'::text END;
        END IF;
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
