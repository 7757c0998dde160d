#!/usr/bin/env bash
# Train time of the `gbdt` model (forust-ml) on the real-data feature table, next to LightGBM
# on the same rows, columns, split and params (figures in docs/benchmarks.md).
#
#   bench/train_gbdt.sh [SCRATCH] [DATA_DIR] [PYTHON]
#   # defaults: /tmp/pipeline-bench-gbdt, ../shared/data, python3 (needs lightgbm, polars;
#   # without them only our side is measured)
#   MODEL=lightgbm bench/train_gbdt.sh ...
#   # the same for the `lightgbm` family (a build with --features lightgbm: run
#   # `eval "$(scripts/setup-lightgbm.sh)"` first; its venv's python has lightgbm)
#
# Table: Binance.US BTCUSDT 1-minute bars (March 2023) -> align -> clip -> the 26 price
# features; label `label_dir_15`; the 60/20/20 purged time split of `train`. Two settings:
# early stopping on validation log loss (30 rounds, the default) and a fixed 200 trees.
# Reported: the `train_seconds` metric of the stage (fit only), 5 forced runs each.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
S=${1:-/tmp/pipeline-bench-gbdt}
DATA=${2:-$ROOT/../shared/data}
DATA=$(cd "$DATA" && pwd)
PY=${3:-python3}
MODEL=${MODEL:-gbdt}
if [ "$MODEL" = lightgbm ]; then
    cargo build --release --quiet --features lightgbm --manifest-path "$ROOT/Cargo.toml"
    FAMILY='lightgbm = { iterations = 200, min_data_in_leaf = 1 }'
else
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
    FAMILY='gbdt = { iterations = 200 }'
fi
BIN="$ROOT/target/release/pipeline"
rm -rf "$S"; mkdir -p "$S"; cd "$S"

cat > p.toml <<TOML
[stages.bars]
task = "ingest_bars"
params = { path = "$DATA/binance_us/BTCUSDT_1m_20230301_20230321.csv" }
[stages.aligned]
task = "align_utc"
inputs = ["bars"]
[stages.clipped]
task = "clip_outliers"
inputs = ["aligned"]
[stages.features]
task = "features"
inputs = ["clipped"]
[stages.labels]
task = "labels"
inputs = ["aligned"]
params = { horizons = [15] }
[stages.train]
task = "train"
inputs = ["features", "labels"]
params = { label = "label_dir_15", model = "$MODEL", permutation_repeats = 0, $FAMILY }
matrix = { "$MODEL.early_stopping_rounds" = [30, 0] }
TOML
"$BIN" run p.toml --plain >/dev/null 2>&1
object() { "$BIN" show "$1" --json | "$PY" -c "import json,sys; print(json.load(sys.stdin)['outputs']['$2']['hash'])"; }
path() { h=$(object "$1" "$2"); echo "$S/.pipeline/objects/${h:0:2}/${h:2}"; }
for node in "train[$MODEL.early_stopping_rounds=30]" "train[$MODEL.early_stopping_rounds=0]"; do
    echo "== pipeline train ($node), train_seconds of 5 runs"
    for _ in 1 2 3 4 5; do
        "$BIN" run p.toml --plain --force "$node" "$node" >/dev/null 2>&1
        "$BIN" show "$node" --json | "$PY" -c "import json,sys; m=json.load(sys.stdin)['metrics']; print(m['train_seconds'], 'best_iteration', m.get('best_iteration'), 'test_auc', m['test_auc'])"
    done
done
if "$PY" -c "import lightgbm, polars" 2>/dev/null; then
    echo "== LightGBM on the same table"
    "$PY" "$ROOT/bench/lgbm_same_table.py" "$(path features table)" "$(path labels table)" \
        "$(path "train[$MODEL.early_stopping_rounds=30]" metrics)"
else
    echo "(LightGBM side skipped: $PY has no lightgbm/polars)"
fi
