# large-lib.sh - what the large-value benchmarks share (sourced by
# bench-large.sh, bench-large-edit.sh, bench-large-read.sh): a server on
# a fresh store in $dir at 127.0.0.1:$port with --capacity $capacity
# ($bin), stopped and the scratch directory removed on exit, and medians.
# The sourcing script sets bin, dir, port and capacity first.

mkdir -p "$dir"
pid=""
cleanup() {
    [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

serve() {
    "$bin" serve --path "$dir/store" --listen "127.0.0.1:$port" --capacity "$capacity" \
        >"$dir/serve.out" 2>"$dir/serve.err" &
    pid=$!
    for ((i = 0; i < 1200; i++)); do
        grep -q "^nvkv listening on" "$dir/serve.out" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "the server did not start:" >&2
    cat "$dir/serve.err" >&2
    exit 1
}

stop() {
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
}
