#!/usr/bin/env bash
# Import benchmark: ROWS rows of 7 columns through `lode import` (a release
# build, a real node), beside sqlite3's own `.import` of the same file into a
# plain table (WAL, one transaction) measured in the same run. Prints each
# run, then medians and the ratio. Peak memory is the node's VmHWM during the
# import, the `lode import` client's max RSS (it streams the file), and for
# sqlite3, the process's max RSS. Keys are random (`lode-bench rows`).
#
# Usage: Benchmarks/import.sh [ROWS] [RUNS]     (default 1000000 rows, 3 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
RUNS=${2:-3}
swift build -c release --scratch-path .build-release --product lode >&2
swift build -c release --scratch-path .build-release --product lode-bench >&2
LODE=$PWD/.build-release/release/lode
WORK=$(mktemp -d /tmp/lode-bench.XXXXXX)
trap 'pkill -f "lode serve --data-dir $WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT
.build-release/release/lode-bench rows "$ROWS" 42 > "$WORK/rows.csv"
SIZE=$(stat -c %s "$WORK/rows.csv")
SCHEMA="CREATE TABLE sites (id TEXT PRIMARY KEY, name TEXT, country TEXT, year INTEGER, tonnes INTEGER, grade REAL, note TEXT);"
echo "$SCHEMA" > "$WORK/schema.sql"
"$LODE" ca init --dir "$WORK/ca" --cluster bench >/dev/null

lode_times=(); lode_mem=(); client_mem=(); sql_times=(); sql_mem=()
for run in $(seq 1 "$RUNS"); do
    D="$WORK/node$run"
    "$LODE" init --site "bench$run" --ca "$WORK/ca" --data-dir "$D" >/dev/null
    "$LODE" serve --data-dir "$D" --listen 127.0.0.1:0 2>"$D.log" &
    PID=$!
    for _ in $(seq 1 200); do [ -S "$D/lode.sock" ] && break; sleep 0.05; done
    "$LODE" dataset create bench --schema "$WORK/schema.sql" --data-dir "$D" >/dev/null
    start=$(date +%s.%N)
    n=$(/usr/bin/time -f "%M" -o "$WORK/client$run" "$LODE" import bench sites "$WORK/rows.csv" --data-dir "$D")
    end=$(date +%s.%N)
    hwm=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
    kill -TERM $PID; wait $PID || true
    t=$(echo "$end - $start" | bc)
    lode_times+=("$t"); lode_mem+=("$hwm"); client_mem+=("$(cat "$WORK/client$run")")
    [ "$n" = "$ROWS" ] || { echo "lode imported $n rows, expected $ROWS" >&2; exit 1; }

    DB="$WORK/plain$run.db"
    sqlite3 "$DB" "PRAGMA journal_mode=WAL;" "$SCHEMA" >/dev/null
    /usr/bin/time -f "%e %M" -o "$WORK/time$run" sqlite3 "$DB" ".import --csv --skip 1 $WORK/rows.csv sites"
    read -r st sm < "$WORK/time$run"
    sql_times+=("$st"); sql_mem+=("$sm")
    printf 'run %d: lode import %.2f s, node peak %d MB, client peak %d MB | sqlite3 .import %.2f s, peak %d MB\n' \
        "$run" "$t" $((hwm / 1024)) $(($(cat "$WORK/client$run") / 1024)) "$st" $((sm / 1024))
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
lt=$(median "${lode_times[@]}"); lm=$(median "${lode_mem[@]}"); cm=$(median "${client_mem[@]}"); st=$(median "${sql_times[@]}"); sm=$(median "${sql_mem[@]}")
echo
printf 'rows %d, file %d MB, %d runs (medians)\n' "$ROWS" $((SIZE / 1000000)) "$RUNS"
printf '  lode import      %7.2f s  %8.0f rows/s  node peak RSS %4d MB, client %d MB\n' "$lt" "$(echo "$ROWS / $lt" | bc -l)" $((${lm%.*} / 1024)) $((${cm%.*} / 1024))
printf '  sqlite3 .import  %7.2f s  %8.0f rows/s  peak RSS      %4d MB\n' "$st" "$(echo "$ROWS / $st" | bc -l)" $((${sm%.*} / 1024))
printf '  ratio (lode / sqlite3): time %.2fx\n' "$(echo "$lt / $st" | bc -l)"
