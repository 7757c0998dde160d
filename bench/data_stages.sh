#!/usr/bin/env bash
# Release-mode benchmarks of the data stages (figures in docs/benchmarks.md).
#
#   bench/data_stages.sh [SCRATCH] [DATA_DIR]    # defaults: /tmp/pipeline-bench-data, ../shared/data
#
# 1. The full feature set on 1,000,800 one-minute rows (695 days of synth_market): wall time of the
#    `features` stage (read Parquet, compute, write Parquet) and the process's peak RSS, 3 runs.
# 2. ingest_bars + align_utc on the real Binance.US BTCUSDT and Kraken XBTUSDC files, 3 runs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
S=${1:-/tmp/pipeline-bench-data}
DATA=${2:-$ROOT/../shared/data}
DATA=$(cd "$DATA" && pwd)
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/pipeline"
rm -rf "$S"; mkdir -p "$S"; cd "$S"

echo "== 1. features on 1,000,800 rows"
cat > features.toml <<'TOML'
[stages.market]
task = "synth_market"
params = { days = 695 }

[stages.features]
task = "features"
inputs = ["market"]
TOML
"$BIN" run features.toml --plain 2>&1 | grep -E "^(market|features) "
for _ in 1 2 3; do
    /usr/bin/time -f "process wall %e s, peak RSS %M KB" "$BIN" run features.toml --plain --force features features 2>&1 \
        | grep -E "^features |process wall"
done

echo "== 2. ingest + align of the real files"
cat > real.toml <<TOML
[stages.binance]
task = "ingest_bars"
params = { path = "$DATA/binance_us/BTCUSDT_1m_20230301_20230321.csv" }
[stages.binance_grid]
task = "align_utc"
inputs = ["binance"]
[stages.kraken]
task = "ingest_bars"
params = { path = "$DATA/kraken/XBTUSDC_1m_2023Q1_headerless.csv", column_names = ["timestamp", "open", "high", "low", "close", "volume", "trades"], timestamp_unit = "s" }
[stages.kraken_grid]
task = "align_utc"
inputs = ["kraken"]
TOML
for _ in 1 2 3; do
    "$BIN" run real.toml --plain --force-all --jobs 1 2>&1 | grep -E "^(binance|binance_grid|kraken|kraken_grid) "
done
