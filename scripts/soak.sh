#!/usr/bin/env bash
# Soak: the store over time under the workloads a cache gets.
set -euo pipefail

usage() {
    cat <<'TXT'
Usage: scripts/soak.sh [options]

Two runs, each on a new store, each for --duration seconds:
  (a) cache-aside, --maxmemory-policy allkeys-lru: zipf(0.99) GETs in
      pipelined batches, a SET after each miss, values of 1-64 KiB, TTLs
      from 1 s to 1 h on three keys in four (fixed per key), over a key
      space 3x larger than the store. Beside it, the same trace through an
      exact LRU cache holding 80% of the store's bytes; then GETs alone
      (nothing written) for the read latency of a quiet store. Then the
      same workload (same trace and seed) on a store 4x larger, where
      nothing is evicted: GET p99 with eviction running against it.
  (b) TTL-only keys (1-10 s) under noeviction, written at a rate whose live
      set fits the store: no write may be refused, no expired value read.
Every few seconds and at the end each prints ops/s, hit ratio, write
amplification, free segments and errors (scripts/soak.py is the client).
It exits non-zero if a run saw an error or a wrong value.

Options:
  --duration SECS   per run (default 600)
  --capacity SIZE   store capacity (default 512M)
  --dir DIR         store directory (default /tmp/nvkv-soak)
  --port P          port on 127.0.0.1 (default 12800)
  --only cache|ttl  one of the two runs
  --bin PATH        nvkv binary (default target/release/nvkv)
  -h, --help        this text
TXT
}

duration=600 capacity=512M dir=/tmp/nvkv-soak port=12800 only=""
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/nvkv
while [ $# -gt 0 ]; do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --capacity) capacity=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 1 ;;
    esac
done
python3 -c 'import redis' 2>/dev/null || pip install -q 'redis>=4,<6'
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

bytes=$(python3 -c "
s='$capacity'.upper(); m={'K':1<<10,'M':1<<20,'G':1<<30}
print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))")

serve() { # [--capacity SIZE] serve-flags...
    local cap=$capacity
    if [ "${1:-}" = --capacity ]; then cap=$2; shift 2; fi
    rm -rf "$dir"
    "$bin" load --keys 0 --capacity "$cap" --path "$dir" >/dev/null
    "$bin" serve --path "$dir" --listen "127.0.0.1:$port" "$@" 2>"$dir.log" &
    server_pid=$!
    for _ in $(seq 100); do
        python3 -c "import redis; redis.Redis(port=$port).ping()" 2>/dev/null && return
        sleep 0.1
    done
    echo "the server did not start:" >&2
    cat "$dir.log" >&2
    exit 1
}

status=0
# Mean value 32.5 KiB plus the record's header: about 33.3 KiB a key.
if [ -z "$only" ] || [ "$only" = cache ]; then
    echo "== (a) cache-aside, allkeys-lru, store $capacity, key space 3x, $duration s"
    serve --maxmemory-policy allkeys-lru
    python3 "$root/scripts/soak.py" cache --port "$port" --duration "$duration" \
        --keys $((bytes * 3 / 34100)) --lru-bytes $((bytes * 8 / 10)) | tee "$dir.cache.out" || status=1
    stop_server
    echo "== (a) again on a store 4x larger, noeviction: nothing to evict"
    serve --capacity $((bytes * 4)) --maxmemory-policy noeviction
    python3 "$root/scripts/soak.py" cache --port "$port" --duration "$duration" \
        --keys $((bytes * 3 / 34100)) --lru-bytes $((bytes * 8 / 10)) --quiet 0 | tee "$dir.base.out" || status=1
    stop_server
    ev=$(sed -n 's/^RESULT get_p99_ms=//p' "$dir.cache.out")
    base=$(sed -n 's/^RESULT get_p99_ms=//p' "$dir.base.out")
    if [ -n "$ev" ] && [ -n "$base" ]; then
        echo "RESULT GET p99 while evicting ${ev} ms, same workload with nothing evicted ${base} ms:" \
            "ratio $(python3 -c "print(f'{$ev / max($base, 1e-9):.2f}')")"
    fi
fi
if [ -z "$only" ] || [ "$only" = ttl ]; then
    # A live set of rate x 5.5 s x 33.3 KiB: a quarter of the store.
    rate=$((bytes / 4 / 183000))
    echo "== (b) TTL-only keys (1-10 s), noeviction, store $capacity, $rate SETs/s, $duration s"
    serve --maxmemory-policy noeviction
    python3 "$root/scripts/soak.py" ttl --port "$port" --duration "$duration" \
        --keys $((bytes * 3 / 34100)) --rate "$rate" || status=1
    stop_server
fi
exit $status
