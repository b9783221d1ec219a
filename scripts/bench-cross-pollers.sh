#!/bin/sh
# Commands of several keys on one poller and across pollers: MSET of 4
# keys (spread by the hash, or with one hash tag), MGET of 4 keys spread,
# with redis-benchmark (32 connections); and redis-py's default pipeline
# (MULTI, 8 SETs, EXEC) over 8 spread or tagged keys, 4 processes.
#
# usage: scripts/bench-cross-pollers.sh [BIN] [IO_THREADS] [PORT] [LABEL]
# Prints one line of figures (operations per second) and the load average.
# An EXEC across pollers needs a server that runs them (older ones answer
# CROSSSLOT): set NO_EXEC=1 to leave the pipelines out. REPLICA=1 attaches
# a replica (same binary and io-threads, on PORT+1) first, so the figures
# are those of a primary whose replicas are fed.
set -eu
BIN=${1:-target/release/nvkv}
IOT=${2:-2}
PORT=${3:-7520}
LABEL=${4:-nvkv}
DIR=$(mktemp -d /tmp/bench-cross-pollers-XXXXXX)
RPID=
trap 'kill $PID $RPID 2>/dev/null; wait $PID $RPID 2>/dev/null; rm -rf "$DIR" "$DIR.r"' EXIT
"$BIN" serve --listen 127.0.0.1:"$PORT" --path "$DIR" --sparse --io-threads "$IOT" \
    > "$DIR.log" 2>&1 &
PID=$!
sleep 2
if [ -n "${REPLICA:-}" ]; then
    mkdir "$DIR.r"
    "$BIN" serve --listen 127.0.0.1:$((PORT + 1)) --path "$DIR.r" --sparse \
        --io-threads "$IOT" --replicaof "127.0.0.1 $PORT" > "$DIR.r.log" 2>&1 &
    RPID=$!
    i=0
    until redis-cli -p $((PORT + 1)) role 2>/dev/null | grep -q '^connected$'; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "the replica did not connect" >&2; exit 1; }
        sleep 0.1
    done
    LABEL="$LABEL+replica"
fi
rb() {
    redis-benchmark -p "$PORT" -c 32 -n 50000 -r 100000 --csv "$@" 2>/dev/null |
        tail -1 | cut -d, -f2 | tr -d '"'
}
rb SET k__rand_int__ v > /dev/null
mset_spread=$(rb MSET a__rand_int__ x b__rand_int__ y c__rand_int__ z d__rand_int__ w)
mset_tagged=$(rb MSET '{__rand_int__}a' x '{__rand_int__}b' y '{__rand_int__}c' z '{__rand_int__}d' w)
mget_spread=$(rb MGET k__rand_int__ a__rand_int__ b__rand_int__ c__rand_int__)
pipelines() {
    python3 - "$PORT" "$1" <<'EOF'
import sys, time, random, redis, multiprocessing as mp
port, tagged, procs, secs = int(sys.argv[1]), sys.argv[2] == "1", 4, 5.0
def run(q):
    r = redis.Redis(port=port)
    n, end = 0, time.time() + secs
    while time.time() < end:
        t = random.randrange(100000)
        p = r.pipeline()
        for i in range(8):
            p.set(("{%d}k%d" % (t, i)) if tagged else ("k%d-%d" % (t, i)), n)
        p.execute()
        n += 1
    q.put(n)
q = mp.Queue()
ps = [mp.Process(target=run, args=(q,)) for _ in range(procs)]
[p.start() for p in ps]
[p.join() for p in ps]
print("%.0f" % (sum(q.get() for _ in ps) / secs))
EOF
}
exec_spread=- exec_tagged=-
if [ -z "${NO_EXEC:-}" ]; then
    exec_spread=$(pipelines 0)
    exec_tagged=$(pipelines 1)
fi
echo "$LABEL io-threads=$IOT mset_spread=$mset_spread mset_tagged=$mset_tagged" \
    "mget_spread=$mget_spread exec8_spread=$exec_spread exec8_tagged=$exec_tagged" \
    "load=$(cut -d' ' -f1-3 /proc/loadavg)"
rm -f "$DIR.log" "$DIR.r.log"
