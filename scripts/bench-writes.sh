#!/usr/bin/env bash
# Write-path benchmark: nvkv insert (sync and async durability) and YCSB-A
# against fio 4 KiB random writes and a 50/50 random read/write mix on the
# same data file, at the same total depth, in one run.
set -euo pipefail

usage() {
    cat <<'TXT'
Usage: scripts/bench-writes.sh [options]

Loads a store (1-4 KiB values), then in one run measures on the same file:
  nvkv insert  (every op a SET of a loaded key, same size) in sync mode
  nvkv insert  in async mode
  nvkv bench --workload a (YCSB-A: 50% GET, 50% SET), sync mode
  fio randwrite bs=4k direct=1 at the same depth (io_uring)
  fio randrw 50/50 bs=4k direct=1 at the same depth (io_uring)
fio overwrites the store's data file, so it runs last and the store is
loaded again by the next run.

Options:
  --dir DIR         store directory (default /tmp/nvkv-bench-writes)
  --keys N          records (default 1000000)
  --duration SECS   per measurement (default 20)
  --clients C       connections (default 4)
  --inflight K      requests in flight per connection (default 8); Q = C*K
  --port P          nvkv port on 127.0.0.1 (default 12700)
  --serve-args "…"  extra flags for every 'nvkv serve' (e.g. "--io-threads 2")
  --bin PATH        nvkv binary (default target/release/nvkv)
  -h, --help        this text
TXT
}

serve_args=
dir=/tmp/nvkv-bench-writes keys=1000000 duration=20 clients=4 inflight=8 port=12700
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/nvkv
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --inflight) inflight=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --serve-args) serve_args=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 1 ;;
    esac
done
q=$((clients * inflight))
command -v fio >/dev/null || apt-get install -y fio >/dev/null
[ -x "$bin" ] || (cd "$root" && cargo build --release)

server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

start_server() { # extra serve flags...
    local log=$dir.serve.log
    # shellcheck disable=SC2086 # the extra flags are split as given
    "$bin" serve --path "$dir" --listen "127.0.0.1:$port" $serve_args "$@" >"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 200); do
        grep -q "nvkv listening" "$log" && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "nvkv serve did not start:" >&2; cat "$log" >&2; exit 1
}

field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }

nvkv_run() { # label, command (insert|bench), extra flags...
    local label=$1 cmd=$2; shift 2
    local out
    out=$(timeout $((duration + 60)) "$bin" "$cmd" --addr "127.0.0.1:$port" --clients "$clients" \
        --inflight "$inflight" --duration "$duration" --keys "$keys" --json "$@")
    local errors; errors=$(echo "$out" | field errors)
    [ "$errors" = 0 ] || echo "WARNING: $label had $errors errors" >&2
    printf '%-26s %10.0f ops/s  p50 %7s us  p99 %7s us  errors %s\n' "$label" \
        "$(echo "$out" | field ops_per_sec)" "$(echo "$out" | field p50_us)" \
        "$(echo "$out" | field p99_us)" "$errors"
    echo "$out" | field ops_per_sec >"$dir.$label.ops"
}

fio_run() { # label, fio flags...
    local label=$1; shift
    local size; size=$(( $(stat -c %s "$dir/data.nvkv") - (1 << 20) ))
    local json
    json=$(timeout $((duration + 60)) fio --name="$label" --filename="$dir/data.nvkv" --offset=1M \
        --size="$size" --bs=4k --direct=1 --ioengine=io_uring --iodepth="$q" --time_based \
        --runtime="$duration" --group_reporting --output-format=json "$@" 2>/dev/null)
    local iops
    iops=$(echo "$json" | python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]; print(j['read']['iops']+j['write']['iops'])")
    printf '%-26s %10.0f IOPS\n' "$label" "$iops"
    echo "$iops" >"$dir.$label.ops"
}

echo "=== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), kernel $(uname -r)"
echo "=== load: $keys keys of 1-4 KiB, Q = $clients x $inflight = $q"
"$bin" load --path "$dir" --keys "$keys" --min-size 1024 --max-size 4096 --force

start_server --durability sync
nvkv_run insert-sync insert
stop_server
start_server --durability async
nvkv_run insert-async insert
stop_server
start_server --durability sync
nvkv_run ycsb-a-sync bench --workload a --verify len
echo "--- INFO after the sync runs"
redis-cli -p "$port" info nvkv 2>/dev/null | grep -E "write_amplification|compaction_bytes|segments_free|commits|flushes" || true
stop_server

fio_run fio-randwrite --rw=randwrite
fio_run fio-randrw-50 --rw=randrw --rwmixread=50

ratio() { python3 -c "print('%.2f' % ($(cat "$dir.$1.ops") / $(cat "$dir.$2.ops")))"; }
echo "=== ratios"
echo "insert sync  / fio randwrite : $(ratio insert-sync fio-randwrite)   (target >= 1.00)"
echo "insert async / fio randwrite : $(ratio insert-async fio-randwrite)"
echo "YCSB-A sync  / fio randrw 50 : $(ratio ycsb-a-sync fio-randrw-50)"
rm -f "$dir".*.ops
