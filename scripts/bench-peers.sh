#!/usr/bin/env bash
# nvkv beside its peers, in one run on one machine, with the same data set,
# value sizes and depths: Redis in memory (the ceiling of the network path),
# memcached with extstore on a file on the same disk (the flash peer), and
# fio's 4 KiB random reads of nvkv's data file (the device). Prints a table
# and writes SVG plots (latency CDF, throughput against depth), for the
# shape clients connect in (Q connections, one request each) and for the
# pipelined one.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/bench-peers.sh [options]

  --keys N          records of the data set (default 1000000)
  --min-size A      smallest value (default 1024)
  --max-size B      largest value (default 4096)
  --duration S      seconds per measurement (default 10)
  --depths "LIST"   total depths Q = connections x pipelined requests
                    (default "1 4 8 16 32")
  --shapes "LIST"   conns: Q connections with one request each (the way
                    Redis clients and web servers connect: the reference);
                    pipelined: Q/8 connections of 8 for Q >= 8 (1 x Q below)
                    (default "conns pipelined")
  --memc-mb M       memcached's item memory, -m (default 512)
  --memc-cache-mb C page cache memcached may keep of its extstore file
                    (default 128; see below)
  --dir DIR         stores, memcached's extstore file, results (default
                    /tmp/nvkv-peers; must be on the disk under test)
  --plots DIR       where the SVG plots go (default docs/img)
  -h, --help        this text

Every GET is checked against the value `nvkv load` wrote (`nvkv bench`
regenerates it); Redis and memcached are filled with the same keys and
values by `nvkv insert --fill`. memcached gets little memory (-m 512) so
that its values live in extstore. extstore reads its file through the page
cache: on a machine with RAM to spare its "flash" reads would be RAM reads.
So memcached runs in a memory cgroup of its own (cgroup v2 memory.max, or
v1 memory.limit_in_bytes) capped at its item memory plus C MiB of page
cache plus 64 MiB for itself, and the script prints, beside its extstore
hits, the bytes it read from the disk (/proc/PID/io read_bytes): the flash
path must show as disk reads. Without a memory cgroup it refuses to run
memcached's rows (and says why). nvkv runs with its default flags.
Installs redis-server, memcached, fio and gnuplot-nox with apt-get when
missing. Loopback only.
USAGE
}

keys=1000000 min=1024 max=4096 dur=10 depths="1 4 8 16 32" dir=/tmp/nvkv-peers plots=""
shapes="conns pipelined" memc_mb=512 memc_cache_mb=128
while [[ $# -gt 0 ]]; do
    case "$1" in
        --keys) keys=$2; shift 2 ;;
        --min-size) min=$2; shift 2 ;;
        --max-size) max=$2; shift 2 ;;
        --duration) dur=$2; shift 2 ;;
        --depths) depths=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --plots) plots=$2; shift 2 ;;
        --shapes) shapes=$2; shift 2 ;;
        --memc-mb) memc_mb=$2; shift 2 ;;
        --memc-cache-mb) memc_cache_mb=$2; shift 2 ;;
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
memcg=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n "$memcg" ]] && rmdir "$memcg" 2>/dev/null || true
}
trap cleanup EXIT

# A memory cgroup for memcached, under this shell's own: cgroup v2, else
# the v1 memory hierarchy. Sets $memcg and $memcg_limit_file.
memcg_limit=$(( (memc_mb + memc_cache_mb + 64) * 1048576 ))
own_v2=$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
own_v1=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)
for cand in "/sys/fs/cgroup${own_v2}" "/sys/fs/cgroup/unified${own_v2}" "/sys/fs/cgroup/memory${own_v1}"; do
    [[ -n "$own_v2$own_v1" && -d "$cand" ]] || continue
    if [[ -f "$cand/memory.max" || -f "$cand/cgroup.subtree_control" && $cand != */memory/* ]]; then
        grep -qw memory "$cand/cgroup.controllers" 2>/dev/null || continue
        mkdir -p "$cand/nvkv-peers-memcached" 2>/dev/null || continue
        [[ -f "$cand/nvkv-peers-memcached/memory.max" ]] || { rmdir "$cand/nvkv-peers-memcached"; continue; }
        memcg=$cand/nvkv-peers-memcached memcg_limit_file=memory.max
        break
    elif [[ -f "$cand/memory.limit_in_bytes" ]]; then
        mkdir -p "$cand/nvkv-peers-memcached" 2>/dev/null || continue
        memcg=$cand/nvkv-peers-memcached memcg_limit_file=memory.limit_in_bytes
        break
    fi
done
if [[ -n "$memcg" ]]; then
    echo "$memcg_limit" > "$memcg/$memcg_limit_file"
else
    echo "memcached: no memory cgroup can be made here (needs root and cgroup v2's memory controller or v1's memory hierarchy): its rows are skipped, since uncapped its extstore reads would come from RAM" >&2
fi

echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem/ {print $2}') GiB, $(df -h "$dir" | awk 'NR==2 {print $1}') for $dir"
echo "data: $keys keys, values $min-$max bytes; $dur s per measurement"
"$nvkv" load --path "$dir/nvkv" --keys "$keys" --min-size "$min" --max-size "$max" --force 2>/dev/null
"$nvkv" serve --path "$dir/nvkv" --listen "$NVKV" > "$dir/nvkv.log" 2>&1 &
pids+=($!)
redis-server --bind 127.0.0.1 --port "${REDIS##*:}" --save '' --appendonly no --protected-mode no \
    --io-threads 1 > "$dir/redis.log" 2>&1 &
pids+=($!)
memc_pid=""
if [[ -n "$memcg" ]]; then
    # The shell joins the cgroup and becomes memcached, so every page it
    # faults in, its extstore file's cache included, is charged there.
    sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$memcg" \
        memcached -l 127.0.0.1 -p "${MEMC##*:}" -U 0 -t 2 -c 4096 -m "$memc_mb" -u root \
        -o "ext_path=$dir/extstore:$(( keys * (max + 200) / 1000000000 + 2 ))G,ext_wbuf_size=16,ext_item_age=0,ext_threads=2" \
        > "$dir/memcached.log" 2>&1 &
    memc_pid=$!
    pids+=("$memc_pid")
    echo "memcached: -m $memc_mb, in memory cgroup $memcg capped at $(( memcg_limit >> 20 )) MiB (its items, $memc_cache_mb MiB of page cache, 64 MiB for itself)"
fi
for _ in $(seq 100); do
    grep -q "nvkv listening" "$dir/nvkv.log" && redis-cli -p "${REDIS##*:}" ping >/dev/null 2>&1 &&
        { [[ -z "$memc_pid" ]] || (exec 3<>/dev/tcp/127.0.0.1/"${MEMC##*:}") 2>/dev/null; } && break
    sleep 0.1
done
echo "nvkv: $(grep -m1 "engine=" "$dir/nvkv.log" | sed "s/\x1b\[[0-9;]*m//g")"

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
if [[ -n "$memc_pid" ]]; then
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
fi
# The file caches start cold for every system (nvkv and fio read with
# O_DIRECT; memcached's cache stays under its cgroup's cap).
sync
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "note: could not drop the page cache (not root?)" >&2

# fio reads the hole-free run of nvkv's data file after its first MiB.
read -r fio_size <<<"$(python3 - "$dir/nvkv/data.nvkv" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
run = os.lseek(fd, 1 << 20, os.SEEK_HOLE) - (1 << 20)
print(run // 4096 * 4096)
PY
)"

bench() { # name addr protocol q shape
    local c k
    if [[ $5 == conns ]]; then c=$4 k=1; else c=$(( $4 >= 8 ? $4 / 8 : 1 )) k=$(( $4 / c )); fi
    "$nvkv" bench --addr "$2" --protocol "$3" --keys "$keys" --seed 0 --min-size "$min" --max-size "$max" \
        --clients "$c" --inflight "$k" --duration "$dur" --json > "$res/$1-$5-$4.json"
}
disk_read() { awk '/^read_bytes/ {print $2}' "/proc/$memc_pid/io"; }
for q in $depths; do
    for shape in $shapes; do
        bench nvkv "$NVKV" resp "$q" "$shape"
        bench redis "$REDIS" resp "$q" "$shape"
        if [[ -n "$memc_pid" ]]; then
            read -r before <<<"$(memc_stat extstore_objects_read)"
            b0=$(disk_read)
            bench memcached "$MEMC" memcache "$q" "$shape"
            read -r after <<<"$(memc_stat extstore_objects_read)"
            echo "$(( after - before )) $(( $(disk_read) - b0 ))" > "$res/memcached-$shape-$q.extstore_reads"
        fi
    done
    fio --name=r --filename="$dir/nvkv/data.nvkv" --offset=1M --size="$fio_size" --rw=randread --bs=4k \
        --direct=1 --ioengine=io_uring --iodepth="$q" --runtime="$dur" --time_based --output-format=json \
        --percentile_list=1:5:10:20:30:40:50:60:70:80:90:95:98:99:99.5:99.9:99.95:99.99:100 \
        > "$res/fio-$q.json" 2>/dev/null
done

python3 - "$res" "$depths" "$shapes" "${memc_pid:+1}" <<'PY'
import json, os, sys
res, depths, shapes = sys.argv[1], [int(q) for q in sys.argv[2].split()], sys.argv[3].split()
names = [("nvkv", "nvkv (default flags)"), ("redis", "Redis 7 (in memory)")]
if sys.argv[4]:
    names.append(("memcached", "memcached + extstore (page cache capped)"))
names.append(("fio", "fio io_uring 4 KiB"))
shape_text = {"conns": "Q connections x 1 request",
              "pipelined": "Q/8 connections x 8 pipelined (1 x Q below 8)"}
def load(name, shape, q):
    if name == "fio":
        d = json.load(open(f"{res}/fio-{q}.json"))
    else:
        d = json.load(open(f"{res}/{name}-{shape}-{q}.json"))
    if name != "fio":
        return d["ops_per_sec"], d["p50_us"], d["p99_us"], d["errors"], d["misses"], d["percentiles"]
    r = d["jobs"][0]["read"]
    pct = r["clat_ns"]["percentile"]
    pts = sorted((float(k), v / 1000) for k, v in pct.items())
    return r["iops"], pct["50.000000"] / 1000, pct["99.000000"] / 1000, 0, 0, pts
for shape in shapes:
    rows = {(n, q): load(n, shape, q) for n, _ in names for q in depths}
    print()
    print(f"{shape_text[shape]}:")
    print()
    print("| Q | system | ops/s | p50 us | p99 us | errors | misses | ops/s vs fio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for q in depths:
        base = rows[("fio", q)][0]
        for n, label in names:
            ops, p50, p99, err, miss, _ = rows[(n, q)]
            extra = ""
            if n == "memcached":
                hits, disk = open(f"{res}/memcached-{shape}-{q}.extstore_reads").read().split()
                extra = f" ({int(hits):,} extstore reads, {int(disk) / 1048576:,.0f} MiB from disk)"
            print(f"| {q} | {label}{extra} | {ops:,.0f} | {p50:,.0f} | {p99:,.0f} | {err} | {miss} | {ops / base:.2f} |")
    with open(f"{res}/throughput-{shape}.tsv", "w") as f:
        f.write("Q\t" + "\t".join(l for _, l in names) + "\n")
        for q in depths:
            f.write(f"{q}\t" + "\t".join(f"{rows[(n, q)][0]:.0f}" for n, _ in names) + "\n")
    for q in (depths[0], depths[-1]):
        for n, _ in names:
            with open(f"{res}/cdf-{shape}-{n}-{q}.tsv", "w") as f:
                for p, us in rows[(n, q)][5]:
                    f.write(f"{max(us, 1):.1f}\t{p}\n")
PY

qmin=${depths%% *} qmax=${depths##* }
cols=$(( $(head -1 "$res/throughput-${shapes%% *}.tsv" | awk -F'\t' '{print NF}') ))
out=()
for shape in $shapes; do
    suffix=""
    [[ $shape == conns ]] || suffix="-$shape"
    if [[ $shape == conns ]]; then
        what="Q connections, one GET each"
    else
        what="Q/8 connections of 8 pipelined GETs"
    fi
    memc_cdf=""
    [[ -n "$memc_pid" ]] && memc_cdf=", sprintf(\"$res/cdf-$shape-memcached-%s.tsv\", q) using 1:2 with lines lw 2 title \"memcached + extstore (page cache capped)\""
    gnuplot <<GP
set terminal svg size 800,480 dynamic font "sans,12" background rgb "white"
set datafile separator "\t"
set key top left
set grid
set output "$plots/peers-throughput$suffix.svg"
set title "Throughput against depth: $what (4 KiB-class GETs, loopback, $(nproc) cores)"
set xlabel "total depth Q"
set ylabel "operations per second"
set logscale x 2
plot for [i=2:$cols] "$res/throughput-$shape.tsv" using 1:i with linespoints lw 2 title columnheader(i)
unset logscale
set logscale x 10
set key bottom right
set ylabel "percentile"
set xlabel "latency (microseconds, log scale)"
set yrange [0:100]
do for [q in "$qmin $qmax"] {
  set output sprintf("$plots/peers-latency-cdf-q%s$suffix.svg", q)
  set title sprintf("Latency CDF at Q = %s: $what", q)
  plot sprintf("$res/cdf-$shape-nvkv-%s.tsv", q) using 1:2 with lines lw 2 title "nvkv", \
       sprintf("$res/cdf-$shape-redis-%s.tsv", q) using 1:2 with lines lw 2 title "Redis (memory)" $memc_cdf, \
       sprintf("$res/cdf-$shape-fio-%s.tsv", q) using 1:2 with lines lw 2 dt 2 title "fio io_uring (device only)"
}
GP
    out+=("$plots/peers-throughput$suffix.svg" "$plots/peers-latency-cdf-q$qmin$suffix.svg" "$plots/peers-latency-cdf-q$qmax$suffix.svg")
done
echo
echo "plots: ${out[*]}"
