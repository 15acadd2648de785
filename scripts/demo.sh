#!/usr/bin/env bash
# `make demo`: sets up what is missing (scripts/setup.sh demo), builds Ordo and
# runs `ordo demo` against a throw-away PostgreSQL (or DEMO_POSTGRES_URL if set).
#
#   scripts/demo.sh [--keep] [ordo demo options, e.g. --events 50000]
#
# Without --keep the PostgreSQL cluster is stopped and its directory removed on
# exit. With --keep, `ordo demo --keep` keeps its in-process Kafka cluster and
# Schema Registry running until Ctrl-C (printing their addresses and a
# configuration for each of two empty topics), and PostgreSQL stays up after
# it: the script prints how to reach and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
args=()
for a in "$@"; do
  case "$a" in
    --keep) keep=1 ;;
    *) args+=("$a") ;;
  esac
done
scripts/setup.sh demo
cargo build --release --bin ordo
ordo="${CARGO_TARGET_DIR:-target}/release/ordo"
keep_arg=()
[ "$keep" = 1 ] && keep_arg=(--keep)
if [ -n "${DEMO_POSTGRES_URL:-}" ]; then
  exec "$ordo" demo --postgres "$DEMO_POSTGRES_URL" "${keep_arg[@]}" "${args[@]}"
fi
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin/initdb" ] || { echo "PostgreSQL server binaries not found; run scripts/setup.sh demo, or set DEMO_POSTGRES_URL" >&2; exit 1; }
dir=$(mktemp -d /tmp/ordo-demo-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
stop="$bin/pg_ctl -D $dir/data -m fast stop && rm -rf $dir"
[ "$(id -u)" = 0 ] && stop="runuser -u postgres -- $bin/pg_ctl -D $dir/data -m fast stop && rm -rf $dir"
cleanup() {
  if [ "$keep" = 1 ]; then
    echo
    echo "PostgreSQL is still running (--keep): psql postgres://ordo@127.0.0.1:$port/ordo"
    echo "stop it and remove its data with: $stop"
    return
  fi
  as_pg "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
as_pg "$bin/initdb" -D "$dir/data" -A trust -U ordo --no-sync >/dev/null
as_pg "$bin/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c listen_addresses=127.0.0.1" -l "$dir/log" -w start >/dev/null
as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U ordo ordo
url="postgres://ordo@127.0.0.1:$port/ordo"
throwaway=(--throwaway)
if [ "$keep" = 1 ]; then
  throwaway=()
  echo "PostgreSQL for the demo (kept after it): psql $url"
  echo "stop it and remove its data with: $stop"
fi
"$ordo" demo --postgres "$url" "${throwaway[@]}" "${keep_arg[@]}" "${args[@]}"
if command -v psql >/dev/null; then
  psql "$url" -c 'SELECT stream, count(*) AS events, min(version), max(version) FROM demo_events GROUP BY stream ORDER BY stream LIMIT 5'
  psql "$url" -c "SELECT stream, version, payload->>'buyer' AS buyer, payload->>'amount' AS amount, payload->>'placed_at' AS placed_at, payload->>'note' AS note FROM demo_events WHERE stream = 'acct-0000' ORDER BY version LIMIT 5"
fi
