#!/usr/bin/env bash
# Boots Debian's kernel under QEMU with two emulated NVMe controllers and
# runs one command inside the guest, non-interactively; exits with the
# command's status.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: tests/vm/run.sh [options] [--] COMMAND [ARG...]

Boots Debian's 6.1 kernel (downloaded once with apt-get, extracted, never
installed on the host) under QEMU's TCG with:
  - /dev/nvme0n1: an NVMe controller with 4 KiB blocks (serial nvkv4k)
  - /dev/nvme1n1: an NVMe controller with 512-byte blocks (serial nvkv512)
  - the host's /usr mounted read-only over 9p (every host binary and
    library), and its /etc/ssl (OpenSSL's configuration, which SPDK's
    environment loads at start: /usr/lib/ssl/openssl.cnf links there),
    the repository at the same path read-write, loopback up
and runs COMMAND as root in the repository directory. The guest powers off
when it returns; its exit status is this script's.

Options:
  --modules LIST   kernel modules to load in the guest (besides nvme),
                   e.g. uio_pci_generic,vfio-pci
  --no-nvme-driver do not load the kernel's nvme driver (leave the
                   controllers unbound, for userspace drivers)
  --iommu          an emulated Intel IOMMU (for vfio-pci in the guest)
  --mem SIZE       guest memory (default 3G)
  --disk-size SIZE size of each NVMe namespace (default 2G)
  --timeout SECS   stop the guest after this long (default 900)
  --keep-disks     keep the namespace images (in target/vm/) between runs
  -h, --help       this text

Needs root for apt-get the first time (qemu-system-x86, busybox-static,
kmod, cpio). Nothing here touches the host's devices.
USAGE
}

modules="" nvme_driver=1 iommu=0 mem=3G disk=2G tmo=900 keep=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --modules) modules=$2; shift 2 ;;
        --no-nvme-driver) nvme_driver=0; shift ;;
        --iommu) iommu=1; shift ;;
        --mem) mem=$2; shift 2 ;;
        --disk-size) disk=$2; shift 2 ;;
        --timeout) tmo=$2; shift 2 ;;
        --keep-disks) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[[ $# -gt 0 ]] || { usage >&2; exit 2; }

root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${NVKV_VM_CACHE:-$HOME/.cache/nvkv-vm}
work=$root/target/vm
mkdir -p "$cache" "$work"

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[[ -x /bin/busybox ]] || need+=(busybox-static)
command -v depmod >/dev/null || need+=(kmod)
command -v cpio >/dev/null || need+=(cpio)
if [[ ${#need[@]} -gt 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
fi

# The kernel: Debian's current 6.1 image package, extracted into the cache.
if [[ ! -f "$cache/kver" ]]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-6/ {print $2; exit}')
    if [[ -z "$pkg" ]]; then
        apt-get update -q >/dev/null
        pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-6/ {print $2; exit}')
    fi
    [[ -n "$pkg" ]] || { echo "error: no linux-image-6.x package in the apt lists (apt-get update?)" >&2; exit 1; }
    (cd "$cache" && rm -rf kernel ./*.deb && apt-get download "$pkg" >/dev/null 2>&1 && dpkg-deb -x ./*.deb kernel)
    kver=$(ls "$cache/kernel/lib/modules")
    depmod -b "$cache/kernel" "$kver"
    echo "$kver" > "$cache/kver"
fi
kver=$(cat "$cache/kver")

# The initramfs: busybox, the modules that mount 9p, and /init.
initrd=$cache/initrd-$(sha1sum "$root/tests/vm/init" | cut -c1-12).cpio.gz
if [[ ! -f "$initrd" ]]; then
    ir=$(mktemp -d)
    mkdir -p "$ir"/{bin,dev,proc,sys,tmp,usr,kroot,run,etc,kmods}
    cp /bin/busybox "$ir/bin/busybox"
    for m in virtio_pci 9p 9pnet_virtio; do
        modprobe -d "$cache/kernel" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
    done | awk '!seen[$0]++' > "$ir/kmods/order.full"
    : > "$ir/kmods/order"
    while read -r ko; do
        name=$(basename "$ko" .xz)
        case "$ko" in
            *.xz) xz -dc "$ko" > "$ir/kmods/$name" ;;
            *) cp "$ko" "$ir/kmods/$name" ;;
        esac
        echo "$name" >> "$ir/kmods/order"
    done < "$ir/kmods/order.full"
    cp "$root/tests/vm/init" "$ir/init"
    chmod +x "$ir/init"
    (cd "$ir" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$initrd")
    rm -rf "$ir"
fi

# One run's files: the command, its exit status, the namespace images.
run=$(mktemp -d "$work/run.XXXXXX")
trap 'rm -rf "$run"' EXIT
etc_ssl=0
[[ -d /etc/ssl ]] && etc_ssl=1
printf 'NVKV_VM_MODULES=%q\nNVKV_VM_NVME=%q\nNVKV_VM_REPO=%q\nNVKV_VM_ETC_SSL=%q\n' \
    "$modules" "$nvme_driver" "$root" "$etc_ssl" > "$run/env"
{
    printf 'cd %q\n' "$root"
    printf '%q ' "$@"
    echo
} > "$run/cmd.sh"
for d in 4k 512; do
    img=$work/nvme-$d.img
    if [[ $keep -eq 0 || ! -f "$img" ]]; then
        rm -f "$img"
        truncate -s "$disk" "$img"
    fi
done

# The TSC as clocksource, as on bare metal: clock_gettime stays in the vDSO.
append="console=ttyS0 quiet panic=-1 clocksource=tsc tsc=reliable nvkv.run=$run nvkv.repo=$root nvkv.kver=$kver"
[[ $iommu -eq 1 ]] && append+=" intel_iommu=on iommu=pt"
qemu_args=(
    -nographic -no-reboot -m "$mem" -smp 2 -cpu max -accel tcg
    -kernel "$cache/kernel/boot/vmlinuz-$kver" -initrd "$initrd"
    -append "$append"
    -virtfs "local,path=/usr,mount_tag=usr,security_model=none,readonly=on"
    -virtfs "local,path=$root,mount_tag=repo,security_model=none"
    -virtfs "local,path=$cache/kernel,mount_tag=kroot,security_model=none,readonly=on"
    -drive "file=$work/nvme-4k.img,if=none,id=nvm0,format=raw,cache=none"
    -device "nvme,serial=nvkv4k,drive=nvm0,logical_block_size=4096,physical_block_size=4096"
    -drive "file=$work/nvme-512.img,if=none,id=nvm1,format=raw,cache=none"
    -device "nvme,serial=nvkv512,drive=nvm1,logical_block_size=512,physical_block_size=512"
    -nic none
)
if [[ $etc_ssl -eq 1 ]]; then
    qemu_args+=(-virtfs "local,path=/etc/ssl,mount_tag=etcssl,security_model=none,readonly=on")
fi
if [[ $iommu -eq 1 ]]; then
    qemu_args+=(-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on,aw-bits=48)
fi

set +e
timeout "$tmo" qemu-system-x86_64 "${qemu_args[@]}" < /dev/null | tr -d '\r'
set -e
if [[ ! -f "$run/status" ]]; then
    echo "error: the guest did not report an exit status (timeout ${tmo}s, or a crash: see above)" >&2
    exit 124
fi
status=$(cat "$run/status")
if [[ "$status" != 0 ]]; then
    echo "error: the guest's command ($*) exited with status $status" >&2
fi
exit "$status"
