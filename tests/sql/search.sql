-- pgembed's SQL functions on a tiny hand-made collection, run by psql:
--   psql -X -q -v ON_ERROR_STOP=1 -f tests/sql/search.sql <database at pgembed head>
-- Everything happens in one transaction that is rolled back. Output: one `check|value`
-- line per check, compared with search.expected; tests/sql/test_regression.py recomputes
-- every value with numpy.
BEGIN;
\ir _try.psql

-- d = 4; Matryoshka prefix 2; 2-bit residual codes; FDE: R = 1, k_sim = 1 (SimHash on
-- the first coordinate), identity projection, so D = 1 * 2 * 4 = 8.
INSERT INTO pgembed.encoders (name, fingerprint, dim, max_length)
VALUES ('psql-enc', 'psql', 4, 16);
INSERT INTO pgembed.fde_configs (dimension, num_repetitions, num_simhash_projections,
    projection, projection_dimension, fill_empty_partitions, seed, output_dimension,
    matrices, simhash, simhash_vectors)
VALUES (4, 1, 1, 'identity', 4, true, 0, 8, '\x00', '{1,0,0,0}', '{"[1,0,0,0]"}');
INSERT INTO pgembed.collections (name, table_name, encoder, fde_config, kinds)
SELECT 'psql docs', 'psql docs', 'psql-enc', max(id), '{
    "single": {"column": "embedding", "type": "halfvec", "dim": 4, "distance": "cosine"},
    "matryoshka": {"dims": [2]},
    "binary": {"bits": 2, "column": "embedding_bits"},
    "fde": {"column": "fde", "dim": 8, "index": "halfvec"},
    "multivector": {"column": "tokens", "dim": 4}}'
FROM pgembed.fde_configs;

CREATE TABLE "psql docs" (
    id bigint PRIMARY KEY,
    embedding halfvec(4),
    embedding_bits bit(8),
    fde halfvec(8),
    tokens halfvec(4)[]
);
CREATE INDEX ON "psql docs" USING hnsw (embedding halfvec_cosine_ops);
CREATE INDEX ON "psql docs" USING hnsw ((subvector(embedding, 1, 2)::halfvec(2)) halfvec_cosine_ops);
CREATE INDEX "psql docs bq" ON "psql docs" USING hnsw ((binary_quantize(embedding)::bit(4)) bit_hamming_ops);
CREATE INDEX ON "psql docs" USING hnsw (fde halfvec_ip_ops);

-- fde: document FDEs (tokens AVERAGEd per block, an empty block filled with the first token)
INSERT INTO "psql docs" VALUES
    (1, '[1,0,0,0]', B'10001111', '[0,1,0,0,1,0,0,0]', '{"[1,0,0,0]","[0,1,0,0]"}'),
    (2, '[0,1,0,0]', B'01001111', '[0,0.5,0.5,0,0,1,0,0]', '{"[0,1,0,0]","[0,0,1,0]"}'),
    (3, '[1,1,0,0]', B'11001111', '[1,1,0,0,1,1,0,0]', '{"[1,1,0,0]"}'),
    (4, '[-1,0,0.5,0]', B'00100111', '[-0.5,0,0.5,0.5,-1,0,0,0]', '{"[-1,0,0,0]","[0,0,1,1]"}'),
    (5, '[0.5,0.5,0.5,0.5]', B'11110000', '[0,0,0,1,0.5,0.5,0.5,0.5]', '{"[0.5,0.5,0.5,0.5]","[0,0,0,1]"}');

\set q '''[1,0.5,0,0]''::vector'
\set qt '''{"[1,0.5,0,0]","[0,0,1,0]"}''::vector[]'

SELECT 'version', pgembed.version();

SELECT 'maxsim vector[]', round(pgembed.maxsim(:qt,
    '{"[0.5,0.5,0.5,0.5]","[0,0,0,1]"}'::vector[])::numeric, 6);
SELECT 'maxsim halfvec[]', round(pgembed.maxsim(:qt::halfvec[], tokens)::numeric, 6)
FROM "psql docs" WHERE id = 4;
SELECT 'maxsim empty doc', coalesce(pgembed.maxsim(:qt, '{}')::text, 'NULL');

SELECT 'fde_query config', pgembed.fde_query(max(id), :qt) FROM pgembed.fde_configs;
SELECT 'fde_query collection', pgembed.fde_query('psql docs', :qt);

SELECT 'residual_levels', codes::text || ' ' || scales::text
FROM pgembed.residual_levels(:q, 2);

SELECT 'search_knn', string_agg(id || ':' || round(score::numeric, 4), ' ' ORDER BY n)
FROM pgembed.search_knn('psql docs', :q, 3) WITH ORDINALITY AS s(id, score, n);
SELECT 'search_funnel', string_agg(id || ':' || round(score::numeric, 4), ' ' ORDER BY n)
FROM pgembed.search_funnel('psql docs', :q, 2, oversample => 1) WITH ORDINALITY AS s(id, score, n);
SELECT 'search_binary', string_agg(id || ':' || round(score::numeric, 4), ' ' ORDER BY n)
FROM pgembed.search_binary('psql docs', :q, 2, oversample => 2) WITH ORDINALITY AS s(id, score, n);
SELECT 'search_multivector', string_agg(id || ':' || round(score::numeric, 4), ' ' ORDER BY n)
FROM pgembed.search_multivector('psql docs', :qt, 2, candidates => 3) WITH ORDINALITY AS s(id, score, n);

-- the same codes under an IVFFlat index (0.3.0): probing both lists is exact Hamming order
DROP INDEX "psql docs bq";
CREATE INDEX "psql docs bq" ON "psql docs" USING ivfflat ((binary_quantize(embedding)::bit(4)) bit_hamming_ops) WITH (lists = 2);
UPDATE pgembed.collections SET kinds = jsonb_set(kinds, '{binary}',
    kinds -> 'binary' || '{"index": "ivfflat", "lists": 2}') WHERE name = 'psql docs';
SELECT 'search_binary ivfflat', string_agg(id || ':' || round(score::numeric, 4), ' ' ORDER BY n)
FROM pgembed.search_binary('psql docs', :q, 2, oversample => 2, probes => 2) WITH ORDINALITY AS s(id, score, n);

SELECT 'error unknown collection', pg_temp.try($$SELECT * FROM pgembed.search_knn('nope', '[1,0,0,0]')$$);
SELECT 'error injection', pg_temp.try($$SELECT * FROM pgembed.search_knn('psql docs; DROP TABLE x', '[1,0,0,0]')$$);
SELECT 'error dimension', pg_temp.try($$SELECT * FROM pgembed.search_knn('psql docs', '[1,0]')$$);
SELECT 'error k', pg_temp.try($$SELECT * FROM pgembed.search_funnel('psql docs', '[1,0,0,0]', 0)$$);
SELECT 'error prefix', pg_temp.try($$SELECT * FROM pgembed.search_funnel('psql docs', '[1,0,0,0]', 2, 3)$$);
SELECT 'error oversample', pg_temp.try($$SELECT * FROM pgembed.search_binary('psql docs', '[1,0,0,0]', 2, 1001)$$);
SELECT 'error empty query', pg_temp.try($$SELECT * FROM pgembed.search_multivector('psql docs', '{}')$$);
SELECT 'error maxsim empty', pg_temp.try($$SELECT pgembed.maxsim('{}'::vector[], '{"[1]"}')$$);
SELECT 'error zero query', pg_temp.try($$SELECT * FROM pgembed.search_knn('psql docs', '[0,0,0,0]')$$);
SELECT 'error halfvec underflow', pg_temp.try($$SELECT * FROM pgembed.search_knn('psql docs', '[1e-9,1e-9,1e-9,1e-9]')$$);
SELECT 'error halfvec range', pg_temp.try($$SELECT * FROM pgembed.search_knn('psql docs', '[1e5,0,0,0]')$$);
SELECT 'error maxsim null', pg_temp.try($$SELECT pgembed.maxsim('{"[1]",NULL}'::vector[], '{"[1]"}')$$);

ROLLBACK;
