#!/usr/bin/env bash
# Boots a unikernel disk image in an Intel TDX Trust Domain, for hosts without Rust.
#
# It runs the same QEMU command line as `cargo xtask run --tdx` (xtask/src/td/qemu.rs, checked
# against QEMU 10.1 docs/system/i386/tdx.rst and target/i386/kvm/tdx.c). A golden test in xtask
# compares this script's --dry-run output with the Rust one, so change both together.
#
# Needs QEMU >= 10.1 and a host kernel with KVM TDX enabled (kvm_intel tdx=Y);
# `cargo xtask doctor` checks the host when Rust is available.

set -euo pipefail

readonly PROG="run-td.sh"
readonly MIN_VCPUS=1 MAX_VCPUS=255
readonly MIN_MEMORY_MIB=256 MAX_MEMORY_MIB=65536

usage() {
    cat <<EOF
usage: $PROG [--dry-run] IMAGE [FIRMWARE] [-- QEMU_ARG...]

Boots IMAGE (a raw UEFI disk image) in a TD with QEMU, serial console on stdio; once the
kernel's virtio console is up, its output also goes to virtio-console.log in the current
directory.

  --dry-run   print the QEMU command line instead of running it
  IMAGE       the disk image built by \`cargo xtask build\`
  FIRMWARE    a TDVF-capable combined OVMF image (default: /usr/share/ovmf/OVMF.fd)
  QEMU_ARG    appended to the QEMU command line, e.g. \`-- -d guest_errors -D qemu.log\`
              to log a TD's ReportFatalError message

environment:
  QEMU        QEMU binary, version 10.1 or newer (default: qemu-system-x86_64)
  VCPUS       number of vCPUs, $MIN_VCPUS to $MAX_VCPUS (default: 1)
  MEMORY_MIB  guest memory in MiB, $MIN_MEMORY_MIB to $MAX_MEMORY_MIB (default: 2048)

QEMU exits with status 33 when the kernel reports success and 35 when it reports failure.
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 2
}

# Quotes one argument for a POSIX shell exactly as xtask's shell_quote() does: left alone when
# it is made only of characters no shell treats specially, otherwise single-quoted with ' as '\''.
quote() {
    local arg=$1
    if [[ -n $arg && $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
        printf '%s' "$arg"
    else
        local q="'"
        printf "'%s'" "${arg//$q/$q\\$q$q}"
    fi
}

# A decimal number within [min, max], or die naming the variable.
check_range() {
    local name=$1 value=$2 min=$3 max=$4
    if [[ ! $value =~ ^[0-9]{1,9}$ ]] || ((10#$value < min || 10#$value > max)); then
        die "$name=$value is invalid: use a number from $min to $max"
    fi
}

dry_run=0
if [[ ${1-} == --dry-run ]]; then
    dry_run=1
    shift
fi
case ${1-} in
    -h | --help)
        usage
        exit 0
        ;;
    '' | -*)
        usage >&2
        exit 2
        ;;
esac
image=$1
shift
firmware=/usr/share/ovmf/OVMF.fd
if (($# > 0)) && [[ $1 != -- ]]; then
    firmware=$1
    shift
fi
extra_args=()
if (($# > 0)); then
    [[ $1 == -- ]] || die "unexpected argument $1 (QEMU arguments go after --; see --help)"
    shift
    extra_args=("$@")
fi
qemu=${QEMU:-qemu-system-x86_64}
vcpus=${VCPUS:-1}
memory_mib=${MEMORY_MIB:-2048}

[[ -e $image ]] || die "image $image does not exist"
[[ -f $image && -r $image ]] || die "image $image is not a readable file"
[[ -e $firmware ]] || die "firmware $firmware does not exist (install the ovmf package or pass FIRMWARE)"
[[ -f $firmware && -r $firmware ]] || die "firmware $firmware is not a readable file"
check_range VCPUS "$vcpus" "$MIN_VCPUS" "$MAX_VCPUS"
check_range MEMORY_MIB "$memory_mib" "$MIN_MEMORY_MIB" "$MAX_MEMORY_MIB"
vcpus=$((10#$vcpus))
memory_mib=$((10#$memory_mib))

# The same arguments, in the same order, as td_qemu_args() in xtask/src/td/qemu.rs (the machine
# and its devices from xtask/src/machine.rs, shared with the TCG runs on the td machine); see there for
# why each one is needed. A comma in a -drive value must be doubled.
cmd=(
    "$qemu"
    -accel kvm
    -cpu host
    -object tdx-guest,id=tdx0,sept-ve-disable=on
    -machine q35,pic=off,smm=off,kernel-irqchip=split,confidential-guest-support=tdx0
    -nodefaults
    -serial stdio
    -drive "if=none,id=disk0,format=raw,file=${image//,/,,}"
    -device virtio-blk-pci,drive=disk0
    -device isa-debug-exit,iobase=0xf4,iosize=0x04
    -chardev file,id=virtcon0,path=virtio-console.log
    -device virtio-serial-pci,max_ports=1,disable-legacy=on,iommu_platform=on
    -device virtconsole,chardev=virtcon0
    -bios "$firmware"
    -nic none
    -display none
    -no-reboot
    -action panic=exit-failure
    -smp "$vcpus"
    -m "${memory_mib}M"
    ${extra_args[@]+"${extra_args[@]}"}
)

if ((dry_run)); then
    line=""
    for arg in "${cmd[@]}"; do
        line+="${line:+ }$(quote "$arg")"
    done
    printf '%s\n' "$line"
    exit 0
fi

command -v "$qemu" >/dev/null 2>&1 || die "QEMU binary $qemu not found (set QEMU=/path/to/qemu-system-x86_64, version 10.1 or newer)"
exec "${cmd[@]}"
