#!/usr/bin/env bash
# A throwaway server tier on loopback: a PostgreSQL server of its own (from
# Debian's binaries, in DIR/pg, on a private socket), N relays that share one
# database in it, and M SQLite sites, each dialling every relay. Ctrl-C stops
# everything and the PostgreSQL server.
#
# Usage: deploy/server-tier.sh [RELAYS] [SITES] [DIR]   (default: 2 relays, 2 sites, /tmp/lode-tier)
# Then, in another terminal:
#   lode import rare-earths facilities FILE.csv --data-dir DIR/site-1
#   lode sync --wait --data-dir DIR/site-2
#   psql -h DIR/pg/sock -U lode lode -c 'SELECT count(*) FROM "rare-earths".facilities'
#   curl -s http://127.0.0.1:9465/metrics | grep ^lode_      (relay-1's; relay-k is 9464+k)
set -euo pipefail
RELAYS=${1:-2}
SITES=${2:-2}
DIR=${3:-/tmp/lode-tier}
LODE=${LODE:-lode}
command -v "$LODE" >/dev/null || LODE="$(cd "$(dirname "$0")/.." && pwd)/.build/release/lode"
BASE_PORT=${BASE_PORT:-7543}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
[ -x "$PGBIN/postgres" ] || { echo "PostgreSQL's binaries are missing: apt-get install -y postgresql" >&2; exit 1; }

mkdir -p "$DIR/pg/sock"
chmod 755 "$DIR" "$DIR/pg"
as_pg=()
if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root.
    chown -R postgres "$DIR/pg"
    as_pg=(runuser -u postgres --)
fi
[ -f "$DIR/pg/data/PG_VERSION" ] || "${as_pg[@]}" "$PGBIN/initdb" -D "$DIR/pg/data" -A trust -U lode -E UTF8 --locale=C >/dev/null
"${as_pg[@]}" "$PGBIN/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/server.log" -w \
    -o "-p 5432 -k $DIR/pg/sock -c listen_addresses=''" start >/dev/null
"$PGBIN/psql" -h "$DIR/pg/sock" -U lode -d postgres -qtAc "SELECT 1 FROM pg_database WHERE datname = 'lode'" | grep -q 1 \
    || "$PGBIN/psql" -h "$DIR/pg/sock" -U lode -d postgres -qc "CREATE DATABASE lode"
STORE="postgresql://lode@localhost:5432/lode?host=$DIR/pg/sock"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait
    "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$DIR/pg/data" -m fast -w stop >/dev/null || true
}
trap cleanup EXIT INT TERM

[ -f "$DIR/ca/ca.pem" ] || "$LODE" ca init --dir "$DIR/ca" --cluster tier
relay_peers=()
for i in $(seq 1 "$RELAYS"); do
    d="$DIR/relay-$i"
    [ -f "$d/site.key" ] || "$LODE" init --site "relay-$i" --ca "$DIR/ca" --role relay --data-dir "$d"
    "$LODE" serve --data-dir "$d" --listen "127.0.0.1:$((BASE_PORT + i))" --store "$STORE" --web off \
        --ops-listen "127.0.0.1:$((9464 + i))" 2>"$d.log" &
    pids+=($!)
    relay_peers+=(--peer "127.0.0.1:$((BASE_PORT + i))")
done
for i in $(seq 1 "$SITES"); do
    d="$DIR/site-$i"
    [ -f "$d/site.key" ] || "$LODE" init --site "site-$i" --ca "$DIR/ca" --role editor --data-dir "$d"
    "$LODE" serve --data-dir "$d" --listen "127.0.0.1:$((BASE_PORT + 100 + i))" "${relay_peers[@]}" --web off 2>"$d.log" &
    pids+=($!)
done
# The first site loads the bundled dataset once; it reaches the others through the relays.
"$(dirname "$0")/seed-bundled.sh" "$LODE" "$DIR/site-1"
echo "server tier in $DIR: PostgreSQL on $DIR/pg/sock (database lode), $RELAYS relays (ports $((BASE_PORT + 1))..), $SITES sites; Ctrl-C stops all"
wait
