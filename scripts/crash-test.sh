#!/usr/bin/env bash
# crash-test.sh - the long version of tests/crash.rs: many rounds of
# "writers in sync mode, kill -9 at a random moment, restart, check that
# every acknowledged write (and delete) survived and nothing else appeared".
#
# It runs `cargo test --release --test crash -- --nocapture` with the round
# count, seed, store directory and binary passed in the environment
# (NVKV_CRASH_ROUNDS, NVKV_CRASH_SEED, NVKV_CRASH_DIR, NVKV_BIN,
# NVKV_CRASH_SERVE_ARGS). Run with --help for the options.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

ROUNDS=50
DIR=/tmp/nvkv-crash-test
BIN=""
SEED=""
SERVE_ARGS=""
CLEAN=0

usage() {
    cat <<EOF
Usage: scripts/crash-test.sh [options]

Runs the crash test (tests/crash.rs) for many rounds on one small store
(32 MiB in 512 KiB segments, so compaction runs): 4 writer threads SET and
DEL their own keys in sync mode, the server gets SIGKILL 100-400 ms later,
restarts (rebuilding its index from the device), and every key must hold
its last acknowledged value or the one in flight.

Options:
  --rounds N         kill/restart rounds (default $ROUNDS)
  --dir DIR          working directory (default $DIR): the store is
                     DIR/store, recreated at every run and kept afterwards
                     for inspection; the output goes to DIR/crash-test.log
  --bin PATH         nvkv binary to test (default: the one cargo builds
                     from this checkout)
  --seed S           seed of the schedule (default: from the clock; the
                     test prints it; the same seed repeats the kill delays,
                     operations and server options, thread timing aside)
  --serve-args ARGS  more 'nvkv serve' arguments, e.g. "--max-io-depth 32"
  --clean            remove DIR/store after a successful run
  -h, --help         this help

Exit status: 0 if every round passed, non-zero otherwise (the log says
which round, which keys, and the seed).
EOF
}

die() {
    echo "crash-test.sh: $*" >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
        --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
        --bin) BIN=${2:?--bin needs a value}; shift 2 ;;
        --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
        --serve-args) SERVE_ARGS=${2?--serve-args needs a value}; shift 2 ;;
        --clean) CLEAN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer, not '$ROUNDS'"
[[ -z "$SEED" || "$SEED" =~ ^[0-9]+$ ]] || die "--seed must be a non-negative integer, not '$SEED'"
if [[ -n "$BIN" ]]; then
    [[ -x "$BIN" ]] || die "--bin $BIN is not an executable"
    BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
fi
command -v cargo >/dev/null || die "cargo is not in PATH"

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
STORE="$DIR/store"
LOG="$DIR/crash-test.log"

# One run at a time per directory: a second one would delete the store
# under the first.
exec 9>"$DIR/.crash-test.lock"
flock -n 9 || die "another crash-test.sh is running in $DIR"

# Only ever delete a store (or an empty directory) that a previous run left.
if [[ -e "$STORE" ]]; then
    if [[ -e "$STORE/data.nvkv" || -z "$(ls -A "$STORE")" ]]; then
        rm -rf -- "$STORE"
    else
        die "$STORE exists and is not an nvkv store; not deleting it"
    fi
fi

export NVKV_CRASH_ROUNDS="$ROUNDS"
export NVKV_CRASH_DIR="$STORE"
if [[ -n "$SEED" ]]; then export NVKV_CRASH_SEED="$SEED"; else unset NVKV_CRASH_SEED; fi
if [[ -n "$BIN" ]]; then export NVKV_BIN="$BIN"; else unset NVKV_BIN; fi
if [[ -n "$SERVE_ARGS" ]]; then export NVKV_CRASH_SERVE_ARGS="$SERVE_ARGS"; else unset NVKV_CRASH_SERVE_ARGS; fi

echo "crash test: $ROUNDS rounds, store $STORE, binary ${BIN:-built by cargo}, log $LOG"
cd "$REPO"
status=0
cargo test --release --test crash -- --nocapture --test-threads 1 2>&1 | tee "$LOG" || status=$?
if [[ $status -eq 0 ]] && grep -q "crash test passed" "$LOG"; then
    echo "crash test: PASSED ($ROUNDS rounds)"
    if [[ $CLEAN -eq 1 ]]; then rm -rf -- "$STORE"; fi
    exit 0
fi
echo "crash test: FAILED; the store is kept in $STORE, the output in $LOG" >&2
exit 1
