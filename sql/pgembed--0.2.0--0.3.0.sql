-- pgembed 0.2.0 -> 0.3.0: an IVFFlat index for binary codes. Installed by migration 0003.
--
-- search_binary gains `probes` (IVFFlat only; ef_search stays HNSW only), and
-- ivfflat_begin / ivfflat_end set and restore ivfflat.probes and ivfflat.iterative_scan as
-- hnsw_begin / hnsw_end do for HNSW. Conventions (search_path, format('%I'), USING) as in
-- pgembed--0.1.0--0.2.0.sql.

SELECT pg_catalog.set_config('pgembed.saved_search_path',
                             pg_catalog.current_setting('search_path'), true);
SELECT pg_catalog.set_config('search_path', pg_catalog.format('pg_catalog, %I, pg_temp', n.nspname), true)
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'vector';

CREATE OR REPLACE FUNCTION pgembed.version() RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog
    RETURN '0.3.0';

CREATE FUNCTION pgembed.ivfflat_begin(probes integer, iterative_scan text, lists integer)
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

CREATE FUNCTION pgembed.ivfflat_end(saved text[]) RETURNS void
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

-- 0.2.0's catalog rows name no binary index: theirs is HNSW. Said explicitly, so that a
-- collection re-declared with the same parameters matches its row.
UPDATE pgembed.collections
SET kinds = pg_catalog.jsonb_set(kinds, '{binary,index}', '"hnsw"')
WHERE kinds ? 'binary' AND NOT (kinds -> 'binary') ? 'index';

DROP FUNCTION pgembed.search_binary(text, vector, integer, integer, integer, integer, text);

CREATE FUNCTION pgembed.search_binary(
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

-- --- restore the installing session's search_path ------------------------------------

SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('pgembed.saved_search_path'), true);
