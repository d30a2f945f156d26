#!/usr/bin/env bash
# A Lodestone cluster you can break: N `lode serve` processes, each in its own
# network namespace with its own address on a bridge, and commands to cut and
# heal links, pause, kill and restart nodes. Needs root (ip netns).
#
#   deploy/netns-cluster.sh up DIR [--nodes N] [--relays R] [--skew NODE:SECONDS]... [--proxy]
#       Creates the CA, the sites n1..nN (n1..nR relays, the rest editors),
#       the namespaces and links, and starts every node. Editors dial every
#       relay; relays dial the relays before them (with no relays, every node
#       dials the nodes before it). A skewed node runs with its wall clock
#       SECONDS ahead (negative: behind), through deploy/skewclock.c. With
#       --proxy, each editor dials each relay through a TCP fault proxy
#       (`lode-faults proxy`, from $LODE_FAULTS) in the editor's namespace,
#       whose behaviour `link` sets.
#   deploy/netns-cluster.sh run DIR [same options]
#       `up`, then waits; Ctrl-C tears the cluster down.
#   deploy/netns-cluster.sh cut DIR A B      partition: A and B can no longer reach each other
#   deploy/netns-cluster.sh heal DIR [A [B]] restore one link, every link of A, or every link
#   deploy/netns-cluster.sh isolate DIR A    cut A from every other node
#   deploy/netns-cluster.sh pause DIR A      SIGSTOP the node (resume: SIGCONT)
#   deploy/netns-cluster.sh resume DIR A
#   deploy/netns-cluster.sh link DIR A B MODE  (--proxy) what the proxied link between editor A and
#                                            relay B does: normal | latency MS JITTER_MS | rate BYTES_PER_S
#                                            | stall BYTES | drip MS | reset
#   deploy/netns-cluster.sh kill DIR A       kill -9 the node
#   deploy/netns-cluster.sh start DIR A      start (or restart) the node
#   deploy/netns-cluster.sh status DIR       each node: address, pid, state, cut links
#   deploy/netns-cluster.sh down DIR         stop every node, remove namespaces and links (keeps DIR)
#
# Nodes are named n1..nN (A and B above); node K listens on NET.(10+K):7443.
# Drive a node with its data directory: `lode status --data-dir DIR/n3`.
# Environment: LODE (the binary; default: lode on PATH, else .build/release/lode),
# NETNS_PREFIX (default lode; names namespaces PREFIX-nK and the bridge PREFIX-br),
# NET (default 10.231.0). Interrupting `up` or `run` cleans up what was made.
set -euo pipefail

PREFIX=${NETNS_PREFIX:-lode}
NET=${NET:-10.231.0}
PORT=7443
LODE=${LODE:-lode}
command -v "$LODE" >/dev/null || LODE="$(cd "$(dirname "$0")/.." && pwd)/.build/release/lode"

die() { echo "netns-cluster: $*" >&2; exit 2; }
usage() { sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[ $# -ge 2 ] || usage
CMD=$1; DIR=$2; shift 2
BRIDGE="$PREFIX-br"

ns() { echo "$PREFIX-$1"; }
addr() { echo "$NET.$((10 + ${1#n}))"; }
nodes() { cat "$DIR/nodes" 2>/dev/null || true; }
pidof_node() { cat "$DIR/$1.pid" 2>/dev/null || true; }
alive() { local p; p=$(pidof_node "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
check_node() { grep -qx "$1" "$DIR/nodes" 2>/dev/null || die "no node $1 in $DIR (nodes: $(nodes | tr '\n' ' '))"; }

start_node() {
    local n=$1 d="$DIR/$1"
    if alive "$n"; then kill -CONT "$(pidof_node "$n")" 2>/dev/null || true; return; fi
    local peers=() p
    for p in $(cat "$DIR/$n.peers"); do
        if [ -f "$DIR/proxy" ] && [ -f "$DIR/link-$n-$p.port" ]; then
            peers+=(--peer "127.0.0.1:$(cat "$DIR/link-$n-$p.port")")
        else
            peers+=(--peer "$(addr "$p"):$PORT")
        fi
    done
    local env=()
    if [ -s "$DIR/$n.skew" ]; then
        if [ ! -f "$DIR/skewclock.so" ]; then
            local cc
            cc=$(command -v cc || command -v clang || command -v gcc) || die "a C compiler is needed for --skew"
            "$cc" -shared -fPIC -O2 -o "$DIR/skewclock.so" "$(dirname "$0")/skewclock.c" -ldl
        fi
        env=(env LD_PRELOAD="$DIR/skewclock.so" SKEW_SECONDS="$(cat "$DIR/$n.skew")")
    fi
    # `ip netns exec` and `env` exec the node, so $! is the node itself.
    ip netns exec "$(ns "$n")" "${env[@]}" "$LODE" serve --data-dir "$d" --listen "$(addr "$n"):$PORT" "${peers[@]}" \
        >>"$d.log" 2>&1 </dev/null &
    echo $! >"$DIR/$n.pid"
    local i
    for i in $(seq 1 200); do
        "$LODE" status --data-dir "$d" >/dev/null 2>&1 && return
        kill -0 "$(pidof_node "$n")" 2>/dev/null || die "node $n exited at start; see $d.log"
        sleep 0.05
    done
    die "node $n did not start within 10 s; see $d.log"
}

stop_node() {
    local n=$1 p
    p=$(pidof_node "$n")
    [ -n "$p" ] || return 0
    kill -CONT "$p" 2>/dev/null || true
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null || true
    rm -f "$DIR/$n.pid"
}

blackhole() { # blackhole add|del FROM TO
    ip -n "$(ns "$2")" route "$1" blackhole "$(addr "$3")/32" 2>/dev/null || true
}

down() {
    local n p
    for n in $(nodes); do stop_node "$n"; done
    for p in $(cat "$DIR/proxies.pids" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    rm -f "$DIR/proxies.pids"
    for n in $(nodes); do
        ip link del "$PREFIX-${n}h" 2>/dev/null || true
        ip netns del "$(ns "$n")" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -f "$DIR/cuts"
}

up() {
    local count=5 relays=0 skews=() proxy=0
    while [ $# -gt 0 ]; do
        case $1 in
        --nodes) count=$2; shift 2 ;;
        --relays) relays=$2; shift 2 ;;
        --skew) skews+=("$2"); shift 2 ;;
        --proxy) proxy=1; shift ;;
        *) die "unknown option $1" ;;
        esac
    done
    [ "$count" -ge 1 ] && [ "$count" -le 200 ] || die "--nodes must be 1..200"
    [ "$relays" -le "$count" ] || die "--relays exceeds --nodes"
    ip netns list >/dev/null 2>&1 || die "ip netns is not available (needs root and iproute2)"
    ! ip link show "$BRIDGE" >/dev/null 2>&1 || die "bridge $BRIDGE exists: another cluster is up (down it, or set NETNS_PREFIX)"
    command -v "$LODE" >/dev/null || [ -x "$LODE" ] || die "no lode binary at $LODE (swift build -c release, or set LODE)"
    mkdir -p "$DIR"
    trap 'echo "netns-cluster: interrupted; cleaning up" >&2; down; exit 130' INT TERM
    trap 'rc=$?; [ $rc -eq 0 ] || down; exit $rc' EXIT
    seq 1 "$count" | sed 's/^/n/' >"$DIR/nodes"
    [ -f "$DIR/ca/ca.pem" ] || "$LODE" ca init --dir "$DIR/ca" --cluster "$PREFIX-netns" >/dev/null
    ip link add "$BRIDGE" type bridge
    ip link set "$BRIDGE" up
    local k n role peers j
    for k in $(seq 1 "$count"); do
        n="n$k"
        if [ "$k" -le "$relays" ]; then role=relay; else role=editor; fi
        [ -f "$DIR/$n/site.key" ] || "$LODE" init --site "$n" --ca "$DIR/ca" --role "$role" --data-dir "$DIR/$n" >/dev/null
        peers=""
        if [ "$relays" -eq 0 ]; then
            for j in $(seq 1 $((k - 1))); do peers="$peers n$j"; done
        elif [ "$k" -le "$relays" ]; then
            for j in $(seq 1 $((k - 1))); do peers="$peers n$j"; done
        else
            for j in $(seq 1 "$relays"); do peers="$peers n$j"; done
        fi
        echo "$peers" >"$DIR/$n.peers"
        : >"$DIR/$n.skew"
        ip netns add "$(ns "$n")"
        ip link add "$PREFIX-${n}h" type veth peer name eth0 netns "$(ns "$n")"
        ip link set "$PREFIX-${n}h" master "$BRIDGE" up
        ip -n "$(ns "$n")" addr add "$(addr "$n")/24" dev eth0
        ip -n "$(ns "$n")" link set eth0 up
        ip -n "$(ns "$n")" link set lo up
    done
    local s
    for s in "${skews[@]}"; do
        check_node "${s%%:*}"
        echo "${s#*:}" >"$DIR/${s%%:*}.skew"
    done
    rm -f "$DIR/proxy"
    if [ "$proxy" = 1 ]; then
        [ -x "${LODE_FAULTS:-}" ] || die "--proxy needs LODE_FAULTS, the lode-faults binary"
        [ "$relays" -gt 0 ] || die "--proxy needs relays: it sits on the links from editors to relays"
        touch "$DIR/proxy"
        for k in $(seq $((relays + 1)) "$count"); do
            for j in $(seq 1 "$relays"); do
                local port=$((17000 + k * 20 + j))
                echo "$port" >"$DIR/link-n$k-n$j.port"
                echo normal >"$DIR/link-n$k-n$j.mode"
                ip netns exec "$(ns "n$k")" "$LODE_FAULTS" proxy --listen "127.0.0.1:$port" --to "$(addr "n$j"):$PORT" \
                    --mode-file "$DIR/link-n$k-n$j.mode" >>"$DIR/link-n$k-n$j.log" 2>&1 </dev/null &
                echo $! >>"$DIR/proxies.pids"
            done
        done
    fi
    for n in $(nodes); do start_node "$n"; done
    trap - EXIT
    echo "cluster up: $(nodes | tr '\n' ' ')in $DIR (node K at $NET.(10+K):$PORT; logs DIR/nK.log)"
}

case $CMD in
up)
    up "$@"
    trap - INT TERM
    ;;
run)
    up "$@"
    trap 'down; exit 0' INT TERM
    echo "Ctrl-C tears the cluster down."
    while true; do sleep 3600 & wait $!; done
    ;;
down) down ;;
cut | heal)
    if [ "$CMD" = heal ] && [ $# -eq 0 ]; then
        while read -r a b; do blackhole del "$a" "$b"; blackhole del "$b" "$a"; done <"$DIR/cuts" 2>/dev/null || true
        rm -f "$DIR/cuts"
        exit 0
    fi
    if [ "$CMD" = heal ] && [ $# -eq 1 ]; then
        check_node "$1"
        for n in $(nodes); do [ "$n" = "$1" ] || "$0" heal "$DIR" "$1" "$n"; done
        exit 0
    fi
    [ $# -eq 2 ] || usage
    check_node "$1"; check_node "$2"
    [ "$1" != "$2" ] || die "a node cannot be cut from itself"
    if [ "$CMD" = cut ]; then
        blackhole add "$1" "$2"; blackhole add "$2" "$1"
        grep -qx "$1 $2" "$DIR/cuts" 2>/dev/null || echo "$1 $2" >>"$DIR/cuts"
    else
        blackhole del "$1" "$2"; blackhole del "$2" "$1"
        if [ -f "$DIR/cuts" ]; then grep -vx -e "$1 $2" -e "$2 $1" "$DIR/cuts" >"$DIR/cuts.new" || true; mv "$DIR/cuts.new" "$DIR/cuts"; fi
    fi
    ;;
isolate)
    [ $# -eq 1 ] || usage
    check_node "$1"
    for n in $(nodes); do [ "$n" = "$1" ] || "$0" cut "$DIR" "$1" "$n"; done
    ;;
link)
    [ $# -ge 3 ] || usage
    check_node "$1"; check_node "$2"
    f="$DIR/link-$1-$2.mode"
    [ -f "$f" ] || f="$DIR/link-$2-$1.mode"
    [ -f "$f" ] || die "no proxied link between $1 and $2 (up --proxy proxies editor-relay links)"
    shift 2
    echo "$*" >"$f.new" && mv "$f.new" "$f"
    ;;
pause | resume | kill)
    [ $# -eq 1 ] || usage
    check_node "$1"
    p=$(pidof_node "$1")
    [ -n "$p" ] || die "node $1 is not running"
    case $CMD in
    pause) kill -STOP "$p" ;;
    resume) kill -CONT "$p" ;;
    kill) kill -KILL "$p"; rm -f "$DIR/$1.pid" ;;
    esac
    ;;
start)
    [ $# -eq 1 ] || usage
    check_node "$1"
    start_node "$1"
    ;;
status)
    for n in $(nodes); do
        p=$(pidof_node "$n")
        if [ -z "$p" ] || ! kill -0 "$p" 2>/dev/null; then state=stopped
        elif grep -qP '^State:\s*T' "/proc/$p/status" 2>/dev/null; then state=paused
        else state=running; fi
        cuts=$(grep -w "$n" "$DIR/cuts" 2>/dev/null | tr '\n' ',' || true)
        skew=$(cat "$DIR/$n.skew" 2>/dev/null || true)
        printf '%-4s %-15s pid %-8s %-8s%s%s\n' "$n" "$(addr "$n")" "${p:--}" "$state" \
            "${skew:+ clock +${skew}s}" "${cuts:+ cut: ${cuts%,}}"
    done
    ;;
*) usage ;;
esac
