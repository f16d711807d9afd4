#!/usr/bin/env bash
# System packages the targets work needs (Debian). Idempotent; run as root (CI runs as root).
#   scripts/setup-system.sh            openssh-server (tests/test_ssh_runner.py), chromium (HTML check)
#   scripts/setup-system.sh arm64      + debootstrap, qemu-user-static, binfmt-support (make arm64-check)
#   scripts/setup-system.sh adb        + adb (only to talk to a real phone; tests do not need it)
# Without root or apt-get it prints what is missing and exits 0: the tests that need a package
# skip with a clear reason instead of failing.
set -euo pipefail
pkgs=(openssh-server openssh-client chromium)
for extra in "$@"; do
  case "$extra" in
    arm64) pkgs+=(debootstrap qemu-user-static binfmt-support) ;;
    adb) pkgs+=(adb) ;;
    *) echo "setup-system.sh: unknown group $extra (use arm64, adb)" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-system.sh: not root or no apt-get; missing: ${missing[*]} (dependent tests will skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package enables sshd as a system service on machines with systemd; the tests start
# their own sshd on a free loopback port, so no system-wide daemon is needed.
