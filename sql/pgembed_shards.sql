-- pgembed: BM25 over sharded collections, installed by revision 0007 on every database.
--
-- A sharded collection is an ordinary collection on each shard. BM25 scores of different
-- shards compare only when every shard scores with the statistics of the whole collection:
-- the coordinator asks each shard for pgembed.bm25_statistics(collection, query), sums
-- them, and has each shard score with pgembed.search_bm25_global(..., the sums). Scores
-- then equal those of one server holding every row (search_bm25's formula, unchanged).

CREATE OR REPLACE FUNCTION pgembed.bm25_statistics(collection text, query text,
    OUT docs bigint, OUT tokens bigint, OUT lexemes text[], OUT dfs bigint[])
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c record;
    l jsonb;
    cfg pg_catalog.regconfig;
BEGIN
    SELECT * INTO c FROM pgembed.collection_info(collection, 'lexical'::text);
    l := c.kinds -> 'lexical'::text;
    IF query IS NULL THEN
        RAISE EXCEPTION 'pgembed: the query text is NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    cfg := (l ->> 'config'::text)::pg_catalog.regconfig;
    SELECT coalesce(pg_catalog.array_agg(u.lexeme ORDER BY u.lexeme COLLATE "C"), '{}'::text[])
      INTO lexemes FROM pg_catalog.unnest(pg_catalog.to_tsvector(cfg, query)) AS u;
    EXECUTE pg_catalog.format('SELECT s.docs, s.tokens FROM %I.%I AS s WHERE s.lexeme = ''''::text',
                              c.table_schema, l ->> 'stats'::text) INTO docs, tokens;
    docs := coalesce(docs, 0::bigint);
    tokens := coalesce(tokens, 0::bigint);
    EXECUTE pg_catalog.format(
        'SELECT coalesce(pg_catalog.array_agg(coalesce(s.docs, 0::bigint) ORDER BY q.o), ''{}''::bigint[]) '
        'FROM pg_catalog.unnest($1) WITH ORDINALITY AS q(l, o) LEFT JOIN %I.%I AS s ON s.lexeme = q.l',
        c.table_schema, l ->> 'stats'::text) INTO dfs USING lexemes;
END
$fn$;

COMMENT ON FUNCTION pgembed.bm25_statistics(text, text) IS
    'This database''s BM25 statistics of a lexical collection for a query: its number of rows (docs) and their total length (tokens), the query''s lexemes under the collection''s text search configuration (sorted) and the number of rows holding each (dfs). Summed over the shards of a sharded collection, they are what pgembed.search_bm25_global takes.';

CREATE OR REPLACE FUNCTION pgembed.search_bm25_global(
    collection text, query text, docs bigint, tokens bigint, lexemes text[], dfs bigint[],
    k integer DEFAULT 10, k1 double precision DEFAULT 1.2, b double precision DEFAULT 0.75)
    RETURNS TABLE (id bigint, score double precision)
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY INVOKER ROWS 10
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c record;
    l jsonb;
    cfg pg_catalog.regconfig;
    lex text[];
    df bigint[];
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
    IF query IS NULL OR docs IS NULL OR tokens IS NULL OR lexemes IS NULL OR dfs IS NULL THEN
        RAISE EXCEPTION 'pgembed: the query text and the statistics must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'pass the sums of pgembed.bm25_statistics over every shard';
    END IF;
    IF pg_catalog.cardinality(lexemes) <> pg_catalog.cardinality(dfs) THEN
        RAISE EXCEPTION 'pgembed: % lexemes but % document frequencies',
            pg_catalog.cardinality(lexemes), pg_catalog.cardinality(dfs)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass one document frequency per lexeme, as pgembed.bm25_statistics returns them';
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
    IF docs <= 0::bigint OR tokens <= 0::bigint THEN
        RETURN;  -- no rows anywhere, or none with a lexeme: nothing matches
    END IF;
    -- the given frequency of each of this query's lexemes (0 for one none of the shards has)
    df := ARRAY(SELECT coalesce(dfs[pg_catalog.array_position(lexemes, x.l)], 0::bigint)
                FROM pg_catalog.unnest(lex) WITH ORDINALITY AS x(l, o) ORDER BY x.o);
    idf := ARRAY(SELECT pg_catalog.ln(1::double precision
                       + ((docs::double precision - d.df::double precision) + 0.5::double precision)
                         / (d.df::double precision + 0.5::double precision))
                 FROM pg_catalog.unnest(df) WITH ORDINALITY AS d(df, o) ORDER BY d.o);
    -- From here on as pgembed.search_bm25: one tsquery operand per lexeme, the candidates
    -- from the GIN index, tf and document length read back through ts_rank.
    each := ARRAY(SELECT pg_catalog.array_to_tsvector(ARRAY[x.l])::text::pg_catalog.tsquery
                  FROM pg_catalog.unnest(lex) WITH ORDINALITY AS x(l, o) ORDER BY x.o);
    SELECT pg_catalog.string_agg(pg_catalog.array_to_tsvector(ARRAY[x.l])::text, ' | '::text ORDER BY x.o)::pg_catalog.tsquery
      INTO tq FROM pg_catalog.unnest(lex) WITH ORDINALITY AS x(l, o);
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
        USING tq, k, each, idf, k1, b, tokens::double precision / docs::double precision,
              pgembed.bm25_tf_table();
END
$fn$;

COMMENT ON FUNCTION pgembed.search_bm25_global(text, text, bigint, bigint, text[], bigint[], integer, double precision, double precision) IS
    'pgembed.search_bm25 (k, k1, b as there) with the statistics given instead of read: docs and tokens (rows and their total length) and each lexeme''s document frequency, summed over every shard of a sharded collection (pgembed.bm25_statistics), so that every shard''s scores are those of the whole collection.';
