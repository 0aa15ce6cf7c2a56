-- pgembed_scoring.fde_query: hand-checked FDEs, identity and AMS projections, the final count
-- sketch, and errors on malformed configs.

-- k = 0: one partition, identity: the FDE is the sum of the tokens
SELECT pgembed_scoring.fde_query('{"[1,2]","[3,-4]"}', 1, 0, 2, 2, '{}', NULL, NULL, NULL, NULL);
-- two repetitions, k = 1 with simhash (r, d, k) = ([1,0], [0,1]): repetition 0 splits on
-- x[0] > 0, repetition 1 on x[1] > 0; token [1,2] goes to partitions 1 and 1, [3,-4] to 1 and 0
SELECT pgembed_scoring.fde_query('{"[1,2]","[3,-4]"}', 2, 1, 2, 8, '{1,0,0,1}', NULL, NULL, NULL, NULL);
-- k = 2, simhash [[1,0],[0,1]]: bits (x0 > 0, x1 > 0) read as a Gray code:
-- [1,2] bits 11 -> partition 2; [-1,2] bits 01 -> 1; [-1,-2] bits 00 -> 0; [1,-2] bits 10 -> 3
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 1, 2, 2, 8, '{1,0,0,1}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[-1,2]"}', 1, 2, 2, 8, '{1,0,0,1}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,-2]"}', 1, 2, 2, 8, '{1,0,0,1}', NULL, NULL, NULL, NULL);
-- an AMS sketch to 1 dim with signs (1, -1): projected = x0 - x1
SELECT pgembed_scoring.fde_query('{"[1,2]","[3,-4]"}', 1, 0, 1, 1, '{}', '{0,0}', '{1,-1}', NULL, NULL);
-- a final count sketch of the 2-dim identity FDE [4,-2] to 1 dim: 4 * 1 + (-2) * (-1) = 6
SELECT pgembed_scoring.fde_query('{"[1,2]","[3,-4]"}', 1, 0, 2, 1, '{}', NULL, NULL, '{0,0}', '{1,-1}');

-- NULL query: NULL
SELECT pgembed_scoring.fde_query(NULL, 1, 0, 2, 2, '{}', NULL, NULL, NULL, NULL) IS NULL AS null_query;

-- errors
\set VERBOSITY default
SELECT pgembed_scoring.fde_query('{}', 1, 0, 2, 2, '{}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]",NULL}', 1, 0, 2, 2, '{}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]","[1,2,3]"}', 1, 0, 2, 2, '{}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', NULL, 0, 2, 2, '{}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 0, 0, 2, 2, '{}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 1, 17, 2, 2, '{}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 100000, 16, 2, 2, '{}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 1, 1, 2, 4, NULL, NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 1, 1, 2, 4, '{1,0,0}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 1, 1, 2, 4, '{1,NULL}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 1, 0, 3, 3, '{}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 1, 0, 1, 1, '{}', '{0,0}', NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 1, 0, 1, 1, '{}', '{0,1}', '{1,1}', NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 1, 0, 1, 1, '{}', '{{0,0}}', '{{1,1}}', NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 1, 0, 2, 3, '{}', NULL, NULL, NULL, NULL);
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 1, 0, 2, 1, '{}', NULL, NULL, '{0,1}', '{1,1}');
SELECT pgembed_scoring.fde_query('{"[1,2]"}', 1, 0, 2, 16001, '{}', NULL, NULL, '{0,1}', '{1,1}');
SELECT pgembed_scoring.fde_query('{"[3e38,0]","[3e38,0]"}', 1, 0, 2, 2, '{}', NULL, NULL, NULL, NULL);
