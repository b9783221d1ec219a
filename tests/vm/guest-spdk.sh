#!/usr/bin/env bash
# Runs inside the test VM (tests/vm/spdk-pcie.sh boots it, with the NVMe
# controllers left to userspace): the spdk engine over PCIe. Binds each
# controller to uio_pci_generic (inside the guest only), compares nvkv with
# spdk_nvme_perf at depth 32, straces the busy poller, and runs the write /
# restart / kill -9 / check sequence. Exits non-zero on any failure, and
# says which step failed and with what status.
set -Eeuo pipefail
trap 'st=$?; echo "FAIL: tests/vm/guest-spdk.sh line $LINENO: \`$BASH_COMMAND\` exited with status $st" >&2' ERR
here=$(dirname "$0")
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"

# Runs a command; on failure prints its output and exit status, and fails.
# Its output goes to stdout on success.
step() { # what command...
    local what=$1 out st=0
    shift
    out=$("$@" 2>&1) || st=$?
    if (( st != 0 )); then
        echo "FAIL: $what exited with status $st: $*" >&2
        sed 's/^/    /' <<<"$out" >&2
        return "$st"
    fi
    printf '%s\n' "$out"
}
check_flags=()
declare -a summary
echo 1024 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages

for dev in /sys/bus/pci/devices/*; do
    [[ "$(cat "$dev/class")" == 0x010802 ]] || continue
    bdf=$(basename "$dev")
    fails=0
    bash scripts/nvme-bind.sh bind "$bdf" --driver uio_pci_generic
    trid="trtype:PCIe traddr:$bdf"
    perf_out=$(step "spdk_nvme_perf on $bdf" spdk_nvme_perf -q 32 -o 4096 -w randread -t "$dur" -r "$trid")
    perf=$(awk '/^Total/ {print $3}' <<<"$perf_out")
    [[ -n "$perf" ]] || { echo "FAIL: spdk_nvme_perf on $bdf printed no Total line:" >&2; echo "$perf_out" >&2; exit 1; }
    dir=/tmp/store-spdk
    rm -rf "$dir"
    load_out=$(step "nvkv load on $bdf" "$nvkv" load --path "$dir" --device "$trid" --force --keys "$keys" --min-size 1024 --max-size 4096)
    sector=$(grep -o 'sector[^ ]*=[^ ]*[0-9]*' <<<"$load_out" | head -1 | sed 's/\x1b\[[0-9;]*m//g' | tr -dc '0-9' || true)

    # A busy poller pinned to a core of its own (forced: on this 2-vCPU
    # guest the defaults choose adaptive polling, too few cores to dedicate).
    serve "$dir" --poll busy --pin
    pid=$(pgrep -f "nvkv --log-level warn serve")
    tid=$(grep -l '^poller-0$' /proc/"$pid"/task/*/comm | cut -d/ -f5)
    "$nvkv" bench --addr 127.0.0.1:6400 --keys "$keys" --clients 4 --inflight 8 --duration 4 > /dev/null 2>&1 &
    sleep 1
    timeout -s INT 2 strace -c -p "$tid" > /tmp/strace.out 2>&1 || true
    calls=$(awk '$NF == "total" {print $4}' /tmp/strace.out)
    calls=${calls:-0}
    sed 's/^/    /' /tmp/strace.out
    wait
    read -r busy busyp50 busyp99 busyerr <<<"$(bench 4 8)"
    expect 0 "$busyerr" "$bdf busy: value errors"
    stop TERM

    # Adaptive polling: what suits a 2-vCPU guest.
    serve "$dir" --poll adaptive --pin false
    read -r q1 q1p50 q1p99 q1err <<<"$(bench 1 1)"
    read -r q32 q32p50 q32p99 q32err <<<"$(bench 4 8)"
    expect 0 "$q1err" "$bdf: value errors at Q=1"
    expect 0 "$q32err" "$bdf: value errors at Q=32"
    write_checks "$dir" "$bdf spdk" --poll adaptive --pin false
    ratio=$(awk -v a="$q32" -v b="$perf" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    summary+=("$bdf (${sector}-byte blocks): spdk_nvme_perf Q=32 $perf IOPS; nvkv busy/pinned Q=32 $busy GET/s (p50 ${busyp50}us); adaptive Q=32 $q32 GET/s p50 ${q32p50}us p99 ${q32p99}us = $ratio of perf; Q=1 $q1 GET/s p50 ${q1p50}us; busy poller system calls in 2 s of serving: $calls; failed checks: $fails")
    if [[ "$calls" != 0 ]]; then echo "FAIL: the busy poller made $calls system calls"; fail=1; fi
done
echo
echo "=== summary: the spdk engine over PCIe, QEMU's emulated NVMe, TCG"
printf '%s\n' "${summary[@]}"
exit $fail
