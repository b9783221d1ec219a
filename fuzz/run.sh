#!/usr/bin/env bash
# Builds and runs every fuzz target for SECONDS each (default 30) on the
# stable toolchain (cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1).
# Exits non-zero when a target finds a crash, a hang or an OOM.
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    echo "usage: fuzz/run.sh [SECONDS]   run each fuzz target (default 30 s)"
    exit 0
fi
secs=${1:-30}
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for t in $(cargo fuzz list); do
    echo "== fuzz $t for ${secs}s"
    # A scratch copy of the kept corpus: short CI runs do not grow the repo.
    work=$(mktemp -d)
    cp -r "corpus/$t/." "$work/" 2>/dev/null || true
    status=0
    cargo fuzz run -O "$t" "$work" -- -max_total_time="$secs" -rss_limit_mb=1024 \
        -malloc_limit_mb=512 -timeout=10 >"$work.log" 2>&1 || status=$?
    grep -E "^(#[0-9]+ +DONE|Done|==[0-9]+==|SUMMARY)" "$work.log" | tail -3 || true
    rm -rf "$work"
    if [ "$status" -ne 0 ]; then
        tail -30 "$work.log"
        echo "fuzz target $t failed (see fuzz/artifacts/$t)"
        exit 1
    fi
done
echo "== all fuzz targets ran clean"
