#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 30), two at a time (2 cores).
# Fails (exit 1) if any target finds a crash, a failed assertion, a leak or a timeout; the
# input that did it is left in fuzz/artifacts/TARGET/ and its log in fuzz/artifacts/logs/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      e.g.  fuzz/run.sh 30      fuzz/run.sh 600 codec_v5
#
# FUZZ_JOBS (default 2): targets run at once. FUZZ_ARGS: extra libFuzzer flags for every run.
# FUZZ_TARGET_DIR (default fuzz/target): where the instrumented build goes; CI keeps it outside
# its fresh clone so that a second run on the same machine rebuilds only midge itself.
#
# Needs only stable Rust: cargo-fuzz's flags are nightly-only (-Zsanitizer, sancov passes),
# and RUSTC_BOOTSTRAP=1 lets stable rustc accept them. cargo-fuzz itself is installed at the
# pinned version if missing. Each run starts from the committed corpus (fuzz/corpus/TARGET)
# and writes what it finds to fuzz/corpus-work/TARGET, so the committed corpus only changes
# when someone merges on purpose (see fuzz/README.md).
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET=${1:-30}
shift || true
cd "$(dirname "$0")"
FUZZ_DIR=$(pwd)
export RUSTC_BOOTSTRAP=1

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

cd "$FUZZ_DIR/.."
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi
TARGET_DIR=${FUZZ_TARGET_DIR:-$FUZZ_DIR/target}
if [ $# -gt 0 ]; then
    for t in "${TARGETS[@]}"; do cargo fuzz build --target-dir "$TARGET_DIR" "$t"; done
else
    cargo fuzz build --target-dir "$TARGET_DIR"
fi

BIN_DIR="$TARGET_DIR/x86_64-unknown-linux-gnu/release"
LOGS="$FUZZ_DIR/artifacts/logs"
mkdir -p "$LOGS"
JOBS=${FUZZ_JOBS:-2}

run_one() {
    local t=$1
    mkdir -p "$FUZZ_DIR/corpus-work/$t" "$FUZZ_DIR/corpus/$t" "$FUZZ_DIR/artifacts/$t"
    "$BIN_DIR/$t" "$FUZZ_DIR/corpus-work/$t" "$FUZZ_DIR/corpus/$t" \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$FUZZ_DIR/artifacts/$t/" \
        ${FUZZ_ARGS:-} >"$LOGS/$t.log" 2>&1
}

failed=()
pids=()
names=()
for t in "${TARGETS[@]}"; do
    run_one "$t" &
    pids+=($!)
    names+=("$t")
    if [ "${#pids[@]}" -ge "$JOBS" ]; then
        if ! wait "${pids[0]}"; then failed+=("${names[0]}"); fi
        pids=("${pids[@]:1}")
        names=("${names[@]:1}")
    fi
done
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then failed+=("${names[$i]}"); fi
done

for t in "${TARGETS[@]}"; do
    printf '%-10s ' "$t"
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^Done [0-9]+ runs' "$LOGS/$t.log" \
        | tr '\n' ' ' || true
    grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$LOGS/$t.log" | tail -1 || true
done

if [ "${#failed[@]}" -gt 0 ]; then
    for t in "${failed[@]}"; do
        echo "==== fuzz target $t FAILED; the end of its log ($LOGS/$t.log):"
        tail -n 60 "$LOGS/$t.log"
        ls -l "$FUZZ_DIR/artifacts/$t/"
    done
else
    echo "fuzz: ${#TARGETS[@]} targets, ${SECONDS_PER_TARGET}s each, no crash"
fi
echo "fuzz: $((${#TARGETS[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
