#!/usr/bin/env bash
# Runs `ordo demo` against a throw-away PostgreSQL (or DEMO_POSTGRES_URL if set).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin ordo
if [ -n "${DEMO_POSTGRES_URL:-}" ]; then
  exec ./target/release/ordo demo --postgres "$DEMO_POSTGRES_URL" "$@"
fi
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL server binaries not found; apt-get install postgresql, or set DEMO_POSTGRES_URL" >&2; exit 1; }
dir=$(mktemp -d /tmp/ordo-demo-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
cleanup() { as_pg "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
as_pg "$bin/initdb" -D "$dir/data" -A trust -U ordo --no-sync >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c listen_addresses=127.0.0.1" -l "$dir/log" -w start >/dev/null
as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U ordo ordo
./target/release/ordo demo --postgres "postgres://ordo@127.0.0.1:$port/ordo" "$@"
if command -v psql >/dev/null; then
  psql "postgres://ordo@127.0.0.1:$port/ordo" -c 'SELECT stream, count(*) AS events, min(version), max(version) FROM demo_events GROUP BY stream ORDER BY stream LIMIT 5'
  psql "postgres://ordo@127.0.0.1:$port/ordo" -c "SELECT stream, version, payload->>'buyer' AS buyer, payload->>'amount' AS amount, payload->>'placed_at' AS placed_at, payload->>'note' AS note FROM demo_events WHERE stream = 'acct-0000' ORDER BY version LIMIT 5"
fi
