#!/usr/bin/env bash
# bench-frontend.sh - the front end alone: GETs of missing keys (no device
# I/O) with the same `nvkv bench` client against nvkv and against Redis 7
# in memory, in interleaved rounds.
#
# Each round runs, one after the other, every nvkv binary given (--bin, more
# than once to compare builds) and redis-server, each with every connection
# shape; the table gives GET/s per round, the ratio of each nvkv binary to
# Redis in the same round, and the medians over the rounds, with the load
# average at the start of each round (other work on the machine shows there),
# and the server's CPU time per GET (user + system, from /proc/PID/stat over
# the measurement; the measure to trust on a busy machine).
#
# Run with --help for the options.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

BINS=()
ROUNDS=3
DURATION=8
SHAPES="32x1 4x8"
PORT=12420
SERVE_ARGS=""

usage() {
    cat <<EOF
Usage: scripts/bench-frontend.sh [options]

  --bin PATH        an nvkv binary (repeat to compare builds; the first one
                    also runs the client; default target/release/nvkv)
  --rounds N        interleaved rounds (default $ROUNDS)
  --duration SECS   length of every measurement (default $DURATION)
  --shapes "CxK .." connections x GETs in flight each (default "$SHAPES")
  --port P          first port on 127.0.0.1 (default $PORT; servers use P, P+1, ...)
  --serve-args ".." extra flags for 'nvkv serve'
  -h, --help        this text

Exit status: 0 when every measurement ran; 1 otherwise.
EOF
}

die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --bin)        [[ $# -ge 2 ]] || die "--bin needs a value"; BINS+=("$2"); shift 2 ;;
        --rounds)     [[ $# -ge 2 ]] || die "--rounds needs a value"; ROUNDS=$2; shift 2 ;;
        --duration)   [[ $# -ge 2 ]] || die "--duration needs a value"; DURATION=$2; shift 2 ;;
        --shapes)     [[ $# -ge 2 ]] || die "--shapes needs a value"; SHAPES=$2; shift 2 ;;
        --port)       [[ $# -ge 2 ]] || die "--port needs a value"; PORT=$2; shift 2 ;;
        --serve-args) [[ $# -ge 2 ]] || die "--serve-args needs a value"; SERVE_ARGS=$2; shift 2 ;;
        -h|--help)    usage; exit 0 ;;
        *)            die "unknown option '$1' (see --help)" ;;
    esac
done
[[ ${#BINS[@]} -gt 0 ]] || BINS=("$REPO/target/release/nvkv")
for b in "${BINS[@]}"; do [[ -x $b ]] || die "not an executable: $b"; done
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $DURATION =~ ^[1-9][0-9]*$ && $PORT =~ ^[0-9]+$ ]] \
    || die "--rounds, --duration and --port must be positive integers"
for s in $SHAPES; do [[ $s =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || die "--shapes: '$s' is not CxK"; done
command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
command -v redis-cli >/dev/null || die "redis-cli not found (apt-get install redis-tools)"

CLIENT=${BINS[0]}
TICKS=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/bench-frontend.XXXXXX)
SERVER_PID=""
cleanup() {
    if [[ -n $SERVER_PID ]]; then kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; fi
    rm -rf -- "$WORK"
}
trap cleanup EXIT

# wait_port P: until something answers PING on 127.0.0.1:P (10 s).
wait_port() {
    local i
    for ((i = 0; i < 100; i++)); do
        [[ $(timeout 2 redis-cli -p "$1" ping 2>/dev/null) == PONG ]] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# cpu_ticks: the server's user + system time so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }

# measure NAME ROUND PORT: every shape against the server on PORT.
measure() {
    local name=$1 round=$2 port=$3 s c k out t0 t1
    for s in $SHAPES; do
        c=${s%x*} k=${s#*x}
        t0=$(cpu_ticks)
        out=$(timeout $((DURATION + 60)) "$CLIENT" bench --addr "127.0.0.1:$port" --clients "$c" \
            --inflight "$k" --duration "$DURATION" --keys 1000000 --verify none --json 2>"$WORK/bench.err" \
            | tail -1) || die "nvkv bench against $name failed: $(tail -3 "$WORK/bench.err")"
        t1=$(cpu_ticks)
        printf '{"round":%d,"server":"%s","shape":"%s","load":%s,"cpu_s":%s,"bench":%s}\n' \
            "$round" "$name" "$s" "$LOAD" "$(echo "$t0 $t1 $TICKS" | awk '{print ($2 - $1) / $3}')" \
            "$out" >>"$WORK/results.jsonl"
        printf '  %-28s %-5s %s\n' "$name" "$s" "$(tail -1 "$WORK/results.jsonl" | python3 -c '
import json, sys
r = json.load(sys.stdin)
b = r["bench"]
us = r["cpu_s"] / max(b["ops"], 1) * 1e6
print("%d GET/s, server CPU %.2f us per GET" % (round(b["ops_per_sec"]), us))')"
    done
}

echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); nproc $(nproc); $(redis-server --version | cut -d' ' -f1-3)"
for ((r = 1; r <= ROUNDS; r++)); do
    LOAD=$(cut -d' ' -f1 /proc/loadavg)
    echo "round $r (load average $LOAD)"
    i=0
    for b in "${BINS[@]}"; do
        i=$((i + 1))
        port=$((PORT + i))
        rm -rf -- "$WORK/store"
        # shellcheck disable=SC2086  # SERVE_ARGS is a list of flags
        "$b" serve --path "$WORK/store" --listen "127.0.0.1:$port" --sparse $SERVE_ARGS \
            >/dev/null 2>"$WORK/serve.err" &
        SERVER_PID=$!
        wait_port "$port" || die "nvkv serve ($b) did not start: $(tail -3 "$WORK/serve.err")"
        measure "nvkv$i:$(basename "$(dirname "$b")")" "$r" "$port"
        stop_server
    done
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
        >/dev/null 2>&1 &
    SERVER_PID=$!
    wait_port "$PORT" || die "redis-server did not start on port $PORT"
    measure redis "$r" "$PORT"
    stop_server
done

python3 - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
servers = list(dict.fromkeys(r["server"] for r in rows))
shapes = list(dict.fromkeys(r["shape"] for r in rows))
ops = {(r["round"], r["server"], r["shape"]): r["bench"]["ops_per_sec"] for r in rows}
cpu = {(r["round"], r["server"], r["shape"]): r["cpu_s"] / max(r["bench"]["ops"], 1) * 1e6 for r in rows}
loads = {r["round"]: r["load"] for r in rows}
rounds = sorted(loads)
nvkv = [s for s in servers if s != "redis"]
head = ["round", "load"] + [f"{s} {sh}" for sh in shapes for s in servers] \
     + [f"{s} / redis {sh}" for sh in shapes for s in nvkv] \
     + [f"{s} {sh} CPU µs/GET" for sh in shapes for s in servers]
print("\n| " + " | ".join(head) + " |")
print("|" + "---|" * 2 + "---:|" * (len(head) - 2))
def cells(get):
    out = []
    for sh in shapes:
        out += [get(s, sh, "ops") for s in servers]
    for sh in shapes:
        out += [get(s, sh, "ratio") for s in nvkv]
    for sh in shapes:
        out += [get(s, sh, "cpu") for s in servers]
    return out
def value(r, s, sh, what):
    v = ops.get((r, s, sh))
    if what == "ops":
        return v
    if what == "cpu":
        return cpu.get((r, s, sh))
    red = ops.get((r, "redis", sh))
    return v / red if v and red else None
fmt = lambda what, v: "-" if v is None else (f"{v:,.0f}" if what == "ops" else f"{v:.2f}")
for r in rounds:
    row = cells(lambda s, sh, what: fmt(what, value(r, s, sh, what)))
    print(f"| {r} | {loads[r]} | " + " | ".join(row) + " |")
def median(s, sh, what):
    vals = [v for v in (value(r, s, sh, what) for r in rounds) if v is not None]
    return fmt(what, statistics.median(vals) if vals else None)
print("| median | | " + " | ".join(cells(median)) + " |")
PY
