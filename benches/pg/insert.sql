-- 2,000 new keys inserted (rolled back): the base of the two below.
BEGIN;
CREATE TEMP TABLE IF NOT EXISTS ks (k text);
TRUNCATE ks;
INSERT INTO ks SELECT 'key-' || ((random() * 1000000)::int * 2 + 1) || '-' || g FROM generate_series(1, 2000) g;
INSERT INTO :tbl SELECT k, 1, '{"a":1}' FROM ks;
ROLLBACK;
