-- pgembed_scoring.maxsim: values, blocking edges, both kernels, NULL/empty inputs, errors.

-- sum over query tokens of the best inner product: 2 + 3
SELECT pgembed_scoring.maxsim('{"[1,2]","[3,-4]"}'::halfvec[], '{"[1,0]","[0,1]","[0.5,0.5]"}'::halfvec[]);
SELECT pgembed_scoring.maxsim('{"[1,2]","[3,-4]"}'::vector[], '{"[1,0]","[0,1]","[0.5,0.5]"}'::vector[]);

-- negative scores: the zero padding of a partial 16-token block never wins
SELECT pgembed_scoring.maxsim('{"[1,0]"}'::halfvec[],
    (SELECT array_agg(format('[%s,1]', -i)::halfvec ORDER BY i) FROM generate_series(1, 17) AS i));

-- the best token last, past a 16-token block and a 64-token chunk; 5 query tokens (a partial block of 4)
SELECT pgembed_scoring.maxsim(
    (SELECT array_agg(format('[%s,1,0]', i)::vector ORDER BY i) FROM generate_series(1, 5) AS i),
    (SELECT array_agg(format('[%s,-1,%s]', i, i)::vector ORDER BY i) FROM generate_series(1, 70) AS i));

-- a two-dimensional array is read in storage order
SELECT pgembed_scoring.maxsim('{{"[1,0]","[0,1]"}}'::halfvec[], '{{"[2,0]"},{"[0,3]"}}'::halfvec[]);

-- fp16 edges: the largest finite half, the smallest subnormal
SELECT pgembed_scoring.maxsim('{"[65504]"}'::halfvec[], '{"[1]","[-65504]"}'::halfvec[]);
SELECT pgembed_scoring.maxsim('{"[6e-08]"}'::halfvec[], '{"[16384]"}'::halfvec[]) > 0 AS subnormal_survives;

-- the portable kernel gives the same sums
SET pgembed_scoring.kernel = portable;
SELECT pgembed_scoring.kernel();
SELECT pgembed_scoring.maxsim(
    (SELECT array_agg(format('[%s,1,0]', i)::vector ORDER BY i) FROM generate_series(1, 5) AS i),
    (SELECT array_agg(format('[%s,-1,%s]', i, i)::vector ORDER BY i) FROM generate_series(1, 70) AS i));
SELECT pgembed_scoring.maxsim('{"[1,0]"}'::halfvec[],
    (SELECT array_agg(format('[%s,1]', -i)::halfvec ORDER BY i) FROM generate_series(1, 17) AS i));
RESET pgembed_scoring.kernel;
SELECT pgembed_scoring.kernel() IN ('avx2', 'portable') AS known_kernel;

-- NULL in, NULL out; an empty document: NULL
SELECT pgembed_scoring.maxsim(NULL::halfvec[], '{"[1,2]"}') IS NULL AS null_query;
SELECT pgembed_scoring.maxsim('{"[1,2]"}'::vector[], NULL) IS NULL AS null_document;
SELECT pgembed_scoring.maxsim('{"[1,2]"}'::vector[], '{}') IS NULL AS empty_document;

-- errors: the messages, hints and SQLSTATEs of pgembed's SQL maxsim
\set VERBOSITY default
SELECT pgembed_scoring.maxsim('{}'::halfvec[], '{"[1,2]"}');
\echo :LAST_ERROR_SQLSTATE
SELECT pgembed_scoring.maxsim('{"[1,2]",NULL}'::halfvec[], '{"[1,2]"}');
\echo :LAST_ERROR_SQLSTATE
SELECT pgembed_scoring.maxsim('{"[1,2]"}'::vector[], '{"[1,2]","[3,4]",NULL}');
\echo :LAST_ERROR_SQLSTATE
SELECT pgembed_scoring.maxsim('{"[1,2]","[1,2,3]"}'::vector[], '{"[1,2]"}');
\echo :LAST_ERROR_SQLSTATE
SELECT pgembed_scoring.maxsim('{"[1,2]"}'::halfvec[], '{"[1,2]","[1,2,3]"}');
\echo :LAST_ERROR_SQLSTATE
-- the first bad token wins, query tokens before document tokens
SELECT pgembed_scoring.maxsim('{"[1,2]","[1,2,3]"}'::halfvec[], '{NULL}');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
SELECT pgembed_scoring.maxsim('{"[1,2]"}'::halfvec[], ARRAY[NULL, '[1,2]']::halfvec[]);
\echo :LAST_ERROR_SQLSTATE
