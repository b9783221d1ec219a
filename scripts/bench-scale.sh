#!/usr/bin/env bash
# bench-scale.sh - nvkv at scale: load many small values, then measure what
# the size of the index costs: bytes per key, load time and bandwidth, the
# clean restart, the rebuild after kill -9 (beside fio's sequential read
# bandwidth on the same file system), GET throughput at 32 x 1 and
# pipelined, and the server's memory after start. The store is removed at
# the end.
set -euo pipefail

usage() {
    cat <<'TXT'
Usage: scripts/bench-scale.sh [options]

  --keys N          records (default 100000000)
  --min-size A      smallest value (default 64)
  --max-size B      largest value (default 128)
  --dir DIR         store directory (default /tmp/nvkv-scale; removed at the end)
  --capacity SIZE   data file size (default: 1.2 x the records' estimate + 1 GiB)
  --duration SECS   each GET measurement (default 20)
  --pipelined CxK   the pipelined measurement (default 4x8)
  --no-gets         skip the GET measurements
  --rebuilds N      restarts after kill -9 to measure (default 1; the
                    median is printed when N > 1)
  --port P          nvkv port on 127.0.0.1 (default 12811)
  --bin PATH        nvkv binary (default target/release/nvkv)
  --min-free GB     refuse to start unless the file system keeps this much
                    free after the store is made (default 25)
  --keep            leave the store in place
  -h, --help        this text
TXT
}

root=$(cd "$(dirname "$0")/.." && pwd)
keys=100000000 min=64 max=128 dir=/tmp/nvkv-scale capacity="" duration=20
pipelined=4x8 port=12811 bin=$root/target/release/nvkv min_free=25 keep=0
gets=1 rebuilds=1
while [ $# -gt 0 ]; do
    case $1 in
        --keys) keys=$2; shift 2 ;;
        --min-size) min=$2; shift 2 ;;
        --max-size) max=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --capacity) capacity=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --pipelined) pipelined=$2; shift 2 ;;
        --no-gets) gets=0; shift ;;
        --rebuilds) rebuilds=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --min-free) min_free=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 1 ;;
    esac
done
[ -x "$bin" ] || { echo "no nvkv binary at $bin (cargo build --release)" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli is needed" >&2; exit 1; }

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# A record: 32-byte header, the key (about 24 bytes), the value, padded to
# 16 bytes; the loader packs segments about 91% full.
if [ -z "$capacity" ]; then
    rec=$(( (32 + 24 + (min + max) / 2 + 15) / 16 * 16 ))
    capacity=$(( keys * rec * 12 / 10 + (1 << 30) ))
fi
cap_bytes=$(python3 -c "
import sys; s=sys.argv[1].upper(); m={'K':1<<10,'M':1<<20,'G':1<<30,'T':1<<40}
print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$capacity")
index_est=$(( keys * 32 ))
mkdir -p "$dir"
free=$(df --output=avail -B1 "$dir" | tail -1)
need=$(( cap_bytes + index_est + min_free * (1 << 30) ))
if [ "$free" -lt "$need" ]; then
    echo "not enough space on $(df --output=target "$dir" | tail -1): $((free >> 30)) GiB free," \
        "need $((need >> 30)) GiB (data $((cap_bytes >> 30)) GiB, index ~$((index_est >> 30)) GiB," \
        "$min_free GiB kept free)" >&2
    exit 1
fi

pid=""
stop_server() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
cleanup() {
    stop_server
    [ "$keep" = 1 ] || rm -rf "$dir"
    rm -f "$dir.fio"
}
trap cleanup EXIT

# start: starts the server, waits for it to listen; sets pid and start_secs.
start() {
    : >"$dir.serve.out"
    local t0 t1 i
    t0=$(date +%s.%N)
    "$bin" serve --path "$dir" --listen "127.0.0.1:$port" >"$dir.serve.out" 2>"$dir.serve.err" &
    pid=$!
    for ((i = 0; i < 36000; i++)); do
        grep -q "^nvkv listening on" "$dir.serve.out" && break
        kill -0 "$pid" 2>/dev/null || { cat "$dir.serve.err" >&2; exit 1; }
        sleep 0.05
    done
    t1=$(date +%s.%N)
    start_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b-a}')
}
info() { redis-cli -h 127.0.0.1 -p "$port" info | tr -d '\r' | sed -n "s/^$1://p"; }
rss() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$pid/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k/1024}'; }

bench() {
    local c=$1 k=$2
    "$bin" bench --addr "127.0.0.1:$port" --clients "$c" --inflight "$k" \
        --duration "$duration" --keys "$keys" --min-size "$min" --max-size "$max" --json |
        tail -1 | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%.0f GET/s, p50 %.0f us, p99 %.0f us, errors %d, misses %d"
      % (r["ops_per_sec"], r["p50_us"], r["p99_us"], r["errors"], r["misses"]))'
}

log "machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -r), $(df -T "$dir" | awk 'NR==2 {print $2" on "$1}')"
log "load: $keys keys, values $min-$max bytes, capacity $capacity"
t0=$(date +%s.%N)
"$bin" load --path "$dir" --keys "$keys" --min-size "$min" --max-size "$max" \
    --capacity "$capacity" --force 2>&1 | tail -1 | tee "$dir.load"
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN {printf "load as a whole command: %.1f s\n", b-a}'
du -sh --apparent-size "$dir/index" | awk '{print "index files: " $1}'

start
log "first start (index left clean by the load): listening after $start_secs s," \
    "recovery_secs $(info recovery_secs), state $(info index_state_at_start)"
stop_server
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
start
log "clean restart (caches dropped): listening after $start_secs s," \
    "recovery_secs $(info recovery_secs), state $(info index_state_at_start)"
log "RSS after start: $(mib "$(rss VmRSS)") MiB (anonymous $(mib "$(rss RssAnon)") MiB," \
    "file $(mib "$(rss RssFile)") MiB); db0 $(info db0 | sed "s/,.*//")"
if [ "$gets" = 1 ]; then
    log "GET 32 x 1: $(bench 32 1)"
    log "GET ${pipelined}: $(bench "${pipelined%x*}" "${pipelined#*x}")"
    log "RSS after the GETs: $(mib "$(rss VmRSS)") MiB"
fi
rates=()
for ((r = 1; r <= rebuilds; r++)); do
    # A write, so the index is dirty for certain, then a crash.
    redis-cli -h 127.0.0.1 -p "$port" set "bench-scale:crash" "$r" >/dev/null
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    start
    secs=$(info recovery_secs)
    bytes=$(info recovery_bytes_read)
    rate=$(awk -v b="$bytes" -v s="$secs" 'BEGIN {printf "%.0f", b/s/1e6}')
    rates+=("$rate")
    log "restart after kill -9 ($r of $rebuilds): listening after $start_secs s," \
        "state $(info index_state_at_start), recovery_secs $secs, $((bytes >> 20)) MiB read," \
        "$rate MB/s, $(info recovery_records_scanned) records"
    log "RSS after the rebuild: $(mib "$(rss VmRSS)") MiB"
done
if [ "$rebuilds" -gt 1 ]; then
    log "rebuild, median of $rebuilds: $(printf '%s\n' "${rates[@]}" | sort -n |
        awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}') MB/s"
fi
stop_server
fio_read=$(fio --name=seqr --rw=read --bs=1M --direct=1 --size=4G --filename="$dir.fio" \
    --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["bw_bytes"]/1e6))')
log "fio sequential 1 MiB reads, same file system: $fio_read MB/s"
