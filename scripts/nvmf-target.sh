#!/usr/bin/env bash
# An SPDK NVMe-oF/TCP target on loopback, backed by RAM (malloc bdevs): a
# real NVMe controller, over the same driver API as PCIe, for developing and
# testing nvkv's SPDK engine on a machine without an NVMe device.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/nvmf-target.sh start|stop|status|check [options]
       scripts/nvmf-target.sh rpc [--port P] [--state-dir D] METHOD [ARGS...]

  start    start SPDK's nvmf_tgt (without PCI access) listening on
           127.0.0.1:PORT with NS namespaces of SIZE MiB each; prints the
           transport ID to give nvkv (--device '...' --nsid N)
  stop     stop the target started for PORT
  status   say whether it runs, and what it serves
  check    say whether a target of these options can start here (nvmf_tgt,
           an RPC client that runs, hugepages or --no-huge); exits 3 with
           the reason on one line when it cannot
  rpc      run one of SPDK's RPCs (METHOD and its arguments, as rpc.py
           takes them) against the target for PORT

Options:
  --port P           TCP port (default 4420)
  --namespaces N     malloc namespaces (default 1)
  --size-mb S        size of each, in MiB (default 1024)
  --block-size B     512 or 4096 (default 4096); a comma list (4096,512)
                     is used in turn, namespace by namespace
  --nqn NQN          subsystem NQN (default nqn.2016-06.io.spdk:nvkv-PORT)
  --core-mask M      cores of the target's reactors (default 0x1)
  --no-huge          run without hugepages (default: when none are free)
  --state-dir D      pid, log and RPC socket (default /tmp/nvkv-nvmf-PORT)

Needs an installed SPDK. nvmf_tgt: $SPDK_DIR/build/bin or $SPDK_DIR/bin,
else PATH. SPDK's RPC client, the first of: $SPDK_DIR/scripts/rpc.py (a
source tree), $SPDK_DIR/bin/spdk_rpc.py (an install prefix), rpc.py or
spdk_rpc.py on PATH, spdk-rpc on PATH (PyPI's `spdk` package). Safe to run
twice: start does nothing when the target for PORT already runs; stop does
nothing when it does not. The target never touches PCI devices (--no-pci).
USAGE
}

cmd=${1:-}
[[ -z "$cmd" || "$cmd" == -h || "$cmd" == --help ]] && { usage; exit 0; }
shift
port=4420 nsn=1 size=1024 bs=4096 nqn="" mask=0x1 nohuge=auto state=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) port=$2; shift 2 ;;
        --namespaces) nsn=$2; shift 2 ;;
        --size-mb) size=$2; shift 2 ;;
        --block-size) bs=$2; shift 2 ;;
        --nqn) nqn=$2; shift 2 ;;
        --core-mask) mask=$2; shift 2 ;;
        --no-huge) nohuge=yes; shift ;;
        --state-dir) state=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) [[ "$cmd" == rpc && "$1" != -* ]] && break
           echo "error: unknown option $1" >&2; exit 2 ;;
    esac
done
nqn=${nqn:-nqn.2016-06.io.spdk:nvkv-$port}
state=${state:-/tmp/nvkv-nvmf-$port}
sock=$state/rpc.sock
trid="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$nqn"

# SPDK's nvmf_tgt: under SPDK_DIR (a source tree's build/bin, or an install
# prefix's bin), else on PATH.
find_tgt() {
    local c
    for c in ${SPDK_DIR:+"$SPDK_DIR/build/bin/nvmf_tgt" "$SPDK_DIR/bin/nvmf_tgt"}; do
        [[ -x "$c" ]] && { echo "$c"; return 0; }
    done
    command -v nvmf_tgt 2>/dev/null
}
if [[ -n "${SPDK_DIR:-}" ]]; then sd="SPDK_DIR=$SPDK_DIR"; else sd="SPDK_DIR unset"; fi
tgt_missing="SPDK's nvmf_tgt was not found (looked in \$SPDK_DIR/build/bin and \$SPDK_DIR/bin, $sd, and on PATH): install SPDK (see README, \"Bare metal\") or set SPDK_DIR"

# SPDK's RPC client, the one lookup of the scripts and the tests (which
# call `rpc`): a source tree's scripts/rpc.py, an install prefix's
# bin/spdk_rpc.py, then rpc.py, spdk_rpc.py or PyPI's spdk-rpc on PATH.
find_rpc() {
    local c
    for c in ${SPDK_DIR:+"$SPDK_DIR/scripts/rpc.py" "$SPDK_DIR/bin/spdk_rpc.py"}; do
        [[ -x "$c" ]] && { echo "$c"; return 0; }
    done
    for c in rpc.py spdk_rpc.py spdk-rpc; do
        command -v "$c" 2>/dev/null && return 0
    done
    return 1
}
rpc_missing="no SPDK RPC client was found: looked for \$SPDK_DIR/scripts/rpc.py and \$SPDK_DIR/bin/spdk_rpc.py ($sd), then rpc.py, spdk_rpc.py and spdk-rpc on PATH; set SPDK_DIR to SPDK's source tree or install prefix, or install PyPI's spdk package (spdk-rpc)"

running() { [[ -f "$state/pid" ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null; }

# Sets mem (MiB for the target) and nohuge (whether it runs without
# hugepages); when it can do neither, sets why and returns 1.
plan_memory() {
    mem=$(( nsn * size + 512 ))
    if [[ "$nohuge" == auto ]]; then
        local free
        free=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages 2>/dev/null || echo 0)
        if (( free * 2 >= mem )); then nohuge=no; else nohuge=yes; fi
    fi
    # Not every nvmf_tgt has --no-huge (23.01's has not, and DPDK's own
    # --no-huge clashes with the --match-allocations it passes).
    if [[ "$nohuge" == yes ]] && ! grep -q -- '--no-huge' <<<"$tgt_help"; then
        why="this nvmf_tgt cannot run without hugepages, and ${mem} MiB of 2 MiB hugepages are not free: reserve them first (sudo hugepages/hugepages.sh reserve $(( (mem + 1) / 2 )))"
        return 1
    fi
}

case "$cmd" in
    rpc)
        [[ $# -gt 0 ]] || { echo "error: rpc needs a METHOD (see --help)" >&2; exit 2; }
        rpc=$(find_rpc) || { echo "error: $rpc_missing" >&2; exit 3; }
        exec "$rpc" -s "$sock" -t 30 "$@" ;;
    check)
        tgt=$(find_tgt) || { echo "$tgt_missing"; exit 3; }
        rpc=$(find_rpc) || { echo "$rpc_missing"; exit 3; }
        if ! err=$("$rpc" --help 2>&1 >/dev/null); then
            echo "SPDK's RPC client $rpc does not run: $(head -1 <<<"$err")"
            exit 3
        fi
        tgt_help=$("$tgt" --help 2>&1 || true)
        plan_memory || { echo "$why"; exit 3; }
        echo "a target can start: $tgt, RPC client $rpc"
        exit 0 ;;
    status)
        if running; then
            echo "running (pid $(cat "$state/pid")): $trid"
            cat "$state/namespaces" 2>/dev/null || true
        else
            echo "not running (port $port)"
        fi
        exit 0 ;;
    stop)
        if running; then
            pid=$(cat "$state/pid")
            kill "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            echo "stopped the target on port $port"
        else
            echo "no target runs on port $port"
        fi
        rm -f "$state/pid" "$sock"
        exit 0 ;;
    start) ;;
    *) echo "error: unknown command $cmd (see --help)" >&2; exit 2 ;;
esac

if running; then
    echo "already running (pid $(cat "$state/pid")): $trid"
    exit 0
fi
tgt=$(find_tgt) || { echo "error: $tgt_missing" >&2; exit 3; }
rpc=$(find_rpc) || { echo "error: $rpc_missing" >&2; exit 3; }
IFS=, read -r -a sizes <<< "$bs"
for b in "${sizes[@]}"; do
    case "$b" in 512|4096) ;; *) echo "error: --block-size is 512 or 4096 (or a list of them)" >&2; exit 2 ;; esac
done

mkdir -p "$state"
tgt_help=$("$tgt" --help 2>&1 || true)
plan_memory || { echo "error: $why" >&2; exit 1; }
args=(--no-pci -m "$mask" -r "$sock" -s "$mem" --shm-id -1)
# Several targets (one per port) may share a core here, for tests: SPDK's
# per-core lock files would refuse the second one.
if grep -q -- '--disable-cpumask-locks' <<<"$tgt_help"; then
    args+=(--disable-cpumask-locks)
fi
[[ "$nohuge" == yes ]] && args+=(--no-huge)
rm -f "$sock"
setsid "$tgt" "${args[@]}" >"$state/log" 2>&1 < /dev/null &
echo $! > "$state/pid"
r() { "$rpc" -s "$sock" -t 30 "$@"; }
for _ in $(seq 300); do
    [[ -S "$sock" ]] && break
    running || { echo "error: nvmf_tgt exited; its log:" >&2; cat "$state/log" >&2; exit 1; }
    sleep 0.1
done
if ! r framework_wait_init >/dev/null 2>&1; then
    echo "error: nvmf_tgt did not start; its log:" >&2; cat "$state/log" >&2
    "$0" stop --port "$port" --state-dir "$state" >/dev/null; exit 1
fi
r nvmf_create_transport -t TCP >/dev/null
r nvmf_create_subsystem "$nqn" -a -s "SPDK$(printf '%016d' "$port")" -m "$(( nsn > 32 ? nsn : 32 ))" >/dev/null
: > "$state/namespaces"
for i in $(seq 1 "$nsn"); do
    b=${sizes[$(( (i - 1) % ${#sizes[@]} ))]}
    r bdev_malloc_create -b "nvkv$port-$i" "$size" "$b" >/dev/null
    r nvmf_subsystem_add_ns -n "$i" "$nqn" "nvkv$port-$i" >/dev/null
    echo "  nsid $i: $size MiB in $b-byte blocks" >> "$state/namespaces"
done
r nvmf_subsystem_add_listener "$nqn" -t tcp -f ipv4 -a 127.0.0.1 -s "$port" >/dev/null
echo "started (pid $(cat "$state/pid"), $( [[ $nohuge == yes ]] && echo "no hugepages" || echo hugepages ), log $state/log): $trid"
cat "$state/namespaces"
