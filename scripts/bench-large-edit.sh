#!/usr/bin/env bash
# bench-large-edit.sh - SETRANGE of 1 byte in one large value (512 MiB by
# default): the time per command, which should be that of one piece
# written (a segment, 2 MiB by default), not of the whole value.
#
# Each round serves a fresh store (`nvkv serve` on an empty directory,
# default settings but --capacity), SETs the value, then sends SETRANGEs of
# one byte at spread offsets one at a time from a raw socket on loopback
# (each acknowledged once its piece and its new head are durable) and
# takes the median time per command; also the piece segments and bytes
# the SETRANGEs wrote (INFO nvkv large_pieces_written,
# large_piece_bytes_written) and, for scale, the time of the SET. At the
# end: the median of the rounds' medians.
set -euo pipefail

usage() {
    cat <<'TXT'
Usage: scripts/bench-large-edit.sh [options] [BIN]

  BIN               nvkv binary (default target/release/nvkv)
  --dir DIR         scratch directory (default /tmp/nvkv-bench-large-edit;
                    removed at the end)
  --size MIB        value size in MiB (default 512)
  --capacity SIZE   store capacity (default 2G)
  --edits N         SETRANGEs per round (default 50)
  --rounds R        rounds (default 3)
  --port P          port of the server on 127.0.0.1 (default 12746)
  -h, --help        this text
TXT
}

root=$(cd "$(dirname "$0")/.." && pwd)
dir=/tmp/nvkv-bench-large-edit size=512 capacity=2G edits=50 rounds=3 port=12746 bin=""
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --capacity) capacity=$2; shift 2 ;;
        --edits) edits=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option: $1 (see --help)" >&2; exit 1 ;;
        *) bin=$1; shift ;;
    esac
done
[ -n "$bin" ] || bin="$root/target/release/nvkv"
. "$root/scripts/large-lib.sh"


# Prints: SET seconds, median SETRANGE ms, pieces and bytes they wrote.
round() {
    python3 - "$port" "$size" "$edits" <<'PY'
import socket, sys, time
port, size, edits = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
n = size << 20
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = s.makefile("rb")

def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out

def info(field):
    s.sendall(cmd(b"INFO", b"nvkv"))
    head = f.readline()
    body = f.read(int(head[1:]) + 2).decode()
    for line in body.split("\r\n"):
        if line.startswith(field + ":"):
            return int(line.split(":")[1])
    raise SystemExit(f"no {field} in INFO")

v = bytes(range(256)) * (n // 256)
t0 = time.perf_counter()
s.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % n)
s.sendall(v)
s.sendall(b"\r\n")
assert f.readline() == b"+OK\r\n"
set_secs = time.perf_counter() - t0
pieces, nbytes = info("large_pieces_written"), info("large_piece_bytes_written")
times = []
for i in range(edits):
    at = (i * 7_919_993) % n
    t0 = time.perf_counter()
    s.sendall(cmd(b"SETRANGE", b"big", str(at).encode(), b"x"))
    line = f.readline()
    times.append(time.perf_counter() - t0)
    assert line == b":%d\r\n" % n, line
times.sort()
pieces = info("large_pieces_written") - pieces
nbytes = info("large_piece_bytes_written") - nbytes
print(round(set_secs, 3), round(times[len(times) // 2] * 1000, 2), pieces, nbytes)
PY
}

sets=() meds=()
for ((r = 1; r <= rounds; r++)); do
    rm -rf "$dir/store"
    serve
    read -r set_secs med pieces nbytes < <(round)
    stop
    sets+=("$set_secs") meds+=("$med")
    echo "round $r: SET of ${size} MiB ${set_secs} s; SETRANGE of 1 byte: median ${med} ms over $edits, $pieces piece segments written ($nbytes bytes)" >&2
done
mset=$(printf '%s\n' "${sets[@]}" | median)
mmed=$(printf '%s\n' "${meds[@]}" | median)
echo "median of $rounds, ${size} MiB value: SET ${mset} s, SETRANGE of 1 byte ${mmed} ms per command"
