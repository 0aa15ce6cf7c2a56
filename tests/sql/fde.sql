-- pgembed.fde_query (by config and by collection) and pgembed.ams_vectors, run by psql:
--   psql -X -q -v ON_ERROR_STOP=1 -f tests/sql/fde.sql <database at pgembed head>
-- Everything happens in one transaction that is rolled back. Output: one `check|value`
-- line per check, compared with fde.expected.
BEGIN;
\ir _try.psql

-- ams_vectors: vector r*d_proj + t holds ams_sign[r, j] where ams_index[r, j] = t, else 0
SELECT 'ams_vectors R=1', pgembed.ams_vectors('{0,1,1,0}', '{1,-1,1,1}', 1, 2);
SELECT 'ams_vectors R=2', pgembed.ams_vectors('{0,1,1,0}', '{1,-1,1,1}', 2, 2);
SELECT 'ams_vectors NULL', coalesce(pgembed.ams_vectors(NULL, '{1}', 1, 1)::text, 'NULL');

-- Four configs on d = 4 with SimHash on the first coordinate (k_sim = 1, R = 1): a token
-- with a positive first coordinate lands in partition 1, any other in partition 0, and a
-- query sums its tokens per partition.
--   identity: out = [block 0, block 1], 8 dims
--   ams:      each block projected on the AMS vectors [1,0,0,1] and [0,-1,1,0], 4 dims
--   final:    ams, then out[final_index[i]] += final_sign[i] * fde[i], 3 dims
--   no simhash (k_sim = 0): one block, the sum of the tokens, 4 dims
CREATE TEMP TABLE cfg (name text PRIMARY KEY, id integer);
WITH ins AS (
    INSERT INTO pgembed.fde_configs (dimension, num_repetitions, num_simhash_projections,
        projection, projection_dimension, fill_empty_partitions, final_projection_dimension,
        seed, output_dimension, matrices, simhash, simhash_vectors, ams_index, ams_sign,
        final_index, final_sign)
    VALUES (4, 1, 1, 'identity', 4, true, NULL, 1, 8, '\x00', '{1,0,0,0}', '{"[1,0,0,0]"}',
            NULL, NULL, NULL, NULL),
           (4, 1, 1, 'ams_sketch', 2, true, NULL, 2, 4, '\x00', '{1,0,0,0}', '{"[1,0,0,0]"}',
            '{0,1,1,0}', '{1,-1,1,1}', NULL, NULL),
           (4, 1, 1, 'ams_sketch', 2, true, 3, 3, 3, '\x00', '{1,0,0,0}', '{"[1,0,0,0]"}',
            '{0,1,1,0}', '{1,-1,1,1}', '{0,2,1,2}', '{1,1,-1,1}'),
           (4, 1, 0, 'identity', 4, true, NULL, 4, 4, '\x00', '{}', '{}',
            NULL, NULL, NULL, NULL),
           -- broken rows: no simhash_vectors; an AMS projection without its sketch
           (4, 1, 1, 'identity', 4, true, NULL, 5, 8, '\x00', '{1,0,0,0}', NULL,
            NULL, NULL, NULL, NULL),
           (4, 1, 1, 'ams_sketch', 2, true, NULL, 6, 4, '\x00', '{1,0,0,0}', '{"[1,0,0,0]"}',
            NULL, NULL, NULL, NULL)
    RETURNING id, seed
)
INSERT INTO cfg SELECT (ARRAY['identity', 'ams', 'final', 'no simhash', 'no simhash_vectors',
                              'no ams'])[seed], id FROM ins;

SELECT 'ams_vectors column', c.name, coalesce(f.ams_vectors::text, 'NULL')
FROM cfg AS c JOIN pgembed.fde_configs AS f ON f.id = c.id ORDER BY c.name;

\set qt '''{"[1,0.5,0,0]","[0,0,1,0]","[2,0,0,1]"}''::vector[]'

-- partition 1: [1,0.5,0,0] + [2,0,0,1] = [3,0.5,0,1]; partition 0: [0,0,1,0]
SELECT 'fde_query ' || c.name, pgembed.fde_query(c.id, :qt)
FROM cfg AS c WHERE c.name IN ('identity', 'ams', 'final', 'no simhash') ORDER BY c.name;
-- one token: the other partition stays empty (a query never fills it)
SELECT 'fde_query one token', pgembed.fde_query(id, '{"[-1,2,0,0]"}') FROM cfg WHERE name = 'identity';
SELECT 'fde_query NULL', coalesce(pgembed.fde_query(id, NULL)::text, 'NULL') FROM cfg WHERE name = 'identity';

-- by collection: the collection's FDE config
INSERT INTO pgembed.encoders (name, fingerprint, dim, max_length) VALUES ('fde-enc', 'fde', 4, 16);
INSERT INTO pgembed.collections (name, table_name, encoder, fde_config, kinds)
SELECT 'fde ams', 'fde ams', 'fde-enc', id, '{
    "fde": {"column": "fde", "dim": 4, "index": "halfvec"},
    "multivector": {"column": "tokens", "dim": 4}}'
FROM cfg WHERE name = 'ams';
INSERT INTO pgembed.collections (name, table_name, encoder, fde_config, kinds) VALUES
    ('fde none', 'fde none', 'fde-enc', NULL, '{"fde": {"column": "fde", "dim": 4, "index": "halfvec"}}'),
    ('fde single', 'fde single', 'fde-enc', NULL, '{"single": {"column": "embedding", "type": "vector", "dim": 4, "distance": "ip"}}');
SELECT 'fde_query collection', pgembed.fde_query('fde ams', :qt);
SELECT 'fde_query collection = config', pgembed.fde_query('fde ams', :qt) = pgembed.fde_query(id, :qt)
FROM cfg WHERE name = 'ams';

SELECT 'error unknown config', pg_temp.try($$SELECT pgembed.fde_query(987654, '{"[1,0,0,0]"}')$$);
-- (the config's id shown as <id>)
SELECT 'error ' || name, replace(pg_temp.try(format('SELECT pgembed.fde_query(%s, %L::vector[])', id, '{"[1,0,0,0]"}')),
                                 'config ' || id, 'config <id>')
FROM cfg WHERE name IN ('no simhash_vectors', 'no ams') ORDER BY name;
SELECT 'error ' || e.c, pg_temp.try(format('SELECT pgembed.fde_query(%s, %L::vector[])', cfg.id, e.q))
FROM cfg, (VALUES (1, 'empty query', '{}'),
                  (2, 'NULL token', '{"[1,0,0,0]",NULL}'),
                  (3, 'token dimensions', '{"[1,0,0,0]","[1,0]"}')) AS e(n, c, q)
WHERE cfg.name = 'identity' ORDER BY e.n;
SELECT 'error unknown collection', pg_temp.try($$SELECT pgembed.fde_query('nope', '{"[1,0,0,0]"}')$$);
SELECT 'error collection without fde', pg_temp.try($$SELECT pgembed.fde_query('fde single', '{"[1,0,0,0]"}')$$);
SELECT 'error collection without config', pg_temp.try($$SELECT pgembed.fde_query('fde none', '{"[1,0,0,0]"}')$$);
SELECT 'error collection token dimensions', pg_temp.try($$SELECT pgembed.fde_query('fde ams', '{"[1,0]"}')$$);

ROLLBACK;
