#!/usr/bin/env bash
# bench-large-read.sh - the readers of one large value (512 MiB by
# default) other than GET, each on a freshly started server: its time and
# the server's peak RSS (VmHWM).
#
# Each round serves a fresh store (`nvkv serve` on an empty directory,
# default settings but --capacity), SETs the value and COPYs it to one key
# per reader (the copies share the pieces), and stops. Then, for each of
# GET (for reference), GETRANGE 0 -1, GETDEL and DUMP, it starts the
# server again (a clean restart: nothing of the value in memory), times
# the command from a raw socket on loopback until its whole reply is in,
# and reads the server's VmHWM. At the end: the median of each over the
# rounds.
set -euo pipefail

usage() {
    cat <<'TXT'
Usage: scripts/bench-large-read.sh [options] [BIN]

  BIN               nvkv binary (default target/release/nvkv)
  --dir DIR         scratch directory (default /tmp/nvkv-bench-large-read;
                    removed at the end)
  --size MIB        value size in MiB (default 512)
  --capacity SIZE   store capacity (default 2G)
  --rounds R        rounds (default 3)
  --port P          port of the server on 127.0.0.1 (default 12746)
  -h, --help        this text
TXT
}

root=$(cd "$(dirname "$0")/.." && pwd)
dir=/tmp/nvkv-bench-large-read size=512 capacity=2G rounds=3 port=12746 bin=""
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
. "$root/scripts/large-lib.sh"

# $1 = setup | GET | GETRANGE | GETDEL | DUMP: sets the value and its
# copies, or prints the seconds one command takes, its reply read over a
# raw socket (bytes counted, the value's checked at a few places).
run() {
    python3 - "$port" "$size" "$1" <<'PY'
import socket, sys, time
port, size, op = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
n = size << 20
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out
def read(total):
    buf = bytearray(total)
    view, got = memoryview(buf), 0
    while got < total:
        k = s.recv_into(view[got:])
        assert k > 0, "connection closed"
        got += k
    return buf
if op == "setup":
    v = bytes(range(256)) * (n // 256)
    s.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % n)
    s.sendall(v)
    s.sendall(b"\r\n")
    assert bytes(read(5)) == b"+OK\r\n"
    for k in (b"GET", b"GETRANGE", b"GETDEL", b"DUMP"):
        s.sendall(cmd(b"COPY", b"big", k))
        assert bytes(read(4)) == b":1\r\n"
    sys.exit(0)
key = op.encode()
if op == "GETRANGE":
    req, total = cmd(b"GETRANGE", key, b"0", b"-1"), len(b"$%d\r\n" % n) + n + 2
elif op == "DUMP":
    payload = 1 + 5 + n + 10
    req, total = cmd(b"DUMP", key), len(b"$%d\r\n" % payload) + payload + 2
else:
    req, total = cmd(op.encode(), key), len(b"$%d\r\n" % n) + n + 2
t0 = time.perf_counter()
s.sendall(req)
buf = read(total)
secs = time.perf_counter() - t0
head = len(b"$%d\r\n" % n)
if op != "DUMP":
    assert buf[head:head + 256] == bytes(range(256)) and buf[-4:] == b"\xfe\xff\r\n"
print(round(secs, 3))
PY
}

ops=(GET GETRANGE GETDEL DUMP)
declare -A secs rss
for ((round = 1; round <= rounds; round++)); do
    rm -rf "$dir/store"
    serve
    run setup
    stop
    line="round $round:"
    for op in "${ops[@]}"; do
        serve
        t=$(run "$op")
        hwm=$(awk '/^VmHWM/ {print int($2 / 1024)}' "/proc/$pid/status")
        stop
        secs[$op]+="$t "
        rss[$op]+="$hwm "
        line+=" $op ${t} s ${hwm} MiB;"
    done
    echo "$line" >&2
done
echo "median of $rounds, ${size} MiB value, each on a freshly started server:"
for op in "${ops[@]}"; do
    mt=$(printf '%s\n' ${secs[$op]} | median)
    mr=$(printf '%s\n' ${rss[$op]} | median)
    echo "  $op: $mt s ($(python3 -c "print(round($size / $mt))") MiB/s), peak RSS $mr MiB"
done
