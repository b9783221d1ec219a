#!/usr/bin/env bash
# bench-vs-fio.sh - measure nvkv against the raw device (fio) and Redis.
#
# One run: print the machine, load a store (or reuse one loaded with the same
# parameters), measure `nvkv serve` + `nvkv bench` for every (depth, engine),
# each followed by fio random 4 KiB reads on the same region of the same data
# file at the same depth with the matching fio engine (uring: io_uring, aio:
# libaio), then Debian's redis-server GET latency at 1 and 32 clients, then
# the CPU each spends per GET at one offered rate (nvkv and Redis serving
# the same values to the same client, `nvkv bench --rate`; fio's CPU per
# read at that rate from its own usr/sys figures), and print a table plus
# the QD1 latency budget, the Q=32 throughput targets (each engine against
# fio with its own interface: uring against io_uring, aio against libaio)
# and the CPU target.
# Every measurement runs alone, one after another, for the same --duration.
#
# Run with --help for the options.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

# ---------------------------------------------------------------- defaults --
DIR=/tmp/nvkv-bench
KEYS=1000000
MIN_SIZE=1024
MAX_SIZE=4096
SEED=0
CAPACITY=""
DURATION=20
PORT=12399
REDIS_PORT=""                 # default: PORT + 1
ENGINES="uring aio"
DEPTHS="1 32"
INFLIGHT=1
CPU_RATE=20000
CPU_CLIENTS=32
RELOAD=0
CLEAN=0
MARKDOWN=0
BIN=""
LOCAL=1
CLIENT=""
SERVE_ARGS=""
FIO_ARGS=""
START_TIMEOUT=120             # seconds to wait for "nvkv listening on"
STOP_TIMEOUT=30               # seconds to wait for a server after SIGTERM
LOAD_TIMEOUT=3600

usage() {
    cat <<EOF
Usage: scripts/bench-vs-fio.sh [options]

Compares nvkv GET throughput and latency with fio random reads of the same
data file region, and with redis-server GET latency, in one run.

Store:
  --dir DIR            store directory (default $DIR); results go to
                       DIR/results.jsonl (overwritten each run)
  --keys N             records to load (default $KEYS)
  --min-size A         smallest value in bytes (default $MIN_SIZE)
  --max-size B         largest value in bytes (default $MAX_SIZE)
  --seed S             seed of keys and values (default $SEED)
  --capacity BYTES     passed to 'nvkv load --capacity' (default: nvkv's)
  --reload             load again even if DIR holds a store loaded with the
                       same parameters (they are kept in DIR/bench-params)
  --clean              remove the store (data file, index, params) at the end;
                       DIR/results.jsonl is kept

Measurements:
  --duration SECS      length of every measurement (default $DURATION)
  --depths "Q ..."     total requests in flight (default "$DEPTHS")
  --engines "E ..."    nvkv engines, uring and/or aio (default "$ENGINES")
  --inflight K         GETs in flight per connection; the bench then uses
                       Q/K connections (default $INFLIGHT; K=min(K,Q))
  --cpu-rate OPS       GETs per second offered (open loop) to nvkv and to Redis
                       holding the same values, for server CPU per GET
                       (INFO used_cpu_sys + used_cpu_user before and after),
                       and fio reads per second for its CPU per read
                       (default $CPU_RATE; 0 skips this step); nvkv runs the
                       first of --engines, fio its match (io_uring, libaio)
  --cpu-clients C      connections of that step, one GET in flight each
                       (default $CPU_CLIENTS); fio runs at depth C
  --port P             nvkv port on 127.0.0.1 (default $PORT)
  --redis-port P       redis-server port on 127.0.0.1 (default: --port + 1)
  --serve-args "..."   extra flags for 'nvkv serve' (e.g. "--io-threads 1
                       --tcp-threads 1 --poll busy")
  --fio-args "..."     extra flags for every fio run
  --no-local           skip 'nvkv bench --local' (the store and engine alone,
                       in one process, no sockets), run by default after each
                       nvkv measurement with the same engine and shape

Output and tools:
  --bin PATH           nvkv binary (default target/release/nvkv in the repo,
                       built with 'cargo build --release' when missing)
  --client PATH        nvkv binary that runs 'nvkv bench' (default: --bin; give
                       one build as the client to compare servers of others)
  --markdown           also print the table as markdown
  -h, --help           this text

Installs fio, redis-server and redis-tools with apt-get when missing.
Exit status: 0 when every step ran (even when a target FAILs: this is a
measurement); 1 when a step broke (a server did not start, a command failed);
2 when everything ran but nvkv reported errors or misses, or a server did not
shut down cleanly on SIGTERM.
EOF
}

# ----------------------------------------------------------------- helpers --
log()  { printf '%s\n' "$*"; }
step() { printf '\n=== %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
loud() {
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf '!!! %s\n' "$@" >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
}
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

need_arg() { [[ $# -ge 2 ]] || die "$1 needs a value (see --help)"; }

parse_args() {
    while [[ $# -gt 0 ]]; do
        case $1 in
            --dir)        need_arg "$@"; DIR=$2; shift 2 ;;
            --keys)       need_arg "$@"; KEYS=$2; shift 2 ;;
            --min-size)   need_arg "$@"; MIN_SIZE=$2; shift 2 ;;
            --max-size)   need_arg "$@"; MAX_SIZE=$2; shift 2 ;;
            --seed)       need_arg "$@"; SEED=$2; shift 2 ;;
            --capacity)   need_arg "$@"; CAPACITY=$2; shift 2 ;;
            --duration)   need_arg "$@"; DURATION=$2; shift 2 ;;
            --port)       need_arg "$@"; PORT=$2; shift 2 ;;
            --redis-port) need_arg "$@"; REDIS_PORT=$2; shift 2 ;;
            --engines)    need_arg "$@"; ENGINES=$2; shift 2 ;;
            --depths)     need_arg "$@"; DEPTHS=$2; shift 2 ;;
            --inflight)   need_arg "$@"; INFLIGHT=$2; shift 2 ;;
            --cpu-rate)   need_arg "$@"; CPU_RATE=$2; shift 2 ;;
            --no-local)   LOCAL=0; shift ;;
            --cpu-clients) need_arg "$@"; CPU_CLIENTS=$2; shift 2 ;;
            --serve-args) need_arg "$@"; SERVE_ARGS=$2; shift 2 ;;
            --fio-args)   need_arg "$@"; FIO_ARGS=$2; shift 2 ;;
            --bin)        need_arg "$@"; BIN=$2; shift 2 ;;
            --client)     need_arg "$@"; CLIENT=$2; shift 2 ;;
            --reload)     RELOAD=1; shift ;;
            --clean)      CLEAN=1; shift ;;
            --markdown)   MARKDOWN=1; shift ;;
            -h|--help)    usage; exit 0 ;;
            *)            die "unknown option '$1' (see --help)" ;;
        esac
    done

    local v
    for v in KEYS MIN_SIZE MAX_SIZE SEED DURATION PORT INFLIGHT CPU_RATE CPU_CLIENTS; do
        is_uint "${!v}" || die "--$(tr '_A-Z' '-a-z' <<<"$v") must be a non-negative integer, not '${!v}'"
    done
    [[ $KEYS -ge 1 && $DURATION -ge 1 && $INFLIGHT -ge 1 ]] \
        || die "--keys, --duration and --inflight must be at least 1"
    [[ $MIN_SIZE -ge 1 && $MIN_SIZE -le $MAX_SIZE ]] || die "need 1 <= --min-size <= --max-size"
    REDIS_PORT=${REDIS_PORT:-$((PORT + 1))}
    is_uint "$REDIS_PORT" || die "--redis-port must be a port number"
    [[ $REDIS_PORT -ne $PORT ]] || die "--redis-port must differ from --port"
    [[ -n ${DEPTHS// } && -n ${ENGINES// } ]] || die "--depths and --engines must not be empty"
    local q e
    for q in $DEPTHS; do
        if ! is_uint "$q" || [[ $q -lt 1 ]]; then die "--depths: '$q' is not a positive integer"; fi
        local k=$((INFLIGHT < q ? INFLIGHT : q))
        ((q % k == 0)) || die "depth $q is not a multiple of --inflight $INFLIGHT"
    done
    for e in $ENGINES; do
        [[ $e == uring || $e == aio ]] || die "--engines: unknown engine '$e' (uring or aio)"
    done
    [[ $DIR == /* ]] || DIR="$PWD/$DIR"
    DIR=${DIR%/}
    [[ -n $DIR ]] || die "--dir must not be /"
}

# Installs the Debian packages of missing commands (only those).
ensure_tools() {
    local -A pkg_of=([fio]=fio [redis-server]=redis-server [redis-benchmark]=redis-tools
                     [redis-cli]=redis-tools [python3]=python3 [timeout]=coreutils
                     [flock]=util-linux)
    local cmd missing=()
    for cmd in "${!pkg_of[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_of[$cmd]}")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing missing packages: ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} by hand"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    DEBIAN_FRONTEND=noninteractive timeout 900 "${sudo[@]}" apt-get install -y "${missing[@]}" \
        || { timeout 600 "${sudo[@]}" apt-get update \
             && DEBIAN_FRONTEND=noninteractive timeout 900 "${sudo[@]}" apt-get install -y "${missing[@]}"; } \
        || die "apt-get install ${missing[*]} failed"
}

# Finds (or builds) the nvkv binary.
ensure_bin() {
    if [[ -z $BIN ]]; then
        BIN=$REPO/target/release/nvkv
        if [[ ! -x $BIN ]]; then
            log "building $BIN (cargo build --release)"
            (cd "$REPO" && timeout 3600 cargo build --release) || die "cargo build --release failed"
        fi
    fi
    [[ $BIN == /* ]] || BIN="$PWD/$BIN"
    [[ -x $BIN ]] || die "nvkv binary not found: $BIN"
    CLIENT=${CLIENT:-$BIN}
    [[ $CLIENT == /* ]] || CLIENT="$PWD/$CLIENT"
    [[ -x $CLIENT ]] || die "nvkv binary not found: $CLIENT"
    if [[ -d $REPO/src && -n $(find "$REPO/src" -name '*.rs' -newer "$BIN" -print -quit 2>/dev/null) ]]; then
        warn "$BIN is older than the sources in $REPO/src (run cargo build --release?)"
    fi
}

# ----------------------------------------------------- processes & cleanup --
WORK=""
HAVE_LOCK=0
NVKV_PID=""
REDIS_PID=""
FG_PID=""
FAILURES=0     # errors/misses or unclean shutdowns: exit 2 at the end

# run_fg CMD...: runs a long command in the background and waits for it.
# Bash runs a trap only after a foreground command ends, but `wait` returns
# at once on a signal, so Ctrl-C / SIGTERM stop the run without waiting for a
# measurement to finish (cleanup then stops the command).
run_fg() {
    "$@" 9>&- &
    FG_PID=$!
    local rc=0
    wait "$FG_PID" || rc=$?
    FG_PID=""
    return "$rc"
}

# Fails when something already listens on 127.0.0.1:$1 (we would measure it).
check_port_free() {
    if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; then
        die "port $1 on 127.0.0.1 is already in use (choose another with --port / --redis-port)"
    fi
}

# stop_proc PID NAME: SIGTERM, wait up to STOP_TIMEOUT s, and return the exit
# status (0 = clean). The servers run under `timeout --foreground`, which
# forwards the signal to them once and returns their status (without
# --foreground it also signals its whole process group). A server that does
# not stop gets a second SIGTERM (nvkv then exits at once), then SIGKILL (it
# and its child).
stop_proc() {
    local pid=$1 name=$2 i rc=0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || rc=$?; return "$rc"; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        loud "$name (pid $pid) did not stop within ${STOP_TIMEOUT}s of SIGTERM; sending SIGTERM again, then SIGKILL"
        kill -TERM "$pid" 2>/dev/null || true
        sleep 3
        if kill -0 "$pid" 2>/dev/null; then
            local child
            for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do kill -KILL "$child" 2>/dev/null || true; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
        return 124
    fi
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}

cleanup() {
    local rc=$?
    set +e
    if [[ -n $FG_PID ]]; then kill -TERM "$FG_PID" 2>/dev/null; wait "$FG_PID" 2>/dev/null; fi
    if [[ -n $NVKV_PID ]]; then stop_proc "$NVKV_PID" "nvkv serve"; NVKV_PID=""; fi
    if [[ -n $REDIS_PID ]]; then stop_proc "$REDIS_PID" "redis-server"; REDIS_PID=""; fi
    [[ -n $WORK && -d $WORK ]] && rm -rf -- "$WORK"
    if [[ $HAVE_LOCK -eq 1 ]]; then
        if [[ $CLEAN -eq 1 ]]; then
            log "--clean: removing the store in $DIR (keeping results.jsonl)"
            rm -rf -- "$DIR/data.nvkv" "$DIR/index" "$DIR/nvkv.lock" "$DIR/bench-params"
        fi
        rm -f -- "$DIR/.bench-vs-fio.lock"
    fi
    exit "$rc"
}

# ------------------------------------------------------------------ python --
# One helper for all JSON/CSV work: nvkv and fio JSON, redis-benchmark CSV,
# the fio region of the data file, and the final table.
write_helper() {
    cat >"$WORK/helper.py" <<'PY'
import csv, json, math, os, sys

def extras(args):
    out = {}
    for a in args:
        k, _, v = a.partition("=")
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                pass
        out[k] = v
    return out

def last_json(path):
    with open(path) as f:
        text = f.read()
    lines = [l for l in text.splitlines() if l.strip().startswith("{")]
    if lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    return json.loads(text[text.index("{"):])     # fio: multi-line JSON

def cmd_nvkv(raw, *kv):
    d = dict(extras(kv)); d.update(last_json(raw))
    print(json.dumps(d))

def cmd_fio(raw, *kv):
    job = last_json(raw)["jobs"][0]
    r = job["read"]
    if job.get("error"):
        sys.exit("fio job error %s" % job["error"])
    def pct(sec, p):
        v = r.get(sec, {}).get("percentile", {}).get(p)
        return None if v is None else v / 1000.0
    d = extras(kv)
    d.update({
        "ops_per_sec": r["iops"], "ios": r["total_ios"], "bw_bytes": r["bw_bytes"],
        "lat_mean_us": r["lat_ns"]["mean"] / 1000.0,
        "lat_p50_us": pct("lat_ns", "50.000000"), "lat_p90_us": pct("lat_ns", "90.000000"),
        "lat_p99_us": pct("lat_ns", "99.000000"), "lat_p999_us": pct("lat_ns", "99.900000"),
        "lat_max_us": r["lat_ns"]["max"] / 1000.0,
        "clat_mean_us": r["clat_ns"]["mean"] / 1000.0,
        "clat_p50_us": pct("clat_ns", "50.000000"), "clat_p99_us": pct("clat_ns", "99.000000"),
        "errors": job.get("error", 0),
    })
    print(json.dumps(d))

def redis_row(path):
    """The GET row of `redis-benchmark --csv` as a dict (column names by header)."""
    with open(path) as f:
        rows = list(csv.reader(l for l in f if l.startswith('"')))
    head = rows[0]
    for row in rows[1:]:
        if row and row[0].upper().startswith("GET"):
            return dict(zip(head, row))
    sys.exit("no GET row in " + path)

def cmd_redis_rps(path):
    print(int(float(redis_row(path)["rps"])))

def cmd_redis(path, *kv):
    row = redis_row(path)
    def ms(col):
        return float(row[col]) * 1000.0 if col in row else None
    d = extras(kv)
    d.update({"ops_per_sec": float(row["rps"]), "mean_us": ms("avg_latency_ms"),
              "p50_us": ms("p50_latency_ms"), "p95_us": ms("p95_latency_ms"),
              "p99_us": ms("p99_latency_ms"), "max_us": ms("max_latency_ms")})
    print(json.dumps(d))

def cmd_fio_cpu(raw, *kv):
    """fio's CPU per read, from its own usr_cpu/sys_cpu (percent of the
    job's runtime)."""
    job = last_json(raw)["jobs"][0]
    runtime_us = job["job_runtime"] * 1000.0
    cpu_us = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * runtime_us
    ios = job["read"]["total_ios"]
    d = extras(kv)
    d.update({"ops": ios, "ops_per_sec": job["read"]["iops"], "cpu_us": cpu_us,
              "cpu_us_per_op": cpu_us / ios if ios else None,
              "p50_us": (job["read"].get("lat_ns", {}).get("percentile", {})
                         .get("50.000000") or 0) / 1000.0 or None})
    print(json.dumps(d))

def cmd_cpu_row(raw, cpu_before, cpu_after, *kv):
    """A server's CPU per GET: INFO used_cpu_sys + used_cpu_user (seconds)
    before and after an `nvkv bench --rate` run."""
    r = last_json(raw)
    cpu_us = (float(cpu_after) - float(cpu_before)) * 1e6
    d = extras(kv)
    d.update({"ops": r["ops"], "ops_per_sec": r["ops_per_sec"], "cpu_us": cpu_us,
              "cpu_us_per_op": cpu_us / r["ops"] if r["ops"] else None,
              "p50_us": r["p50_us"], "p99_us": r["p99_us"],
              "errors": r["errors"], "misses": r["misses"]})
    print(json.dumps(d))

def cmd_get(path, field):
    print(last_json(path)[field])

def cmd_brief(line):
    d = json.loads(line)
    if d["kind"] == "fio":
        print("%s IOPS, lat p50 %s us, p99 %s us; clat p50 %s us" % (fmt(d["ops_per_sec"]),
              fmt(d["lat_p50_us"], 1), fmt(d["lat_p99_us"], 1), fmt(d["clat_p50_us"], 1)))
    else:
        print("%s ops/s, p50 %s us, p99 %s us, errors %s, misses %s" % (fmt(d["ops_per_sec"]),
              fmt(d["p50_us"], 1), fmt(d["p99_us"], 1), d.get("errors", "-"), d.get("misses", "-")))

def cmd_region(path):
    """The region fio reads: from 1 MiB (the first segment) to the end of the
    data that follows it without a hole. The loader writes full segments one
    after another, then each shard's partly filled last segment; the tails of
    those segments are holes, and O_DIRECT reads of holes never reach the
    device, so fio would look faster there. We take the hole-free run when it
    covers >= 90% of the allocated bytes after 1 MiB (always, but for tiny
    stores), else the allocated size - 1 MiB as the brief suggested."""
    base = 1 << 20
    st = os.stat(path)
    alloc = st.st_blocks * 512 - base
    if alloc <= 0:
        sys.exit("%s: no data allocated after 1 MiB (not a regular file?)" % path)
    fd = os.open(path, os.O_RDONLY)
    try:
        run = os.lseek(fd, base, os.SEEK_HOLE) - base
    except OSError:
        run = alloc
    finally:
        os.close(fd)
    if run >= 0.9 * alloc:
        size, how = run, "hole-free data run from 1 MiB"
    else:
        size, how = alloc, "allocated bytes - 1 MiB"
    size = min(size, st.st_size - base) // 4096 * 4096
    print(size, alloc, run, how.replace(" ", "_"))

def fmt(v, digits=0):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{digits}f}"

def cmd_table(results, markdown):
    rows = [json.loads(l) for l in open(results) if l.strip()]
    nvkv = [r for r in rows if r["kind"] == "nvkv"]
    fio = {(r["q"], r["engine"]): r for r in rows if r["kind"] == "fio"}
    redis = {r["clients"]: r for r in rows if r["kind"] == "redis"}
    match = {"uring": "io_uring", "aio": "libaio"}

    local = {(r["q"], r["engine"]): r for r in rows if r["kind"] == "local"}
    head = ["Q", "engine", "CxK", "nvkv ops/s", "nvkv p50 us", "nvkv p99 us",
            "fio io_uring IOPS", "fio libaio IOPS", "nvkv/fio", "fio p50 (lat) us",
            "local ops/s", "local/fio"]
    body = []
    for r in nvkv:
        fu, fa = fio.get((r["q"], "io_uring")), fio.get((r["q"], "libaio"))
        fm = fio.get((r["q"], match.get(r["engine"])))
        ratio = r["ops_per_sec"] / fm["ops_per_sec"] if fm and fm["ops_per_sec"] else None
        lo = local.get((r["q"], r["engine"]))
        lratio = lo["ops_per_sec"] / fm["ops_per_sec"] if lo and fm and fm["ops_per_sec"] else None
        body.append([str(r["q"]), r["engine"], "%dx%d" % (r["clients"], r["inflight"]),
                     fmt(r["ops_per_sec"]), fmt(r["p50_us"]), fmt(r["p99_us"]),
                     fmt(fu and fu["ops_per_sec"]), fmt(fa and fa["ops_per_sec"]),
                     fmt(ratio, 2), fmt(fm and fm["lat_p50_us"], 1),
                     fmt(lo and lo["ops_per_sec"]), fmt(lratio, 2)])

    def plain(head, body, left=2):
        # the first `left` columns are labels (left-aligned), the rest numbers
        w = [max(len(c) for c in col) for col in zip(head, *body)]
        line = lambda cells: "  ".join(c.rjust(n) if i >= left else c.ljust(n)
                                      for i, (c, n) in enumerate(zip(cells, w)))
        print(line(head)); print("  ".join("-" * n for n in w))
        for b in body:
            print(line(b))

    def md(head, body, left=2):
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" if i < left else "---:" for i in range(len(head))) + "|")
        for b in body:
            print("| " + " | ".join(b) + " |")

    print("nvkv vs fio (4 KiB random reads of the same data file region)")
    plain(head, body)

    fhead = ["Q", "fio engine", "IOPS", "lat p50 us", "lat p99 us", "clat p50 us", "clat p99 us"]
    fbody = [[str(r["q"]), r["engine"], fmt(r["ops_per_sec"]), fmt(r["lat_p50_us"], 1),
              fmt(r["lat_p99_us"], 1), fmt(r["clat_p50_us"], 1), fmt(r["clat_p99_us"], 1)]
             for r in rows if r["kind"] == "fio"]
    print("\nfio detail (lat = submission to completion, clat = completion latency)")
    plain(fhead, fbody)

    rhead = ["redis GET clients", "ops/s", "p50 us", "p99 us"]
    rbody = [[str(c), fmt(r["ops_per_sec"]), fmt(r["p50_us"], 1), fmt(r["p99_us"], 1)]
             for c, r in sorted(redis.items())]
    print("\nredis-server GET (redis-benchmark, value = mean size)")
    plain(rhead, rbody, left=1)

    print()
    n1 = next((r for r in nvkv if r["q"] == 1 and r["engine"] == "uring"), None)
    f1 = fio.get((1, "io_uring"))
    r1 = redis.get(1)
    if n1 and f1 and r1 and f1["lat_p50_us"] is not None and r1["p50_us"] is not None:
        budget = f1["lat_p50_us"] + r1["p50_us"] + 10
        verdict = "PASS" if n1["p50_us"] <= budget else "FAIL"
        print(f"budget p50 = fio QD1 p50 (lat) {f1['lat_p50_us']:.1f} + redis GET p50 at 1 client "
              f"{r1['p50_us']:.1f} + 10 us = {budget:.1f} us; nvkv uring QD1 p50 = "
              f"{n1['p50_us']:.1f} us -> {verdict}")
    else:
        print("budget p50: not computed (needs depth 1, engine uring, fio lat percentiles "
              "and redis-benchmark p50)")
    # Q=32 targets, each engine against fio with its own kernel interface
    # (uring: io_uring, aio: libaio), the store alone (--local) likewise.
    measured = [e for e in ("uring", "aio") if any(r["engine"] == e for r in nvkv)]
    for e in measured:
        n32 = next((r for r in nvkv if r["q"] == 32 and r["engine"] == e), None)
        f32 = fio.get((32, match[e]))
        if n32 and f32 and f32["ops_per_sec"]:
            ratio = n32["ops_per_sec"] / f32["ops_per_sec"]
            print(f"nvkv {e} / fio {match[e]} at Q=32 = {n32['ops_per_sec']:,.0f} / "
                  f"{f32['ops_per_sec']:,.0f} = {ratio:.2f} -> "
                  f"{'PASS' if ratio >= 0.90 else 'FAIL'} (>= 0.90)")
        else:
            print(f"Q=32 target ({e}): not computed (needs depth 32)")
        l32 = local.get((32, e))
        if l32 and f32 and f32["ops_per_sec"]:
            ratio = l32["ops_per_sec"] / f32["ops_per_sec"]
            print(f"bench --local {e} / fio {match[e]} at Q=32 = {l32['ops_per_sec']:,.0f} / "
                  f"{f32['ops_per_sec']:,.0f} = {ratio:.2f} -> "
                  f"{'PASS' if ratio >= 0.95 else 'FAIL'} (>= 0.95)")
    cpu = {r["server"]: r for r in rows if r["kind"] == "cpu"}
    chead = ["server", "offered/s", "done/s", "CPU us", "CPU us per op", "p50 us", "p99 us"]
    cbody = [[s, fmt(r["rate"]), fmt(r["ops_per_sec"]), fmt(r["cpu_us"]),
              fmt(r["cpu_us_per_op"], 2), fmt(r.get("p50_us"), 1), fmt(r.get("p99_us"), 1)]
             for s, r in cpu.items()]
    if cbody:
        print("\nCPU per GET (nvkv, redis: INFO used_cpu_sys + used_cpu_user; fio: its usr + sys)")
        plain(chead, cbody, left=1)
        n, rd, f = cpu.get("nvkv"), cpu.get("redis"), cpu.get("fio")
        if n and rd and f and None not in (n["cpu_us_per_op"], rd["cpu_us_per_op"], f["cpu_us_per_op"]):
            bound = rd["cpu_us_per_op"] + f["cpu_us_per_op"]
            print(f"nvkv CPU per GET {n['cpu_us_per_op']:.2f} us vs Redis's {rd['cpu_us_per_op']:.2f} "
                  f"+ fio's per read {f['cpu_us_per_op']:.2f} = {bound:.2f} us -> "
                  f"{'PASS' if n['cpu_us_per_op'] <= bound else 'FAIL'} (<=)")
    bad = [r for r in nvkv + list(local.values()) if r.get("errors") or r.get("misses")]
    for r in bad:
        print(f"!!! nvkv Q={r['q']} {r['engine']}: errors={r['errors']} misses={r['misses']}: "
              "results are not valid")

    if int(markdown):
        print("\nMarkdown:\n")
        md(head, body)
        print()
        md(fhead, fbody)
        print()
        md(rhead, rbody, left=1)
        if cbody:
            print()
            md(chead, cbody, left=1)

if __name__ == "__main__":
    globals()["cmd_" + sys.argv[1].replace("-", "_")](*sys.argv[2:])
PY
}

py() { timeout 60 python3 "$WORK/helper.py" "$@"; }

# ------------------------------------------------------------------- steps --
print_machine() {
    step "machine"
    log "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    log "nproc:    $(nproc)"
    log "cpu:      $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    log "memory:   $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    log "kernel:   $(uname -srm)"
    log "store:    $DIR"
    timeout 10 df -hT "$DIR" | sed 's/^/  /' || warn "df failed"
    local src disk
    src=$(timeout 10 findmnt -no SOURCE -T "$DIR" 2>/dev/null || true)
    if [[ $src == /dev/* ]]; then
        disk=$(timeout 10 lsblk -no PKNAME "$src" 2>/dev/null | head -1 || true)
        disk=${disk:-$(basename "$src")}
        timeout 10 lsblk -d -o NAME,MODEL,SIZE,ROTA,TRAN,TYPE "/dev/$disk" 2>/dev/null | sed 's/^/  /' || true
        [[ -r /sys/block/$disk/queue/scheduler ]] \
            && log "  scheduler: $(cat "/sys/block/$disk/queue/scheduler")"
    else
        log "  backing device: ${src:-unknown} (not a block device)"
    fi
    log "fio:          $(timeout 10 fio --version)"
    log "redis-server: $(timeout 10 redis-server --version)"
    log "redis-bench:  $(timeout 10 redis-benchmark --version)"
    log "nvkv:         $(timeout 10 "$BIN" --version) ($BIN; client $CLIENT)"
    if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
        local dirty=""
        [[ -n $(timeout 30 git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null) ]] && dirty=" (modified)"
        log "source:       $(timeout 10 git -C "$REPO" rev-parse --short HEAD)$dirty"
    fi
    log "parameters:   keys=$KEYS sizes=$MIN_SIZE-$MAX_SIZE seed=$SEED duration=${DURATION}s" \
        "depths=\"$DEPTHS\" engines=\"$ENGINES\" inflight=$INFLIGHT serve-args=\"$SERVE_ARGS\""
}

# Creates DIR, refuses directories that hold something else than a store, and
# takes a lock so that two runs never share a store.
prepare_dir() {
    mkdir -p -- "$DIR"
    if [[ ! -e $DIR/data.nvkv && ! -e $DIR/bench-params && ! -e $DIR/results.jsonl ]] \
        && [[ -n $(ls -A -- "$DIR") ]]; then
        die "$DIR is not empty and holds no nvkv store; choose another --dir"
    fi
    exec 9>"$DIR/.bench-vs-fio.lock"
    flock -n 9 || die "another bench-vs-fio.sh run is using $DIR"
    HAVE_LOCK=1
}

load_store() {
    step "load"
    local params
    params=$(printf 'keys=%s\nmin_size=%s\nmax_size=%s\nseed=%s\ncapacity=%s\n' \
        "$KEYS" "$MIN_SIZE" "$MAX_SIZE" "$SEED" "${CAPACITY:-default}")
    if [[ $RELOAD -eq 0 && -f $DIR/bench-params && -e $DIR/data.nvkv && -d $DIR/index ]] \
        && [[ $(grep -v '^#' "$DIR/bench-params") == "$params" ]]; then
        log "reusing the store in $DIR (same parameters; --reload to load again)"
        grep '^#' "$DIR/bench-params" | sed 's/^# */  /'
        return
    fi
    rm -f -- "$DIR/bench-params"
    local args=(load --path "$DIR" --keys "$KEYS" --min-size "$MIN_SIZE" --max-size "$MAX_SIZE"
                --seed "$SEED")
    [[ -n $CAPACITY ]] && args+=(--capacity "$CAPACITY")
    [[ -e $DIR/data.nvkv ]] && args+=(--force)
    log "nvkv ${args[*]}"
    local summary
    run_fg timeout "$LOAD_TIMEOUT" "$BIN" "${args[@]}" >"$WORK/load.out" || die "nvkv load failed"
    summary=$(tail -1 "$WORK/load.out")
    log "  $summary"
    # Written only after a successful load: a broken load is never reused.
    { printf '%s\n' "$params"; printf '# %s\n' "$summary"; } >"$DIR/bench-params"
}

# start_nvkv ENGINE: starts the server and waits for its "listening" line.
start_nvkv() {
    local engine=$1 i
    check_port_free "$PORT"
    : >"$WORK/serve.out"
    # shellcheck disable=SC2086  # SERVE_ARGS is a list of flags
    timeout --foreground --kill-after=10 $((START_TIMEOUT + DURATION + 300)) \
        "$BIN" serve --path "$DIR" --listen "127.0.0.1:$PORT" --engine "$engine" $SERVE_ARGS \
        >"$WORK/serve.out" 2>"$WORK/serve-$engine.err" 9>&- &
    NVKV_PID=$!
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        grep -q "^nvkv listening on 127.0.0.1:$PORT" "$WORK/serve.out" && return 0
        kill -0 "$NVKV_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$WORK/serve-$engine.err" >&2 || true
    die "nvkv serve --engine $engine did not start (its log is above; an old store format? try --reload)"
}

stop_nvkv() {
    local engine=$1 rc=0
    stop_proc "$NVKV_PID" "nvkv serve" || rc=$?
    NVKV_PID=""
    if [[ $rc -ne 0 ]]; then
        tail -20 "$WORK/serve-$engine.err" >&2 || true
        loud "nvkv serve --engine $engine exited with status $rc after SIGTERM (expected a clean exit 0)"
        FAILURES=$((FAILURES + 1))
    fi
}

# data_bytes: sets DATA_BYTES to the bytes of the segments the loaded records
# occupy, from the running server's INFO (segments in use x segment size).
# The loader fills segments from the first one on, and a read-only bench
# writes nothing, so these are the bytes nvkv's GETs read: fio reads the same
# ones. (The rest of the data file is zeros nvkv never reads; on this
# project's VM the host caches what the guest reads often, and fio over the
# whole file would partly measure the host's cold storage instead.)
DATA_BYTES=""
data_bytes() {
    local info total free size
    info=$(timeout 10 redis-cli -h 127.0.0.1 -p "$PORT" info 2>/dev/null | tr -d '\r') || true
    total=$(sed -n 's/^segments_total://p' <<<"$info")
    free=$(sed -n 's/^segments_free://p' <<<"$info")
    size=$(sed -n 's/^segment_size://p' <<<"$info")
    if is_uint "${total:-x}" && is_uint "${free:-x}" && is_uint "${size:-x}"; then
        DATA_BYTES=$(((total - free) * size))
        log "      data region: $((total - free)) segments of $((size >> 20)) MiB in use = $((DATA_BYTES >> 20)) MiB"
    else
        warn "could not read segments_total/segments_free/segment_size from INFO; fio reads the hole-free run"
        DATA_BYTES=0
    fi
}

# warm_up: reads the data region once, sequentially with O_DIRECT, before
# any measurement. A virtual disk whose host caches what the guest reads
# (this project's development VM: ~600 IOPS for a cold region, ~70k for a
# warm one) would otherwise favour whichever measurement came second; on a
# real NVMe device it only costs the read.
warm_up() {
    local bytes=$DATA_BYTES
    [[ ${bytes:-0} -gt 0 ]] || bytes=$FIO_SIZE
    local mib=$(( (bytes >> 20) + 1 )) t0 t1
    t0=$(date +%s.%N)
    timeout 1800 dd if="$DIR/data.nvkv" of=/dev/null bs=1M skip=1 count="$mib" iflag=direct status=none \
        || die "warm-up read of $DIR/data.nvkv failed"
    t1=$(date +%s.%N)
    log "      warm-up: read $mib MiB of the data region in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
}

# run_nvkv Q ENGINE: one server start, one bench, one stop.
run_nvkv() {
    local q=$1 engine=$2
    local k=$((INFLIGHT < q ? INFLIGHT : q))
    local c=$((q / k)) raw="$WORK/nvkv-$engine-q$q.json"
    log "nvkv  Q=$q engine=$engine: $c clients x $k in flight, ${DURATION}s"
    start_nvkv "$engine"
    if ! run_fg timeout $((DURATION + 60)) "$CLIENT" bench --addr "127.0.0.1:$PORT" --clients "$c" \
            --inflight "$k" --duration "$DURATION" --keys "$KEYS" --seed "$SEED" \
            --min-size "$MIN_SIZE" --max-size "$MAX_SIZE" --json >"$raw" 2>"$WORK/bench.err"; then
        tail -20 "$WORK/bench.err" >&2 || true
        die "nvkv bench failed (Q=$q, engine $engine)"
    fi
    stop_nvkv "$engine"
    local line errors misses
    line=$(py nvkv "$raw" kind=nvkv "run=$RUN_ID" engine="$engine" q="$q" \
           keys="$KEYS" min_size="$MIN_SIZE" max_size="$MAX_SIZE" "serve_args=$SERVE_ARGS") \
        || die "cannot parse the output of nvkv bench: $(cat "$raw")"
    printf '%s\n' "$line" >>"$RESULTS"
    errors=$(py get "$raw" errors); misses=$(py get "$raw" misses)
    log "      $(py brief "$line")"
    if [[ $errors != 0 || $misses != 0 ]]; then
        loud "nvkv Q=$q engine=$engine: errors=$errors misses=$misses (expected 0 and 0)"
        FAILURES=$((FAILURES + 1))
    fi
}

# run_local Q ENGINE: `nvkv bench --local`, the same shape against the
# store in one process (pollers, rings and engine; no sockets).
run_local() {
    local q=$1 engine=$2
    local k=$((INFLIGHT < q ? INFLIGHT : q))
    local c=$((q / k)) raw="$WORK/local-$engine-q$q.json"
    log "local Q=$q engine=$engine: $c clients x $k in flight, ${DURATION}s, no sockets"
    if ! run_fg timeout $((DURATION + 60)) "$BIN" bench --local "$DIR" --engine "$engine" \
            --clients "$c" --inflight "$k" --duration "$DURATION" --keys "$KEYS" --seed "$SEED" \
            --min-size "$MIN_SIZE" --max-size "$MAX_SIZE" --json >"$raw" 2>"$WORK/local.err"; then
        tail -20 "$WORK/local.err" >&2 || true
        die "nvkv bench --local failed (Q=$q, engine $engine)"
    fi
    local line
    line=$(py nvkv "$raw" kind=local "run=$RUN_ID" engine="$engine" q="$q" \
           keys="$KEYS" min_size="$MIN_SIZE" max_size="$MAX_SIZE") \
        || die "cannot parse the output of nvkv bench --local: $(cat "$raw")"
    printf '%s\n' "$line" >>"$RESULTS"
    log "      $(py brief "$line")"
    if [[ $(py get "$raw" errors) != 0 || $(py get "$raw" misses) != 0 ]]; then
        loud "nvkv bench --local Q=$q engine=$engine: errors or misses (expected none)"
        FAILURES=$((FAILURES + 1))
    fi
}

# run_fio Q FIO_ENGINE: random 4 KiB direct reads of the loaded region.
run_fio() {
    local q=$1 engine=$2
    local raw="$WORK/fio-$engine-q$q.json"
    log "fio   Q=$q ioengine=$engine, ${DURATION}s"
    # shellcheck disable=SC2086  # FIO_ARGS is a list of flags
    if ! run_fg timeout $((DURATION + 60)) fio --name="randread-$engine-q$q" --filename="$DIR/data.nvkv" \
            --readonly --offset=1M --size="$FIO_SIZE" --bs=4k --direct=1 --rw=randread \
            --ioengine="$engine" --iodepth="$q" --numjobs=1 --time_based --runtime="$DURATION" \
            --lat_percentiles=1 --clat_percentiles=1 --percentile_list=50:90:99:99.9 \
            $FIO_ARGS --output-format=json --output="$raw" 2>"$WORK/fio.err"; then
        cat "$WORK/fio.err" >&2 || true
        die "fio failed (Q=$q, ioengine $engine)"
    fi
    local line
    line=$(py fio "$raw" kind=fio "run=$RUN_ID" engine="$engine" q="$q" clients=1 inflight="$q" \
           offset=1048576 size="$FIO_SIZE" bs=4096) || die "cannot parse fio's JSON output ($raw)"
    printf '%s\n' "$line" >>"$RESULTS"
    log "      $(py brief "$line")"
}

start_redis() {
    local i
    check_port_free "$REDIS_PORT"
    timeout --foreground --kill-after=10 $((DURATION * 8 + 600)) \
        redis-server --save '' --appendonly no --port "$REDIS_PORT" --bind 127.0.0.1 \
        --daemonize no --dir "$WORK" >"$WORK/redis.log" 2>&1 9>&- &
    REDIS_PID=$!
    for ((i = 0; i < 100; i++)); do
        [[ $(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && return 0
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$WORK/redis.log" >&2 || true
    die "redis-server did not start on port $REDIS_PORT"
}

# redis_get CLIENTS SIZE: redis-benchmark has no duration option, so two
# calibration runs (a short probe, then ~1 s) give the rate, and the measured
# run gets rate x --duration requests.
redis_get() {
    local c=$1 size=$2
    local rps n raw="$WORK/redis-c$c.csv"
    local rb=(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$c" -d "$size" -r 10000 -t get --csv)
    n=$((c == 1 ? 2000 : 20000))
    local round
    for round in probe 1s; do
        run_fg timeout 120 "${rb[@]}" -n "$n" >"$raw" 2>"$WORK/redis-bench.err" \
            || die "redis-benchmark calibration ($round) failed (-c $c)"
        rps=$(py redis-rps "$raw") || die "cannot parse redis-benchmark output: $(cat "$raw")"
        n=$((rps > 1000 ? rps : 1000))
    done
    n=$((rps * DURATION)); ((n >= 1000)) || n=1000
    log "redis GET -c $c -n $n (~${DURATION}s at the calibrated $rps ops/s)"
    run_fg timeout $((DURATION * 3 + 60)) "${rb[@]}" -n "$n" >"$raw" 2>"$WORK/redis-bench.err" \
        || die "redis-benchmark failed (-c $c)"
    local line
    line=$(py redis "$raw" kind=redis "run=$RUN_ID" engine=redis-server q="$c" clients="$c" \
           inflight=1 value_size="$size" requests="$n") || die "cannot parse $raw"
    printf '%s\n' "$line" >>"$RESULTS"
    log "      $(tail -1 "$raw")"
}

run_redis() {
    step "redis-server GET latency (port $REDIS_PORT)"
    local size=$(((MIN_SIZE + MAX_SIZE) / 2))
    start_redis
    log "filling: redis-benchmark -t set -d $size -r 10000 -n 20000"
    run_fg timeout 300 redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -t set -d "$size" -r 10000 -n 20000 -q \
        >"$WORK/redis-fill.out" 2>&1 || die "redis-benchmark SET (fill) failed"
    log "  $(tr '\r' '\n' <"$WORK/redis-fill.out" | grep -v '^ *$' | tail -1)" \
        "keys: $(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" dbsize)"
    redis_get 1 "$size"
    redis_get 32 "$size"
    local rc=0
    stop_proc "$REDIS_PID" "redis-server" || rc=$?
    REDIS_PID=""
    [[ $rc -eq 0 ]] || warn "redis-server exited with status $rc"
}

# cpu_secs PORT WRAPPER_PID: the server's used_cpu_sys + used_cpu_user from
# INFO, in s; for a server without them (an nvkv build from before they
# existed), utime + stime from /proc of the server (the child of the
# `timeout` wrapper that started it), in clock ticks.
cpu_secs() {
    local pid
    timeout 10 redis-cli -h 127.0.0.1 -p "$1" info cpu | tr -d '\r' \
        | awk -F: '/^used_cpu_(sys|user):/ { s += $2; n++ } END { if (n == 2) printf "%.6f\n", s; else exit 1 }' \
        && return 0
    pid=$(pgrep -P "$2" | head -1) && [[ -r /proc/$pid/stat ]] || return 1
    # Fields after the command name (which may hold spaces): utime is the
    # 12th, stime the 13th.
    sed 's/^.*) //' "/proc/$pid/stat" \
        | awk -v hz="$(getconf CLK_TCK)" '{ printf "%.6f\n", ($12 + $13) / hz }'
}

# cpu_bench NAME PORT PID: `nvkv bench --rate` against the server on PORT, with
# its CPU time read before and after; appends a kind=cpu row.
cpu_bench() {
    local name=$1 port=$2 pid=$3 before after
    local raw="$WORK/cpu-$name.json"
    before=$(cpu_secs "$port" "$pid") || die "no used_cpu_sys/used_cpu_user in $name's INFO"
    if ! run_fg timeout $((DURATION + 60)) "$CLIENT" bench --addr "127.0.0.1:$port" --clients "$CPU_CLIENTS" \
            --inflight 1 --rate "$CPU_RATE" --duration "$DURATION" --keys "$KEYS" --seed "$SEED" \
            --min-size "$MIN_SIZE" --max-size "$MAX_SIZE" --json >"$raw" 2>"$WORK/bench.err"; then
        tail -20 "$WORK/bench.err" >&2 || true
        die "nvkv bench --rate failed against $name"
    fi
    after=$(cpu_secs "$port" "$pid") || die "no used_cpu_sys/used_cpu_user in $name's INFO"
    local line
    line=$(py cpu-row "$raw" "$before" "$after" kind=cpu "run=$RUN_ID" server="$name" \
           rate="$CPU_RATE" clients="$CPU_CLIENTS") || die "cannot parse $raw"
    printf '%s\n' "$line" >>"$RESULTS"
    log "      $name: $(py get "$raw" ops_per_sec) GET/s done, CPU $(awk -v a="$before" -v b="$after" 'BEGIN{printf "%.3f", b-a}') s"
}

# run_cpu: server CPU per GET at --cpu-rate for nvkv and for Redis holding
# the same values (loaded with `nvkv bench --fill`), and fio's CPU per read
# at that rate.
run_cpu() {
    step "CPU per GET at $CPU_RATE GET/s offered ($CPU_CLIENTS connections x 1, ${DURATION}s; nvkv --engine ${ENGINES%% *})"
    start_nvkv "${ENGINES%% *}"
    cpu_bench nvkv "$PORT" "$NVKV_PID"
    stop_nvkv "${ENGINES%% *}"

    start_redis
    log "filling redis with the data set: nvkv bench --fill --keys $KEYS"
    run_fg timeout "$LOAD_TIMEOUT" "$CLIENT" bench --addr "127.0.0.1:$REDIS_PORT" --fill --clients 8 \
        --inflight 16 --duration 3600 --keys "$KEYS" --seed "$SEED" --min-size "$MIN_SIZE" \
        --max-size "$MAX_SIZE" --json >"$WORK/redis-fill.json" 2>"$WORK/bench.err" \
        || die "nvkv bench --fill against redis failed: $(tail -5 "$WORK/bench.err")"
    cpu_bench redis "$REDIS_PORT" "$REDIS_PID"
    local rc=0
    stop_proc "$REDIS_PID" "redis-server" || rc=$?
    REDIS_PID=""
    [[ $rc -eq 0 ]] || warn "redis-server exited with status $rc"

    local raw="$WORK/fio-cpu.json" fe
    case ${ENGINES%% *} in uring) fe=io_uring ;; *) fe=libaio ;; esac
    log "fio   Q=$CPU_CLIENTS ioengine=$fe --rate_iops=$CPU_RATE, ${DURATION}s"
    # shellcheck disable=SC2086  # FIO_ARGS is a list of flags
    run_fg timeout $((DURATION + 60)) fio --name="cpu-$fe" --filename="$DIR/data.nvkv" \
        --readonly --offset=1M --size="$FIO_SIZE" --bs=4k --direct=1 --rw=randread \
        --ioengine="$fe" --iodepth="$CPU_CLIENTS" --rate_iops="$CPU_RATE" --numjobs=1 \
        --time_based --runtime="$DURATION" $FIO_ARGS --output-format=json --output="$raw" \
        2>"$WORK/fio.err" || die "fio failed: $(cat "$WORK/fio.err")"
    local line
    line=$(py fio-cpu "$raw" kind=cpu "run=$RUN_ID" server=fio rate="$CPU_RATE" engine="$fe") \
        || die "cannot parse fio's JSON output ($raw)"
    printf '%s\n' "$line" >>"$RESULTS"
}

# ------------------------------------------------------------------- main --
main() {
    parse_args "$@"
    ensure_tools
    ensure_bin

    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    WORK=$(mktemp -d /tmp/bench-vs-fio.XXXXXX)
    write_helper

    prepare_dir
    check_port_free "$PORT"          # fail before the load, not after it
    check_port_free "$REDIS_PORT"
    print_machine
    load_store

    RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
    RESULTS=$DIR/results.jsonl
    : >"$RESULTS"

    # The region fio reads: see cmd_region in the helper.
    local region alloc run how
    read -r FIO_SIZE alloc run how < <(py region "$DIR/data.nvkv") \
        || die "cannot size the data region of $DIR/data.nvkv"
    [[ ${FIO_SIZE:-0} -gt 0 ]] || die "empty data region in $DIR/data.nvkv"

    local q e
    step "data region and warm-up"
    start_nvkv "${ENGINES%% *}"
    data_bytes
    stop_nvkv "${ENGINES%% *}"
    warm_up

    if [[ ${DATA_BYTES:-0} -gt 0 && $DATA_BYTES -lt $FIO_SIZE ]]; then
        FIO_SIZE=$((DATA_BYTES / 4096 * 4096))
        how=the_segments_holding_the_records
    fi
    region="offset 1 MiB, size $FIO_SIZE bytes ($((FIO_SIZE >> 20)) MiB, ${how//_/ });"
    region+=" allocated after 1 MiB: $alloc bytes, hole-free run: $run bytes"

    # Each nvkv measurement is followed at once by fio's with the matching
    # engine (uring: io_uring, aio: libaio), so that a disk whose speed
    # drifts over the run (this VM's does, by 10% and more in a minute)
    # weighs on both sides of a ratio alike; all nvkv first and all fio
    # after favoured fio by that drift.
    step "nvkv serve + nvkv bench (port $PORT), each followed by fio random reads of $DIR/data.nvkv: $region"
    local fe done_fio
    for q in $DEPTHS; do
        done_fio=" "
        for e in $ENGINES; do
            run_nvkv "$q" "$e"
            [[ $LOCAL == 1 ]] && run_local "$q" "$e"
            case $e in uring) fe=io_uring ;; aio) fe=libaio ;; *) continue ;; esac
            run_fio "$q" "$fe"
            done_fio+="$fe "
        done
        for fe in io_uring libaio; do
            [[ $done_fio == *" $fe "* ]] || run_fio "$q" "$fe"
        done
    done

    run_redis
    [[ $CPU_RATE -gt 0 ]] && run_cpu

    step "results (raw: $RESULTS)"
    py table "$RESULTS" "$MARKDOWN"

    if [[ $FAILURES -gt 0 ]]; then
        loud "$FAILURES measurement(s) had nvkv errors/misses or an unclean server shutdown"
        exit 2
    fi
}

main "$@"
