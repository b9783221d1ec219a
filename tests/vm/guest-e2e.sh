#!/usr/bin/env bash
# Runs inside the test VM (tests/vm/nvme-e2e.sh boots it): nvkv on raw NVMe
# namespaces with the uring and aio engines. Exits non-zero on any failure.
set -euo pipefail
here=$(dirname "$0")
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"
check_flags=()
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

for dev in /dev/nvkv-4k /dev/nvkv-512; do
    lbs=$(cat /sys/block/"$(basename "$(readlink -f "$dev")")"/queue/logical_block_size)
    echo "=== $dev ($lbs-byte blocks): integration tests (read path, on the device)"
    if read_path_tests "$dev"; then summary+=("$dev read-path tests: ok"); else summary+=("$dev read-path tests: FAILED"); fail=1; fi
    for engine in uring aio; do
        dir=/tmp/store-$engine
        rm -rf "$dir"
        fails=0
        "$nvkv" --log-level warn load --path "$dir" --device "$dev" --force --keys "$keys" --min-size 1024 --max-size 4096 2>/dev/null
        serve "$dir" --engine "$engine"
        read -r q1 q1p50 q1p99 q1err <<<"$(bench 1 1)"
        read -r q32 q32p50 q32p99 q32err <<<"$(bench 4 8)"
        expect 0 "$q1err" "$engine value errors at Q=1"
        expect 0 "$q32err" "$engine value errors at Q=32"
        write_checks "$dir" "$dev $engine" --engine "$engine"
        summary+=("$dev $engine: Q=1 $q1 GET/s p50 ${q1p50}us p99 ${q1p99}us; Q=32 $q32 GET/s p50 ${q32p50}us p99 ${q32p99}us; value errors $q1err/$q32err; failed checks (writes, restart, kill -9, check): $fails")
    done
done
echo
echo "=== summary (inside QEMU TCG: CPU-bound work runs several times slower than on the host)"
printf '%s\n' "${summary[@]}"
exit $fail
