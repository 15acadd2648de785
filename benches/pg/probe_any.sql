-- The same keys read with one `= ANY($keys)` index scan.
SELECT stream, max(version) FROM :tbl
  WHERE stream = ANY((SELECT array_agg('key-' || ((random() * 1000000)::int * 2 + 1)) FROM generate_series(1, 2000))::text[])
  GROUP BY stream;
