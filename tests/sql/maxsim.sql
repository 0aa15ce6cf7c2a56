-- pgembed.maxsim, both overloads (vector[] and halfvec[]), run by psql:
--   psql -X -q -v ON_ERROR_STOP=1 -f tests/sql/maxsim.sql <database at pgembed head>
-- Everything happens in one transaction that is rolled back. Output: one `check|value`
-- line per check, compared with maxsim.expected.
BEGIN;
\ir _try.psql

-- MaxSim(q, d) = sum over query tokens of the max inner product with any document token
CREATE TEMP TABLE docs (id integer PRIMARY KEY, tokens vector(2)[]);
INSERT INTO docs VALUES
    (1, '{"[1,0]","[0,1]"}'),           -- 1 + 1 = 2
    (2, '{"[0.5,0.5]"}'),               -- 0.5 + 0.5 = 1
    (3, '{"[-1,0]","[0,-2]"}'),         -- max(-1, 0) + max(0, -2) = 0
    (4, '{"[2,0]","[2,0]","[0,0.25]"}'), -- 2 + 0.25 = 2.25 (duplicates change nothing)
    (5, '{}');                          -- no tokens: NULL
\set q '''{"[1,0]","[0,1]"}''::vector[]'

SELECT 'vector[] per document', string_agg(id || ':' || coalesce(round(pgembed.maxsim(:q, tokens)::numeric, 6)::text, 'NULL'), ' ' ORDER BY id)
FROM docs;
SELECT 'halfvec[] per document', string_agg(id || ':' || coalesce(round(pgembed.maxsim(:q::halfvec[], tokens::halfvec[])::numeric, 6)::text, 'NULL'), ' ' ORDER BY id)
FROM docs;
SELECT 'ranked', string_agg(id::text, ' ' ORDER BY pgembed.maxsim(:q, tokens) DESC NULLS LAST, id)
FROM docs;

-- a query token counts once per occurrence; negative inner products stay negative
SELECT 'repeated query token', pgembed.maxsim('{"[1,0]","[1,0]"}'::vector[], '{"[3,0]"}');
SELECT 'negative', pgembed.maxsim('{"[1,0]"}'::vector[], '{"[-1,0]","[-2,0]"}');
-- halfvec rounds: 0.1 -> 0.0999755859375, 0.3 -> 0.300048828125, ...
SELECT 'vector[] rounding', round(pgembed.maxsim('{"[0.1,0.2]"}'::vector[], '{"[0.3,0.4]"}')::numeric, 6);
SELECT 'halfvec[] rounding', round(pgembed.maxsim('{"[0.1,0.2]"}'::halfvec[], '{"[0.3,0.4]"}')::numeric, 6);

-- STRICT: NULL in, NULL out; an empty document: NULL
SELECT 'NULL query', coalesce(pgembed.maxsim(NULL::vector[], '{"[1,0]"}')::text, 'NULL');
SELECT 'NULL document', coalesce(pgembed.maxsim('{"[1,0]"}'::halfvec[], NULL)::text, 'NULL');
SELECT 'empty document', coalesce(pgembed.maxsim('{"[1,0]"}'::halfvec[], '{}')::text, 'NULL');

-- errors, both overloads
SELECT 'error ' || t || ' ' || c, pg_temp.try(format('SELECT pgembed.maxsim(%L::%s[], %L::%s[])', q, t, d, t))
FROM (VALUES ('vector'), ('halfvec')) AS ty(t),
     (VALUES (1, 'empty query', '{}', '{"[1,2]"}'),
             (2, 'NULL query token', '{"[1,2]",NULL}', '{"[1,2]"}'),
             (3, 'NULL first query token', '{NULL,"[1,2]"}', '{"[1,2]"}'),
             (4, 'NULL document token', '{"[1,2]"}', '{"[3,4]",NULL,"[5,6]"}'),
             (5, 'mixed query dimensions', '{"[1,2]","[1,2,3]"}', '{"[1,2]"}'),
             (6, 'mixed document dimensions', '{"[1,2]"}', '{"[1,2]","[1,2,3]"}'),
             (7, 'document of other dimensions', '{"[1,2]"}', '{"[1,2,3]"}'),
             (8, 'query error first', '{"[1,2]",NULL}', '{"[1,2,3]"}')) AS e(n, c, q, d)
ORDER BY t DESC, n;

ROLLBACK;
