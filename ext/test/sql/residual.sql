-- pgembed_scoring.residual_levels and residual_similarity: values, unaligned levels, errors.

-- levels of [1,-2,3,0.5,-0.1]: scale 0 = mean |x| = 1.32, then the residual's
SELECT codes::text[], scales FROM pgembed_scoring.residual_levels('[1,-2,3,0.5,-0.1]', 3);
SELECT codes::text[], scales FROM pgembed_scoring.residual_levels('[0,0,0]', 2);

-- sum over i, j of s_i s_j (len - 2 hamming(level i, doc level j)): a doc equal to the
-- query's own code scores the squared norm of its reconstruction
SELECT pgembed_scoring.residual_similarity('{1100,1010}', '{2,0.5}', B'11001010');
-- doc levels 1010, 0011: 4 (4 - 2*2) + 1 (4 - 2*4) + 1 (4 - 2*0) + 0.25 (4 - 2*2) = 0
SELECT pgembed_scoring.residual_similarity('{1100,1010}', '{2,0.5}', B'10100011');
-- 5-bit levels: level 1 of the doc starts inside a byte; 70-bit levels cross words
SELECT pgembed_scoring.residual_similarity('{10110,00101}', '{1,1}', B'1011000101');
SELECT pgembed_scoring.residual_similarity(
    ARRAY[repeat('10', 35)::bit varying, repeat('1', 70)::bit varying], '{1,0.25}',
    (repeat('10', 35) || repeat('0', 70))::bit varying);
-- a longer doc: its extra bits are ignored (as the SQL version's substring does)
SELECT pgembed_scoring.residual_similarity('{1100}', '{1}', B'110011111111');
-- levels and scales as residual_levels makes them, scored against their own code
SELECT pgembed_scoring.residual_similarity(l.codes, l.scales, l.codes[1] || l.codes[2] || l.codes[3])
FROM pgembed_scoring.residual_levels('[1,-2,3,0.5,-0.1]', 3) AS l;

-- NULL in, NULL out
SELECT pgembed_scoring.residual_similarity(NULL, '{1}', B'1') IS NULL AS null_codes;
SELECT (pgembed_scoring.residual_levels(NULL, 2)).codes IS NULL AS null_query;

-- errors
\set VERBOSITY default
SELECT * FROM pgembed_scoring.residual_levels('[1,2]', 0);
SELECT * FROM pgembed_scoring.residual_levels('[1,2]', 17);
SELECT pgembed_scoring.residual_similarity('{}', '{}', B'1');
SELECT pgembed_scoring.residual_similarity('{1100,NULL}', '{1,1}', B'11001100');
SELECT pgembed_scoring.residual_similarity('{1100,1010}', '{1,NULL}', B'11001100');
SELECT pgembed_scoring.residual_similarity('{1100,1010}', '{1}', B'11001100');
SELECT pgembed_scoring.residual_similarity('{1100,101}', '{1,1}', B'11001100');
SELECT pgembed_scoring.residual_similarity('{1100,1010}', '{1,1}', B'1100110');
SELECT pgembed_scoring.residual_similarity('{{1100},{1010}}', '{1,1}', B'11001100');
SELECT pgembed_scoring.residual_similarity('{1100}', '{{1}}', B'1100');
