#!/usr/bin/env bash
# The nightly refresh on a year of synthetic 1-minute data (docs/nightly.md): pipelines/nightly.toml
# with 366 days of bars and news (2024-01-01 .. 2024-12-31 plus the day the last labels look
# into: 527,040 rows per column), 30-day training windows, one fold per test day x 2 feature sets; then the nightly
# run after one more day; then a run with nothing to do. Figures in docs/benchmarks.md.
#
#   bench/nightly.sh [SCRATCH] [ROUNDS] [FIRST_TEST]
#
# Defaults: /tmp/pipeline-bench-nightly, 3 rounds, test folds from 2024-12-01 (31 daily folds,
# the last month); FIRST_TEST=2024-02-01 tests every day from February on (335 folds).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
S=${1:-/tmp/pipeline-bench-nightly}
ROUNDS=${2:-3}
FIRST_TEST=${3:-2024-12-01}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/pipeline"
rm -rf "$S"; mkdir -p "$S"; cp -r "$ROOT/pipelines" "$S/"; cd "$S"
YEAR=(--set "params.first_test=$FIRST_TEST" --set params.train_window=30d)

for i in $(seq "$ROUNDS"); do
    rm -rf .pipeline out
    /usr/bin/time -f "full run (366 days): %e s, %M KB peak" \
        "$BIN" run pipelines/nightly.toml --plain "${YEAR[@]}" --set params.until=2024-12-31 > /dev/null 2> err.txt || { cat err.txt; exit 1; }
    tail -1 err.txt
    /usr/bin/time -f "nightly (+1 day): %e s, %M KB peak" \
        "$BIN" run pipelines/nightly.toml --plain "${YEAR[@]}" --set params.until=2025-01-01 > /dev/null 2> err.txt || { cat err.txt; exit 1; }
    tail -1 err.txt
    /usr/bin/time -f "no-op (367 partitions per stage): %e s, %M KB peak" \
        "$BIN" run pipelines/nightly.toml --plain "${YEAR[@]}" --set params.until=2025-01-01 > /dev/null 2> err.txt || { cat err.txt; exit 1; }
    tail -1 err.txt
    # The same study unpartitioned (walk_forward.toml), from an empty store: what a first
    # partitioned run costs over it.
    rm -rf .pipeline out
    /usr/bin/time -f "unpartitioned full run (walk_forward.toml): %e s, %M KB peak" \
        "$BIN" run pipelines/walk_forward.toml --plain "${YEAR[@]}" --set params.until=2024-12-31 > /dev/null 2> err.txt || { cat err.txt; exit 1; }
    tail -1 err.txt
done
# What the nightly run computed, per stage.
rm -rf .pipeline out
"$BIN" run pipelines/nightly.toml --plain "${YEAR[@]}" --set params.until=2024-12-31 > /dev/null 2>&1
"$BIN" run pipelines/nightly.toml --plain "${YEAR[@]}" --set params.until=2025-01-01 > /dev/null 2>&1
"$BIN" show last --json | python3 -c "
import json, sys
run = json.load(sys.stdin)
for s in run['stages']:
    p = s['metrics'].get('partitions')
    if p:
        print(f\"{s['name']:<14} {s['outcome']:<4} {s['duration_ms']:>6} ms  partitions computed {p.get('ran')} of {p.get('total')} {p.get('ran_periods', '')}\")
"
