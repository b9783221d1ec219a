#!/usr/bin/env bash
# Reserve, show and give back hugepages for nvkv's SPDK engine.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: hugepages/hugepages.sh COMMAND [options]

Commands:
  reserve N     reserve N hugepages (per NUMA node with --node, else
                spread by the kernel) and mount hugetlbfs
  status        show reserved, free and surplus hugepages per size and node,
                and the hugetlbfs mounts
  release       give every reserved hugepage of the size back (and unmount
                the hugetlbfs mount this script made)
  persist N     print the lines that make a reservation of N pages survive a
                reboot (sysctl for 2 MiB pages, the kernel command line for
                1 GiB pages); changes nothing

Options:
  --size 2M|1G  page size (default 2M). 1 GiB pages are best reserved at
                boot: memory fragments, and a late reservation may get fewer.
  --node N      NUMA node to reserve on (default: all, via the global count)
  --mount DIR   hugetlbfs mount point (default /dev/hugepages)
  -h, --help    this text

Safe to run twice: reserve sets the count (it does not add), and mounting
is skipped when DIR already is a hugetlbfs mount. Needs root except status.
SPDK finds the mount by itself; nvkv needs no flag for it.
USAGE
}

size=2M
node=""
mnt=/dev/hugepages
cmd=${1:-}
[[ -z "$cmd" || "$cmd" == -h || "$cmd" == --help ]] && { usage; exit 0; }
shift
count=""
if [[ "$cmd" == reserve || "$cmd" == persist ]]; then
    count=${1:-}
    [[ "$count" =~ ^[0-9]+$ ]] || { echo "error: $cmd needs a page count" >&2; exit 2; }
    shift
fi
while [[ $# -gt 0 ]]; do
    case "$1" in
        --size) size=$2; shift 2 ;;
        --node) node=$2; shift 2 ;;
        --mount) mnt=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
done
case "$size" in
    2M|2m|2048k|2048kB) kb=2048 ;;
    1G|1g|1048576k|1048576kB) kb=1048576 ;;
    *) echo "error: --size is 2M or 1G" >&2; exit 2 ;;
esac

sysdir() {
    if [[ -n "$node" ]]; then
        echo "/sys/devices/system/node/node$node/hugepages/hugepages-${kb}kB"
    else
        echo "/sys/kernel/mm/hugepages/hugepages-${kb}kB"
    fi
}

need_root() {
    [[ $EUID -eq 0 ]] || { echo "error: $cmd needs root" >&2; exit 1; }
}

is_hugetlbfs() {
    [[ "$(findmnt -n -o FSTYPE --target "$1" 2>/dev/null)" == hugetlbfs ]] &&
        [[ "$(findmnt -n -o TARGET --target "$1")" == "$(realpath -m "$1")" ]]
}

status() {
    for d in /sys/kernel/mm/hugepages/hugepages-*; do
        [[ -d "$d" ]] || continue
        printf '%-22s total %6s  free %6s  surplus %6s\n' "$(basename "$d")" \
            "$(cat "$d/nr_hugepages")" "$(cat "$d/free_hugepages")" "$(cat "$d/surplus_hugepages")"
    done
    for n in /sys/devices/system/node/node*/hugepages/hugepages-*; do
        [[ -d "$n" ]] || continue
        printf '  %-5s %-20s total %6s  free %6s\n' "$(basename "$(dirname "$(dirname "$n")")")" \
            "$(basename "$n")" "$(cat "$n/nr_hugepages")" "$(cat "$n/free_hugepages")"
    done
    echo "hugetlbfs mounts:"
    findmnt -n -t hugetlbfs -o TARGET,OPTIONS | sed 's/^/  /' || true
}

case "$cmd" in
    status) status ;;
    reserve)
        need_root
        d=$(sysdir)
        [[ -d "$d" ]] || { echo "error: $d missing: no ${size} pages on this kernel/node" >&2; exit 1; }
        echo "$count" > "$d/nr_hugepages"
        got=$(cat "$d/nr_hugepages")
        if ! is_hugetlbfs "$mnt"; then
            mkdir -p "$mnt"
            opts="pagesize=$size"
            mount -t hugetlbfs -o "$opts" nodev "$mnt"
            touch "$mnt/.nvkv-mounted"
        fi
        echo "reserved $got of $count ${size} pages ($(( got * kb / 1024 )) MiB) in $d; hugetlbfs on $mnt"
        if [[ "$got" -lt "$count" ]]; then
            echo "warning: the kernel found only $got free ${size} pages (memory is fragmented; reserve at boot, see 'persist')" >&2
            exit 1
        fi
        ;;
    release)
        need_root
        d=$(sysdir)
        echo 0 > "$d/nr_hugepages"
        if [[ -e "$mnt/.nvkv-mounted" ]] && is_hugetlbfs "$mnt"; then
            rm -f "$mnt/.nvkv-mounted"
            umount "$mnt"
        fi
        echo "released: $(cat "$d/nr_hugepages") ${size} pages left reserved in $d"
        ;;
    persist)
        if [[ $kb -eq 2048 && -z "$node" ]]; then
            echo "# /etc/sysctl.d/80-nvkv-hugepages.conf"
            echo "vm.nr_hugepages = $count"
            echo "# and in /etc/fstab:"
            echo "nodev $mnt hugetlbfs pagesize=2M 0 0"
        elif [[ $kb -eq 2048 ]]; then
            echo "# per-node counts have no sysctl: a systemd unit or rc.local line"
            echo "echo $count > $(sysdir)/nr_hugepages"
        else
            echo "# kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub):"
            echo "default_hugepagesz=1G hugepagesz=1G hugepages=$count"
            echo "# and in /etc/fstab:"
            echo "nodev $mnt hugetlbfs pagesize=1G 0 0"
        fi
        ;;
    *) echo "error: unknown command $cmd (see --help)" >&2; exit 2 ;;
esac
