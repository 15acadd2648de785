-- The keys probed, then inserted (what Ordo does: lookup, then the write).
BEGIN;
CREATE TEMP TABLE IF NOT EXISTS ks (k text);
TRUNCATE ks;
INSERT INTO ks SELECT 'key-' || ((random() * 1000000)::int * 2 + 1) || '-' || g FROM generate_series(1, 2000) g;
SELECT count(*) FROM (SELECT k.k, (SELECT max(e.version) FROM :tbl e WHERE e.stream = k.k) v FROM ks k OFFSET 0) s WHERE v > 1;
INSERT INTO :tbl SELECT k, 1, '{"a":1}' FROM ks;
ROLLBACK;
