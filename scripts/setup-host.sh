#!/usr/bin/env bash
# Installs everything agentfleet needs on a Debian 12 host (idempotent), then the venv.
# The venv is made from Debian's python3 with system site packages, because libguestfs's
# Python module (python3-guestfs) and libvirt's (python3-libvirt) come only from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # bake: diskimage-builder's host needs, the libguestfs appliance and its kernel
  debootstrap sudo qemu-utils libguestfs-tools python3-guestfs linux-image-amd64 fdisk e2fsprogs
  squashfs-tools xz-utils curl ca-certificates git gdisk
  # clone: libvirt and QEMU
  qemu-system-x86 libvirt-daemon-system libvirt-clients python3-libvirt openssh-client netcat-openbsd
  # agentd on the host for tests, the collector's PostgreSQL tests and headless page tests
  python3-venv python3-systemd postgresql chromium chromium-driver
  # bench/collector.py: the HTTP load generator
  wrk
  # the fleet tool's tests: real sshd instances on loopback play the hypervisors (never started as a service)
  openssh-server
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${#missing[@]} apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: apt packages present"
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[host,test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi
.venv/bin/python -c 'import guestfs, libvirt, yaml, fastapi' && echo "setup: venv ready (.venv)"
