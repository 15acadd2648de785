-- The same keys read with a LATERAL join.
SELECT k.key, m.v FROM unnest((SELECT array_agg('key-' || ((random() * 1000000)::int * 2 + 1)) FROM generate_series(1, 2000))::text[]) AS k(key)
  CROSS JOIN LATERAL (SELECT e.version AS v FROM :tbl AS e WHERE e.stream = k.key ORDER BY e.version DESC LIMIT 1) m;
