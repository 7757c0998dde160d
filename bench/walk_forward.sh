#!/usr/bin/env bash
# The shipped walk-forward (pipelines/walk_forward.toml: 30 test days x 2 feature sets, gbdt)
# end to end from an empty store, the nightly re-run after one more day, and the same modelling
# loop in Python (pandas + LightGBM + a vectorised backtest) on the tables the pipeline built.
# Figures in docs/benchmarks.md.
#
#   bench/walk_forward.sh [SCRATCH] [PYTHON]
#   # defaults: /tmp/pipeline-bench-wf, python3 (needs pandas, pyarrow, lightgbm; without them
#   # only our side is measured)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
S=${1:-/tmp/pipeline-bench-wf}
PY=${2:-python3}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/pipeline"
rm -rf "$S"; mkdir -p "$S"; cp -r "$ROOT/pipelines" "$S/"; cd "$S"
object() { "$BIN" show "$1" --json | "$PY" -c "import json,sys; h=json.load(sys.stdin)['outputs']['$2']['hash']; print('.pipeline/objects/'+h[:2]+'/'+h[2:])"; }

for i in 1 2 3; do
    rm -rf .pipeline out
    /usr/bin/time -f "full run: %e s, %M KB peak" "$BIN" run pipelines/walk_forward.toml --plain > /dev/null 2> err.txt || { cat err.txt; exit 1; }
    tail -1 err.txt
    /usr/bin/time -f "nightly (+1 day): %e s, %M KB peak" "$BIN" run pipelines/walk_forward.toml --plain --set params.until=2024-03-02 > /dev/null 2> err.txt || { cat err.txt; exit 1; }
    tail -1 err.txt
done
"$BIN" run pipelines/walk_forward.toml --plain > /dev/null 2>&1
grep -h "train_seconds" /dev/null || true
if "$PY" -c "import pandas, pyarrow, lightgbm" 2> /dev/null; then
    for i in 1 2 3; do
        /usr/bin/time -f "python: %e s, %M KB peak" "$PY" "$ROOT/bench/walk_forward.py" \
            "$(object features table)" "$(object news_features table)" "$(object labels table)" "$(object aligned table)" \
            2024-01-31 2024-03-01
    done
else
    echo "python side skipped: $PY lacks pandas, pyarrow or lightgbm"
fi
