#!/usr/bin/env bash
# Runs inside the test VM (tests/vm/nvme-e2e.sh boots it): nvkv on raw NVMe
# namespaces with the uring and aio engines. Exits non-zero on any failure.
set -euo pipefail
nvkv=target/release/nvkv
keys=${NVKV_VM_KEYS:-50000}
dur=${NVKV_VM_DURATION:-3}
fail=0
declare -a summary

# (The clean-restart test's /proc/PID/io check counts the binary's own pages
# read over 9p here; the INFO check below covers that case instead.)
read_path_tests() { # device
    local bin
    bin=$(ls -t target/release/deps/read_path-* | grep -v '\.d$' | head -1)
    NVKV_TEST_DEVICE=$1 "$bin" --test-threads=1 -q \
        get_returns_loaded_bytes_on_both_engines pipelined_mget_and_gets_keep_order \
        crash_then_restart_rebuilds_the_index \
        damaged_index_file_is_rebuilt check_passes_a_sound_store
}

serve() { # dir engine
    "$nvkv" --log-level warn serve --path "$1" --engine "$2" --listen 127.0.0.1:6400 > /tmp/serve.log 2>&1 &
    disown
    for _ in $(seq 200); do grep -q "nvkv listening" /tmp/serve.log && return 0; sleep 0.1; done
    cat /tmp/serve.log; return 1
}
stop() { # signal
    local pid
    pid=$(pgrep -f "nvkv --log-level warn serve" || true)
    [[ -n "$pid" ]] || return 0
    kill "-$1" $pid
    for _ in $(seq 300); do kill -0 $pid 2>/dev/null || return 0; sleep 0.1; done
    echo "server did not stop"; return 1
}
bench() { # clients inflight -> "ops p50 p99 errors"
    "$nvkv" bench --addr 127.0.0.1:6400 --keys "$keys" --clients "$1" --inflight "$2" --duration "$dur" 2>/dev/null |
        awk '/^throughput/ {ops=$2} /^operations/ {err=$9} /^latency/ {p50=$6; p99=$10} END {print ops, p50, p99, err}'
}
r() { redis-cli -p 6400 "$@"; }
fails=0
expect() { # want got what
    if [[ "$1" != "$2" ]]; then echo "FAIL: $3: want '$1', got '$2'"; fail=1; fails=$((fails + 1)); fi
}

for dev in /dev/nvkv-4k /dev/nvkv-512; do
    lbs=$(cat /sys/block/"$(basename "$(readlink -f "$dev")")"/queue/logical_block_size)
    echo "=== $dev ($lbs-byte blocks): integration tests (read path, on the device)"
    if read_path_tests "$dev"; then summary+=("$dev read-path tests: ok"); else summary+=("$dev read-path tests: FAILED"); fail=1; fi
    for engine in uring aio; do
        dir=/tmp/store-$engine
        rm -rf "$dir"
        fails=0
        "$nvkv" --log-level warn load --path "$dir" --device "$dev" --force --keys "$keys" --min-size 1024 --max-size 4096 2>/dev/null
        serve "$dir" "$engine"
        read -r q1 q1p50 q1p99 q1err <<<"$(bench 1 1)"
        read -r q32 q32p50 q32p99 q32err <<<"$(bench 4 8)"
        expect 0 "$q1err" "$engine value errors at Q=1"
        expect 0 "$q32err" "$engine value errors at Q=32"
        # Writes: set, overwrite, delete, expire; then a clean restart and a crash.
        for i in $(seq 1 200); do echo "SET w:$i v$i-$(printf '%0*d' $((i * 7)) 0)"; done | r > /dev/null
        r SET w:5 five > /dev/null
        r DEL w:6 > /dev/null
        r SET w:ttl soon PX 300 > /dev/null
        stop TERM
        serve "$dir" "$engine"
        expect 0 "$(r INFO persistence | tr -d '\r' | awk -F: '/^recovery_bytes_read/ {print $2}')" "$engine: clean restart maps the index"
        expect five "$(r GET w:5)" "$engine: overwrite after restart"
        expect "" "$(r GET w:6)" "$engine: delete after restart"
        expect "" "$(r GET w:ttl)" "$engine: expired key after restart"
        r SET after:crash yes > /dev/null
        stop KILL
        serve "$dir" "$engine"
        expect yes "$(r GET after:crash)" "$engine: acknowledged write after kill -9"
        expect "v200-$(printf '%0*d' 1400 0)" "$(r GET w:200)" "$engine: write after kill -9"
        read -r _ _ _ again <<<"$(bench 4 8)"
        # w:* keys are not loaded keys; loaded keys are untouched: no errors.
        expect 0 "$again" "$engine value errors after recovery"
        stop TERM
        if "$nvkv" --log-level warn check --path "$dir" > /tmp/check.out; then c=ok; else c=FAILED; fail=1; cat /tmp/check.out; fi
        summary+=("$dev $engine: Q=1 $q1 GET/s p50 ${q1p50}us p99 ${q1p99}us; Q=32 $q32 GET/s p50 ${q32p50}us p99 ${q32p99}us; value errors $q1err/$q32err; write/restart/crash checks failed: $fails; check $c")
    done
done
echo
echo "=== summary (inside QEMU TCG: CPU-bound work runs several times slower than on the host)"
printf '%s\n' "${summary[@]}"
exit $fail
