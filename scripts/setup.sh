#!/usr/bin/env bash
# Installs what `cargo xtask run` and `cargo xtask test` need on a Debian or Ubuntu host:
# QEMU (qemu-system-x86), UEFI firmware (ovmf), a software TPM (swtpm, swtpm-tools, tpm2-tools)
# and a C toolchain for linking host tools (gcc, libc6-dev), plus the pinned Rust toolchain
# through rustup. Idempotent, and silent when everything is already present. As a non-root
# user it prints the sudo command to run.
# With --fuzz it also installs cargo-fuzz (for `cargo xtask fuzz`; CI passes it).
set -euo pipefail

fuzz=0
for arg in "$@"; do
  case "$arg" in
    --fuzz) fuzz=1 ;;
    *) echo "setup: unknown option $arg (known: --fuzz)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
packages=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || packages+=(qemu-system-x86)
[ -f /usr/share/ovmf/OVMF.fd ] || [ -n "${OVMF_PATH:-}" ] || packages+=(ovmf)
command -v cc >/dev/null 2>&1 || packages+=(gcc libc6-dev)
# The TPM runs of `cargo xtask test` boot with a software TPM (swtpm) and read its PCRs back
# (swtpm_ioctl, tpm2_pcrread); without them those runs are skipped with the reason.
command -v swtpm >/dev/null 2>&1 || packages+=(swtpm)
command -v swtpm_ioctl >/dev/null 2>&1 || packages+=(swtpm-tools)
command -v tpm2_pcrread >/dev/null 2>&1 || packages+=(tpm2-tools)

if [ "${#packages[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: missing ${packages[*]}; this script knows apt only. Install QEMU and OVMF with your package manager (Fedora: dnf install qemu-system-x86 edk2-ovmf; Arch: pacman -S qemu-system-x86 edk2-ovmf)." >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${packages[*]}. Run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${packages[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# rust-toolchain.toml pins the nightly, its components (rustfmt and clippy for .ci/lint among
# them) and the kernel and loader targets. `rustup toolchain install` in the checkout installs
# whatever of that is missing, also on a machine that has the nightly from before a component
# was added; doing it here keeps the first `cargo xtask` quiet and fails early offline.
if command -v rustup >/dev/null 2>&1; then
  if ! (cd "$root" && rustup toolchain install >/dev/null 2>&1); then
    echo "setup: rustup toolchain install failed in $root (offline?); run it there to see why" >&2
    exit 1
  fi
else
  echo "setup: rustup not found. Install it (Debian 13+/Ubuntu 24.04+: apt-get install rustup;" >&2
  echo "  elsewhere: curl --proto '=https' -sSf https://sh.rustup.rs | sh), then rerun this script." >&2
  exit 1
fi

# cargo-fuzz drives libFuzzer for `cargo xtask fuzz`; it builds with the pinned nightly. The
# version is the one the fuzz targets were written against.
if [ "$fuzz" -eq 1 ] && ! (cd "$root" && cargo fuzz --version >/dev/null 2>&1); then
  echo "setup: installing cargo-fuzz 0.13.2"
  if ! (cd "$root" && cargo install --quiet --locked cargo-fuzz --version 0.13.2); then
    echo "setup: cargo install cargo-fuzz failed (offline?); run it to see why" >&2
    exit 1
  fi
fi
