#!/usr/bin/env bash
# Key-space benchmark: a full SCAN (COUNT 1000) and FLUSHDB of a loaded
# store, timed from a client on the same machine (release build).
set -euo pipefail

usage() {
    cat <<'TXT'
Usage: scripts/bench-keyspace.sh [options]

Loads a store with `nvkv load`, serves it, and measures:
  a full SCAN with COUNT 1000 (examples/scan_all.rs), keys counted
  KEYS * (the reply's keys counted)
  FLUSHDB (one request over a socket, timed to its +OK), then DBSIZE
  the restart after a kill -9: DBSIZE must stay 0

Options:
  --dir DIR         store directory (default /tmp/nvkv-bench-keyspace)
  --keys N          records (default 1000000)
  --min-size A      smallest value (default 64)
  --max-size B      largest value (default 256)
  --port P          nvkv port on 127.0.0.1 (default 12710)
  --bin PATH        nvkv binary (default target/release/nvkv)
  --scan-bin PATH   the scan_all example (default target/release/examples/scan_all)
  -h, --help        this text
TXT
}

dir=/tmp/nvkv-bench-keyspace keys=1000000 min=64 max=256 port=12710
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/nvkv
scan_bin=$root/target/release/examples/scan_all
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --min-size) min=$2; shift 2 ;;
        --max-size) max=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --scan-bin) scan_bin=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 1 ;;
    esac
done
command -v redis-cli >/dev/null || { echo "needs redis-cli (apt-get install redis-tools)" >&2; exit 1; }
[ -x "$bin" ] || (cd "$root" && cargo build --release)
[ -x "$scan_bin" ] || (cd "$root" && cargo build --release --example scan_all)

server_pid=
stop_server() { # signal (default TERM)
    if [ -n "$server_pid" ]; then
        kill "-${1:-TERM}" "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

start_server() {
    local log=$dir.serve.log
    "$bin" serve --path "$dir" --listen "127.0.0.1:$port" >"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 600); do
        grep -q "nvkv listening" "$log" && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "nvkv serve did not start:" >&2; cat "$log" >&2; exit 1
}

now() { date +%s.%N; }
secs() { python3 -c "print('%.3f' % ($2 - $1))"; }

# One command over a socket, timed from its send to its whole reply.
timed() { # command words...
    python3 - "$port" "$@" <<'PY'
import socket, sys, time
port, args = int(sys.argv[1]), sys.argv[2:]
s = socket.create_connection(("127.0.0.1", port))
req = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args)
t = time.monotonic()
s.sendall(req)
buf = b""
while not buf.endswith(b"\r\n"):
    buf += s.recv(65536)
print("%.3f %s" % (time.monotonic() - t, buf.decode().strip()))
PY
}

echo "=== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), kernel $(uname -r)"
echo "=== load: $keys keys, values of $min-$max bytes"
"$bin" load --path "$dir" --keys "$keys" --min-size "$min" --max-size "$max" --force | tail -1
start_server
echo "DBSIZE before: $(redis-cli -p "$port" dbsize)"

echo "SCAN COUNT 1000, whole key space: $("$scan_bin" "127.0.0.1:$port" 1000)"

t0=$(now)
listed=$(redis-cli -p "$port" keys '*' | wc -l)
t1=$(now)
echo "KEYS *: $listed keys in $(secs "$t0" "$t1") s"

read -r took reply < <(timed FLUSHDB)
echo "FLUSHDB of $keys keys: $reply in $took s"
echo "DBSIZE after: $(redis-cli -p "$port" dbsize)"
stop_server KILL
start_server
echo "DBSIZE after kill -9 and restart: $(redis-cli -p "$port" dbsize)"
grep -o "index rebuilt.*" "$dir.serve.log" || grep -o "index.*clean.*" "$dir.serve.log" | head -1 || true
stop_server
