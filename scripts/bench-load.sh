#!/usr/bin/env bash
# bench-load.sh - `nvkv load` as a whole command against fio's sequential
# write bandwidth on the same file system, in alternating rounds.
#
# Each round runs fio (sequential 1 MiB O_DIRECT writes of a new file), then
# `nvkv load` with every binary given (a fresh store each time, timed as a
# whole command), then `nvkv load --sparse` with the first binary. At the
# end: the median of each over the rounds, and each load's bandwidth
# (bytes of segments written / wall time) as a fraction of fio's.
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
  -h, --help        this text
TXT
}

root=$(cd "$(dirname "$0")/.." && pwd)
dir=/tmp/nvkv-bench-load keys=1000000 min=1024 max=4096 rounds=3 fio_size=4G
bins=()
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --min-size) min=$2; shift 2 ;;
        --max-size) max=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --fio-size) fio_size=$2; shift 2 ;;
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

# One timed load: prints "secs MB/s" (MB/s as nvkv reports it).
load_once() {
    local bin=$1; shift
    rm -rf "$dir/store"
    local t0 t1 out
    t0=$(date +%s.%N)
    out=$("$bin" load --path "$dir/store" --keys "$keys" --min-size "$min" \
        --max-size "$max" "$@" 2>&1 | tail -1)
    t1=$(date +%s.%N)
    local mib
    mib=$(sed -E 's/.* ([0-9.]+) MiB written.*/\1/' <<<"$out")
    awk -v a="$t0" -v b="$t1" -v m="$mib" 'BEGIN {s=b-a; printf "%.2f %.0f\n", s, m*1048576/s/1e6}'
    rm -rf "$dir/store"
}

declare -A secs mbs
fio_mbs=()
for r in $(seq 1 "$rounds"); do
    bw=$(fio --name=seq --rw=write --bs=1M --direct=1 --size="$fio_size" \
        --filename="$dir/fio" --output-format=json 2>/dev/null |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"]/1e6))')
    rm -f "$dir/fio"
    fio_mbs+=("$bw")
    echo "round $r: fio seq write 1M: $bw MB/s"
    for i in "${!bins[@]}"; do
        read -r s m < <(load_once "${bins[$i]}")
        secs[$i]+="$s "; mbs[$i]+="$m "
        echo "round $r: ${bins[$i]} load: $s s, $m MB/s"
    done
    read -r s m < <(load_once "${bins[0]}" --sparse)
    secs[sparse]+="$s "; mbs[sparse]+="$m "
    echo "round $r: ${bins[0]} load --sparse: $s s, $m MB/s"
done

fio_med=$(printf '%s\n' "${fio_mbs[@]}" | median)
echo
echo "medians of $rounds rounds ($keys keys, values $min-$max bytes):"
echo "  fio seq write 1M: $fio_med MB/s"
for k in "${!bins[@]}" sparse; do
    if [ "$k" = sparse ]; then name="${bins[0]} --sparse"; else name=${bins[$k]}; fi
    s=$(tr ' ' '\n' <<<"${secs[$k]}" | grep . | median)
    m=$(tr ' ' '\n' <<<"${mbs[$k]}" | grep . | median)
    awk -v n="$name" -v s="$s" -v m="$m" -v f="$fio_med" \
        'BEGIN {printf "  %s: %s s, %s MB/s = %.2f x fio\n", n, s, m, m/f}'
done
