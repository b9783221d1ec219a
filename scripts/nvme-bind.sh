#!/usr/bin/env bash
# Hand an NVMe controller to a userspace driver (vfio-pci or
# uio_pci_generic) for nvkv's SPDK engine, and give it back to the kernel.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/nvme-bind.sh status
       scripts/nvme-bind.sh bind BDF [--driver vfio-pci|uio_pci_generic] [--force-in-use]
       scripts/nvme-bind.sh unbind BDF

  status   list NVMe controllers (PCI class 0108) with their driver and the
           block devices the kernel made of them
  bind     detach controller BDF (e.g. 0000:01:00.0) from the kernel's nvme
           driver and bind it to a userspace driver (default vfio-pci when
           the machine has an IOMMU, else uio_pci_generic). Refuses a device
           that is not an NVMe controller, or whose namespaces are mounted,
           used as swap, held by device-mapper/md, or open by a process.
  unbind   give controller BDF back to the kernel's nvme driver

Safe to run twice: binding to the driver already in use, or unbinding a
controller the kernel already drives, does nothing. Needs root except status.
After `bind`, start nvkv with --device 'trtype:PCIe traddr:BDF'.
USAGE
}

SYS=/sys/bus/pci/devices

die() { echo "error: $*" >&2; exit 1; }

driver_of() {
    local l="$SYS/$1/driver"
    [[ -L "$l" ]] && basename "$(readlink -f "$l")" || echo none
}

is_nvme() { [[ "$(cat "$SYS/$1/class" 2>/dev/null)" == 0x0108* ]]; }

namespaces_of() {
    local d
    for d in "$SYS/$1"/nvme/nvme*/nvme*n* "$SYS/$1"/nvme/nvme*/ng*n*; do
        [[ -e "$d" ]] && basename "$d"
    done
    return 0
}

# Why the kernel's view of controller $1 is in use, if it is.
in_use() {
    local bdf=$1 ns part
    for ns in $(namespaces_of "$bdf"); do
        [[ "$ns" == ng* ]] && continue
        for part in /sys/block/"$ns" /sys/block/"$ns"/"$ns"p*; do
            [[ -e "$part" ]] || continue
            local dev name
            name=$(basename "$part")
            dev=/dev/$name
            if findmnt -n -S "$dev" >/dev/null 2>&1; then
                echo "$dev is mounted on $(findmnt -n -o TARGET -S "$dev" | head -1)"; return
            fi
            if grep -q "^$dev " /proc/swaps 2>/dev/null; then
                echo "$dev is a swap device"; return
            fi
            if [[ -n "$(ls -A "$part/holders" 2>/dev/null)" ]]; then
                echo "$dev is held by $(ls "$part/holders" | tr '\n' ' ')"; return
            fi
            if command -v fuser >/dev/null && fuser -s "$dev" 2>/dev/null; then
                echo "$dev is open by a process ($(fuser "$dev" 2>/dev/null))"; return
            fi
        done
    done
}

status() {
    local found=0 bdf
    for p in "$SYS"/*; do
        bdf=$(basename "$p")
        is_nvme "$bdf" || continue
        found=1
        printf '%s  driver %-16s  %s\n' "$bdf" "$(driver_of "$bdf")" "$(namespaces_of "$bdf" | tr '\n' ' ')"
    done
    [[ $found -eq 1 ]] || echo "no NVMe controllers on this machine"
}

cmd=${1:-}
case "$cmd" in
    ""|-h|--help) usage; exit 0 ;;
    status) status; exit 0 ;;
    bind|unbind) ;;
    *) die "unknown command $cmd (see --help)" ;;
esac
shift
bdf=${1:-}
[[ -n "$bdf" ]] || die "$cmd needs a PCI address (see status)"
shift
driver=""
force=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --driver) driver=$2; shift 2 ;;
        --force-in-use) force=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ "$bdf" =~ ^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$ ]] || bdf="0000:$bdf"
[[ -d "$SYS/$bdf" ]] || die "no PCI device $bdf"
is_nvme "$bdf" || die "$bdf is not an NVMe controller (class $(cat "$SYS/$bdf/class")): refusing to touch it"
[[ $EUID -eq 0 ]] || die "$cmd needs root"
current=$(driver_of "$bdf")

rebind() { # $1 = driver to bind to
    echo "$1" > "$SYS/$bdf/driver_override"
    if [[ "$current" != none ]]; then
        echo "$bdf" > "$SYS/$bdf/driver/unbind"
    fi
    echo "$bdf" > /sys/bus/pci/drivers_probe
    local now
    now=$(driver_of "$bdf")
    [[ "$now" == "$1" ]] || die "$bdf did not bind to $1 (now: $now); see dmesg"
}

if [[ "$cmd" == bind ]]; then
    if [[ -z "$driver" ]]; then
        if [[ -n "$(ls -A /sys/kernel/iommu_groups 2>/dev/null)" ]]; then driver=vfio-pci; else driver=uio_pci_generic; fi
    fi
    case "$driver" in vfio-pci|uio_pci_generic) ;; *) die "--driver is vfio-pci or uio_pci_generic" ;; esac
    if [[ "$current" == "$driver" ]]; then
        echo "$bdf is already bound to $driver"; exit 0
    fi
    if [[ "$current" == nvme ]]; then
        why=$(in_use "$bdf")
        if [[ -n "$why" && $force -eq 0 ]]; then
            die "$bdf is in use: $why; unmount or stop its users first"
        fi
    fi
    [[ -d /sys/bus/pci/drivers/$driver ]] || modprobe "$driver" || die "cannot load $driver"
    if [[ "$driver" == vfio-pci && ! -e "$SYS/$bdf/iommu_group" ]]; then
        die "$bdf has no IOMMU group: enable the IOMMU (intel_iommu=on / amd_iommu=on) or use --driver uio_pci_generic"
    fi
    rebind "$driver"
    echo "$bdf: $current -> $driver; use --device 'trtype:PCIe traddr:$bdf'"
else
    if [[ "$current" == nvme ]]; then
        echo "$bdf is already driven by the kernel's nvme driver"; exit 0
    fi
    [[ -d /sys/bus/pci/drivers/nvme ]] || modprobe nvme || true
    rebind nvme
    echo "" > "$SYS/$bdf/driver_override"
    echo "$bdf: $current -> nvme ($(namespaces_of "$bdf" | tr '\n' ' '))"
fi
