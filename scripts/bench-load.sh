#!/usr/bin/env bash
# bench-load.sh - `nvkv load` as a whole command against fio's sequential
# write bandwidth on the same file system, in alternating rounds.
#
# Each round runs fio (sequential 1 MiB O_DIRECT writes of a new file), then
# `nvkv load` with every binary given (a fresh store each time, timed as a
# whole command), then `nvkv load --sparse` with the first binary. At the
# end: the median of each over the rounds, and each load's bandwidth
# (bytes of segments written / wall time) as a fraction of fio's. With
# --sync-writes, each loaded store is then served and overwritten by
# `nvkv insert` (sync durability: every SET acknowledged after its group
# commit's fdatasync), whose SETs go to the free part of the data file the
# load zeroed (or, --sparse, left as holes).
set -euo pipefail

usage() {
    cat <<'TXT'
Usage: scripts/bench-load.sh [options] [BIN ...]

  BIN ...           nvkv binaries to compare (default target/release/nvkv)
  --dir DIR         scratch directory on the file system to measure
                    (default /tmp/nvkv-bench-load; removed at the end)
  --keys N          records (default 1000000)
  --min-size A      smallest value (default 1024)
  --max-size B      largest value (default 4096)
  --rounds R        rounds (default 3)
  --fio-size SIZE   bytes fio writes (default 4G)
  --sync-writes S   after each load, S seconds of `nvkv insert` (4 x 8,
                    sync) against the served store (default 0: none)
  --port P          port of that server on 127.0.0.1 (default 12744)
  -h, --help        this text
TXT
}

root=$(cd "$(dirname "$0")/.." && pwd)
dir=/tmp/nvkv-bench-load keys=1000000 min=1024 max=4096 rounds=3 fio_size=4G
sync_secs=0 port=12744
bins=()
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --min-size) min=$2; shift 2 ;;
        --max-size) max=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --fio-size) fio_size=$2; shift 2 ;;
        --sync-writes) sync_secs=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option: $1 (see --help)" >&2; exit 1 ;;
        *) bins+=("$1"); shift ;;
    esac
done
[ ${#bins[@]} -gt 0 ] || bins=("$root/target/release/nvkv")
command -v fio >/dev/null || { echo "fio is needed" >&2; exit 1; }
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# S seconds of sync `nvkv insert` against the store in $dir/store, served
# by $1: prints SET/s.
sync_inserts() {
    local bin=$1 pid i rate
    # The last server's log goes first: its listening line must not be
    # taken for this one's (the shell truncates the file only once the
    # server's process runs).
    rm -f "$dir/serve.out"
    "$bin" serve --path "$dir/store" --listen "127.0.0.1:$port" >"$dir/serve.out" 2>"$dir/serve.err" &
    pid=$!
    for ((i = 0; i < 1200; i++)); do
        grep -qs "^nvkv listening on" "$dir/serve.out" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    rate=$("$bin" insert --addr "127.0.0.1:$port" --clients 4 --inflight 8 \
        --duration "$sync_secs" --keys "$keys" --min-size "$min" --max-size "$max" --json |
        tail -1 | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["ops_per_sec"]))')
    kill -TERM "$pid"
    wait "$pid" || true
    echo "$rate"
}

# One timed load: prints "secs MB/s" (MB/s as nvkv reports it), and SET/s
# of sync inserts afterwards with --sync-writes ("-" without).
load_once() {
    local bin=$1; shift
    rm -rf "$dir/store"
    local t0 t1 out sets=-
    t0=$(date +%s.%N)
    # --force: a store the last removal left behind (see below) is
    # replaced, not a reason to stop.
    "$bin" load --force --path "$dir/store" --keys "$keys" --min-size "$min" \
        --max-size "$max" "$@" >"$dir/load.out" 2>&1 || {
        cat "$dir/load.out" >&2
        return 1
    }
    t1=$(date +%s.%N)
    out=$(tail -1 "$dir/load.out")
    [ "$sync_secs" = 0 ] || sets=$(sync_inserts "$bin")
    local mib
    mib=$(sed -E 's/.* ([0-9.]+) MiB written.*/\1/' <<<"$out")
    # The store is removed before the result line is printed: the caller
    # reads that line from a process substitution and goes on to the next
    # load at once, which an rm -rf still running here used to race
    # (removing the new store's files: "Directory not empty", or a load
    # failing with ENOENT on its own directory).
    rm -rf "$dir/store"
    awk -v a="$t0" -v b="$t1" -v m="$mib" -v w="$sets" \
        'BEGIN {s=b-a; printf "%.2f %.0f %s\n", s, m*1048576/s/1e6, w}'
}

declare -A secs mbs sets
fio_mbs=()
for r in $(seq 1 "$rounds"); do
    bw=$(fio --name=seq --rw=write --bs=1M --direct=1 --size="$fio_size" \
        --filename="$dir/fio" --output-format=json 2>/dev/null |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"]/1e6))')
    rm -f "$dir/fio"
    fio_mbs+=("$bw")
    echo "round $r: fio seq write 1M: $bw MB/s"
    for i in "${!bins[@]}"; do
        read -r s m w < <(load_once "${bins[$i]}")
        secs[$i]+="$s "; mbs[$i]+="$m "; sets[$i]+="$w "
        echo "round $r: ${bins[$i]} load: $s s, $m MB/s; sync SET/s after: $w"
    done
    read -r s m w < <(load_once "${bins[0]}" --sparse)
    secs[sparse]+="$s "; mbs[sparse]+="$m "; sets[sparse]+="$w "
    echo "round $r: ${bins[0]} load --sparse: $s s, $m MB/s; sync SET/s after: $w"
done

fio_med=$(printf '%s\n' "${fio_mbs[@]}" | median)
echo
echo "medians of $rounds rounds ($keys keys, values $min-$max bytes):"
echo "  fio seq write 1M: $fio_med MB/s"
for k in "${!bins[@]}" sparse; do
    if [ "$k" = sparse ]; then name="${bins[0]} --sparse"; else name=${bins[$k]}; fi
    s=$(tr ' ' '\n' <<<"${secs[$k]}" | grep . | median)
    m=$(tr ' ' '\n' <<<"${mbs[$k]}" | grep . | median)
    w=$(tr ' ' '\n' <<<"${sets[$k]}" | grep . | median)
    awk -v n="$name" -v s="$s" -v m="$m" -v f="$fio_med" -v w="$w" \
        'BEGIN {printf "  %s: %s s, %s MB/s = %.2f x fio; sync SET/s after: %s\n", n, s, m, m/f, w}'
done
