#!/usr/bin/env bash
# loadtest.sh - many well-behaved clients beside misbehaving ones, on
# loopback, for a bounded time: are the good clients' replies all correct,
# does every acknowledged SET read back, does the server's memory stay
# bounded, and what do the bad clients cost the good ones in latency?
#
# Two phases of --duration/2 seconds each on one server and store: the
# well-behaved clients alone (the baseline), then the same clients with the
# bad ones. The clients are a Python 3 asyncio program written out by this
# script (no packages needed). Run with --help for the options.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

DURATION=60
CLIENTS=1000
BAD=8
BIN=""
MAX_RSS_MIB=1024
SERVE_ARGS=""
KEEP=0

usage() {
    cat <<EOF
Usage: scripts/loadtest.sh [options]

Starts 'nvkv serve' on a temporary store on 127.0.0.1 and runs, for
--duration seconds in all:
  phase 1 (half the time): --clients well-behaved connections, each doing
    GET and SET (50/50, values of 16-4096 bytes) of its own 16 keys, one
    request at a time, checking every reply;
  phase 2 (the other half): the same, plus --bad of each kind of bad
    client, reconnecting whenever the server drops them:
      garbage     sends malformed RESP or random bytes
      non-reader  pipelines GETs of a 256 KiB value and never reads
      set-flood   pipelines SETs of 64 KiB values and never reads
      vanisher    sends half a request and resets the connection
At the end every key a good client wrote must read back with its latest
acknowledged value. Prints the good clients' p50/p99 latency in both
phases, the server's peak RSS (VmHWM, and VmRSS sampled every 0.2 s) and
its INFO counters.

Options:
  --duration SECS     total run time (default $DURATION), at least 4
  --clients N         well-behaved connections (default $CLIENTS)
  --bad N             bad clients of each of the 4 kinds (default $BAD)
  --bin PATH          nvkv binary (default: cargo build --release)
  --max-rss-mib MIB   fail if the server's peak RSS passes this (default $MAX_RSS_MIB)
  --serve-args ARGS   more 'nvkv serve' arguments
  --keep              keep the temporary directory (store, logs)
  -h, --help          this help

Exit status: 0 if every check passed, 1 if one failed, 2 on bad usage.
EOF
}

die() {
    echo "loadtest.sh: $*" >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --clients) CLIENTS=${2:?--clients needs a value}; shift 2 ;;
        --bad) BAD=${2:?--bad needs a value}; shift 2 ;;
        --bin) BIN=${2:?--bin needs a value}; shift 2 ;;
        --max-rss-mib) MAX_RSS_MIB=${2:?--max-rss-mib needs a value}; shift 2 ;;
        --serve-args) SERVE_ARGS=${2?--serve-args needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

for v in DURATION CLIENTS BAD MAX_RSS_MIB; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, not '${!v}'"
done
(( DURATION >= 4 )) || die "--duration must be at least 4 seconds"
(( DURATION <= 3600 )) || die "--duration is at most 3600 seconds"
(( CLIENTS >= 1 )) || die "--clients must be at least 1"
command -v python3 >/dev/null || die "python3 is not in PATH"

if [[ -z "$BIN" ]]; then
    command -v cargo >/dev/null || die "cargo is not in PATH (or give --bin)"
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build failed"
    BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/nvkv"
fi
[[ -x "$BIN" ]] || die "$BIN is not an executable"

# 1000+ connections need descriptors on both ends.
WANT_FILES=$(( (CLIENTS + 4 * BAD) * 2 + 256 ))
ulimit -n "$WANT_FILES" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < CLIENTS + 4 * BAD + 64 )); then
    die "the open-file limit $(ulimit -n) is too low for $CLIENTS clients (raise the hard limit)"
fi

WORK=$(mktemp -d /tmp/nvkv-loadtest.XXXXXX)
SERVER_PID=""
SAMPLER_PID=""
cleanup() {
    [[ -n "$SAMPLER_PID" ]] && kill "$SAMPLER_PID" 2>/dev/null || true
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if (( KEEP )); then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# --- the server -----------------------------------------------------------
# shellcheck disable=SC2086
"$BIN" serve --path "$WORK/store" --listen 127.0.0.1:0 --capacity 2G \
    --max-clients $(( CLIENTS + 4 * BAD + 100 )) $SERVE_ARGS \
    >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do
    grep -q "nvkv listening on" "$WORK/server.out" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server did not start"; }
    sleep 0.1
done
ADDR=$(sed -n 's/^nvkv listening on //p' "$WORK/server.out")
[[ -n "$ADDR" ]] || die "the server did not say where it listens"
PORT=${ADDR##*:}
echo "server pid $SERVER_PID on 127.0.0.1:$PORT, store $WORK/store"

# VmRSS every 0.2 s, one line per sample: <ms since start> <KiB>.
(
    t0=$(date +%s%N)
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || true)
        [[ -n "$rss" ]] && echo "$(( ($(date +%s%N) - t0) / 1000000 )) $rss"
        sleep 0.2
    done
) >"$WORK/rss.txt" 2>/dev/null &
SAMPLER_PID=$!

# --- the clients ----------------------------------------------------------
cat >"$WORK/clients.py" <<'PY'
"""Load-test clients: well-behaved (checked) and bad ones, over asyncio."""
import asyncio, json, os, random, socket, struct, sys, time

HOST = "127.0.0.1"
KEYS_PER_CLIENT = 16


class RespError(Exception):
    pass


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


async def read_reply(r):
    line = await r.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RespError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        return (await r.readexactly(n + 2))[:-2]
    if kind == b"*":
        return [await read_reply(r) for _ in range(int(body))]
    raise ConnectionError("bad reply %r" % line)


def value_for(phase, i, j, n, rng):
    head = b"%d:%d:%d:%d:" % (phase, i, j, n)
    return head + bytes([97 + (n % 26)]) * rng.randint(16, 4096)


async def good_client(i, phase, port, start, stop, connect_gate, out):
    """One connection, one request at a time, its own keys; checks every
    reply against what it last wrote."""
    rng = random.Random(phase * 1_000_003 + i)
    keys = [b"lt:%d:%d:%d" % (phase, i, j) for j in range(KEYS_PER_CLIENT)]
    latest = {}  # key -> last acknowledged value
    lat = []
    wrong = errors = 0
    async with connect_gate:
        try:
            r, w = await asyncio.open_connection(HOST, port)
        except OSError as e:
            out["dropped"] += 1
            out["error_samples"].append("connect: %r" % (e,))
            return
        finally:
            out["ready"] += 1
    await start.wait()
    n = 0
    try:
        while not stop.is_set():
            j = rng.randrange(KEYS_PER_CLIENT)
            k = keys[j]
            n += 1
            if rng.random() < 0.5:
                v = value_for(phase, i, j, n, rng)
                t = time.perf_counter()
                w.write(encode(b"SET", k, v))
                try:
                    rep = await read_reply(r)
                except RespError as e:
                    errors += 1
                    out["error_samples"].append(str(e)[:100])
                    continue
                lat.append(time.perf_counter() - t)
                if rep == "OK":
                    latest[k] = v
                else:
                    wrong += 1
            else:
                t = time.perf_counter()
                w.write(encode(b"GET", k))
                try:
                    rep = await read_reply(r)
                except RespError as e:
                    errors += 1
                    out["error_samples"].append(str(e)[:100])
                    continue
                lat.append(time.perf_counter() - t)
                if rep != latest.get(k):
                    wrong += 1
    except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
        out["dropped"] += 1
        out["error_samples"].append("connection: %r" % (e,))
        # The reply to the request in flight is unknown: accept either.
        out["ambiguous"].add(k)
    w.close()
    out["lat"].extend(lat)
    out["wrong"] += wrong
    out["errors"] += errors
    out["ops"] += len(lat)
    for k, v in latest.items():
        out["latest"][k] = v


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def run_good(port, clients, secs, phase):
    out = {"lat": [], "wrong": 0, "errors": 0, "dropped": 0, "ops": 0,
           "latest": {}, "ambiguous": set(), "error_samples": [], "ready": 0}
    start, stop = asyncio.Event(), asyncio.Event()
    gate = asyncio.Semaphore(64)
    tasks = [asyncio.create_task(good_client(i, phase, port, start, stop, gate, out))
             for i in range(clients)]
    # Everyone connected (or failed to) before the clock starts.
    while out["ready"] < clients:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    start.set()
    await asyncio.sleep(secs)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.perf_counter() - t0
    return out, elapsed


async def verify(port, written, ambiguous):
    """Reads every key written back, pipelined, on a few connections."""
    bad = []
    items = sorted(written.items())
    r, w = await asyncio.open_connection(HOST, port)
    for off in range(0, len(items), 500):
        chunk = items[off:off + 500]
        w.write(b"".join(encode(b"GET", k) for k, _ in chunk))
        for k, v in chunk:
            got = await read_reply(r)
            if got != v and k not in ambiguous:
                bad.append(k.decode())
    w.close()
    return bad


# --- bad clients -----------------------------------------------------------

GARBAGE = [
    b"*abc\r\n",
    b"*3\r\n$3\r\nSET\r\n$99999999999\r\n",
    b"*2\r\n$3\r\nGET\r\n$-7\r\n",
    b"$5\r\nhello\r\n*1\r\n",
    b"*1\r\n$4\r\nPINGxx\r\n",
]


async def garbage_client(port, stop, stats, rng):
    while not stop.is_set():
        try:
            r, w = await asyncio.open_connection(HOST, port)
            if rng.random() < 0.5:
                w.write(rng.choice(GARBAGE))
            else:
                w.write(os.urandom(rng.randint(1, 4096)))
            try:
                await asyncio.wait_for(r.read(), 2)
            except asyncio.TimeoutError:
                stats["garbage_left_open"] += 1
            stats["garbage_conns"] += 1
            w.close()
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.01)


async def non_reader(port, stop, stats, cmd, kind):
    """Pipelines `cmd` and never reads; reconnects when dropped."""
    batch = cmd * 64
    while not stop.is_set():
        try:
            r, w = await asyncio.open_connection(HOST, port)
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            while not stop.is_set():
                w.write(batch)
                try:
                    await asyncio.wait_for(w.drain(), 1)
                except asyncio.TimeoutError:
                    stats[kind + "_throttled"] += 1
                    await asyncio.sleep(0.2)
                    if w.transport.is_closing():
                        raise ConnectionError("closed")
        except (ConnectionError, OSError):
            stats[kind + "_dropped"] += 1
        w.transport.abort()
        await asyncio.sleep(0.05)


async def vanisher(port, stop, stats, rng):
    while not stop.is_set():
        try:
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"*3\r\n$3\r\nSET\r\n$4\r\nvkey\r\n$100000\r\n" + b"x" * rng.randint(0, 50000))
            await w.drain()
            await asyncio.sleep(rng.random() * 0.05)
            sock = w.get_extra_info("socket")
            # An abortive close (RST), as a client that crashed.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
            stats["vanished"] += 1
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.01)


async def run_bad(port, n, secs):
    from collections import Counter
    stats = Counter()
    # The value the non-readers GET.
    r, w = await asyncio.open_connection(HOST, port)
    w.write(encode(b"SET", b"bad:big", b"B" * (256 << 10)))
    assert await read_reply(r) == "OK"
    w.close()
    stop = asyncio.Event()
    rng = random.Random(7)
    get_big = encode(b"GET", b"bad:big")
    set_big = encode(b"SET", b"bad:flood", b"F" * (64 << 10))
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(garbage_client(port, stop, stats, random.Random(i))))
        tasks.append(asyncio.create_task(non_reader(port, stop, stats, get_big, "nonreader")))
        tasks.append(asyncio.create_task(non_reader(port, stop, stats, set_big, "setflood")))
        tasks.append(asyncio.create_task(vanisher(port, stop, stats, random.Random(1000 + i))))
    await asyncio.sleep(secs)
    stop.set()
    await asyncio.wait(tasks, timeout=5)
    for t in tasks:
        t.cancel()
    return dict(stats)


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "bad":
        n, secs = int(sys.argv[3]), float(sys.argv[4])
        print(json.dumps(asyncio.run(run_bad(port, n, secs))))
        return
    clients, secs, phase = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    out, elapsed = asyncio.run(run_good(port, clients, secs, phase))
    lat = out["lat"]
    bad_keys = asyncio.run(verify(port, out["latest"], out["ambiguous"]))
    print(json.dumps({
        "phase": phase, "clients": clients, "ops": out["ops"],
        "ops_per_sec": out["ops"] / elapsed,
        "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
        "p999_ms": pct(lat, 99.9) * 1e3,
        "wrong_replies": out["wrong"], "error_replies": out["errors"],
        "dropped_connections": out["dropped"],
        "keys_checked": len(out["latest"]), "keys_wrong": len(bad_keys),
        "keys_wrong_sample": bad_keys[:5],
        "error_samples": out["error_samples"][:5],
    }))


main()
PY

HALF=$(( DURATION / 2 ))
echo "phase 1: $CLIENTS well-behaved clients alone, ${HALF}s"
timeout $(( HALF + 120 )) python3 "$WORK/clients.py" good "$PORT" "$CLIENTS" "$HALF" 1 >"$WORK/phase1.json"
RSS1=$(awk '{ if ($2 > m) m = $2 } END { print int(m / 1024) }' "$WORK/rss.txt")

echo "phase 2: $CLIENTS well-behaved clients + $BAD each of garbage / non-reader / set-flood / vanisher, ${HALF}s"
BAD_SECS=$(( HALF + 2 ))
timeout $(( BAD_SECS + 60 )) python3 "$WORK/clients.py" bad "$PORT" "$BAD" "$BAD_SECS" >"$WORK/bad.json" &
BAD_PID=$!
sleep 1
timeout $(( HALF + 120 )) python3 "$WORK/clients.py" good "$PORT" "$CLIENTS" "$HALF" 2 >"$WORK/phase2.json"
wait "$BAD_PID" || echo "(the bad clients exited with $?)"

HWM=$(awk '/^VmHWM:/ {print int($2 / 1024)}' "/proc/$SERVER_PID/status")
RSS_MAX=$(awk '{ if ($2 > m) m = $2 } END { print int(m / 1024) }' "$WORK/rss.txt")
python3 - "$PORT" >"$WORK/info.txt" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"*1\r\n$4\r\nINFO\r\n")
buf = b""
while True:
    buf += s.recv(65536)
    if buf.count(b"\r\n") >= 2:
        n = int(buf.split(b"\r\n", 1)[0][1:])
        if len(buf) >= len(buf.split(b"\r\n", 1)[0]) + 2 + n + 2:
            break
print(buf.decode(errors="replace"))
PY
kill -TERM "$SERVER_PID"
for _ in $(seq 200); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "FAIL: the server did not exit within 20 s of SIGTERM"
    exit 1
fi
wait "$SERVER_PID" && SERVER_RC=0 || SERVER_RC=$?

python3 - "$WORK" "$HWM" "$RSS_MAX" "$RSS1" "$MAX_RSS_MIB" "$SERVER_RC" <<'PY'
import json, sys
work, hwm, rss_max, rss1, limit, rc = sys.argv[1], *map(int, sys.argv[2:])
p1 = json.load(open(work + "/phase1.json"))
p2 = json.load(open(work + "/phase2.json"))
bad = json.load(open(work + "/bad.json"))
info = open(work + "/info.txt").read()
print()
print("%-34s %14s %14s" % ("well-behaved clients", "alone", "with bad ones"))
for key, fmt in [("ops", "%d"), ("ops_per_sec", "%.0f"), ("p50_ms", "%.2f"),
                 ("p99_ms", "%.2f"), ("p999_ms", "%.2f"), ("wrong_replies", "%d"),
                 ("error_replies", "%d"), ("dropped_connections", "%d"),
                 ("keys_checked", "%d"), ("keys_wrong", "%d")]:
    print("%-34s %14s %14s" % (key, fmt % p1[key], fmt % p2[key]))
print()
print("bad clients:", ", ".join("%s=%s" % kv for kv in sorted(bad.items())))
fields = ["connected_clients", "total_connections_received", "rejected_connections",
          "protocol_errors", "client_output_buffer_limit_disconnections",
          "client_query_buffer_limit_disconnections", "total_commands_processed"]
got = dict(l.split(":", 1) for l in info.splitlines() if ":" in l)
print("server INFO:", ", ".join("%s=%s" % (f, got.get(f, "?").strip()) for f in fields))
print("server peak RSS: VmHWM %d MiB (sampled VmRSS max %d MiB; %d MiB after phase 1); limit %d MiB"
      % (hwm, rss_max, rss1, limit))
ok = True
def check(cond, what):
    global ok
    print(("ok   " if cond else "FAIL ") + what)
    ok = ok and cond
for p in (p1, p2):
    n = p["phase"]
    check(p["wrong_replies"] == 0, "phase %d: every reply correct" % n)
    check(p["error_replies"] == 0, "phase %d: no error replies %s" % (n, p["error_samples"]))
    check(p["dropped_connections"] == 0, "phase %d: no good client dropped" % n)
    check(p["keys_wrong"] == 0 and p["keys_checked"] > 0,
          "phase %d: all %d acknowledged SETs read back %s" % (n, p["keys_checked"], p["keys_wrong_sample"]))
check(hwm < limit, "server peak RSS %d MiB < %d MiB" % (hwm, limit))
check(bad.get("nonreader_dropped", 0) + bad.get("nonreader_throttled", 0) > 0,
      "non-readers were throttled or dropped")
check(rc == 0, "server exited cleanly on SIGTERM (status %d)" % rc)
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
