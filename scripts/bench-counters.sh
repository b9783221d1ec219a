#!/usr/bin/env bash
# Counters against plain writes: pipelined INCR on one hot key and on
# random keys beside pipelined SET, measured with redis-benchmark in one
# run against one server (target: INCR at >= 0.5 x SET).
set -euo pipefail

usage() {
    cat <<'TXT'
Usage: scripts/bench-counters.sh [options]

Starts nvkv serve on an empty store and runs, with redis-benchmark:
  SET        random keys of --keyspace, values of --size bytes
  INCR       one hot key
  INCR       random keys of --keyspace
each with --clients connections and --pipeline requests in flight per
connection, and prints requests per second and the ratios to SET.

Options:
  --dir DIR         store directory (default /tmp/nvkv-bench-counters)
  --requests N      requests per test (default 200000)
  --clients C       connections (default 4)
  --pipeline P      requests in flight per connection (default 16)
  --keyspace K      random keys (default 100000)
  --size BYTES      SET's value size (default 3: the size of a counter)
  --durability D    sync or async (default sync)
  --port P          nvkv port on 127.0.0.1 (default 12710)
  --bin PATH        nvkv binary (default target/release/nvkv)
  -h, --help        this text
TXT
}

dir=/tmp/nvkv-bench-counters requests=200000 clients=4 pipeline=16
keyspace=100000 size=3 durability=sync port=12710
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/nvkv
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --requests) requests=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --pipeline) pipeline=$2; shift 2 ;;
        --keyspace) keyspace=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --durability) durability=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (Debian: redis-tools)" >&2; exit 1; }
[ -x "$bin" ] || { echo "no $bin: cargo build --release" >&2; exit 1; }

rm -rf "$dir"
mkdir -p "$dir"
"$bin" serve --path "$dir/store" --capacity 2G --listen "127.0.0.1:$port" \
    --durability "$durability" >"$dir/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
done

# rps TEST-ARGS...: redis-benchmark's requests per second for one test.
rps() {
    redis-benchmark -p "$port" -n "$requests" -c "$clients" -P "$pipeline" -q "$@" 2>/dev/null |
        tr '\r' '\n' | awk '/requests per second/ { for (i = 1; i <= NF; i++) if ($(i+1) == "requests") v = $i } END { print v }'
}

set_rps=$(rps -r "$keyspace" -d "$size" -t set)
hot_rps=$(rps -t incr)
rand_rps=$(rps -r "$keyspace" -t incr)
echo "durability $durability, $clients connections x $pipeline pipelined, $requests requests each (load: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-32s %12s %8s\n' test req/s vs-SET
printf '%-32s %12s %8s\n' "SET (random keys)" "$set_rps" 1.00
for row in "INCR one hot key:$hot_rps" "INCR random keys:$rand_rps"; do
    name=${row%%:*} v=${row##*:}
    printf '%-32s %12s %8.2f\n' "$name" "$v" "$(echo "$v / $set_rps" | bc -l)"
done
