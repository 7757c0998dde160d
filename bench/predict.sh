#!/usr/bin/env bash
# `pipeline predict` from process start to answer: one row as JSON lines (what a live loop
# sends), and the stage's own newest row (read from its stored input tables), each timed over
# 50 runs, p50 and p99 (figures in docs/benchmarks.md, "Scoring latency"). The in-process
# latency of the same scoring: `cargo bench -p pipeline-tasks --bench predict`.
#
#   bench/predict.sh [SCRATCH]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
S=${1:-/tmp/pipeline-bench-predict}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/pipeline"
rm -rf "$S"; mkdir -p "$S"; cd "$S"
cat > p.toml <<'TOML'
[stages.market]
task = "synth_market"
params = { days = 30 }

[stages.features]
task = "features"
inputs = ["market"]

[stages.labels]
task = "labels"
inputs = ["market"]

[stages.train]
task = "train"
inputs = ["features", "labels"]
params = { label = "label_dir_15", model = "gbdt", feature_set = "price_only", gbdt = { early_stopping_rounds = 0 } }
TOML
time_runs() { # label, then the command
    local label=$1; shift
    python3 - "$label" "$@" <<'PY'
import subprocess, sys, time
label, cmd = sys.argv[1], sys.argv[2:]
stdin = open("row.jsonl", "rb").read() if "-" in cmd else None
ms = []
for _ in range(50):
    t = time.perf_counter()
    subprocess.run(cmd, input=stdin, stdout=subprocess.DEVNULL, check=True)
    ms.append((time.perf_counter() - t) * 1000)
ms.sort()
print(f"{label}: p50 {ms[24]:.1f} ms, p99 {ms[int(round(0.99 * 49))]:.1f} ms (50 runs)")
PY
}
for model in gbdt logistic; do
    "$BIN" run p.toml --plain --set "stages.train.params.model=$model" > /dev/null 2>&1
    "$BIN" export features features.ndjson > /dev/null
    tail -n 1 features.ndjson > row.jsonl
    time_runs "$model, one row on stdin" "$BIN" predict p.toml --stage train --input -
    time_runs "$model, the stage's newest row" "$BIN" predict p.toml --stage train
done
