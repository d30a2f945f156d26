#!/usr/bin/env bash
# The client API against its contract, Protocol/client-api.yaml, with
# Schemathesis (pinned below, in a virtual environment under .build-contract):
# every check, every operation, every phase including stateful links.
#
#   Tools/contract/run.sh [LODE] [SEED]
#
# Starts a node on a fresh data directory (the bundled dataset) with the
# client API on its Unix socket and over mutual TLS, then runs:
#   1. the Unix-socket API (through socat, loopback TCP) with seed 1 and
#      with SEED (random unless given; printed);
#   2. the mutual-TLS API once per role (editor, annotator, reader, relay),
#      each with a certificate from the node's CA: the hooks' check
#      `role_is_enforced` wants 403 exactly where the role may not go.
# Exits non-zero on any failure. Everything stays on loopback: peers the
# node is asked to dial are rewritten to 127.0.0.1 (Tools/contract/hooks.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
LODE=$(realpath "${1:-.build/debug/lode}")
SEED=${2:-$(( (RANDOM << 15) | RANDOM ))}
SCHEMATHESIS_VERSION=4.32.5
VENV=.build-contract/venv
EXAMPLES=${CONTRACT_EXAMPLES:-20}

if [ ! -x "$VENV/bin/schemathesis" ] || ! "$VENV/bin/schemathesis" --version | grep -q "$SCHEMATHESIS_VERSION"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
ST="$VENV/bin/schemathesis"
export LODE_CONTRACT_HOOKS=$PWD/Tools/contract/hooks.py

WORK=$(mktemp -d /tmp/lode-contract.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

NODE=$WORK/node
API_PORT=$(free_port)
SOCK_PORT=$(free_port)
"$LODE" serve --data-dir "$NODE" --listen 127.0.0.1:0 --api-listen "127.0.0.1:$API_PORT" >"$WORK/node.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 400); do
    "$LODE" status --data-dir "$NODE" >/dev/null 2>&1 && break
    sleep 0.05
done
"$LODE" status --data-dir "$NODE" >/dev/null
socat "TCP-LISTEN:$SOCK_PORT,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$NODE/lode.sock" &
pids+=($!)
sleep 0.2

run() { # run LABEL ARGS...: one Schemathesis run; its report goes to $WORK/LABEL.txt
    local label=$1
    shift
    echo "== schemathesis $SCHEMATHESIS_VERSION: $label"
    if "$ST" --config-file Tools/contract/schemathesis.toml run Protocol/client-api.yaml --checks all \
        --max-examples "$EXAMPLES" --workers 1 --no-color "$@" >"$WORK/$label.txt" 2>&1; then
        grep -E "^Test cases:|generated|passed|^Seed" "$WORK/$label.txt" | tr -s ' ' | sed 's/^/   /'
    else
        cat "$WORK/$label.txt"
        echo "FAIL: $label (node log: $(tail -3 "$WORK/node.log" | tr '\n' ' '))"
        exit 1
    fi
}

echo "contract seeds: 1 and $SEED (rerun one with: Tools/contract/run.sh LODE SEED)"
for seed in 1 "$SEED"; do
    run "socket-seed-$seed" --url "http://127.0.0.1:$SOCK_PORT" --seed "$seed"
done
for role in editor annotator reader relay; do
    "$LODE" init --site "contract-$role" --role "$role" --ca "$NODE/dev-ca" --data-dir "$WORK/$role" >/dev/null
    LODE_CONTRACT_ROLE=$role run "mtls-$role" --url "https://127.0.0.1:$API_PORT" --seed "$SEED" \
        --request-cert "$WORK/$role/site.pem" --request-cert-key "$WORK/$role/site.key" --tls-verify false
done
echo "PASS contract: the Unix-socket API (seeds 1 and $SEED) and the mutual-TLS API for every role"
