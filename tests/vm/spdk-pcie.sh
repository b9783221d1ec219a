#!/usr/bin/env bash
# The spdk engine over PCIe, in a VM: QEMU's emulated NVMe controllers are
# left unbound by the guest kernel and handed to uio_pci_generic inside the
# guest (never on the host), then driven by nvkv's spdk engine.
set -euo pipefail
case "${1:-}" in
    -h|--help)
        echo "usage: tests/vm/spdk-pcie.sh   (env: NVKV_VM_KEYS, NVKV_VM_DURATION)"
        echo "Needs an installed SPDK (pkg-config spdk_nvme, spdk_nvme_perf on PATH)."
        exit 0 ;;
esac
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export PKG_CONFIG_PATH="/usr/local/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
if ! pkg-config --exists spdk_nvme || ! command -v spdk_nvme_perf >/dev/null; then
    echo "SKIPPED: no SPDK installed (pkg-config spdk_nvme, spdk_nvme_perf)"
    exit 0
fi
cargo build --release --features spdk -q
command -v strace >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q strace >/dev/null
command -v redis-cli >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-tools >/dev/null
exec tests/vm/run.sh --no-nvme-driver --modules uio_pci_generic --timeout 1200 \
    env NVKV_VM_KEYS="${NVKV_VM_KEYS:-20000}" NVKV_VM_DURATION="${NVKV_VM_DURATION:-4}" bash tests/vm/guest-spdk.sh
