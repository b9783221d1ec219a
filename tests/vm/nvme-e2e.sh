#!/usr/bin/env bash
# nvkv on raw NVMe block devices in a VM: the read-path integration tests on
# each namespace, then per engine (uring, aio) a short bench, writes, a clean
# restart, a kill -9 and `nvkv check`; on a 4 KiB and a 512-byte namespace.
set -euo pipefail
case "${1:-}" in
    -h|--help)
        echo "usage: tests/vm/nvme-e2e.sh   (env: NVKV_VM_KEYS, NVKV_VM_DURATION)"
        echo "Builds nvkv and its tests on the host, boots tests/vm/run.sh and runs"
        echo "tests/vm/guest-e2e.sh inside; exits non-zero on any failure."
        exit 0 ;;
esac
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release -q
# The guest runs the read-path tests only (guest-e2e.sh): build that one.
cargo test --release --no-run -q --test read_path 2>/dev/null
command -v redis-cli >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-tools >/dev/null
exec tests/vm/run.sh --timeout 1200 env NVKV_VM_KEYS="${NVKV_VM_KEYS:-50000}" NVKV_VM_DURATION="${NVKV_VM_DURATION:-3}" bash tests/vm/guest-e2e.sh
