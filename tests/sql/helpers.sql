-- pgembed's helper functions (the input checks, collection_info, the searches' query
-- preparation and distance SQL, the HNSW/IVFFlat settings), run by psql:
--   psql -X -q -v ON_ERROR_STOP=1 -f tests/sql/helpers.sql <database at pgembed head>
-- Everything happens in one transaction that is rolled back. Output: one `check|value`
-- line per check, compared with helpers.expected.
BEGIN;
\ir _try.psql

SELECT 'version', pgembed.version();
SELECT 'vector_schema', pgembed.vector_schema() = extnamespace::regnamespace::name
FROM pg_extension WHERE extname = 'vector';

-- fail
SELECT 'fail', pg_temp.try($$SELECT pgembed.fail('22023', 'pgembed: m', 'h')$$);
SELECT 'fail no hint', pg_temp.try($$SELECT pgembed.fail('XX000', 'pgembed: m')$$);

-- check_range
SELECT 'check_range low', pgembed.check_range('k', 1, 1, 5);
SELECT 'check_range high', pgembed.check_range('k', 5, 1, 5);
SELECT 'error check_range below', pg_temp.try($$SELECT pgembed.check_range('k', 0, 1, 5)$$);
SELECT 'error check_range above', pg_temp.try($$SELECT pgembed.check_range('probes', 6, 1, 5)$$);
SELECT 'error check_range NULL', pg_temp.try($$SELECT pgembed.check_range('k', NULL, 1, 5)$$);

-- check_vector
SELECT 'check_vector', pgembed.check_vector('[1,2,3]', 3);
SELECT 'error check_vector NULL', pg_temp.try($$SELECT pgembed.check_vector(NULL, 3)$$);
SELECT 'error check_vector dims', pg_temp.try($$SELECT pgembed.check_vector('[1,2]', 3)$$);
SELECT 'error check_vector what', pg_temp.try($$SELECT pgembed.check_vector('[1,2]', 3, 'probe')$$);

-- to_halfvec: halfvec's largest value is 65504; 65519 still rounds to it
SELECT 'to_halfvec', pgembed.to_halfvec('[0.1,-2,65504,65519]');
SELECT 'to_halfvec NULL', coalesce(pgembed.to_halfvec(NULL)::text, 'NULL');
SELECT 'error to_halfvec 65520', pg_temp.try($$SELECT pgembed.to_halfvec('[1,65520]')$$);
SELECT 'error to_halfvec negative', pg_temp.try($$SELECT pgembed.to_halfvec('[-1e5,1]', 'token')$$);

-- check_cosine_query: qh NULL means "not stored as halfvec"
SELECT 'check_cosine_query', pg_temp.try($$SELECT pgembed.check_cosine_query('[1e-9,0]', NULL)$$);
SELECT 'error check_cosine_query zero', pg_temp.try($$SELECT pgembed.check_cosine_query('[0,0]', NULL)$$);
SELECT 'error check_cosine_query halfvec zero',
    pg_temp.try($$SELECT pgembed.check_cosine_query('[1e-9,0]', '[1e-9,0]'::halfvec)$$);

-- check_tokens
SELECT 'check_tokens', pgembed.check_tokens('{"[1,2]","[3,4]"}', 2);
SELECT 'error check_tokens empty', pg_temp.try($$SELECT pgembed.check_tokens('{}', 2)$$);
SELECT 'error check_tokens NULL array', pg_temp.try($$SELECT pgembed.check_tokens(NULL, 2)$$);
SELECT 'error check_tokens NULL token', pg_temp.try($$SELECT pgembed.check_tokens('{"[1,2]",NULL}', 2)$$);
SELECT 'error check_tokens dims', pg_temp.try($$SELECT pgembed.check_tokens('{"[1,2]","[1,2,3]"}', 2, 'document')$$);

-- collection_info: a catalog row written by hand (no table is needed)
INSERT INTO pgembed.encoders (name, fingerprint, dim, max_length)
VALUES ('helpers-enc', 'helpers', 2, 16);
INSERT INTO pgembed.collections (name, table_name, encoder, kinds) VALUES
    ('helpers b', 'helpers b', 'helpers-enc',
     '{"single": {"column": "embedding", "type": "halfvec", "dim": 2, "distance": "cosine"},
       "binary": {"bits": 1}}'),
    ('helpers a', 'helpers a', 'helpers-enc',
     '{"single": {"column": "embedding", "type": "vector", "dim": 2, "distance": "ip"}}');
SELECT 'collection_info', table_schema || ' ' || table_name || ' ' || id_column || ' '
    || kinds::text || ' ' || coalesce(fde_config::text, 'NULL')
FROM pgembed.collection_info('helpers a', 'single');
SELECT 'collection_info any kind', table_name FROM pgembed.collection_info('helpers b', NULL);
SELECT 'error collection_info NULL', pg_temp.try($$SELECT * FROM pgembed.collection_info(NULL, NULL)$$);
SELECT 'error collection_info unknown', pg_temp.try($$SELECT * FROM pgembed.collection_info('nope', NULL)$$);
SELECT 'error collection_info kind', pg_temp.try($$SELECT * FROM pgembed.collection_info('helpers b', 'fde')$$);

-- prepare_query: the query checks of search_knn, search_funnel and search_binary; returns
-- the column's type (the vector schema shown as VS)
SELECT 'prepare_query halfvec', replace(pgembed.prepare_query(kinds -> 'single', '[1,2]', 10),
                                        quote_ident(pgembed.vector_schema()), 'VS')
FROM pgembed.collections WHERE name = 'helpers b';
SELECT 'prepare_query vector ip zero', replace(pgembed.prepare_query(kinds -> 'single', '[0,0]', 10),
                                               quote_ident(pgembed.vector_schema()), 'VS')
FROM pgembed.collections WHERE name = 'helpers a';
SELECT 'prepare_query vector ip 1e5', replace(pgembed.prepare_query(kinds -> 'single', '[1e5,0]', 1),
                                              quote_ident(pgembed.vector_schema()), 'VS')
FROM pgembed.collections WHERE name = 'helpers a';
SELECT 'error prepare_query NULL', pg_temp.try($$SELECT pgembed.prepare_query(
    '{"type": "halfvec", "dim": 2, "distance": "cosine"}', NULL, 10)$$);
SELECT 'error prepare_query dims', pg_temp.try($$SELECT pgembed.prepare_query(
    '{"type": "halfvec", "dim": 2, "distance": "cosine"}', '[1,2,3]', 10)$$);
SELECT 'error prepare_query k', pg_temp.try($$SELECT pgembed.prepare_query(
    '{"type": "halfvec", "dim": 2, "distance": "cosine"}', '[1,2]', 100001)$$);
SELECT 'error prepare_query halfvec range', pg_temp.try($$SELECT pgembed.prepare_query(
    '{"type": "halfvec", "dim": 2, "distance": "ip"}', '[1e5,0]', 10)$$);
SELECT 'error prepare_query zero', pg_temp.try($$SELECT pgembed.prepare_query(
    '{"type": "vector", "dim": 2, "distance": "cosine"}', '[0,0]', 10)$$);
SELECT 'error prepare_query no distance is cosine', pg_temp.try($$SELECT pgembed.prepare_query(
    '{"type": "vector", "dim": 2}', '[0,0]', 10)$$);
SELECT 'error prepare_query halfvec zero', pg_temp.try($$SELECT pgembed.prepare_query(
    '{"type": "halfvec", "dim": 2, "distance": "cosine"}', '[1e-9,1e-9]', 10)$$);
SELECT 'error prepare_query type', pg_temp.try($$SELECT pgembed.prepare_query(
    '{"type": "sparsevec", "dim": 2, "distance": "cosine"}', '[1,2]', 10)$$);

-- distance_sql: the operator and the score prefix, applied as `score(e op q)`
SELECT 'distance_sql ' || coalesce(d, 'NULL'),
       replace(op, quote_ident(pgembed.vector_schema()), 'VS') || ' ' || score || '(e op q)'
FROM unnest(ARRAY['ip', 'cosine', NULL]) AS d, pgembed.distance_sql(d)
ORDER BY 1;
SELECT 'error distance_sql', pg_temp.try($$SELECT * FROM pgembed.distance_sql('l2')$$);

-- hnsw_begin/hnsw_end: set for the transaction, then restore
SELECT '[1]'::vector IS NOT NULL AS loaded \gset
SET LOCAL hnsw.ef_search = 77;
SET LOCAL hnsw.iterative_scan = off;
SELECT pgembed.hnsw_begin(NULL, NULL, 5) AS saved \gset
SELECT 'hnsw_begin k 5', :'saved', current_setting('hnsw.ef_search') || ' ' || current_setting('hnsw.iterative_scan');
SELECT pgembed.hnsw_begin(NULL, NULL, 500) AS inner_saved \gset
SELECT 'hnsw_begin k 500', :'inner_saved', current_setting('hnsw.ef_search') || ' ' || current_setting('hnsw.iterative_scan');
SELECT pgembed.hnsw_end(:'inner_saved') \gset
SELECT pgembed.hnsw_begin(NULL, NULL, 5000) AS inner_saved \gset
SELECT 'hnsw_begin k 5000', current_setting('hnsw.ef_search') || ' ' || current_setting('hnsw.iterative_scan');
SELECT pgembed.hnsw_end(:'inner_saved') \gset
SELECT pgembed.hnsw_begin(300, 'strict_order', 5000) AS inner_saved \gset
SELECT 'hnsw_begin given', current_setting('hnsw.ef_search') || ' ' || current_setting('hnsw.iterative_scan');
SELECT pgembed.hnsw_end(:'inner_saved') \gset
SELECT pgembed.hnsw_end(:'saved') \gset
SELECT 'hnsw_end', current_setting('hnsw.ef_search') || ' ' || current_setting('hnsw.iterative_scan');
SELECT 'error hnsw_begin ef_search', pg_temp.try($$SELECT pgembed.hnsw_begin(1001, NULL, 5)$$);
SELECT 'error hnsw_begin iterative_scan', pg_temp.try($$SELECT pgembed.hnsw_begin(NULL, 'sideways', 5)$$);
SELECT 'hnsw after errors', current_setting('hnsw.ef_search') || ' ' || current_setting('hnsw.iterative_scan');

-- ivfflat_begin/ivfflat_end
SET LOCAL ivfflat.probes = 2;
SET LOCAL ivfflat.iterative_scan = off;
SELECT pgembed.ivfflat_begin(NULL, NULL, 10) AS saved \gset
SELECT 'ivfflat_begin lists 10', :'saved', current_setting('ivfflat.probes') || ' ' || current_setting('ivfflat.iterative_scan');
SELECT pgembed.ivfflat_end(:'saved') \gset
SELECT pgembed.ivfflat_begin(7, 'off', 10) AS saved \gset
SELECT 'ivfflat_begin given', current_setting('ivfflat.probes') || ' ' || current_setting('ivfflat.iterative_scan');
SELECT pgembed.ivfflat_end(:'saved') \gset
SELECT 'ivfflat_end', current_setting('ivfflat.probes') || ' ' || current_setting('ivfflat.iterative_scan');
SELECT 'error ivfflat_begin probes', pg_temp.try($$SELECT pgembed.ivfflat_begin(11, NULL, 10)$$);
SELECT 'error ivfflat_begin iterative_scan', pg_temp.try($$SELECT pgembed.ivfflat_begin(NULL, 'strict', 10)$$);

ROLLBACK;
