-- Tables for the key-probe and COPY measurements of BENCHMARKS.md (run 11):
-- 1M streams of two versions each, the key column in the database's
-- collation (ev) and bytewise (evc); the probed keys are odd, so absent.
DROP TABLE IF EXISTS ev, evc;
CREATE TABLE ev (stream text, version bigint, payload jsonb, PRIMARY KEY (stream, version));
CREATE TABLE evc (stream text COLLATE "C", version bigint, payload jsonb, PRIMARY KEY (stream, version));
INSERT INTO ev SELECT 'key-' || (i * 2), v, '{"a":1}' FROM generate_series(1, 1000000) i, generate_series(1, 2) v;
INSERT INTO evc SELECT * FROM ev;
VACUUM ANALYZE ev, evc;
