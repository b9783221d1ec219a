# Shared by the guest scripts of tests/vm/: start and stop a server, bench
# it, and the write / restart / crash checks. Source it from bash.
nvkv=${nvkv:-target/release/nvkv}
keys=${NVKV_VM_KEYS:-50000}
dur=${NVKV_VM_DURATION:-3}
fail=0
fails=0

serve() { # dir [serve flags...]
    local dir=$1
    shift
    "$nvkv" --log-level warn serve --path "$dir" --listen 127.0.0.1:6400 "$@" > /tmp/serve.log 2>&1 &
    disown
    for _ in $(seq 300); do grep -q "nvkv listening" /tmp/serve.log && return 0; sleep 0.1; done
    cat /tmp/serve.log
    return 1
}

stop() { # signal
    local pid
    pid=$(pgrep -f "nvkv --log-level warn serve" || true)
    [[ -n "$pid" ]] || return 0
    kill "-$1" $pid
    for _ in $(seq 300); do kill -0 $pid 2>/dev/null || return 0; sleep 0.1; done
    echo "server did not stop"
    return 1
}

bench() { # clients inflight -> "ops p50 p99 errors"
    "$nvkv" bench --addr 127.0.0.1:6400 --keys "$keys" --clients "$1" --inflight "$2" --duration "$dur" 2>/dev/null |
        awk '/^throughput/ {ops=$2} /^operations/ {err=$9} /^latency/ {p50=$6; p99=$10} END {print ops, p50, p99, err}'
}

r() { redis-cli -p 6400 "$@"; }

expect() { # want got what
    if [[ "$1" != "$2" ]]; then
        echo "FAIL: $3: want '$1', got '$2'"
        fail=1
        fails=$((fails + 1))
    fi
}

# Writes, overwrite, delete, expiry; a clean restart (index mapped, not
# rebuilt); a kill -9 (acknowledged writes back); loaded keys still exact;
# then `nvkv check`. The server runs on entry and is stopped on return.
write_checks() { # dir what [serve flags...]
    local dir=$1 what=$2
    shift 2
    for i in $(seq 1 200); do echo "SET w:$i v$i-$(printf '%0*d' $((i * 7)) 0)"; done | r > /dev/null
    r SET w:5 five > /dev/null
    r DEL w:6 > /dev/null
    r SET w:ttl soon PX 300 > /dev/null
    stop TERM
    serve "$dir" "$@"
    expect 0 "$(r INFO persistence | tr -d '\r' | awk -F: '/^recovery_bytes_read/ {print $2}')" "$what: clean restart maps the index"
    expect five "$(r GET w:5)" "$what: overwrite after restart"
    expect "" "$(r GET w:6)" "$what: delete after restart"
    expect "" "$(r GET w:ttl)" "$what: expired key after restart"
    r SET after:crash yes > /dev/null
    stop KILL
    serve "$dir" "$@"
    expect yes "$(r GET after:crash)" "$what: acknowledged write after kill -9"
    expect "v200-$(printf '%0*d' 1400 0)" "$(r GET w:200)" "$what: write after kill -9"
    local again
    read -r _ _ _ again <<<"$(bench 4 8)"
    expect 0 "$again" "$what: value errors after recovery"
    stop TERM
    if ! "$nvkv" --log-level warn check --path "$dir" "${check_flags[@]}" > /tmp/check.out; then
        cat /tmp/check.out
        expect ok failed "$what: nvkv check"
    fi
}
