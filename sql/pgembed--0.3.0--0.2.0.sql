-- pgembed 0.3.0 -> 0.2.0: undoes pgembed--0.2.0--0.3.0.sql. Run by migration 0003's
-- downgrade; search_binary is 0.2.0's definition again (repeated from
-- pgembed--0.1.0--0.2.0.sql on purpose: a downgrade states the old definition whole).

SELECT pg_catalog.set_config('pgembed.saved_search_path',
                             pg_catalog.current_setting('search_path'), true);
SELECT pg_catalog.set_config('search_path', pg_catalog.format('pg_catalog, %I, pg_temp', n.nspname), true)
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'vector';

CREATE OR REPLACE FUNCTION pgembed.version() RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog
    RETURN '0.2.0';

-- Back to 0.2.0's rows for HNSW codes; IVFFlat rows keep their keys (0.2.0 ignores them).
UPDATE pgembed.collections SET kinds = kinds #- '{binary,index}'
WHERE kinds -> 'binary' ->> 'index' = 'hnsw';

DROP FUNCTION pgembed.search_binary(text, vector, integer, integer, integer, integer, text, integer);
DROP FUNCTION pgembed.ivfflat_end(text[]);
DROP FUNCTION pgembed.ivfflat_begin(integer, text, integer);

CREATE FUNCTION pgembed.search_binary(
    collection text, q vector, k integer DEFAULT 10, oversample integer DEFAULT 10,
    rescore integer DEFAULT NULL, ef_search integer DEFAULT NULL,
    iterative_scan text DEFAULT NULL)
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
    saved := pgembed.hnsw_begin(ef_search, iterative_scan, n);
    -- Stage 1: Hamming HNSW on binary_quantize(embedding)::bit(d) (the index expression).
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
    PERFORM pgembed.hnsw_end(saved);
END
$fn$;

COMMENT ON FUNCTION pgembed.search_binary(text, vector, integer, integer, integer, integer, text) IS
    'Binary search: Hamming HNSW on binary_quantize(embedding) (k*oversample candidates); with b > 1 stored bits, keep `rescore` (default max(k, k*oversample/2)) by pgembed.residual_similarity of the query''s own residual levels; then exact full-dimension rerank. Top-k (id, score) best first, score as in search_knn.';

-- --- restore the installing session's search_path ------------------------------------

SELECT pg_catalog.set_config('search_path',
                             pg_catalog.current_setting('pgembed.saved_search_path'), true);
