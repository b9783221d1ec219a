#!/usr/bin/env bash
# nvkv beside its peers, in one run on one machine, with the same data set,
# value sizes and depths: Redis in memory (the ceiling of the network path),
# memcached with extstore on a file on the same disk (the flash peer), and
# fio's 4 KiB random reads of nvkv's data file (the device). Prints a table
# and writes SVG plots (latency CDF, throughput against depth).
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/bench-peers.sh [options]

  --keys N          records of the data set (default 1000000)
  --min-size A      smallest value (default 1024)
  --max-size B      largest value (default 4096)
  --duration S      seconds per measurement (default 10)
  --depths "LIST"   total depths Q = connections x pipelined requests
                    (default "1 4 8 16 32"; Q >= 8 uses Q/8 connections of 8)
  --dir DIR         stores, memcached's extstore file, results (default
                    /tmp/nvkv-peers; must be on the disk under test)
  --plots DIR       where the SVG plots go (default docs/img)
  -h, --help        this text

Every GET is checked against the value `nvkv load` wrote (`nvkv bench`
regenerates it); Redis and memcached are filled with the same keys and
values by `nvkv insert --fill`. memcached gets little memory (-m 512) so
that its values live in extstore; the script prints its extstore counters
to show that the flash path served the reads. Installs redis-server,
memcached, fio and gnuplot-nox with apt-get when missing. Loopback only.
USAGE
}

keys=1000000 min=1024 max=4096 dur=10 depths="1 4 8 16 32" dir=/tmp/nvkv-peers plots=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --keys) keys=$2; shift 2 ;;
        --min-size) min=$2; shift 2 ;;
        --max-size) max=$2; shift 2 ;;
        --duration) dur=$2; shift 2 ;;
        --depths) depths=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --plots) plots=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
plots=${plots:-$root/docs/img}
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v memcached >/dev/null || need+=(memcached)
command -v fio >/dev/null || need+=(fio)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
if [[ ${#need[@]} -gt 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
(cd "$root" && cargo build --release -q)
nvkv=$root/target/release/nvkv
NVKV=127.0.0.1:12860 REDIS=127.0.0.1:12879 MEMC=127.0.0.1:12880

mkdir -p "$dir" "$plots"
res=$dir/results
rm -rf "$res" "$dir/extstore"
mkdir -p "$res"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem/ {print $2}') GiB, $(df -h "$dir" | awk 'NR==2 {print $1}') for $dir"
echo "data: $keys keys, values $min-$max bytes; $dur s per measurement"
"$nvkv" load --path "$dir/nvkv" --keys "$keys" --min-size "$min" --max-size "$max" --force 2>/dev/null
"$nvkv" --log-level warn serve --path "$dir/nvkv" --listen "$NVKV" --tcp-threads 2 > "$dir/nvkv.log" 2>&1 &
pids+=($!)
redis-server --bind 127.0.0.1 --port "${REDIS##*:}" --save '' --appendonly no --protected-mode no \
    --io-threads 1 > "$dir/redis.log" 2>&1 &
pids+=($!)
memcached -l 127.0.0.1 -p "${MEMC##*:}" -U 0 -t 2 -c 4096 -m 512 -u root \
    -o "ext_path=$dir/extstore:$(( keys * (max + 200) / 1000000000 + 2 ))G,ext_wbuf_size=16,ext_item_age=0,ext_threads=2" \
    > "$dir/memcached.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    grep -q "nvkv listening" "$dir/nvkv.log" && redis-cli -p "${REDIS##*:}" ping >/dev/null 2>&1 &&
        (exec 3<>/dev/tcp/127.0.0.1/"${MEMC##*:}") 2>/dev/null && break
    sleep 0.1
done
fill() { # addr protocol clients inflight
    "$nvkv" insert --fill --addr "$1" --protocol "$2" --keys "$keys" --seed 0 --min-size "$min" \
        --max-size "$max" --clients "$3" --inflight "$4" --duration 3600 --json
}
memc_stat() { # name...
    exec 3<>/dev/tcp/127.0.0.1/"${MEMC##*:}"
    printf 'stats\r\nquit\r\n' >&3
    local out
    out=$(timeout 2 cat <&3 || true)
    exec 3<&-
    for n in "$@"; do echo "$out" | tr -d '\r' | awk -v n="$n" '$2 == n {print $3}'; done
}
echo "filling Redis:     $(fill "$REDIS" resp 4 16 | python3 -c 'import json,sys; j=json.load(sys.stdin); print("%d SET/s, %d errors" % (j["ops_per_sec"], j["errors"]))')"
# memcached flushes to extstore in the background: a gentler fill keeps
# items from being evicted before they are written out.
echo "filling memcached: $(fill "$MEMC" memcache 1 1 | python3 -c 'import json,sys; j=json.load(sys.stdin); print("%d SET/s, %d errors" % (j["ops_per_sec"], j["errors"]))')"
for _ in $(seq 120); do
    written=$(memc_stat extstore_objects_written)
    (( ${written:-0} >= keys * 95 / 100 )) && break
    sleep 0.5
done
read -r items evictions written <<<"$(memc_stat curr_items evictions extstore_objects_written | xargs)"
echo "memcached: $items items, $evictions evictions, $written written to extstore"
if (( evictions > 0 )); then
    echo "warning: memcached evicted $evictions items before extstore took them: its GETs will miss those" >&2
fi

# fio reads the hole-free run of nvkv's data file after its first MiB.
read -r fio_size <<<"$(python3 - "$dir/nvkv/data.nvkv" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
run = os.lseek(fd, 1 << 20, os.SEEK_HOLE) - (1 << 20)
print(run // 4096 * 4096)
PY
)"

bench() { # name addr protocol q
    local c=$(( $4 >= 8 ? $4 / 8 : 1 ))
    local k=$(( $4 / c ))
    "$nvkv" bench --addr "$2" --protocol "$3" --keys "$keys" --seed 0 --min-size "$min" --max-size "$max" \
        --clients "$c" --inflight "$k" --duration "$dur" --json > "$res/$1-$4.json"
}
for q in $depths; do
    bench nvkv "$NVKV" resp "$q"
    bench redis "$REDIS" resp "$q"
    read -r before <<<"$(memc_stat extstore_objects_read)"
    bench memcached "$MEMC" memcache "$q"
    read -r after <<<"$(memc_stat extstore_objects_read)"
    echo "$(( after - before ))" > "$res/memcached-$q.extstore_reads"
    fio --name=r --filename="$dir/nvkv/data.nvkv" --offset=1M --size="$fio_size" --rw=randread --bs=4k \
        --direct=1 --ioengine=io_uring --iodepth="$q" --runtime="$dur" --time_based --output-format=json \
        --percentile_list=1:5:10:20:30:40:50:60:70:80:90:95:98:99:99.5:99.9:99.95:99.99:100 \
        > "$res/fio-$q.json" 2>/dev/null
done

python3 - "$res" "$depths" <<'PY'
import json, os, sys
res, depths = sys.argv[1], [int(q) for q in sys.argv[2].split()]
names = [("nvkv", "nvkv (uring, GETs)"), ("redis", "Redis 7 (in memory)"),
         ("memcached", "memcached + extstore"), ("fio", "fio io_uring 4 KiB")]
def load(name, q):
    d = json.load(open(f"{res}/{name}-{q}.json"))
    if name != "fio":
        return d["ops_per_sec"], d["p50_us"], d["p99_us"], d["errors"], d["misses"], d["percentiles"]
    r = d["jobs"][0]["read"]
    pct = r["clat_ns"]["percentile"]
    pts = sorted((float(k), v / 1000) for k, v in pct.items())
    return r["iops"], pct["50.000000"] / 1000, pct["99.000000"] / 1000, 0, 0, pts
rows = {(n, q): load(n, q) for n, _ in names for q in depths}
print()
print("| Q | system | ops/s | p50 us | p99 us | errors | misses | ops/s vs nvkv |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for q in depths:
    base = rows[("nvkv", q)][0]
    for n, label in names:
        ops, p50, p99, err, miss, _ = rows[(n, q)]
        extra = ""
        if n == "memcached":
            extra = " (%s extstore reads)" % open(f"{res}/memcached-{q}.extstore_reads").read().strip()
        print(f"| {q} | {label}{extra} | {ops:,.0f} | {p50:,.0f} | {p99:,.0f} | {err} | {miss} | {ops / base:.2f} |")
with open(f"{res}/throughput.tsv", "w") as f:
    f.write("Q\t" + "\t".join(l for _, l in names) + "\n")
    for q in depths:
        f.write(f"{q}\t" + "\t".join(f"{rows[(n, q)][0]:.0f}" for n, _ in names) + "\n")
for q in (depths[0], depths[-1]):
    for n, _ in names:
        with open(f"{res}/cdf-{n}-{q}.tsv", "w") as f:
            for p, us in rows[(n, q)][5]:
                f.write(f"{max(us, 1):.1f}\t{p}\n")
PY

qmin=${depths%% *} qmax=${depths##* }
gnuplot <<GP
set terminal svg size 800,480 dynamic font "sans,12" background rgb "white"
set datafile separator "\t"
set key top left
set grid
set output "$plots/peers-throughput.svg"
set title "Throughput against depth (4 KiB-class GETs, loopback, $(nproc) cores)"
set xlabel "total depth Q (connections x pipelined requests)"
set ylabel "operations per second"
set logscale x 2
plot for [i=2:5] "$res/throughput.tsv" using 1:i with linespoints lw 2 title columnheader(i)
unset logscale
set logscale x 10
set key bottom right
set ylabel "percentile"
set xlabel "latency (microseconds, log scale)"
set yrange [0:100]
do for [q in "$qmin $qmax"] {
  set output sprintf("$plots/peers-latency-cdf-q%s.svg", q)
  set title sprintf("Latency CDF at Q = %s", q)
  plot sprintf("$res/cdf-nvkv-%s.tsv", q) using 1:2 with lines lw 2 title "nvkv", \
       sprintf("$res/cdf-redis-%s.tsv", q) using 1:2 with lines lw 2 title "Redis (memory)", \
       sprintf("$res/cdf-memcached-%s.tsv", q) using 1:2 with lines lw 2 title "memcached + extstore", \
       sprintf("$res/cdf-fio-%s.tsv", q) using 1:2 with lines lw 2 dt 2 title "fio io_uring (device only)"
}
GP
echo
echo "plots: $plots/peers-throughput.svg, $plots/peers-latency-cdf-q$qmin.svg, $plots/peers-latency-cdf-q$qmax.svg"
