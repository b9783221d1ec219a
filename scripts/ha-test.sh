#!/usr/bin/env bash
# Failover under Redis Sentinel, on loopback: one nvkv primary, two nvkv
# replicas, three sentinels (redis-server --sentinel); a redis-py client
# writes through Sentinel, each write confirmed with WAIT 1; the primary is
# killed with SIGKILL; Sentinel promotes a replica, the other follows it,
# the old primary rejoins as a replica when restarted. Prints the failover
# time, the writes acknowledged and the acknowledged writes lost.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/ha-test.sh [--secs N] [--nvkv PATH]

Starts nvkv on 127.0.0.1:12801 (primary), 12802 and 12803 (replicas), each
with a config file (CONFIG REWRITE keeps REPLICAOF across restarts), and
three sentinels on 26801-26803 (quorum 2, down-after 2000 ms). A redis-py
client (redis.sentinel.Sentinel) writes keys for N seconds (default 20),
each SET followed by WAIT 1 500; a write counts as acknowledged when WAIT
answered 1. After a third of the time the primary is killed (SIGKILL).
Then: the new primary must be one of the replicas, the other replica must
follow it (ROLE), the old primary, restarted, must become its replica, and
every acknowledged write must be on the new primary. Exits non-zero when a
check fails. Needs redis-server (Debian's redis-server or redis-sentinel
package), redis-cli and python3 with redis-py. Loopback only; bounded.
USAGE
}

secs=20
nvkv=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --secs) secs=$2; shift 2 ;;
        --nvkv) nvkv=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
for tool in redis-server redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 1; }
done
python3 -c 'import redis.sentinel' || { echo "error: redis-py is needed" >&2; exit 1; }
if [[ -z "$nvkv" ]]; then
    (cd "$root" && cargo build --release -q)
    nvkv=${CARGO_TARGET_DIR:-$root/target}/release/nvkv
fi

work=$(mktemp -d /tmp/nvkv-ha.XXXXXX)
declare -A pid
cleanup() {
    for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ports=(12801 12802 12803)
start_node() { # port
    local port=$1
    "$nvkv" serve --config "$work/n$port.toml" >>"$work/n$port.log" 2>&1 &
    pid[n$port]=$!
    for _ in $(seq 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "error: node $port did not start" >&2
    tail -5 "$work/n$port.log" >&2
    exit 1
}
for port in "${ports[@]}"; do
    mkdir -p "$work/d$port"
    cat >"$work/n$port.toml" <<EOF
path = "$work/d$port"
listen = "127.0.0.1:$port"
capacity = "256M"
sparse = true
EOF
    if [[ $port != 12801 ]]; then
        echo 'replicaof = "127.0.0.1 12801"' >>"$work/n$port.toml"
    fi
    start_node "$port"
done

for s in 26801 26802 26803; do
    cat >"$work/s$s.conf" <<EOF
port $s
bind 127.0.0.1
daemonize no
dir $work
sentinel monitor mymaster 127.0.0.1 12801 2
sentinel down-after-milliseconds mymaster 2000
sentinel failover-timeout mymaster 10000
sentinel parallel-syncs mymaster 1
EOF
    redis-server "$work/s$s.conf" --sentinel >"$work/s$s.log" 2>&1 &
    pid[s$s]=$!
done

role_of() { redis-cli -p "$1" role 2>/dev/null | head -1; }
wait_until() { # what, seconds, command...
    local what=$1 limit=$2
    shift 2
    local t0=$SECONDS
    until "$@"; do
        if ((SECONDS - t0 > limit)); then
            echo "FAIL: $what (after ${limit}s)" >&2
            return 1
        fi
        sleep 0.2
    done
}
replicas_online() {
    [[ $(redis-cli -p 12801 info replication | grep -c 'state=online') == 2 ]]
}
sentinels_ready() {
    local n
    n=$(redis-cli -p 26801 sentinel master mymaster 2>/dev/null |
        awk 'p {print; exit} /^num-other-sentinels$/ {p=1}')
    [[ "$n" == 2 ]]
}
wait_until "both replicas online" 30 replicas_online
wait_until "the sentinels see each other" 30 sentinels_ready

# The writer: SET then WAIT 1 500 through Sentinel, for $secs seconds.
cat >"$work/writer.py" <<'EOF'
import sys, time, json
import redis
from redis.sentinel import Sentinel

secs = float(sys.argv[1])
out = sys.argv[2]
sentinel = Sentinel([("127.0.0.1", p) for p in (26801, 26802, 26803)], socket_timeout=0.5)
acked, failed_at, first_ok_after = [], None, None
t_end = time.time() + secs
i = 0
while time.time() < t_end:
    try:
        m = sentinel.master_for("mymaster", socket_timeout=1.0)
        m.set(f"k{i}", str(i))
        n = m.execute_command("WAIT", 1, 500)
        if n >= 1:
            acked.append(i)
        if failed_at is not None and first_ok_after is None:
            first_ok_after = time.time()
        i += 1
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError,
            redis.sentinel.MasterNotFoundError) as e:
        if failed_at is None:
            failed_at = time.time()
        time.sleep(0.1)
json.dump({"acked": acked, "tried": i, "failed_at": failed_at,
           "first_ok_after": first_ok_after}, open(out, "w"))
EOF
python3 "$work/writer.py" "$secs" "$work/writer.json" &
writer=$!
sleep $((secs / 3))
kill_at=$(date +%s.%N)
kill -9 "${pid[n12801]}"
unset 'pid[n12801]'
echo "killed the primary (127.0.0.1:12801)"

new_primary() {
    local a
    a=$(redis-cli -p 26801 sentinel get-master-addr-by-name mymaster | tail -1)
    [[ "$a" != 12801 ]] && echo "$a"
}
wait_until "a new primary" 60 new_primary >/dev/null
promoted=$(new_primary)
promoted_at=$(date +%s.%N)
echo "new primary: 127.0.0.1:$promoted ($(echo "$promoted_at - $kill_at" | bc) s after the kill)"
other=12802
[[ $promoted == 12802 ]] && other=12803
wait_until "the new primary says master" 30 bash -c "[[ \$(redis-cli -p $promoted role | head -1) == master ]]"
follows() {
    local r
    r=$(redis-cli -p "$1" role | tr '\n' ' ')
    [[ "$r" == "slave 127.0.0.1 $promoted connected "* ]]
}
wait_until "the other replica follows the new primary" 60 follows "$other"
echo "127.0.0.1:$other follows it"

wait "$writer"
start_node 12801
wait_until "the old primary rejoins as a replica" 60 follows 12801
echo "the old primary rejoined as a replica"

python3 - "$work/writer.json" "$promoted" "$kill_at" <<'EOF'
import json, sys
import redis
w = json.load(open(sys.argv[1]))
r = redis.Redis(port=int(sys.argv[2]))
lost = [i for i in w["acked"] if r.get(f"k{i}") != str(i).encode()]
kill_at = float(sys.argv[3])
back = w["first_ok_after"]
print(f"writes tried: {w['tried']}, acknowledged (WAIT 1): {len(w['acked'])}, "
      f"acknowledged and lost: {len(lost)}")
if back is not None:
    print(f"writes failed for {back - kill_at:.1f} s (kill to the first write through the new primary)")
if lost:
    print("FAIL: acknowledged writes lost:", lost[:20])
    sys.exit(1)
EOF
echo "ha-test: ok"
