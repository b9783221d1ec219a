#!/usr/bin/env bash
# bench-large.sh - SET and GET of one large value (512 MiB by default)
# through redis-py against fio's sequential write and read bandwidth on the
# same file system, in alternating rounds.
#
# Each round runs fio (sequential 1 MiB O_DIRECT writes of a new file, then
# reads of it), then serves a fresh store (`nvkv serve` on an empty
# directory, default settings but --capacity) and times, from redis-py on
# loopback, a SET of the value (acknowledged once its pieces and head are
# durable) and, after a clean restart, a GET of it (read from the device
# with O_DIRECT). The times include redis-py's own work on the client side
# (building and parsing 512 MiB). At the end: the median of each over the
# rounds, and nvkv's bandwidth as a fraction of fio's.
set -euo pipefail

usage() {
    cat <<'TXT'
Usage: scripts/bench-large.sh [options] [BIN]

  BIN               nvkv binary (default target/release/nvkv)
  --dir DIR         scratch directory on the file system to measure
                    (default /tmp/nvkv-bench-large; removed at the end)
  --size MIB        value size in MiB (default 512)
  --capacity SIZE   store capacity (default 2G)
  --rounds R        rounds (default 3)
  --port P          port of the server on 127.0.0.1 (default 12745)
  -h, --help        this text
TXT
}

root=$(cd "$(dirname "$0")/.." && pwd)
dir=/tmp/nvkv-bench-large size=512 capacity=2G rounds=3 port=12745 bin=""
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --capacity) capacity=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option: $1 (see --help)" >&2; exit 1 ;;
        *) bin=$1; shift ;;
    esac
done
[ -n "$bin" ] || bin="$root/target/release/nvkv"
command -v fio >/dev/null || { echo "fio is needed" >&2; exit 1; }
python3 -c 'import redis' 2>/dev/null || { echo "redis-py is needed" >&2; exit 1; }
mkdir -p "$dir"
pid=""
cleanup() {
    [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# fio sequential 1 MiB O_DIRECT: prints MiB/s for rw=$1 over ${size} MiB.
fio_bw() {
    fio --name=seq --filename="$dir/fio.dat" --rw="$1" --bs=1M --direct=1 \
        --ioengine=io_uring --iodepth=8 --size="${size}M" --output-format=json |
        python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; k=sys.argv[1]; print(round(j[k]["bw_bytes"]/1048576, 1))' "$2"
}

serve() {
    "$bin" serve --path "$dir/store" --listen "127.0.0.1:$port" --capacity "$capacity" \
        >"$dir/serve.out" 2>"$dir/serve.err" &
    pid=$!
    for ((i = 0; i < 1200; i++)); do
        grep -q "^nvkv listening on" "$dir/serve.out" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "the server did not start:" >&2
    cat "$dir/serve.err" >&2
    exit 1
}

stop() {
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
}

# $1 = set|get: prints MiB/s of one SET or GET of the value, from redis-py.
timed() {
    python3 - "$port" "$size" "$1" <<'PY'
import sys, time, redis
port, size, op = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=600)
n = size << 20
if op == "set":
    v = bytes(range(256)) * (n // 256)
    t0 = time.perf_counter()
    assert r.set("big", v) is True
else:
    t0 = time.perf_counter()
    v = r.get("big")
    assert v is not None and len(v) == n
print(round(n / (time.perf_counter() - t0) / 1048576, 1))
PY
}

fw=() fr=() ns=() ng=()
for ((round = 1; round <= rounds; round++)); do
    fw+=("$(fio_bw write write)")
    fr+=("$(fio_bw read read)")
    rm -f "$dir/fio.dat"
    rm -rf "$dir/store"
    serve
    ns+=("$(timed set)")
    stop
    serve
    ng+=("$(timed get)")
    stop
    echo "round $round: fio write ${fw[-1]} MiB/s, read ${fr[-1]} MiB/s; nvkv SET ${ns[-1]} MiB/s, GET ${ng[-1]} MiB/s" >&2
done
mfw=$(printf '%s\n' "${fw[@]}" | median)
mfr=$(printf '%s\n' "${fr[@]}" | median)
mns=$(printf '%s\n' "${ns[@]}" | median)
mng=$(printf '%s\n' "${ng[@]}" | median)
echo "median of $rounds, ${size} MiB value: fio write $mfw MiB/s, read $mfr MiB/s"
echo "nvkv SET $mns MiB/s ($(python3 -c "print(round($mns / $mfw, 2))") of fio's write), GET $mng MiB/s ($(python3 -c "print(round($mng / $mfr, 2))") of fio's read)"
