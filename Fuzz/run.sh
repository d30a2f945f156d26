#!/usr/bin/env bash
# Coverage-guided fuzzing of what Lodestone reads from others, with libFuzzer.
#
#   Fuzz/run.sh TARGET [SECONDS] [libFuzzer options...]   one target (default 60 s)
#   Fuzz/run.sh all [SECONDS]                            every target in turn
#
# Targets (Fuzz/LodeFuzz/LodeFuzz.swift): commit, frame, csv, exec, session
# (a whole sync session from a hostile peer against one node, SessionTarget.swift). Builds
# with -sanitize=fuzzer into .build-fuzz, seeds each corpus from
# Protocol/vectors/ (commits, frames), seed/ and Fuzz/seeds/ (CSV, SQL), and
# keeps the corpus in .build-fuzz/corpus/TARGET between runs. A crash is
# written to .build-fuzz/crashes/TARGET-*; make it a fixture under
# Protocol/vectors/invalid/ with a test, and fix it. Exit 1 if any target crashed.
# FUZZ_CONFIG=debug builds in debug (faster to build; CI uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:-all}
SECONDS_EACH=${2:-60}
shift $(( $# > 2 ? 2 : $# ))
OUT=.build-fuzz
CONFIG=${FUZZ_CONFIG:-release} # debug builds faster and runs slower

echo "building lode-fuzz ($CONFIG) with -sanitize=fuzzer (the first build takes several minutes)" >&2
LODE_FUZZ=1 swift build -c "$CONFIG" --product lode-fuzz -Xswiftc -sanitize=fuzzer --scratch-path "$OUT" >&2
BIN="$OUT/$CONFIG/lode-fuzz"

hex_seeds() { # hex_seeds DIR... -> binary files in $seeds
    local f
    for f in $(find "$@" -name '*.hex' 2>/dev/null); do
        grep -v '^#' "$f" | tr -d ' \n' | perl -ne 'print pack("H*", $_)' >"$seeds/$(basename "$f" .hex)"
    done
}

run_target() {
    local t=$1 max_len
    shift
    local corpus="$OUT/corpus/$t" seeds="$OUT/seeds/$t"
    rm -rf "$seeds"
    mkdir -p "$corpus" "$seeds" "$OUT/crashes"
    case $t in
    commit) hex_seeds Protocol/vectors/valid Protocol/vectors/invalid; max_len=4096 ;;
    frame) hex_seeds Protocol/vectors/frames; max_len=4096 ;;
    csv) cp seed/rare-earths/*.csv Fuzz/seeds/csv/*.csv "$seeds/"; max_len=8192 ;;
    exec) cp Fuzz/seeds/exec/*.sql "$seeds/"; max_len=1024 ;;
    session)
        # A flags byte, then frames: each valid frame vector alone, and all of them in a row.
        hex_seeds Protocol/vectors/frames/valid
        local f flag all="$seeds/all-frames"
        for f in "$seeds"/*; do cat "$f" >>"$all.tmp"; done
        for flag in 00 01 03 07 0b; do
            for f in "$seeds"/*; do
                [ -f "$f" ] || continue
                case $f in *.tmp | *-flag-*) continue ;; esac
                { printf "\x$flag"; cat "$f"; } >"$f-flag-$flag"
            done
            { printf "\x$flag"; cat "$all.tmp"; } >"$all-flag-$flag"
        done
        rm -f "$all.tmp"
        LODE_FUZZ_SESSION_SEEDS="$seeds" "$BIN"
        max_len=8192 ;;
    *) echo "unknown target $t (commit, frame, csv, exec, session)" >&2; exit 2 ;;
    esac
    echo "== $t: $SECONDS_EACH s" >&2
    local log="$OUT/$t.log" rc=0
    LODE_FUZZ_TARGET=$t "$BIN" "$corpus" "$seeds" -max_total_time="$SECONDS_EACH" -max_len=$max_len \
        -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$OUT/crashes/$t-" "$@" >"$log" 2>&1 || rc=$?
    local execs
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    local cov
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    if [ $rc -ne 0 ]; then
        echo "$t: CRASH after $execs executions; see $log and $OUT/crashes/" >&2
        grep -m5 -E 'Fatal error|Precondition failed|ERROR: libFuzzer|deadly signal|Test unit written' "$log" >&2 || true
        return 1
    fi
    echo "$t: $execs executions, $cov, corpus $(ls "$corpus" | wc -l) inputs, no crash" >&2
}

failed=0
if [ "$TARGET" = all ]; then
    for t in commit frame csv exec session; do run_target "$t" "$@" || failed=1; done
else
    run_target "$TARGET" "$@" || failed=1
fi
exit $failed
