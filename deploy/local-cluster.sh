#!/usr/bin/env bash
# Runs a local cluster of Lodestone nodes on loopback: one CA, a relay and
# N editing sites that dial it, each a separate `lode serve` process with
# its own data directory. Ctrl-C stops them all.
#
# Usage: deploy/local-cluster.sh [SITES] [DIR]      (default: 2 sites, /tmp/lode-cluster)
# Then, in another terminal:
#   lode dataset list --data-dir DIR/site-1
#   lode exec rare-earths "UPDATE facilities SET status = 'operating' WHERE id = 'mp-10x'" --data-dir DIR/site-1
#   lode sync --wait --data-dir DIR/site-2 && lode query rare-earths "SELECT id, status FROM facilities WHERE id = 'mp-10x'" --data-dir DIR/site-2
set -euo pipefail
SITES=${1:-2}
DIR=${2:-/tmp/lode-cluster}
LODE=${LODE:-lode}
command -v "$LODE" >/dev/null || LODE="$(cd "$(dirname "$0")/.." && pwd)/.build/release/lode"
BASE_PORT=${BASE_PORT:-7443}

mkdir -p "$DIR"
[ -f "$DIR/ca/ca.pem" ] || "$LODE" ca init --dir "$DIR/ca" --cluster local
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait; }
trap cleanup EXIT INT TERM

[ -f "$DIR/relay/site.key" ] || "$LODE" init --site relay --ca "$DIR/ca" --role relay --data-dir "$DIR/relay"
"$LODE" serve --data-dir "$DIR/relay" --listen "127.0.0.1:$BASE_PORT" 2>"$DIR/relay.log" &
pids+=($!)
for i in $(seq 1 "$SITES"); do
    d="$DIR/site-$i"
    [ -f "$d/site.key" ] || "$LODE" init --site "site-$i" --ca "$DIR/ca" --role editor --data-dir "$d"
    "$LODE" serve --data-dir "$d" --listen "127.0.0.1:$((BASE_PORT + i))" --peer "127.0.0.1:$BASE_PORT" 2>"$d.log" &
    pids+=($!)
done
# The first site loads the bundled dataset once; it reaches the others through the relay.
"$(dirname "$0")/seed-bundled.sh" "$LODE" "$DIR/site-1"
echo "relay on 127.0.0.1:$BASE_PORT; sites site-1..site-$SITES in $DIR (logs beside them). Ctrl-C stops the cluster."
wait
