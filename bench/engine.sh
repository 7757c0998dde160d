#!/usr/bin/env bash
# Release-mode benchmarks of the engine (figures in docs/benchmarks.md).
#
#   bench/engine.sh [SCRATCH]            # default SCRATCH=/tmp/pipeline-bench
#
# 1. No-op decision on a 12-stage pipeline shaped like Stage 1 (the same shape, raw input sizes and
#    commands as ../shared/bench/dvc_snakemake_noop.sh, so the figures compare side by side):
#    full run, 5 no-op re-runs, 3 `status`, and a run after `touch` of the 200 MB raw input.
# 2. 1,000 trivial stages (`value`, a binary tree): full run, no-op re-run, `status`.
# 3. Hashing a 1 GB file cold (when the page cache can be dropped) and warm with `pipeline debug hash`, next to sha256sum
#    and b3sum when installed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
S=${1:-/tmp/pipeline-bench}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/pipeline"
rm -rf "$S"; mkdir -p "$S"; cd "$S"

ms() { date +%s%N; }
# timed N CMD...: runs CMD N times, prints "min / median / max" in milliseconds.
timed() {
    local n=$1; shift
    local times=()
    for _ in $(seq "$n"); do
        local t0; t0=$(ms)
        "$@" >/dev/null 2>&1
        times+=($(( ($(ms) - t0) / 1000000 )))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%d / %d / %d ms", a[1], a[int((NR+1)/2)], a[NR]}'
}

echo "== 1. 12-stage pipeline, ~200 MB raw input, artifacts up to 50 MB each"
python3 -c "import os; open('raw_prices.bin','wb').write(os.urandom(200*1024*1024)); open('raw_news.bin','wb').write(os.urandom(20*1024*1024))"
stages="ingest:raw_prices.bin:ingest.out align:ingest.out:align.out clip:align.out:clip.out features:clip.out:features.out labels:features.out:labels.out news_ingest:raw_news.bin:news.out embed:news.out:embed.out join:labels.out,embed.out:join.out train_news:join.out:train_news.out train_nonews:labels.out:train_nonews.out report:train_news.out,train_nonews.out:report.out bias:report.out:bias.out"
PY='import sys; d=b"".join(open(f,"rb").read() for f in sys.argv[2:]); open(sys.argv[1],"wb").write(d[:50*1024*1024])'
{
    echo '[pipeline]'; echo 'name = "noop_bench"'
    for s in $stages; do
        IFS=: read -r name ins out <<<"$s"
        echo; echo "[stages.$name]"; echo 'task = "command"'
        args=""; inputs=""; deps=""
        for x in ${ins//,/ }; do
            if [[ $x == raw_* ]]; then args+=", \"$x\""; deps+="\"$x\", "
            else producer=""; for t in $stages; do IFS=: read -r n2 _ o2 <<<"$t"; [[ $o2 == "$x" ]] && producer=$n2; done
                 args+=", \"{in.$producer}\""; inputs+="\"$producer\", "; fi
        done
        [[ -n $inputs ]] && echo "inputs = [${inputs%, }]"
        echo "params = { cmd = [\"python3\", \"-c\", '$PY', \"{out.out}\"$args], outputs = { out = \"out.bin\" }, deps = [${deps%, }] }"
    done
} > noop.toml
"$BIN" validate noop.toml >/dev/null
echo "full run:            $(timed 1 "$BIN" run noop.toml --plain)"
du -sh .pipeline/objects | awk '{print "artifacts in store:  " $1}'
echo "no-op run (5):       $(timed 5 "$BIN" run noop.toml --plain)"
echo "status (3):          $(timed 3 "$BIN" status noop.toml)"
sleep 2.5   # past the stat memo's racy window
touch raw_prices.bin
echo "run after touch:     $(timed 1 "$BIN" run noop.toml --plain)"
"$BIN" run noop.toml --plain 2>&1 | tail -1
echo "no-op after touch:   $(timed 5 "$BIN" run noop.toml --plain)"

echo "== 1b. 12 stages whose artifacts total over 500 MB (distinct bytes: no deduplication)"
python3 - <<'PYEOF'
with open("big.toml", "w") as f:
    f.write('[pipeline]\nname = "big_artifacts"\n')
    for i in range(6):
        f.write(f'\n[stages.table{i}]\ntask = "synth_table"\nparams = {{ rows = 1200000, columns = 8, seed = {i} }}\n')
        f.write(f'\n[stages.half{i}]\ntask = "select"\ninputs = ["table{i}"]\nparams = {{ columns = ["timestamp", "c0", "c1", "c2"] }}\n')
PYEOF
rm -rf .pipeline
echo "full run:            $(timed 1 "$BIN" run big.toml --plain)"
du -sh .pipeline/objects | awk '{print "artifacts in store:  " $1}'
sleep 2.5
echo "no-op run (10):      $(timed 10 "$BIN" run big.toml --plain)"
echo "status (5):          $(timed 5 "$BIN" status big.toml)"

echo "== 2. 1,000 trivial stages"
python3 - <<'PYEOF'
with open("wide.toml", "w") as f:
    f.write('[pipeline]\nname = "wide"\n')
    for i in range(1000):
        f.write(f'\n[stages.s{i}]\ntask = "value"\n')
        if i:
            f.write(f'inputs = ["s{(i - 1) // 2}"]\n')
        f.write(f'params = {{ value = {i} }}\n')
PYEOF
echo "validate (5):        $(timed 5 "$BIN" validate wide.toml)"
echo "full run:            $(timed 1 "$BIN" run wide.toml --plain)"
echo "no-op run (5):       $(timed 5 "$BIN" run wide.toml --plain)"
echo "status (5):          $(timed 5 "$BIN" status wide.toml)"
echo "full run, forced (3): $(timed 3 "$BIN" run wide.toml --plain --force-all)"

echo "== 3. hashing 1 GB"
python3 -c "import os; f=open('big.bin','wb'); [f.write(os.urandom(64*1024*1024)) for _ in range(16)]"
if (sync && echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then
    echo "cold (page cache dropped): $("$BIN" debug hash big.bin)"
else
    echo "cold: cannot drop the page cache here (needs root); skipped"
fi
cat big.bin > /dev/null
for _ in 1 2 3; do "$BIN" debug hash big.bin; done
for jobs in 1 2; do echo "RAYON_NUM_THREADS=$jobs: $(RAYON_NUM_THREADS=$jobs "$BIN" debug hash big.bin)"; done
echo "sha256sum:           $(timed 1 sha256sum big.bin)"
if command -v b3sum >/dev/null; then echo "b3sum:               $(timed 3 b3sum big.bin)"; fi
