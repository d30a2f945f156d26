#!/usr/bin/env bash
# Loads the bundled rare-earths dataset into a running site once (the
# cluster scripts call it; it reaches the other sites by sync): a throwaway
# development node makes the dataset, and its tables are copied as CSV.
#
# Usage: deploy/seed-bundled.sh LODE SITE_DIR
set -euo pipefail
LODE=$1
SITE=$2
for _ in $(seq 1 100); do [ -S "$SITE/lode.sock" ] && break; sleep 0.1; done
"$LODE" dataset list --data-dir "$SITE" 2>/dev/null | grep -q rare-earths && exit 0
tmp=$(mktemp -d)
"$LODE" serve --data-dir "$tmp/seed" --listen 127.0.0.1:0 --web off 2>/dev/null & seeder=$!
trap 'kill -TERM "$seeder" 2>/dev/null || true; wait "$seeder" 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do [ -S "$tmp/seed/lode.sock" ] && break; sleep 0.1; done
"$LODE" schema rare-earths --data-dir "$tmp/seed" > "$tmp/schema.sql"
"$LODE" dataset create rare-earths --schema "$tmp/schema.sql" --data-dir "$SITE" >/dev/null
for t in elements country_production facilities trade_policies dependencies; do
    "$LODE" export rare-earths "$t" --format csv --data-dir "$tmp/seed" > "$tmp/$t.csv"
    "$LODE" import rare-earths "$t" "$tmp/$t.csv" --data-dir "$SITE" >/dev/null
done
