#!/usr/bin/env bash
# bench-large.sh - SET and GET of one large value (512 MiB by default)
# against fio's sequential write and read bandwidth on the same file system,
# in alternating rounds.
#
# Each round runs fio (sequential 1 MiB O_DIRECT writes of a new file, then
# reads of it), then serves a fresh store (`nvkv serve` on an empty
# directory, default settings but --capacity) and times, from a raw socket
# on loopback, a SET of the value (acknowledged once its pieces and head
# are durable), a second SET over it (the server's buffers and the
# engine's I/O buffers are then warm: the first SET also pays for their
# first touch), and, after a clean restart, a GET of it (read from the
# device with O_DIRECT). At the end: the median of each over the rounds,
# and nvkv's bandwidth as a fraction of fio's.
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
. "$root/scripts/large-lib.sh"

# fio sequential 1 MiB O_DIRECT: prints MiB/s for rw=$1 over ${size} MiB.
fio_bw() {
    fio --name=seq --filename="$dir/fio.dat" --rw="$1" --bs=1M --direct=1 \
        --ioengine=io_uring --iodepth=8 --size="${size}M" --output-format=json |
        python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; k=sys.argv[1]; print(round(j[k]["bw_bytes"]/1048576, 1))' "$2"
}

# $1 = set|get: prints MiB/s of one SET or GET of the value, sent and
# read over a raw socket (redis-py's own parsing would take a good part of
# the time: the client is kept out of the figure).
timed() {
    python3 - "$port" "$size" "$1" <<'PY'
import socket, sys, time
port, size, op = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
n = size << 20
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
want = b"+OK\r\n" if op == "set" else b"$%d\r\n" % n
total = len(want) + (0 if op == "set" else n + 2)
# Every page of the receive buffer is touched before the clock runs, as
# the SET's value is built before it: the client's first touch of fresh
# memory is not the server's time.
buf = bytearray(b"\1") * total
if op == "set":
    v = bytes(range(256)) * (n // 256)
    req = b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % n
    t0 = time.perf_counter()
    s.sendall(req)
    s.sendall(v)
    s.sendall(b"\r\n")
else:
    t0 = time.perf_counter()
    s.sendall(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
view, got = memoryview(buf), 0
while got < total:
    k = s.recv_into(view[got:])
    assert k > 0, "connection closed"
    got += k
secs = time.perf_counter() - t0
assert bytes(buf[: len(want)]) == want, bytes(buf[:40])
print(round(n / secs / 1048576, 1))
PY
}

fw=() fr=() ns=() ns2=() ng=()
for ((round = 1; round <= rounds; round++)); do
    fw+=("$(fio_bw write write)")
    fr+=("$(fio_bw read read)")
    rm -f "$dir/fio.dat"
    rm -rf "$dir/store"
    serve
    ns+=("$(timed set)")
    ns2+=("$(timed set)")
    stop
    serve
    ng+=("$(timed get)")
    stop
    echo "round $round: fio write ${fw[-1]} MiB/s, read ${fr[-1]} MiB/s; nvkv SET ${ns[-1]} MiB/s, again ${ns2[-1]} MiB/s, GET ${ng[-1]} MiB/s" >&2
done
mfw=$(printf '%s\n' "${fw[@]}" | median)
mfr=$(printf '%s\n' "${fr[@]}" | median)
mns=$(printf '%s\n' "${ns[@]}" | median)
mns2=$(printf '%s\n' "${ns2[@]}" | median)
mng=$(printf '%s\n' "${ng[@]}" | median)
echo "median of $rounds, ${size} MiB value: fio write $mfw MiB/s, read $mfr MiB/s"
echo "nvkv SET $mns MiB/s ($(python3 -c "print(round($mns / $mfw, 2))") of fio's write), SET again $mns2 MiB/s ($(python3 -c "print(round($mns2 / $mfw, 2))")), GET $mng MiB/s ($(python3 -c "print(round($mng / $mfr, 2))") of fio's read)"
