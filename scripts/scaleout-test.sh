#!/usr/bin/env bash
# Three nvkv nodes behind twemproxy (nutcracker) with ketama hashing, on
# loopback: 100k keys written and read back through the proxy, a fair share
# per node, the commands clients use through a proxy, then one node stopped
# and what clients see before and after the proxy ejects it.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/scaleout-test.sh [--keys N] [--nvkv PATH]

Starts three nvkv nodes (127.0.0.1:12701-12703, empty stores in a temporary
directory) and nutcracker with docs/nutcracker.yml (127.0.0.1:12700), then:
  1. writes N keys (default 100000) through the proxy and reads every one
     back, checking each value;
  2. checks that each node holds a fair share (DBSIZE on each node: between
     25% and 42% of the keys, and the shares add up to N);
  3. runs the commands clients use through the proxy (SET EX, GET, MGET
     across nodes, MSET, DEL and EXISTS of several keys, EXPIRE, TTL, PERSIST);
  4. stops one node (SIGTERM) and reads a sample through the proxy: first
     errors for its keys, then, once the proxy has ejected it, misses for its
     keys while every other key still reads correctly.
Exits non-zero when a check fails. Installs nutcracker and redis-tools with
apt-get when missing. Loopback only; bounded in time; safe to run twice.
USAGE
}

n=100000
nvkv=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --keys) n=$2; shift 2 ;;
        --nvkv) nvkv=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
need=()
command -v nutcracker >/dev/null || need+=(nutcracker)
command -v redis-cli >/dev/null || need+=(redis-tools)
if [[ ${#need[@]} -gt 0 ]]; then
    [[ $EUID -eq 0 ]] || { echo "error: needs ${need[*]} (apt-get as root)" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
if [[ -z "$nvkv" ]]; then
    (cd "$root" && cargo build --release -q)
    nvkv=$root/target/release/nvkv
fi
py=$(command -v python3) || { echo "error: python3 is needed for the checker" >&2; exit 1; }

work=$(mktemp -d /tmp/nvkv-scaleout.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# A previous run that was killed may have left its processes behind.
pkill -f "nutcracker -c $root/docs/nutcracker.yml" 2>/dev/null || true
for port in 12701 12702 12703; do pkill -f "nvkv.*--listen 127.0.0.1:$port" 2>/dev/null || true; done
sleep 0.3

declare -A node_pid
start_node() { # port
    local port=$1
    mkdir -p "$work/$port"
    "$nvkv" --log-level warn serve --path "$work/$port" --listen "127.0.0.1:$port" --capacity 512M \
        > "$work/$port.log" 2>&1 &
    node_pid[$port]=$!
    pids+=($!)
    for _ in $(seq 100); do grep -q "nvkv listening" "$work/$port.log" && return; sleep 0.1; done
    echo "error: node $port did not start:"; cat "$work/$port.log"; exit 1
}
for port in 12701 12702 12703; do start_node "$port"; done
nutcracker -c "$root/docs/nutcracker.yml" -s 12799 -a 127.0.0.1 -o "$work/nutcracker.log" &
pids+=($!)
for _ in $(seq 50); do redis-cli -p 12700 PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
echo "nodes: 127.0.0.1:12701-12703 (nvkv $("$nvkv" --version | cut -d' ' -f2)), proxy: 127.0.0.1:12700 (nutcracker $(nutcracker --version 2>&1 | grep -o '[0-9.]*$'))"

# The checker: a pipelined RESP client on a raw socket (standard library only).
cat > "$work/kv.py" <<'PY'
import socket, sys, time

def value(i):
    # 16 to 2,000 bytes, derived from i.
    body = ("%d:" % i) * (1 + (i * 7919) % 400)
    return body[: 16 + (i * 104729) % 1985].encode()

class Client:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
    def send(self, cmds):
        out = []
        for args in cmds:
            out.append(b"*%d\r\n" % len(args))
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l
    def exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        d, self.buf = self.buf[:n], self.buf[n + 2:]
        return d
    def reply(self):
        l = self.line()
        t, rest = l[:1], l[1:]
        if t == b"+": return rest.decode()
        if t == b"-": return Exception(rest.decode())
        if t == b":": return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.exact(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ValueError("bad reply %r" % l)
    def run(self, cmds):
        self.send(cmds)
        return [self.reply() for _ in cmds]

def batches(n, size=1000):
    for a in range(0, n, size):
        yield range(a, min(n, a + size))

mode, n = sys.argv[1], int(sys.argv[2])
c = Client(12700)
if mode == "write":
    t0 = time.time()
    for r in batches(n):
        for i, rep in zip(r, c.run([("SET", "key:%d" % i, value(i)) for i in r])):
            if rep != "OK":
                sys.exit("SET key:%d: %r" % (i, rep))
    print("wrote %d keys through the proxy in %.1f s (%.0f SET/s)" % (n, time.time() - t0, n / (time.time() - t0)))
elif mode == "read":
    t0 = time.time()
    bad = 0
    for r in batches(n):
        for i, rep in zip(r, c.run([("GET", "key:%d" % i) for i in r])):
            if rep != value(i):
                bad += 1
                if bad <= 5:
                    print("key:%d: wrong reply %r" % (i, rep if not isinstance(rep, bytes) else rep[:40]))
    print("read %d keys through the proxy in %.1f s (%.0f GET/s): %d wrong" % (n, time.time() - t0, n / (time.time() - t0), bad))
    sys.exit(1 if bad else 0)
elif mode == "sample":
    # Reads every 31st key; counts right values, misses and errors.
    ok = miss = err = wrong = 0
    idx = list(range(0, n, 31))
    for a in range(0, len(idx), 200):
        part = idx[a:a + 200]
        for i, rep in zip(part, c.run([("GET", "key:%d" % i) for i in part])):
            if isinstance(rep, Exception): err += 1; last = str(rep)
            elif rep is None: miss += 1
            elif rep == value(i): ok += 1
            else: wrong += 1
    print("%d %d %d %d %s" % (ok, miss, err, wrong, (last if err else "-").replace(" ", "_")))
PY

echo
echo "== 1. write and read back $n keys through the proxy"
"$py" "$work/kv.py" write "$n"
"$py" "$work/kv.py" read "$n"

echo
echo "== 2. each node's share (DBSIZE on the node itself)"
total=0
fail=0
for port in 12701 12702 12703; do
    k=$(redis-cli -p "$port" DBSIZE)
    total=$((total + k))
    pct=$(( 100 * k / n ))
    echo "node 127.0.0.1:$port: $k keys ($pct%)"
    if (( pct < 25 || pct > 42 )); then echo "FAIL: an unfair share"; fail=1; fi
done
echo "sum: $total of $n"
[[ $total -eq $n ]] || { echo "FAIL: the shares do not add up"; fail=1; }

echo
echo "== 3. commands through the proxy"
check() { # want, command...
    local want=$1
    shift
    local got
    got=$(redis-cli -p 12700 "$@" 2>&1 | tr '\n' ' ' | sed 's/ $//')
    if [[ "$got" == "$want" ]]; then
        printf '  ok    %-45s -> %s\n' "$*" "$got"
    else
        printf '  FAIL  %-45s -> %s (want %s)\n' "$*" "$got" "$want"
        fail=1
    fi
}
check PONG PING
check OK SET user:1 alice EX 100
check alice GET user:1
check 100 TTL user:1
check 1 EXPIRE user:1 50
check 1 PERSIST user:1
check -1 TTL user:1
check OK SET '{u7}:name' bob
check OK SET '{u7}:cart' three
check "bob three" MGET '{u7}:name' '{u7}:cart'
check "alice bob" MGET user:1 '{u7}:name'
check 3 EXISTS user:1 '{u7}:name' '{u7}:cart'
check 3 DEL user:1 '{u7}:name' '{u7}:cart'
check 0 EXISTS user:1
check OK MSET m:1 one m:2 two m:3 three
check "one two three" MGET m:1 m:2 m:3
check "" GET no:such:key

echo
echo "== 4. node 127.0.0.1:12702 stops (SIGTERM); what clients see"
kill -TERM "${node_pid[12702]}"
wait "${node_pid[12702]}" 2>/dev/null || true
sample() {
    read -r ok miss err wrong last <<<"$("$py" "$work/kv.py" sample "$n")"
    printf '  %-34s right %5d  missing %5d  errors %5d  wrong %d   %s\n' "$1" "$ok" "$miss" "$err" "$wrong" "${last//_/ }"
    [[ $wrong -eq 0 ]] || { echo "FAIL: a wrong value"; fail=1; }
}
sample "right after the stop:"
first_err=$err
sleep 0.5
sample "after more failures (ejected):"
ejected_miss=$miss
ejected_err=$err
sleep 2.5
sample "after server_retry_timeout:"
echo "  (errors: the node's keys while the proxy still tries it; misses: its keys,"
echo "   now hashed to the other nodes, which never had them; the rest reads on)"
(( first_err > 0 || ejected_miss > 0 )) || { echo "FAIL: the stopped node's keys still read"; fail=1; }
(( ejected_err == 0 && ejected_miss > 0 )) || { echo "FAIL: the proxy did not eject the stopped node"; fail=1; }

echo
if [[ $fail -eq 0 ]]; then echo "scale-out test: PASSED"; else echo "scale-out test: FAILED"; fi
exit $fail
