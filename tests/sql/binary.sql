-- pgembed's binary codes: residual_levels, residual_similarity and search_binary (1 and 2
-- bits, HNSW and IVFFlat, halfvec with cosine and vector with inner product), run by psql:
--   psql -X -q -v ON_ERROR_STOP=1 -f tests/sql/binary.sql <database at pgembed head>
-- Everything happens in one transaction that is rolled back. Output: one `check|value`
-- line per check, compared with binary.expected.
BEGIN;
\ir _try.psql

\set q '''[-2,-0.9,0.7,1.2,-2.2,-0.5,0.3,-0.6]''::vector'

-- residual_levels: level 1 = sign bits (x > 0) with scale mean |x|; each next level the
-- same on the residual x - scale * sign
SELECT 'residual_levels ' || b, codes::text || ' ' || scales::text
FROM generate_series(1, 3) AS b, pgembed.residual_levels(:q, b) ORDER BY b;
SELECT 'residual_levels NULL', coalesce(codes::text, 'NULL') FROM pgembed.residual_levels(NULL, 2);
SELECT 'error residual_levels 0', pg_temp.try($$SELECT pgembed.residual_levels('[1,2]', 0)$$);
SELECT 'error residual_levels 17', pg_temp.try($$SELECT pgembed.residual_levels('[1,2]', 17)$$);

-- residual_similarity = sum over i, j of s_i s_j (d - 2 hamming(q_i, doc_j))
SELECT 'residual_similarity 1 level', pgembed.residual_similarity('{1100}', '{0.5}', B'1010')
    || ' ' || pgembed.residual_similarity('{1100}', '{0.5}', B'1100');
SELECT 'residual_similarity 2 levels', pgembed.residual_similarity('{1100,1010}', '{1,0.5}', B'11001010');

-- Eight rows, d = 8; bits: the 2-bit residual codes (pgembed.vectors.binary.pack_residual).
-- Hamming distance of binary_quantize to the query's: 3 for rows 1, 2, 3; 4 for 4, 5, 8;
-- 5 for 6; 7 for 7 (the checks below cut only between distinct distances, so the
-- candidates never depend on how the index orders ties).
CREATE TABLE bin_rows (id bigint PRIMARY KEY, v vector(8), bits bit(16));
INSERT INTO bin_rows VALUES
    (1, '[2,-2.6,0.4,-0.6,-0.5,-0.2,-2,-0.2]', B'1010000010011101'),
    (2, '[-0.9,3.3,0.2,-0.4,-0.3,-0.7,-1.1,-0.4]', B'0110000011011101'),
    (3, '[0.5,-0.2,1,-0.2,0,1.5,0.5,-0.5]', B'1010011001111101'),
    (4, '[-0.2,0.5,1.9,-0.3,-0.2,1,-0.9,-0.3]', B'0110010010111101'),
    (5, '[0.9,0.6,0.1,0.7,-2.8,1,-1,-1.7]', B'1111010000000010'),
    (6, '[0.3,0.7,-0.4,-1.1,0,-0.1,1.4,0.7]', B'1100001101101111'),
    (7, '[0.2,1.1,-0.2,-0.9,0.6,0.6,-0.2,-0.8]', B'1100110001101110'),
    (8, '[0.2,-2.5,0.7,0.5,-1.6,0.1,-1,0.8]', B'1011010100000000');

SELECT 'hamming', string_agg(id || ':' || (binary_quantize(v) <~> binary_quantize(:q)), ' ' ORDER BY id)
FROM bin_rows;
SELECT 'residual_similarity rows', string_agg(id || ':' || round(pgembed.residual_similarity(l.codes, l.scales, bits)::numeric, 4), ' ' ORDER BY id)
FROM bin_rows, pgembed.residual_levels(:q, 2) AS l;

-- One table per collection: halfvec with cosine under HNSW, vector with inner product
-- under IVFFlat (2 lists, built on the rows).
INSERT INTO pgembed.encoders (name, fingerprint, dim, max_length) VALUES ('bin-enc', 'bin', 8, 16);
CREATE FUNCTION pg_temp.make(name text, bits integer, ivf boolean) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    typ text := CASE WHEN ivf THEN 'vector' ELSE 'halfvec' END;
BEGIN
    EXECUTE format('CREATE TABLE %I (id bigint PRIMARY KEY, embedding %s(8), embedding_bits bit(16))', name, typ);
    EXECUTE format('INSERT INTO %I SELECT id, v::%s, bits FROM bin_rows', name, typ);
    EXECUTE format('CREATE INDEX ON %I USING %s ((binary_quantize(embedding)::bit(8)) bit_hamming_ops)%s',
                   name, CASE WHEN ivf THEN 'ivfflat' ELSE 'hnsw' END,
                   CASE WHEN ivf THEN ' WITH (lists = 2)' ELSE '' END);
    EXECUTE format('ANALYZE %I', name);
    INSERT INTO pgembed.collections (name, table_name, encoder, kinds)
    VALUES (name, name, 'bin-enc', jsonb_build_object(
        'single', jsonb_build_object('column', 'embedding', 'type', typ, 'dim', 8,
                                     'distance', CASE WHEN ivf THEN 'ip' ELSE 'cosine' END),
        'binary', jsonb_build_object('bits', bits, 'index', CASE WHEN ivf THEN 'ivfflat' ELSE 'hnsw' END)
                  || CASE WHEN ivf THEN '{"lists": 2}' ELSE '{}' END::jsonb
                  || CASE WHEN bits > 1 THEN '{"column": "embedding_bits"}' ELSE '{}' END::jsonb));
END $$;
SELECT pg_temp.make('hnsw 1 bit', 1, false), pg_temp.make('hnsw 2 bits', 2, false),
       pg_temp.make('ivf 1 bit', 1, true), pg_temp.make('ivf 2 bits', 2, true) \gset
INSERT INTO pgembed.collections (name, table_name, encoder, kinds) VALUES
    ('no binary', 'no binary', 'bin-enc', '{
        "single": {"column": "embedding", "type": "vector", "dim": 8, "distance": "ip"}}');
SELECT 'collection ' || name, coalesce((kinds -> 'binary')::text, 'NULL') FROM pgembed.collections ORDER BY name;

-- the settings a search changes come back afterwards
SELECT '[1]'::vector IS NOT NULL AS loaded \gset
SET LOCAL hnsw.ef_search = 77;
SET LOCAL ivfflat.probes = 1;

-- Exact scores (cosine on halfvec, inner product on vector), best first:
--   8, 5, 4, 2, 3, 1, 6, 7 for both.
-- k*oversample = 3: the Hamming stage keeps rows 1, 2, 3 only.
-- k*oversample = 8: every row, so the exact top k.
-- 2 bits, k*oversample = 6 (rows 1, 2, 3, 4, 5, 8), residual similarity 5 > 8 > 4 > 2 = 3
-- > 1: rescore 1 keeps row 5 alone.
SELECT c || ' k ' || k || ' oversample ' || o || coalesce(' rescore ' || r, ''),
       (SELECT string_agg(s.id || ':' || round(s.score::numeric, 4), ' ' ORDER BY s.n)
        FROM pgembed.search_binary(c, :q, k, o, r) WITH ORDINALITY AS s(id, score, n))
FROM (VALUES ('hnsw 1 bit'), ('hnsw 2 bits'), ('ivf 1 bit'), ('ivf 2 bits')) AS cs(c),
     (VALUES (1, 3, 1, NULL), (2, 2, 4, NULL), (3, 1, 6, 1), (4, 1, 6, NULL)) AS p(n, k, o, r)
ORDER BY c, n;
SELECT 'probes 2', string_agg(s.id || ':' || round(s.score::numeric, 4), ' ' ORDER BY s.n)
FROM pgembed.search_binary('ivf 2 bits', :q, 2, 3, probes => 2) WITH ORDINALITY AS s(id, score, n);
SELECT 'ef_search 8', string_agg(s.id || ':' || round(s.score::numeric, 4), ' ' ORDER BY s.n)
FROM pgembed.search_binary('hnsw 1 bit', :q, 3, 1, ef_search => 8) WITH ORDINALITY AS s(id, score, n);
SELECT 'settings after', current_setting('hnsw.ef_search') || ' ' || current_setting('ivfflat.probes');

SELECT 'error ' || e.c, pg_temp.try(e.stmt)
FROM (VALUES
    (1, 'no binary kind', $$SELECT * FROM pgembed.search_binary('no binary', '[1,0,0,0,0,0,0,0]')$$),
    (2, 'dimensions', $$SELECT * FROM pgembed.search_binary('hnsw 1 bit', '[1,0,0,0]')$$),
    (3, 'zero cosine query', $$SELECT * FROM pgembed.search_binary('hnsw 1 bit', '[0,0,0,0,0,0,0,0]')$$),
    (4, 'halfvec range', $$SELECT * FROM pgembed.search_binary('hnsw 2 bits', '[1e5,0,0,0,0,0,0,0]')$$),
    (5, 'k', $$SELECT * FROM pgembed.search_binary('ivf 1 bit', '[1,0,0,0,0,0,0,0]', 0)$$),
    (6, 'oversample', $$SELECT * FROM pgembed.search_binary('ivf 1 bit', '[1,0,0,0,0,0,0,0]', 2, 0)$$),
    (7, 'rescore below k', $$SELECT * FROM pgembed.search_binary('hnsw 2 bits', '[1,0,0,0,0,0,0,0]', 2, 3, 1)$$),
    (8, 'rescore above candidates', $$SELECT * FROM pgembed.search_binary('ivf 2 bits', '[1,0,0,0,0,0,0,0]', 2, 3, 7)$$),
    (9, 'ef_search on ivfflat', $$SELECT * FROM pgembed.search_binary('ivf 1 bit', '[1,0,0,0,0,0,0,0]', ef_search => 10)$$),
    (10, 'probes on hnsw', $$SELECT * FROM pgembed.search_binary('hnsw 1 bit', '[1,0,0,0,0,0,0,0]', probes => 1)$$),
    (11, 'probes above lists', $$SELECT * FROM pgembed.search_binary('ivf 2 bits', '[1,0,0,0,0,0,0,0]', probes => 3)$$),
    (12, 'iterative_scan', $$SELECT * FROM pgembed.search_binary('hnsw 1 bit', '[1,0,0,0,0,0,0,0]', iterative_scan => 'sideways')$$)
) AS e(n, c, stmt)
ORDER BY e.n;
SELECT 'settings after errors', current_setting('hnsw.ef_search') || ' ' || current_setting('ivfflat.probes');

ROLLBACK;
