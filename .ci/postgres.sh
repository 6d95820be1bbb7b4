#!/bin/bash
# Start a throwaway PostgreSQL server on localhost (Debian's package; installed if missing)
# for the multi-worker tests, and print its URL. Stop it with: .ci/postgres.sh stop
set -euo pipefail
STATE=/tmp/autotl-ci-postgres
PORT=${AUTOTL_PG_PORT:-55432}
# (from / : the postgres user may not be allowed into the caller's directory)
as_postgres() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
if [ "${1:-}" = stop ]; then
    [ -f "$STATE/data/postmaster.pid" ] && as_postgres "$(cat "$STATE/bin")/pg_ctl" -D "$STATE/data" -m fast stop >/dev/null || true
    exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
"$0" stop
rm -rf "$STATE" && mkdir -p "$STATE/data"
echo "$BIN" > "$STATE/bin"
[ "$(id -u)" = 0 ] && chown -R postgres "$STATE"
as_postgres "$BIN/initdb" -D "$STATE/data" -A trust -U autotl >/dev/null
as_postgres "$BIN/pg_ctl" -D "$STATE/data" -o "-p $PORT -k $STATE -c listen_addresses=localhost" \
    -l "$STATE/server.log" -w start >/dev/null
as_postgres "$BIN/createdb" -h localhost -p "$PORT" -U autotl autotl
echo "postgresql://autotl@localhost:$PORT/autotl"
