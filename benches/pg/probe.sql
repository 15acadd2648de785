-- Ordo's key-state lookup (a correlated probe per key) of 2,000 random absent keys in :tbl.
SELECT count(*) FROM (SELECT k.key, (SELECT max(e.version) FROM :tbl AS e WHERE e.stream = k.key) AS version
  FROM unnest((SELECT array_agg('key-' || ((random() * 1000000)::int * 2 + 1)) FROM generate_series(1, 2000))::text[]) AS k(key)
  OFFSET 0) s WHERE s.version IS NOT NULL;
