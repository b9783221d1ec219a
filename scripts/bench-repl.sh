#!/usr/bin/env bash
# bench-repl.sh - a full copy to a replica: a primary with a loaded store
# (`nvkv load`), an empty replica started with --replicaof, and the time
# from the replica's "full copy from the primary" log line to "full copy
# applied" (the copy is durable then: the replica saves before it says
# so). Each round starts a fresh replica against the same primary; at the
# end, the median, and the values' bytes over it; also the replica's and
# the primary's CPU time over each copy (from the replica's first log
# line's sighting, polled every 0.1 s): what the copy costs, which a busy
# machine blurs less than the time. fio's sequential write on
# the same file system and loopback TCP (iperf3 if installed, else two
# Python processes) are the bar (issue 20: a copy at >= 0.5 x the slower
# of the two); with --fio both are measured and the copy's rate printed
# as a multiple of the slower.
set -euo pipefail

usage() {
    cat <<'TXT'
Usage: scripts/bench-repl.sh [options]

  --bin BIN         nvkv binary (default target/release/nvkv)
  --dir DIR         scratch directory (default /tmp/nvkv-bench-repl;
                    removed at the end)
  --keys N          keys of the primary (default 1000000)
  --min-size A      smallest value (default 1024)
  --max-size B      largest value (default 4096)
  --rounds R        full copies (default 3)
  --capacity SIZE   the replica's store (default 6G)
  --port P          the primary's port on 127.0.0.1 (default 7901; the
                    replica takes P + 1, the TCP test P + 2)
  --fio             also measure fio's sequential 1 MiB write (4 GiB) and
                    loopback TCP (5 s), and print the copy's rate as a
                    multiple of the slower
  -h, --help        this text
TXT
}

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/nvkv dir=/tmp/nvkv-bench-repl keys=1000000
min=1024 max=4096 rounds=3 capacity=6G port=7901 fio=0
while [ $# -gt 0 ]; do
    case $1 in
        --bin) bin=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --min-size) min=$2; shift 2 ;;
        --max-size) max=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --capacity) capacity=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --fio) fio=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 1 ;;
    esac
done
rport=$((port + 1))
mkdir -p "$dir"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Seconds (with ms) of a log line's timestamp (tracing's RFC 3339 UTC).
stamp() {
    grep -m1 "$1" "$2" | sed -E 's/^[^T]*T([0-9:.]+)Z.*/\1/' |
        awk -F: '{printf "%.3f\n", $1 * 3600 + $2 * 60 + $3}'
}

wait_port() {
    for _ in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}

echo "loading $keys keys of $min-$max bytes"
"$bin" load --force --path "$dir/primary" --keys "$keys" --min-size "$min" \
    --max-size "$max" >"$dir/load.log" 2>&1
"$bin" serve --path "$dir/primary" --listen "127.0.0.1:$port" \
    >"$dir/primary.log" 2>&1 &
primary=$!
pids+=("$primary")
wait_port "$port"

if [ "$fio" = 1 ] && command -v fio >/dev/null; then
    fio --name=seq --filename="$dir/fio.dat" --rw=write --bs=1M --size=4G \
        --direct=1 --ioengine=libaio --iodepth=8 --output-format=terse \
        >"$dir/fio.out" 2>&1
    # terse v3: field 48 is the write bandwidth in KiB/s.
    awk -F';' '{printf "fio sequential write: %.0f MB/s\n", $48 * 1.024 / 1000}' "$dir/fio.out"
    rm -f "$dir/fio.dat"
    fio_mbs=$(awk -F';' '{printf "%.0f", $48 * 1.024 / 1000}' "$dir/fio.out")
fi

# Loopback TCP, one stream: iperf3 if installed, else one Python process
# sending 1 MiB writes to another reading them (a floor: iperf3 moves
# more).
tcp_mbs=
if [ "$fio" = 1 ]; then
    tport=$((port + 2))
    if command -v iperf3 >/dev/null; then
        iperf3 -s -p "$tport" -B 127.0.0.1 >/dev/null 2>&1 &
        ip=$!
        pids+=("$ip")
        for _ in $(seq 50); do
            ss -ltn | grep -q "127.0.0.1:$tport " && break
            sleep 0.1
        done
        tcp_mbs=$(iperf3 -c 127.0.0.1 -p "$tport" -t 5 -J 2>/dev/null |
            python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e6))')
        kill "$ip"
        wait "$ip" 2>/dev/null || true
        how="iperf3 -t 5"
    else
        tcp_mbs=$(python3 - "$tport" <<'PY'
import os, socket, sys, time
port = int(sys.argv[1])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(1)
if os.fork() == 0:
    c = socket.create_connection(("127.0.0.1", port))
    chunk = b"x" * (1 << 20)
    end = time.time() + 5
    while time.time() < end:
        c.sendall(chunk)
    c.close()
    os._exit(0)
conn, _ = srv.accept()
buf = bytearray(1 << 20)
n, t0 = 0, time.time()
while (k := conn.recv_into(buf)):
    n += k
print("%.0f" % (n / (time.time() - t0) / 1e6))
os.wait()
PY
)
        how="python sockets, 5 s"
    fi
    echo "loopback TCP: $tcp_mbs MB/s ($how)"
fi

# The replica's CPU time so far (user + system, clock ticks): on a busy
# machine, the copy's CPU cost says more than its wall time.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

secs=() cpus=() pcpus=()
for r in $(seq "$rounds"); do
    rm -rf "$dir/replica"
    log=$dir/replica$r.log
    "$bin" serve --path "$dir/replica" --capacity "$capacity" \
        --listen "127.0.0.1:$rport" --replicaof "127.0.0.1 $port" >"$log" 2>&1 &
    rp=$!
    pids+=("$rp")
    cpu0= pcpu0=$(cpu_ticks "$primary")
    for _ in $(seq 6000); do
        if [ -z "$cpu0" ] && grep -q "full copy from the primary" "$log"; then
            cpu0=$(cpu_ticks "$rp")
        fi
        grep -q "full copy applied" "$log" && break
        kill -0 "$rp" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    cpu1=$(cpu_ticks "$rp") pcpu1=$(cpu_ticks "$primary")
    t0=$(stamp "full copy from the primary" "$log")
    t1=$(stamp "full copy applied" "$log")
    s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
    c=$(awk -v a="${cpu0:-0}" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "%.2f", (b - a) / hz}')
    pc=$(awk -v a="$pcpu0" -v b="$pcpu1" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "%.2f", (b - a) / hz}')
    echo "round $r: $s s (replica CPU $c s, primary CPU $pc s)"
    secs+=("$s")
    cpus+=("$c")
    pcpus+=("$pc")
    kill "$rp"
    wait "$rp" 2>/dev/null || true
done
m=$(printf '%s\n' "${secs[@]}" | median)
echo "replica CPU median: $(printf '%s\n' "${cpus[@]}" | median) s (from the copy's start)"
echo "primary CPU median: $(printf '%s\n' "${pcpus[@]}" | median) s (from the replica's start)"
bytes=$(( keys * (min + max) / 2 ))
awk -v m="$m" -v k="$keys" -v b="$bytes" 'BEGIN {
    printf "median %.2f s: %.1f k keys/s, %.0f MB/s of values\n", m, k / m / 1000, b / m / 1e6 }'
if [ -n "${fio_mbs:-}" ] && [ -n "$tcp_mbs" ]; then
    awk -v m="$m" -v b="$bytes" -v f="$fio_mbs" -v t="$tcp_mbs" 'BEGIN {
        bar = f < t ? f : t
        printf "copy / min(TCP %d, fio write %d MB/s): %.2f x (issue 20 asks >= 0.5)\n", t, f, b / m / 1e6 / bar }'
fi
