#!/usr/bin/env bash
# bench-repl-lag.sh - how far a replica trails its primary while clients
# write as fast as the primary takes sync SETs. A primary with N keys of
# one value size (`nvkv load`), a replica with a full copy of them, then
# `nvkv bench` with writes only (32 x 1 by default) against the primary.
# Every 50 ms the primary's stream end (master_repl_offset) is noted; a
# note's lag is the time until the replica's acknowledged offset (INFO's
# slave0 offset, sent every second and at once after a WAIT's GETACK:
# here a WAIT 1 1 every sample asks for it) reaches it. Prints the SETs
# per second and the lag's median, p99 and maximum.
set -euo pipefail

usage() {
    cat <<'TXT'
Usage: scripts/bench-repl-lag.sh [options]

  --bin BIN         nvkv binary (default target/release/nvkv)
  --dir DIR         scratch directory (default /tmp/nvkv-bench-lag;
                    removed at the end)
  --keys N          keys (default 100000)
  --size B          value bytes (default 1024)
  --clients C       bench connections (default 32)
  --duration S      seconds of writes (default 10)
  --port P          the primary's port on 127.0.0.1 (default 7921; the
                    replica takes P + 1)
  -h, --help        this text
TXT
}

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/nvkv dir=/tmp/nvkv-bench-lag keys=100000 size=1024
clients=32 duration=10 port=7921
while [ $# -gt 0 ]; do
    case $1 in
        --bin) bin=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 1 ;;
    esac
done
python3 -c 'import redis' || { echo "redis-py is needed" >&2; exit 1; }
rport=$((port + 1))
mkdir -p "$dir"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

"$bin" load --force --path "$dir/primary" --keys "$keys" --min-size "$size" \
    --max-size "$size" >"$dir/load.log" 2>&1
"$bin" serve --path "$dir/primary" --listen "127.0.0.1:$port" >"$dir/primary.log" 2>&1 &
pids+=($!)
sleep 1
"$bin" serve --path "$dir/replica" --capacity 2G --listen "127.0.0.1:$rport" \
    --replicaof "127.0.0.1 $port" >"$dir/replica.log" 2>&1 &
pids+=($!)
for _ in $(seq 1200); do
    grep -q "full copy applied" "$dir/replica.log" && break
    sleep 0.1
done
grep -q "full copy applied" "$dir/replica.log" || { echo "no full copy" >&2; exit 1; }

python3 - "$port" "$duration" >"$dir/lag.out" <<'PY' &
import sys, time, redis
port, secs = int(sys.argv[1]), float(sys.argv[2])
p = redis.Redis(port=port)
def offsets():
    info = p.info("replication")
    return info["master_repl_offset"], info["slave0"]["offset"]
notes, lags = [], []
t_end = time.time() + secs + 30
while time.time() < t_end:
    now = time.time()
    end, acked = offsets()
    p.execute_command("WAIT", 1, 1)  # asks the replica for its offset now
    if now < t_end - 30:
        notes.append((now, end))
    while notes and notes[0][1] <= acked:
        lags.append(now - notes.pop(0)[0])
    if not notes and now >= t_end - 30:
        break
    time.sleep(0.05)
lags.sort()
if notes:
    print(f"unreached {len(notes)} notes")
q = lambda f: lags[min(len(lags) - 1, int(f * len(lags)))]
print(f"lag median {q(0.5):.3f} s p99 {q(0.99):.3f} s max {lags[-1]:.3f} s ({len(lags)} notes)")
PY
sampler=$!
"$bin" bench --addr "127.0.0.1:$port" --clients "$clients" --inflight 1 \
    --keys "$keys" --min-size "$size" --max-size "$size" --workload custom \
    --write-fraction 1 --verify none --duration "$duration" >"$dir/bench.out" 2>&1
wait "$sampler"
grep -iE "ops/s|SET/s|throughput" "$dir/bench.out" | head -3 || tail -3 "$dir/bench.out"
cat "$dir/lag.out"
