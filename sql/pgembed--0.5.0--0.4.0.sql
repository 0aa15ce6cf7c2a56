-- pgembed 0.5.0 -> 0.4.0 (downgrade of migration 0006): drops the functions 0.5.0 added
-- and restores 0.4.0's definitions, copied verbatim from pgembed--0.4.0.sql, of the ones it
-- changed (version, the four dense searches and search_hybrid). Every other function is the
-- same in both.

SELECT pg_catalog.set_config('pgembed.saved_search_path',
                             pg_catalog.current_setting('search_path'), true);
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

DROP FUNCTION IF EXISTS pgembed.search_knn(text, @extschema:vector@.vector, integer, integer, text, double precision);
DROP FUNCTION IF EXISTS pgembed.search_funnel(text, @extschema:vector@.vector, integer, integer, integer, integer, text, double precision);
DROP FUNCTION IF EXISTS pgembed.search_binary(text, @extschema:vector@.vector, integer, integer, integer, integer, text, integer, double precision);
DROP FUNCTION IF EXISTS pgembed.search_multivector(text, @extschema:vector@.vector[], integer, integer, integer, integer, text, double precision);
DROP FUNCTION IF EXISTS pgembed.search_hybrid(text, text, @extschema:vector@.vector, integer, text, text, integer, double precision, double precision, double precision, integer, double precision, double precision, integer, double precision);
DROP FUNCTION IF EXISTS pgembed.search_hybrid(text, text, @extschema:vector@.vector[], integer, text, text, integer, double precision, double precision, double precision, integer, double precision, double precision, integer, double precision);
DROP FUNCTION IF EXISTS pgembed.calibrated_setting(text, text, double precision, jsonb);

CREATE OR REPLACE FUNCTION pgembed.version() RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
    RETURN '0.4.0';

COMMENT ON FUNCTION pgembed.version() IS
    'Version of the pgembed SQL functions installed in this database.';


CREATE OR REPLACE FUNCTION pgembed.search_knn(
    collection text, q @extschema:vector@.vector, k integer DEFAULT 10,
    ef_search integer DEFAULT NULL, iterative_scan text DEFAULT NULL)
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
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'single'::text);
    s := c.kinds -> 'single'::text;
    qt := pgembed.prepare_query(s, q, k);
    SELECT * INTO d FROM pgembed.distance_sql(s ->> 'distance'::text);
    saved := pgembed.hnsw_begin(ef_search, iterative_scan, k);
    RETURN QUERY EXECUTE pg_catalog.format(
        'SELECT c.id, %7$s(c.d) FROM ('
        'SELECT %1$I::bigint AS id, %2$I %6$s $1::%5$s AS d '
        'FROM %3$I.%4$I ORDER BY d LIMIT $2) AS c ORDER BY c.d, c.id',
        c.id_column, s ->> 'column'::text, c.table_schema, c.table_name, qt, d.op, d.score)
        USING q, k;
    PERFORM pgembed.hnsw_end(saved);
END
$fn$;

COMMENT ON FUNCTION pgembed.search_knn(text, @extschema:vector@.vector, integer, integer, text) IS
    'Top-k (id, score) of a collection''s single vectors by HNSW, best first. score: cosine similarity (1 - cosine distance) or inner product, per the collection''s distance. ef_search (default: max(session value, k), at most 1000) and iterative_scan apply to this call only.';


CREATE OR REPLACE FUNCTION pgembed.search_funnel(
    collection text, q @extschema:vector@.vector, k integer DEFAULT 10, prefix integer DEFAULT NULL,
    oversample integer DEFAULT 8, ef_search integer DEFAULT NULL,
    iterative_scan text DEFAULT NULL)
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
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'matryoshka'::text);
    s := c.kinds -> 'single'::text;
    qt := pgembed.prepare_query(s, q, k);
    SELECT * INTO d FROM pgembed.distance_sql(s ->> 'distance'::text);
    PERFORM pgembed.check_range('oversample'::text, coalesce(oversample, 8), 1, 1000);
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
    n := k * coalesce(oversample, 8);
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

COMMENT ON FUNCTION pgembed.search_funnel(text, @extschema:vector@.vector, integer, integer, integer, integer, text) IS
    'Matryoshka funnel: HNSW on the prefix index subvector(embedding, 1, prefix) (cosine, k*oversample candidates; prefix defaults to the smallest configured), then exact full-dimension rerank; top-k (id, score) best first, score as in search_knn.';


CREATE OR REPLACE FUNCTION pgembed.search_binary(
    collection text, q @extschema:vector@.vector, k integer DEFAULT 10, oversample integer DEFAULT 10,
    rescore integer DEFAULT NULL, ef_search integer DEFAULT NULL,
    iterative_scan text DEFAULT NULL, probes integer DEFAULT NULL)
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
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'binary'::text);
    s := c.kinds -> 'single'::text;
    b := c.kinds -> 'binary'::text;
    qt := pgembed.prepare_query(s, q, k);
    SELECT * INTO d FROM pgembed.distance_sql(s ->> 'distance'::text);
    PERFORM pgembed.check_range('oversample'::text, coalesce(oversample, 10), 1, 1000);
    n := k * coalesce(oversample, 10);
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

COMMENT ON FUNCTION pgembed.search_binary(text, @extschema:vector@.vector, integer, integer, integer, integer, text, integer) IS
    'Binary search: Hamming ANN on binary_quantize(embedding) (k*oversample candidates) through the collection''s HNSW index (ef_search) or IVFFlat index (probes, default ceil(sqrt(lists))); with b > 1 stored bits, keep `rescore` (default max(k, k*oversample/2)) by pgembed.residual_similarity of the query''s own residual levels; then exact full-dimension rerank. Top-k (id, score) best first, score as in search_knn.';


CREATE OR REPLACE FUNCTION pgembed.search_multivector(
    collection text, q @extschema:vector@.vector[], k integer DEFAULT 10, candidates integer DEFAULT 100,
    oversample integer DEFAULT 10, ef_search integer DEFAULT NULL,
    iterative_scan text DEFAULT NULL)
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
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'fde'::text);
    f := c.kinds -> 'fde'::text;
    PERFORM pgembed.check_range('k'::text, k, 1, 100000);
    PERFORM pgembed.check_range('candidates'::text, coalesce(candidates, 100), k, 100000);
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
        n := coalesce(candidates, 100) * coalesce(oversample, 10);
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
        n := coalesce(candidates, 100);
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
        USING qt, k, fqh, coalesce(candidates, 100),
              @extschema:vector@.binary_quantize(fqh), n;
    PERFORM pgembed.hnsw_end(saved);
END
$fn$;

COMMENT ON FUNCTION pgembed.search_multivector(text, @extschema:vector@.vector[], integer, integer, integer, integer, text) IS
    'Multi-vector search: query FDE (pgembed.fde_query), inner-product HNSW on the fde column (`candidates` rows; with a bit index: Hamming on binary_quantize(fde) for candidates*oversample rows, then a float-FDE rescore to `candidates`), then exact MaxSim on the token vectors. Top-k (id, score) best first, score = MaxSim.';


CREATE OR REPLACE FUNCTION pgembed.search_hybrid(
    collection text, query text, q @extschema:vector@.vector, k integer DEFAULT 10,
    dense text DEFAULT 'knn', fusion text DEFAULT 'rrf', rrf_k integer DEFAULT 60,
    bm25_weight double precision DEFAULT 1, dense_weight double precision DEFAULT 1,
    alpha double precision DEFAULT 0.5, depth integer DEFAULT NULL,
    k1 double precision DEFAULT 1.2, b double precision DEFAULT 0.75,
    ef_search integer DEFAULT NULL)
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
          INTO di, ds FROM pgembed.search_knn(collection, q, n, ef_search, NULL::text) AS s;
    ELSIF dense = 'funnel'::text THEN
        SELECT pg_catalog.array_agg(s.id ORDER BY s.score DESC, s.id), pg_catalog.array_agg(s.score ORDER BY s.score DESC, s.id)
          INTO di, ds FROM pgembed.search_funnel(collection, q, n, NULL::integer, 8, ef_search, NULL::text) AS s;
    ELSE
        SELECT pg_catalog.array_agg(s.id ORDER BY s.score DESC, s.id), pg_catalog.array_agg(s.score ORDER BY s.score DESC, s.id)
          INTO di, ds FROM pgembed.search_binary(collection, q, n, 10, NULL::integer, ef_search, NULL::text, NULL::integer) AS s;
    END IF;
    RETURN QUERY SELECT f.id, f.score FROM pgembed.fuse(li, ls, di, ds, k, fusion, rrf_k, bm25_weight, dense_weight, alpha) AS f;
END
$fn$;

COMMENT ON FUNCTION pgembed.search_hybrid(text, text, @extschema:vector@.vector, integer, text, text, integer, double precision, double precision, double precision, integer, double precision, double precision, integer) IS
    'Hybrid search: pgembed.search_bm25 of the query text and a dense search (dense: knn, funnel or binary) of the query vector q, each to `depth` rows (default max(k, 100)), fused by pgembed.fuse (rrf with rrf_k and per-side weights, or convex with alpha, the dense side''s weight). ef_search goes to the dense side. Top-k (id, score) best first.';

CREATE OR REPLACE FUNCTION pgembed.search_hybrid(
    collection text, query text, q @extschema:vector@.vector[], k integer DEFAULT 10,
    dense text DEFAULT 'multivector', fusion text DEFAULT 'rrf', rrf_k integer DEFAULT 60,
    bm25_weight double precision DEFAULT 1, dense_weight double precision DEFAULT 1,
    alpha double precision DEFAULT 0.5, depth integer DEFAULT NULL,
    k1 double precision DEFAULT 1.2, b double precision DEFAULT 0.75,
    ef_search integer DEFAULT NULL)
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
      INTO di, ds FROM pgembed.search_multivector(collection, q, n, greatest(n, 100), 10, ef_search, NULL::text) AS s;
    RETURN QUERY SELECT f.id, f.score FROM pgembed.fuse(li, ls, di, ds, k, fusion, rrf_k, bm25_weight, dense_weight, alpha) AS f;
END
$fn$;

COMMENT ON FUNCTION pgembed.search_hybrid(text, text, @extschema:vector@.vector[], integer, text, text, integer, double precision, double precision, double precision, integer, double precision, double precision, integer) IS
    'Hybrid search with a multi-vector dense side: pgembed.search_bm25 of the query text and pgembed.search_multivector of the query''s token vectors q (candidates max(depth, 100)), each to `depth` rows (default max(k, 100)), fused by pgembed.fuse as in search_hybrid(text, text, vector, ...).';


SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('pgembed.saved_search_path'), true);
