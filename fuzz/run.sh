#!/usr/bin/env bash
# fuzz/run.sh TARGET SECONDS [LIBFUZZER FLAGS...]: runs one fuzz target
# for SECONDS (or until a flag such as -runs=10000000 ends it) with
# libFuzzer (cargo-fuzz), starting from the committed seed corpus and the
# target's dictionary. New inputs go to fuzz/work/TARGET, crashes to
# fuzz/artifacts/TARGET; neither is committed. cargo-fuzz needs nightly
# flags, which the stable toolchain accepts with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
if [ "$#" -lt 2 ]; then
    echo "usage: fuzz/run.sh TARGET SECONDS [LIBFUZZER FLAGS...] (targets: $(ls fuzz_targets | sed 's/\.rs$//' | tr '\n' ' '))" >&2
    exit 2
fi
target=$1
seconds=$2
shift 2
if [ ! -f "fuzz_targets/$target.rs" ]; then
    echo "no fuzz target $target" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
mkdir -p "work/$target" "artifacts/$target" "corpus/$target"
dictionary=()
if [ -f "dictionaries/$target.dict" ]; then
    dictionary=(-dict="dictionaries/$target.dict")
fi
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1 "${dictionary[@]}" "$@"
