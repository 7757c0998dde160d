#!/usr/bin/env bash
# Fit time of the `logistic` model on the Stage 1 table (synthetic market and news, label_dir_15,
# the with-news feature set), next to scikit-learn's lbfgs on the same rows, columns, fill and
# scaling (figures in docs/benchmarks.md).
#
#   bench/logistic.sh [SCRATCH] [PYTHON]    # PYTHON needs numpy, pandas, pyarrow, scikit-learn
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
S=${1:-/tmp/pipeline-bench-logistic}
PY=${2:-python3}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/pipeline"
rm -rf "$S"; mkdir -p "$S"; cp -r "$ROOT/pipelines" "$S/"; cd "$S"
NODE='train[label=label_dir_15,model=logistic,feature_set=with_news]'
"$BIN" run pipelines/stage1_ablation.toml --plain "$NODE" > /dev/null 2>&1
object() { "$BIN" show "$1" --json | "$PY" -c "import json,sys; h=json.load(sys.stdin)['outputs']['$2']['hash']; print('.pipeline/objects/'+h[:2]+'/'+h[2:])"; }
echo "== pipeline $NODE: train_seconds (the fit) of 5 forced runs"
for _ in 1 2 3 4 5; do
    "$BIN" run pipelines/stage1_ablation.toml --plain --force "$NODE" "$NODE" > /dev/null 2>&1
    "$BIN" show "$NODE" --json | "$PY" -c "import json,sys; m=json.load(sys.stdin)['metrics']; print(m['train_seconds'], 'test_auc', m['test_auc'])"
done
if "$PY" -c "import sklearn, pandas, pyarrow" 2> /dev/null; then
    # The node joins features, news features and labels; the script reads the joined columns it names.
    "$BIN" run pipelines/stage1_ablation.toml --plain features news_features labels > /dev/null 2>&1
    "$PY" - "$(object features table)" "$(object news_features table)" joined.parquet <<'PYEOF'
import sys, pandas as pd
a, b = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
a.merge(b, on="timestamp", how="left").to_parquet(sys.argv[3])
PYEOF
    "$PY" "$ROOT/bench/logistic_same_table.py" joined.parquet "$(object labels table)" "$(object "$NODE" metrics)" "$(object "$NODE" model)"
else
    echo "(scikit-learn side skipped: $PY lacks scikit-learn, pandas or pyarrow)"
fi
