-- pgembed's lexical functions on a tiny hand-made collection, run by psql:
--   psql -X -q -v ON_ERROR_STOP=1 -f tests/sql/hybrid.sql <database at pgembed head>
-- Everything happens in one transaction that is rolled back. Output: one `check|value`
-- line per check, compared with hybrid.expected: BM25 scores, pgembed.fuse (rrf, convex),
-- search_hybrid, the statistics table after inserts, updates and deletes, bad input.
BEGIN;
\ir _try.psql

-- d = 2; the lexical kind under the 'simple' configuration (no stemming, no stop words)
INSERT INTO pgembed.encoders (name, fingerprint, dim, max_length)
VALUES ('hybrid-enc', 'hybrid', 2, 16);
INSERT INTO pgembed.collections (name, table_name, encoder, kinds) VALUES
    ('lex docs', 'lex docs', 'hybrid-enc', '{
        "single": {"column": "embedding", "type": "vector", "dim": 2, "distance": "cosine"},
        "lexical": {"column": "lexemes", "config": "simple", "stats": "lex docs_lexical_stats"}}'),
    ('plain docs', 'plain docs', 'hybrid-enc', '{
        "single": {"column": "embedding", "type": "vector", "dim": 2, "distance": "cosine"}}');

CREATE TABLE "lex docs" (
    id bigint PRIMARY KEY,
    content text,
    embedding vector(2),
    lexemes tsvector GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, coalesce(content, ''))) STORED
);
CREATE INDEX ON "lex docs" USING gin (lexemes);
CREATE TABLE "lex docs_lexical_stats" (
    lexeme text COLLATE "C" PRIMARY KEY, docs bigint NOT NULL, tokens bigint NOT NULL);
CREATE TRIGGER "lex docs_lexical_insert" AFTER INSERT ON "lex docs"
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pgembed.lexical_stats_update();
CREATE TRIGGER "lex docs_lexical_update" AFTER UPDATE ON "lex docs"
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pgembed.lexical_stats_update();
CREATE TRIGGER "lex docs_lexical_delete" AFTER DELETE ON "lex docs"
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION pgembed.lexical_stats_update();
CREATE TABLE "plain docs" (id bigint PRIMARY KEY, content text, embedding vector(2));

-- N = 4, lengths 3, 2, 4, 1 (avgdl 2.5); df: storm 2, rain 2, coast 1, city 1, river 1
INSERT INTO "lex docs" VALUES
    (1, 'storm rain coast', '[1,0]'),
    (2, 'storm storm', '[0,1]'),
    (3, 'rain river city rain', '[1,1]'),
    (4, 'city', '[-1,0.5]');

SELECT 'stats', string_agg(lexeme || ':' || docs || '/' || tokens, ' ' ORDER BY lexeme)
FROM "lex docs_lexical_stats";
SELECT 'stats = recompute', (SELECT array_agg(s ORDER BY s.lexeme) FROM "lex docs_lexical_stats" s)
    = (SELECT array_agg(ROW(r.lexeme, r.docs, r.tokens)::"lex docs_lexical_stats" ORDER BY r.lexeme COLLATE "C")
       FROM pgembed.lexical_stats_recompute('lex docs') r);

-- idf(storm) = ln(1 + 2.5/2.5) = ln 2; doc 2: tf 2, dl 2:
--   ln2 * 2 / (2 + 1.2 * (0.25 + 0.75 * 2/2.5)) = 0.6931... * 2 / 2.02
SELECT 'bm25 storm', string_agg(id || ':' || round(score::numeric, 6), ' ' ORDER BY n)
FROM pgembed.search_bm25('lex docs', 'storm', 10) WITH ORDINALITY AS s(id, score, n);
SELECT 'bm25 storm rain city', string_agg(id || ':' || round(score::numeric, 6), ' ' ORDER BY n)
FROM pgembed.search_bm25('lex docs', 'storm rain city', 10) WITH ORDINALITY AS s(id, score, n);
SELECT 'bm25 k1 b', string_agg(id || ':' || round(score::numeric, 6), ' ' ORDER BY n)
FROM pgembed.search_bm25('lex docs', 'storm rain', 10, 2.0, 0.0) WITH ORDINALITY AS s(id, score, n);
SELECT 'bm25 k1 0', string_agg(id || ':' || round(score::numeric, 6), ' ' ORDER BY n)
FROM pgembed.search_bm25('lex docs', 'storm rain', 10, 0.0, 0.75) WITH ORDINALITY AS s(id, score, n);
SELECT 'bm25 k = 1', string_agg(id::text, ' ') FROM pgembed.search_bm25('lex docs', 'rain', 1);
SELECT 'bm25 no match', count(*) FROM pgembed.search_bm25('lex docs', 'zebra', 10);

-- fuse: lexical 1, 2, 3 (3, 2, 1); dense 3, 4, 1 (0.9, 0.5, 0.1)
SELECT 'fuse rrf', string_agg(id || ':' || round(score::numeric, 6), ' ' ORDER BY n)
FROM pgembed.fuse('{1,2,3}', '{3,2,1}', '{3,4,1}', '{0.9,0.5,0.1}', 10) WITH ORDINALITY AS s(id, score, n);
SELECT 'fuse rrf weights', string_agg(id || ':' || round(score::numeric, 6), ' ' ORDER BY n)
FROM pgembed.fuse('{1,2,3}', '{3,2,1}', '{3,4,1}', '{0.9,0.5,0.1}', 3, 'rrf', 0, 2.0, 0.5) WITH ORDINALITY AS s(id, score, n);
SELECT 'fuse convex', string_agg(id || ':' || round(score::numeric, 6), ' ' ORDER BY n)
FROM pgembed.fuse('{1,2,3}', '{3,2,1}', '{3,4,1}', '{0.9,0.5,0.1}', 4, 'convex', alpha => 0.25) WITH ORDINALITY AS s(id, score, n);
SELECT 'fuse convex equal scores', string_agg(id || ':' || round(score::numeric, 6), ' ' ORDER BY n)
FROM pgembed.fuse('{5,6}', '{1,1}', '{}', '{}', 4, 'convex') WITH ORDINALITY AS s(id, score, n);

-- search_hybrid: BM25 of the text and knn of the vector, each `depth` deep, fused
SELECT 'hybrid rrf', string_agg(id || ':' || round(score::numeric, 6), ' ' ORDER BY n)
FROM pgembed.search_hybrid('lex docs', 'storm city', '[1,0.2]'::vector, 3) WITH ORDINALITY AS s(id, score, n);
SELECT 'hybrid convex', string_agg(id || ':' || round(score::numeric, 6), ' ' ORDER BY n)
FROM pgembed.search_hybrid('lex docs', 'storm city', '[1,0.2]'::vector, 3, fusion => 'convex', alpha => 0.5)
    WITH ORDINALITY AS s(id, score, n);
SELECT 'hybrid depth 1', string_agg(id || ':' || round(score::numeric, 6), ' ' ORDER BY n)
FROM pgembed.search_hybrid('lex docs', 'storm city', '[1,0.2]'::vector, 1, depth => 1) WITH ORDINALITY AS s(id, score, n);

-- statistics after updates and deletes (a vector-only update touches none)
UPDATE "lex docs" SET content = 'river river river' WHERE id = 2;
DELETE FROM "lex docs" WHERE id = 4;
UPDATE "lex docs" SET embedding = '[0,1]' WHERE id = 1;
UPDATE "lex docs" SET content = NULL WHERE id = 3;
INSERT INTO "lex docs" VALUES (5, 'storm over the city', '[1,0]'), (6, NULL, '[0,1]');
SELECT 'stats after writes', string_agg(lexeme || ':' || docs || '/' || tokens, ' ' ORDER BY lexeme)
FROM "lex docs_lexical_stats" WHERE docs <> 0 OR tokens <> 0;
SELECT 'stats = recompute after writes',
    (SELECT array_agg(s ORDER BY s.lexeme) FROM "lex docs_lexical_stats" s WHERE docs <> 0 OR tokens <> 0)
    = (SELECT array_agg(ROW(r.lexeme, r.docs, r.tokens)::"lex docs_lexical_stats" ORDER BY r.lexeme COLLATE "C")
       FROM pgembed.lexical_stats_recompute('lex docs') r);
SELECT 'bm25 after writes', string_agg(id || ':' || round(score::numeric, 6), ' ' ORDER BY n)
FROM pgembed.search_bm25('lex docs', 'storm river', 10) WITH ORDINALITY AS s(id, score, n);

-- bad input: each a clear error, nothing written
SELECT 'error bm25 empty', pg_temp.try($$SELECT * FROM pgembed.search_bm25('lex docs', '')$$);
SELECT 'error bm25 stop words', pg_temp.try($$SELECT * FROM pgembed.search_bm25('lex docs', ' , ; ')$$);
SELECT 'error bm25 NULL', pg_temp.try($$SELECT * FROM pgembed.search_bm25('lex docs', NULL)$$);
SELECT 'error bm25 k1', pg_temp.try($$SELECT * FROM pgembed.search_bm25('lex docs', 'storm', 10, -1.0)$$);
SELECT 'error bm25 b', pg_temp.try($$SELECT * FROM pgembed.search_bm25('lex docs', 'storm', 10, 1.2, 1.5)$$);
SELECT 'error bm25 k', pg_temp.try($$SELECT * FROM pgembed.search_bm25('lex docs', 'storm', 0)$$);
SELECT 'error bm25 no lexical', pg_temp.try($$SELECT * FROM pgembed.search_bm25('plain docs', 'storm')$$);
SELECT 'error fuse fusion', pg_temp.try($$SELECT * FROM pgembed.fuse('{1}', '{1}', '{}', '{}', 10, 'max')$$);
SELECT 'error fuse lengths', pg_temp.try($$SELECT * FROM pgembed.fuse('{1,2}', '{1}', '{}', '{}')$$);
SELECT 'error fuse weight', pg_temp.try($$SELECT * FROM pgembed.fuse('{1}', '{1}', '{}', '{}', 10, 'rrf', 60, -1.0)$$);
SELECT 'error fuse weights 0', pg_temp.try($$SELECT * FROM pgembed.fuse('{1}', '{1}', '{}', '{}', 10, 'rrf', 60, 0.0, 0.0)$$);
SELECT 'error fuse alpha', pg_temp.try($$SELECT * FROM pgembed.fuse('{1}', '{1}', '{}', '{}', 10, 'convex', alpha => 1.5)$$);
SELECT 'error hybrid dense', pg_temp.try($$SELECT * FROM pgembed.search_hybrid('lex docs', 'storm', '[1,0]'::vector, 10, 'funnel')$$);
SELECT 'error hybrid dense name', pg_temp.try($$SELECT * FROM pgembed.search_hybrid('lex docs', 'storm', '[1,0]'::vector, 10, 'sparse')$$);
SELECT 'error hybrid tokens dense', pg_temp.try($$SELECT * FROM pgembed.search_hybrid('lex docs', 'storm', '{"[1,0]"}'::vector[], 10, 'knn')$$);
SELECT 'error hybrid no lexical', pg_temp.try($$SELECT * FROM pgembed.search_hybrid('plain docs', 'storm', '[1,0]'::vector)$$);
SELECT 'error hybrid depth', pg_temp.try($$SELECT * FROM pgembed.search_hybrid('lex docs', 'storm', '[1,0]'::vector, 10, depth => 5)$$);
SELECT 'error hybrid stop words', pg_temp.try($$SELECT * FROM pgembed.search_hybrid('lex docs', '...', '[1,0]'::vector)$$);
SELECT 'error hybrid dims', pg_temp.try($$SELECT * FROM pgembed.search_hybrid('lex docs', 'storm', '[1,0,0]'::vector)$$);
SELECT 'rows unchanged', count(*) || ' ' || (SELECT sum(docs) FROM "lex docs_lexical_stats" WHERE lexeme = '')
FROM "lex docs";

ROLLBACK;
