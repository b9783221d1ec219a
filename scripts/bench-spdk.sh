#!/usr/bin/env bash
# nvkv's spdk engine against SPDK's own spdk_nvme_perf on one NVMe target:
# 4 KiB random reads at the same depth, in one run, with the ratio.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/bench-spdk.sh [options]

Runs, against one NVMe target:
  1. spdk_nvme_perf: 4 KiB random reads at depth Q (and at depth 1)
  2. SPDK's fio plugin at depth Q, where it is built ($SPDK_FIO_PLUGIN,
     $SPDK_DIR/build/fio/spdk_nvme or the usual install paths), loaded by
     $SPDK_FIO_BIN; otherwise the row says why it is missing
  3. nvkv on the spdk engine: `nvkv bench` at total depth Q (C clients x K
     in flight) and at depth 1, GETs of 1-4 KiB values, every value checked;
     with the default flags (which choose busy, pinned pollers only where
     the machine has cores to dedicate: INFO poll_choice says), with busy
     pinned pollers forced, and with adaptive polling; plus nvkv's ceiling
     without device I/O (GETs of missing keys)
  4. `nvkv bench --local` (the store and engine in one process, no
     sockets) at depth Q, with the default flags and with one busy pinned
     poller
  5. the default poller's wake-ups: lone GETs at 500/s, and INFO's count
     and percentiles of their doorbell-to-running times
  6. strace of the busy poller thread while it serves: its system calls
and prints a table with nvkv/perf ratios.

Options:
  --trid 'TRID'     the target (default: start a loopback NVMe-oF/TCP target
                    with scripts/nvmf-target.sh on --port, and stop it after)
  --port P          port of that target (default 4440)
  --nsid N          namespace (default 1)
  --keys N          records to load (default 200000)
  --duration S      seconds per measurement (default 10)
  --depth Q         total depth (default 32 = 4 clients x 8)
  --perf-cores MASK spdk_nvme_perf's core mask (default 0x2)
  --dir DIR         nvkv store directory (default /tmp/nvkv-bench-spdk)
  --bin PATH        nvkv binary built with --features spdk (default: the
                    script builds it, in $CARGO_TARGET_DIR or target/)
  -h, --help        this text

Environment:
  SPDK_DIR          an SPDK source tree; its build/fio/spdk_nvme is the
                    plugin unless SPDK_FIO_PLUGIN names one
  SPDK_FIO_PLUGIN   SPDK's fio plugin (spdk_nvme). Build it in the SPDK
                    tree against the source of a fio release, without
                    reconfiguring SPDK:
                      make -C app/fio/nvme CONFIG_FIO_PLUGIN=y \
                          CONFIG_FIO_SOURCE_DIR=/path/to/fio-source
                    (fio's source configured and built: ./configure && make)
  SPDK_FIO_BIN      the fio binary that loads the plugin (default: fio on
                    PATH). The plugin reads fio's own structures, so this
                    must be the fio it was built against: the same release
                    and configuration (e.g. /path/to/fio-source/fio)

Needs SPDK installed (spdk_nvme_perf, and nvmf_tgt for the local target)
and nvkv built with --features spdk. Every SPDK process runs without PCI
access against a fabrics target: the target with --no-pci, spdk_nvme_perf
by itself (it sets no_pci for a trid that is not PCIe), nvkv likewise, and
the fio plugin (which has no such option) with SYSFS_PCI_DEVICES pointing
DPDK's PCI scan at an empty directory, and as root also in a mount
namespace whose /sys/bus/pci/devices is empty.
USAGE
}

trid="" port=4440 nsid=1 keys=200000 dur=10 depth=32 pmask=0x2 dir=/tmp/nvkv-bench-spdk bin=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --trid) trid=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --nsid) nsid=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --duration) dur=$2; shift 2 ;;
        --depth) depth=$2; shift 2 ;;
        --perf-cores) pmask=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
command -v spdk_nvme_perf >/dev/null || { echo "error: spdk_nvme_perf not found (install SPDK, see README \"Bare metal\")" >&2; exit 3; }
command -v strace >/dev/null || apt-get install -y -q strace >/dev/null
export PKG_CONFIG_PATH="/usr/local/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
if [[ -n "$bin" ]]; then
    [[ -x "$bin" ]] || { echo "error: no nvkv binary at $bin" >&2; exit 3; }
    nvkv=$bin
else
    (cd "$root" && cargo build --release --features spdk -q)
    nvkv=${CARGO_TARGET_DIR:-$root/target}/release/nvkv
fi
listen=127.0.0.1:12660
started=0
cleanup() {
    pkill -f "nvkv serve --path $dir" 2>/dev/null || true
    if [[ $started -eq 1 ]]; then "$root/scripts/nvmf-target.sh" stop --port "$port" >/dev/null; fi
}
trap cleanup EXIT
if [[ -z "$trid" ]]; then
    "$root/scripts/nvmf-target.sh" start --port "$port" --namespaces 1 --size-mb 1024 >/dev/null
    started=1
    trid="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:nqn.2016-06.io.spdk:nvkv-$port"
fi
if (( depth >= 8 )); then clients=$(( depth / 8 )); inflight=8; else clients=$depth; inflight=1; fi

perf() { # depth -> "iops avg_us"
    timeout $(( dur + 30 )) spdk_nvme_perf -q "$1" -o 4096 -w randread -t "$dur" -c "$pmask" \
        -r "$trid ns:$nsid" 2>/dev/null | awk '/^Total/ {print $3, $5}'
}

fio_plugin=""
for p in "${SPDK_FIO_PLUGIN:-}" "${SPDK_DIR:+$SPDK_DIR/build/fio/spdk_nvme}" /usr/local/lib/spdk_nvme \
         /usr/local/lib/fio/spdk_nvme "$HOME/spdk/build/fio/spdk_nvme"; do
    [[ -n "$p" && -f "$p" ]] && { fio_plugin=$p; break; }
done

# fio's file name for a transport ID: key=value pairs, PCI addresses with
# dots, and any other colon escaped (fio splits file names at colons).
fio_filename() {
    python3 - "$1" "$2" <<'PY'
import re, sys
trid, ns = sys.argv[1], sys.argv[2]
out = []
for tok in trid.split():
    k, _, v = tok.partition(":")
    if k.lower() == "traddr" and re.fullmatch(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]", v):
        v = v.replace(":", ".")
    out.append(f"{k}={v.replace(':', chr(92) + ':')}")
print(" ".join(out + [f"ns={ns}"]))
PY
}

# The first CPU of a core mask (fio runs its one job there, as perf does).
first_cpu() { python3 -c 'import sys; m=int(sys.argv[1],16); print((m & -m).bit_length()-1)' "$1"; }
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem/ {print $2}') GiB"
echo "target:  $trid ns $nsid"
echo "load:    $(cut -d" " -f1-3 /proc/loadavg) (1, 5, 15 min) at the start"
read -r perf_iops perf_lat <<<"$(perf "$depth")"
read -r perf1_iops perf1_lat <<<"$(perf 1)"
fio_bin=${SPDK_FIO_BIN:-fio}
fio_row="not built (SPDK configured --with-fio, or make -C app/fio/nvme CONFIG_FIO_PLUGIN=y CONFIG_FIO_SOURCE_DIR=<fio's source>; set SPDK_FIO_PLUGIN or SPDK_DIR): skipped"
# The plugin starts SPDK's environment with PCI access whatever the
# transport, and has no option to turn it off. Against a fabrics target
# DPDK's PCI scan is pointed at an empty directory (SYSFS_PCI_DEVICES, read
# by DPDK's PCI bus), and as root the plugin also runs in a mount namespace
# of its own whose /sys/bus/pci/devices is empty: DPDK finds no device of
# this machine to claim either way.
fio_run=()
fio_note=""
if [[ -n "$fio_plugin" ]]; then
    if [[ "${trid,,}" == *"trtype:pcie"* ]]; then
        fio_row="skipped: a PCIe target; run the plugin by hand if that device is meant for SPDK"
        fio_plugin=""
    elif ! fio_version=$("$fio_bin" --version 2>/dev/null); then
        fio_row="skipped: no fio at '$fio_bin' (set SPDK_FIO_BIN to the fio the plugin was built against)"
        fio_plugin=""
    else
        no_pci_dir=$(mktemp -d /tmp/nvkv-bench-spdk-nopci.XXXXXX)
        fio_run=(env SYSFS_PCI_DEVICES="$no_pci_dir")
        if [[ $(id -u) -eq 0 ]] && command -v unshare >/dev/null; then
            fio_run=(unshare --mount --propagation private sh -c 'mount -t tmpfs none /sys/bus/pci/devices && exec "$@"' sh
                     "${fio_run[@]}")
        fi
        fio_note="fio:     $fio_version ($fio_bin) with $fio_plugin"
    fi
fi
if [[ -n "$fio_plugin" ]]; then
    fio_json=$("${fio_run[@]}" env LD_PRELOAD="$fio_plugin" "$fio_bin" --name=r --ioengine=spdk --thread=1 --direct=1 \
        --rw=randread --bs=4k --iodepth="$depth" --time_based --runtime="$dur" --size=512M \
        --cpus_allowed="$(first_cpu "$pmask")" --filename="$(fio_filename "$trid" "$nsid")" \
        --output-format=json 2>"$dir.fio.log") || true
    fio_iops=$(python3 -c 'import json,sys; print(int(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))' <<<"$fio_json" 2>/dev/null) \
        || fio_iops="failed: fio printed no result ($(grep -m1 -i 'error\|fail' "$dir.fio.log" || echo "see $dir.fio.log"))"
    fio_row=$fio_iops
    rm -rf "$no_pci_dir"
fi
[[ -n "$fio_note" ]] && echo "$fio_note"

"$nvkv" load --path "$dir" --force --keys "$keys" --min-size 1024 --max-size 4096 --device "$trid" --nsid "$nsid" >/dev/null 2>&1

serve() { # extra flags...
    pkill -f "nvkv serve --path $dir" 2>/dev/null || true
    sleep 0.5
    "$nvkv" serve --path "$dir" --listen "$listen" "$@" > "$dir.serve.log" 2>&1 &
    for _ in $(seq 100); do grep -q "nvkv listening" "$dir.serve.log" && return; sleep 0.1; done
    echo "error: nvkv did not start:" >&2; cat "$dir.serve.log" >&2; exit 1
}
bench() { # clients inflight [seed] -> "ops p50 p99 errors"
    # Another seed's keys are all missing (the ceiling without device
    # reads): nothing to verify, and a run of misses is no failure then.
    local verify=(); [ -n "${3:-}" ] && verify=(--verify none)
    "$nvkv" bench --addr "$listen" --keys "$keys" --seed "${3:-0}" --clients "$1" --inflight "$2" \
        "${verify[@]}" --duration "$dur" --json 2>/dev/null |
        python3 -c 'import json,sys; j=json.load(sys.stdin); print(int(j["ops_per_sec"]), j["p50_us"], j["p99_us"], j["errors"])'
}

serve
info_field() { python3 -c "import redis,sys; print(redis.Redis(host='${listen%:*}', port=${listen##*:}).info('server').get('$1'))"; }
def_mode="poll=$(info_field poll), pinned=$(info_field pinned)"
echo "default flags: $def_mode ($(info_field poll_choice))"
read -r def_ops def_p50 def_p99 def_err <<<"$(bench "$clients" "$inflight")"
read -r def1_ops def1_p50 def1_p99 _ <<<"$(bench 1 1)"

# Wake-ups of the default poller: lone requests at a low rate, so that it
# parks between them and each finds it asleep; INFO says how long each took
# from the doorbell to the poller running (the aim: within 50 us). A poller
# inside its connection thread (inline_io:yes) has no doorbell to time: the
# request's socket wakes that thread; the GETs' latency shows both.
serve
idle_inline=$(info_field inline_io)
idle_json=$("$nvkv" bench --addr "$listen" --keys "$keys" --clients 1 --inflight 1 --rate 500 \
    --duration "$dur" --json 2>/dev/null) || true
read -r idle_p50 idle_p99 <<<"$(python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["p50_us"], j["p99_us"])' \
    <<<"$idle_json" 2>/dev/null || echo "- -")"
read -r wake_n wake_late wake_p50 wake_p99 <<<"$(python3 -c "
import redis
i = redis.Redis(host='${listen%:*}', port=${listen##*:}).info('nvkv')
p = i['poller0']
print(i['poller_wakeups'], i['poller_late_wakeups'], p['wake_p50_us'], p['wake_p99_us'])")"

serve --poll busy --pin
read -r busy_ops busy_p50 busy_p99 busy_err <<<"$(bench "$clients" "$inflight")"
# The busy poller's system calls while it serves (strace slows what it traces
# only when there are calls to trace).
pid=$(pgrep -f "nvkv serve --path $dir" | head -1)
tid=$(grep -l '^poller-0$' /proc/"$pid"/task/*/comm | head -1 | cut -d/ -f5)
( "$nvkv" bench --addr "$listen" --keys "$keys" --clients "$clients" --inflight "$inflight" --duration 4 >/dev/null 2>&1 & )
sleep 1
strace_out=$(timeout -s INT 2 strace -c -p "$tid" 2>&1 || true)
syscalls=$(echo "$strace_out" | awk '$NF == "total" {print $4}' | tail -1)
syscalls=${syscalls:-0}
sleep 2
read -r busy1_ops busy1_p50 busy1_p99 _ <<<"$(bench 1 1)"

serve --poll adaptive --pin false
read -r ad_ops ad_p50 ad_p99 ad_err <<<"$(bench "$clients" "$inflight")"
read -r ad1_ops ad1_p50 ad1_p99 _ <<<"$(bench 1 1)"
# The network path alone: keys of another seed are all missing, answered
# from the index without a device read.
read -r ceil_ops ceil_p50 ceil_p99 _ <<<"$(bench "$clients" "$inflight" 4242)"

# The store and the engine alone: the same shape inside one process, no
# sockets (`nvkv bench --local`), with the default flags and with one busy
# pinned poller (spdk_nvme_perf's one core).
pkill -f "nvkv serve --path $dir" 2>/dev/null || true
sleep 1
local_bench() { # flags... -> "ops p50 p99 errors"
    "$nvkv" bench --local "$dir" --keys "$keys" --clients "$clients" --inflight "$inflight" \
        --duration "$dur" --json "$@" 2>"$dir.local.log" |
        python3 -c 'import json,sys; j=json.load(sys.stdin); print(int(j["ops_per_sec"]), j["p50_us"], j["p99_us"], j["errors"])' ||
        { echo "0 - - failed (see $dir.local.log)"; }
}
read -r loc_ops loc_p50 loc_p99 _ <<<"$(local_bench)"
read -r locb_ops locb_p50 locb_p99 _ <<<"$(local_bench --poll busy --pin --io-threads 1)"

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo
printf '%-52s %10s %9s %9s %8s\n' "4 KiB random reads, depth $depth (and 1)" "IOPS" "p50 us" "p99 us" "vs perf"
printf '%-52s %10s %9s %9s %8s\n' "spdk_nvme_perf Q=$depth (mean latency)" "$perf_iops" "$perf_lat" "-" "1.00"
printf '%-52s %10s %9s %9s %8s\n' "SPDK fio plugin Q=$depth" "$fio_row" "" "" ""
printf '%-52s %10s %9s %9s %8s\n' "nvkv spdk, default flags, Q=$depth (${clients}x$inflight)" "$def_ops" "$def_p50" "$def_p99" "$(ratio "$def_ops" "$perf_iops")"
printf '%-52s %10s %9s %9s %8s\n' "nvkv spdk, busy pinned poller, Q=$depth (${clients}x$inflight)" "$busy_ops" "$busy_p50" "$busy_p99" "$(ratio "$busy_ops" "$perf_iops")"
printf '%-52s %10s %9s %9s %8s\n' "nvkv spdk, adaptive unpinned, Q=$depth" "$ad_ops" "$ad_p50" "$ad_p99" "$(ratio "$ad_ops" "$perf_iops")"
printf '%-52s %10s %9s %9s %8s\n' "nvkv bench --local, default flags, Q=$depth" "$loc_ops" "$loc_p50" "$loc_p99" "$(ratio "$loc_ops" "$perf_iops")"
printf '%-52s %10s %9s %9s %8s\n' "nvkv bench --local, 1 busy pinned poller, Q=$depth" "$locb_ops" "$locb_p50" "$locb_p99" "$(ratio "$locb_ops" "$perf_iops")"
printf '%-52s %10s %9s %9s %8s\n' "nvkv adaptive, no device I/O (missing keys), Q=$depth" "$ceil_ops" "$ceil_p50" "$ceil_p99" "$(ratio "$ceil_ops" "$perf_iops")"
printf '%-52s %10s %9s %9s %8s\n' "spdk_nvme_perf Q=1 (mean latency)" "$perf1_iops" "$perf1_lat" "-" "1.00"
printf '%-52s %10s %9s %9s %8s\n' "nvkv spdk, default flags, Q=1" "$def1_ops" "$def1_p50" "$def1_p99" "$(ratio "$def1_ops" "$perf1_iops")"
printf '%-52s %10s %9s %9s %8s\n' "nvkv spdk, busy pinned poller, Q=1" "$busy1_ops" "$busy1_p50" "$busy1_p99" "$(ratio "$busy1_ops" "$perf1_iops")"
printf '%-52s %10s %9s %9s %8s\n' "nvkv spdk, adaptive unpinned, Q=1" "$ad1_ops" "$ad1_p50" "$ad1_p99" "$(ratio "$ad1_ops" "$perf1_iops")"
echo
echo "load:    $(cut -d" " -f1-3 /proc/loadavg) (1, 5, 15 min) at the end"
echo "default flags: $def_mode"
if [[ $idle_inline == yes ]]; then
    echo "idle wake-ups (default flags, 500 lone GET/s): the poller runs inside its connection thread (inline_io:yes), woken by the request's socket: no doorbell to time; GET p50 $idle_p50 us, p99 $idle_p99 us"
else
    echo "idle wake-ups (default flags, 500 lone GET/s): $wake_n, p50 <= $wake_p50 us, p99 <= $wake_p99 us, over 50 us: $wake_late; GET p50 $idle_p50 us, p99 $idle_p99 us"
fi
echo "value errors: default $def_err, busy $busy_err, adaptive $ad_err"
echo "system calls by the busy poller thread (tid $tid) in 2 s of serving: $syscalls"
echo "$strace_out" | sed -n '1,12p' | sed 's/^/  /'
