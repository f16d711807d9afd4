#!/usr/bin/env bash
# An arm64 (aarch64) Debian bookworm root filesystem for the arm64 check (issue #5): artifacts run
# there under qemu-user on the real aarch64 kernels of onnxruntime and LiteRT.
#
#   scripts/arm64-rootfs.sh [ROOTFS]        default ROOTFS: .cache/arm64-rootfs (in the repo)
#
# Steps (each skipped when its stamp exists, so a second run takes a second):
#   1. debootstrap --foreign --arch=arm64 bookworm, copy qemu-aarch64-static in, second stage;
#   2. apt-get install python3 python3-venv inside (emulated);
#   3. `pip download` the aarch64 wheels of numpy, onnxruntime, ai-edge-litert on the host
#      (same pinned versions as the x86 venv; native speed), then a venv inside the rootfs and an
#      offline `pip install --no-index` of those wheels (emulated, no network from the chroot).
# The final stamp, ROOTFS/.edgecompress-ready, is what the qemu runner and the slow test look for.
# Needs root, debootstrap, qemu-user-static and binfmt-support (scripts/setup-system.sh arm64) and
# the binfmt_misc handler for aarch64 (mounted and enabled here when missing).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rootfs="${1:-${ARM64_ROOTFS:-$here/.cache/arm64-rootfs}}"
suite="${ARM64_SUITE:-bookworm}"
mirror="${ARM64_MIRROR:-http://deb.debian.org/debian}"
py="${PYTHON:-$here/.venv/bin/python}"
wheels="$here/.cache/arm64-wheels"
# The same versions as the x86 venv (pyproject pins), so x86 and arm64 differ only in kernels.
pins=(numpy==2.4.6 onnxruntime==1.32.0 ai-edge-litert==2.3.0)
ready="$rootfs/.edgecompress-ready"
key="$(printf '%s\n' "$suite" "${pins[@]}" | cksum | cut -d' ' -f1)"

log() { printf 'arm64-rootfs: %s\n' "$*" >&2; }

if [ -f "$ready" ] && [ "$(cat "$ready")" = "$key" ]; then
  log "ready: $rootfs (stamp $ready)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "needs root (debootstrap, chroot)"; exit 1
fi
for tool in debootstrap qemu-aarch64-static chroot; do
  command -v "$tool" >/dev/null || { log "missing $tool: run scripts/setup-system.sh arm64"; exit 1; }
done

# binfmt_misc: lets the kernel hand aarch64 ELF files to qemu (every process in the chroot).
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
  mount -t binfmt_misc binfmt_misc "$binfmt" || { log "cannot mount binfmt_misc"; exit 1; }
fi
if [ ! -e "$binfmt/qemu-aarch64" ]; then
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi
if ! grep -q '^enabled' "$binfmt/qemu-aarch64" 2>/dev/null; then
  log "no enabled binfmt handler for aarch64 ($binfmt/qemu-aarch64)"; exit 1
fi

mkdir -p "$rootfs"

# 1. base system
if [ ! -f "$rootfs/.stage-debootstrap" ] && [ -n "$(ls -A "$rootfs" 2>/dev/null)" ]; then
  # A run stopped half-way through debootstrap: start over, but only in a folder that is ours.
  if [ "$(basename "$rootfs")" = arm64-rootfs ] && [ -d "$rootfs/debootstrap" ] && ! mountpoint -q "$rootfs/proc"; then
    log "removing the unfinished rootfs $rootfs"
    rm -rf --one-file-system -- "$rootfs"
    mkdir -p "$rootfs"
  else
    log "$rootfs is not empty and was not finished by this script: remove it or pick another path"; exit 1
  fi
fi
if [ ! -f "$rootfs/.stage-debootstrap" ]; then
  log "debootstrap $suite arm64 -> $rootfs (first stage)"
  debootstrap --foreign --arch=arm64 --variant=minbase "$suite" "$rootfs" "$mirror"
  install -D -m 0755 "$(command -v qemu-aarch64-static)" "$rootfs/usr/bin/qemu-aarch64-static"
  log "second stage (emulated; several minutes)"
  chroot "$rootfs" /debootstrap/debootstrap --second-stage
  touch "$rootfs/.stage-debootstrap"
fi
# The copy kept in the rootfs is what `chroot ROOTFS /usr/bin/qemu-aarch64-static ...` would use
# on a host whose binfmt handler lacks the F (fix-binary) flag.
[ -x "$rootfs/usr/bin/qemu-aarch64-static" ] || \
  install -D -m 0755 "$(command -v qemu-aarch64-static)" "$rootfs/usr/bin/qemu-aarch64-static"

# 2. python3 inside. apt needs /proc and DNS; unmount on exit whatever happens.
mounted=()
cleanup() {
  for ((i=${#mounted[@]}-1; i>=0; i--)); do umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mount_in() {  # mount_in TYPE_OR_BIND SRC DEST
  local dest="$rootfs/$3"
  mkdir -p "$dest"
  if ! mountpoint -q "$dest"; then
    if [ "$1" = bind ]; then mount --bind "$2" "$dest"; else mount -t "$1" "$2" "$dest"; fi
    mounted+=("$dest")
  fi
}
mount_in proc proc proc
if [ ! -f "$rootfs/.stage-python" ]; then
  cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
  log "apt-get install python3 python3-venv (emulated)"
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    /bin/sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null && apt-get clean'
  touch "$rootfs/.stage-python"
fi

# 3. wheels: downloaded on the host for the chroot's platform, installed offline inside.
pyver="$(chroot "$rootfs" /usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
mkdir -p "$wheels"
platforms=()
for minor in 36 35 34 31 28 27 26 17; do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
platforms+=(--platform manylinux2014_aarch64)
log "pip download ${pins[*]} for aarch64 / cp$pyver (host)"
PIP_CONSTRAINT="" "$py" -m pip download --quiet --only-binary=:all: "${platforms[@]}" \
  --python-version "$pyver" --implementation cp --abi "cp$pyver" --abi abi3 --abi none \
  -d "$wheels" "${pins[@]}"
mkdir -p "$rootfs/opt/wheels"
cp -u "$wheels"/*.whl "$rootfs/opt/wheels/"
if [ ! -x "$rootfs/opt/venv/bin/python" ]; then
  log "python3 -m venv /opt/venv (emulated)"
  chroot "$rootfs" /usr/bin/python3 -m venv /opt/venv
fi
log "pip install --no-index ${pins[*]} inside (emulated)"
chroot "$rootfs" /usr/bin/env -i PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root PIP_DISABLE_PIP_VERSION_CHECK=1 \
  /opt/venv/bin/python -m pip install --quiet --no-index --find-links /opt/wheels "${pins[@]}"
log "import check (emulated)"
chroot "$rootfs" /usr/bin/env -i PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root /opt/venv/bin/python -c \
  'import platform, numpy, onnxruntime, ai_edge_litert.interpreter; print(platform.machine(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__)'
printf '%s\n' "$key" > "$ready"
log "ready: $rootfs"
