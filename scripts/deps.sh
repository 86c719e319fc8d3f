#!/usr/bin/env bash
# Installs what `make test`, `make demo` and `make bench` need on a fresh Debian machine and
# fetches the test kernel (Debian linux-image-amd64) into the cache. Idempotent: a second run
# does nothing but check.
#
#   scripts/deps.sh [packages|kernel|kernel-arm64|nbdtests|weed|all]      (default: all)
#
# Environment: NBDROOT_CACHE (default ~/.cache/nbdroot).
#
# weed: SeaweedFS (Apache-2.0), the S3-compatible store the object-store tests start, built
# from the Go module proxy into $NBDROOT_CACHE/bin/weed-VERSION (never into the tree).
# `go install` of it fails (its go.mod has replace directives), so the module is
# downloaded and built in a writable copy: about 7 CPU-minutes (406 s measured with an
# empty build cache) and 2.2 GiB of memory, once per version; the binary is 157 MiB.
# SeaweedFS has no Debian package, and its release binaries would be a download from
# outside the package registries.
set -euo pipefail

cache=${NBDROOT_CACHE:-$HOME/.cache/nbdroot}
what=${1:-all}

# command-or-file → Debian package that provides it.
declare -A need=(
  [qemu-system-x86_64]=qemu-system-x86
  [/usr/lib/ipxe/qemu/pxe-virtio.rom]=ipxe-qemu
  [/usr/lib/ipxe/undionly.kpxe]=ipxe
  [/usr/share/OVMF/OVMF_CODE_4M.fd]=ovmf
  [/usr/share/seabios/bios-256k.bin]=seabios
  [socat]=socat
  [mkfs.ext4]=e2fsprogs
  [/bin/busybox]=busybox-static
  [/usr/lib/PXELINUX/pxelinux.0]=pxelinux
  [/usr/lib/syslinux/modules/bios/ldlinux.c32]=syslinux-common
  [nbd-server]=nbd-server
  [nbd-client]=nbd-client
  [nbdkit]=nbdkit
  [qemu-nbd]=qemu-utils
  [nbdinfo]=libnbd-bin
  [nbdsh]=python3-libnbd
  [fio]=fio
  [cryptsetup]=cryptsetup-bin
  [ip]=iproute2
  [zstd]=zstd
  [xz]=xz-utils
  [lz4]=lz4
  [debootstrap]=debootstrap
  [depmod]=kmod
  [lvm]=lvm2
  [dnsmasq]=dnsmasq-base
  [curl]=curl
  [openssl]=openssl
  [tcpdump]=tcpdump
  [sfdisk]=fdisk
  [qemu-system-aarch64]=qemu-system-arm
  [loadkeys]=kbd
  [/usr/share/keymaps/i386/qwertz/de-latin1.kmap.gz]=console-data
  [ckbcomp]=console-setup
)

packages() {
  local missing=()
  for k in "${!need[@]}"; do
    if [[ $k == /* ]]; then [[ -e $k ]] && continue
    else command -v "$k" >/dev/null 2>&1 && continue; fi
    missing+=("${need[$k]}")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "deps: installing ${missing[*]}" >&2
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

kernel() {
  # The kernel is unpacked once per version; "current" points at the newest fetched.
  if [[ -e $cache/kernel/current/vmlinuz ]]; then return 0; fi
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  echo "deps: fetching the test kernel (Debian linux-image-amd64)" >&2
  (cd "$tmp" && apt-get download linux-image-amd64 >/dev/null 2>&1) || {
    [[ $(id -u) -ne 0 ]] || apt-get update -qq
    (cd "$tmp" && apt-get download linux-image-amd64 >/dev/null 2>&1)
  }
  local meta dep
  meta=$(ls "$tmp"/linux-image-amd64_*.deb)
  dep=$(dpkg-deb -f "$meta" Depends | sed -n 's/^\(linux-image-[^ ,]*\).*/\1/p')
  (cd "$tmp" && apt-get download "$dep" >/dev/null 2>&1)
  local ver=${dep#linux-image-}
  local dir=$cache/kernel/$ver
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  dpkg-deb -x "$tmp"/"$dep"_*.deb "$dir.tmp/root"
  ln -s "root/boot/vmlinuz-$ver" "$dir.tmp/vmlinuz"
  ln -s "root/boot/config-$ver" "$dir.tmp/config"
  ln -s "root/lib/modules/$ver" "$dir.tmp/modules"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  ln -sfn "$ver" "$cache/kernel/current"
  echo "deps: kernel $ver in $dir" >&2
}

# The nbd project's protocol suite (tests/run: nbd-tester-client, its traces and certificates)
# for TestNBDSuite, built from Debian's pinned upstream tarball of nbd into
# $cache/nbd-tests by scripts/nbd-tests.sh. Rebuilt only when the pinned version changes.
nbd_version=3.26.1
nbd_sha256=f0cf509fa5b20b1a07f7904eb637e9b47d3e30b6ed6f00075af5d8b701c78fef
nbdtests() {
  local out=$cache/nbd-tests
  [[ -x $out/nbd-tester-client && $(cat "$out/.version" 2>/dev/null) == "$nbd_version" ]] && return 0
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  local tarball=nbd_${nbd_version}.orig.tar.xz
  echo "deps: nbd $nbd_version's test suite into $out" >&2
  curl -fsS --retry 3 -o "$tmp/$tarball" "http://deb.debian.org/debian/pool/main/n/nbd/$tarball"
  echo "$nbd_sha256  $tmp/$tarball" | sha256sum -c --quiet -
  tar xJf "$tmp/$tarball" -C "$tmp"
  NBDROOT_CACHE=$cache "$(dirname "$0")/nbd-tests.sh" "$tmp/nbd-$nbd_version"
  echo "$nbd_version" >"$out/.version"
}

# kernel_arm64 fetches Debian's linux-image-arm64 for the arm64 boot test into
# $cache/kernel-arm64/current, like kernel() does for amd64, with busybox-static for arm64
# (the test root's shell). The arm64 package lists live in a private apt state under the
# cache, so the machine's dpkg architectures and apt lists are left alone.
kernel_arm64() {
  if [[ -e $cache/kernel-arm64/current/vmlinuz && -e $cache/kernel-arm64/current/busybox ]]; then return 0; fi
  local st=$cache/apt-arm64
  mkdir -p "$st/lists/partial" "$st/cache/archives/partial"
  touch "$st/status"
  local apt=(apt-get -qq -o APT::Architecture=arm64 -o APT::Architectures=arm64
    -o Dir::State::Lists="$st/lists" -o Dir::Cache="$st/cache" -o Dir::State::status="$st/status"
    -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  echo "deps: fetching the arm64 test kernel (Debian linux-image-arm64)" >&2
  "${apt[@]}" update >/dev/null
  (cd "$tmp" && "${apt[@]}" download linux-image-arm64 >/dev/null)
  local meta dep
  meta=$(ls "$tmp"/linux-image-arm64_*.deb)
  dep=$(dpkg-deb -f "$meta" Depends | sed -n 's/^\(linux-image-[^ ,]*\).*/\1/p')
  (cd "$tmp" && "${apt[@]}" download "$dep" >/dev/null)
  local ver=${dep#linux-image-}
  local dir=$cache/kernel-arm64/$ver
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  dpkg-deb -x "$tmp"/"$dep"_*.deb "$dir.tmp/root"
  ln -s "root/boot/vmlinuz-$ver" "$dir.tmp/vmlinuz"
  ln -s "root/boot/config-$ver" "$dir.tmp/config"
  ln -s "root/lib/modules/$ver" "$dir.tmp/modules"
  (cd "$tmp" && "${apt[@]}" download busybox-static >/dev/null)
  dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/bb"
  cp "$tmp/bb/bin/busybox" "$dir.tmp/busybox"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  ln -sfn "$ver" "$cache/kernel-arm64/current"
  # The arm64 package lists served this fetch only: the kernel is cached from now on.
  rm -rf "$st"
  echo "deps: arm64 kernel $ver in $dir" >&2
}

# The version nbdserver/objstore/weedtest.Version expects.
weed_version=20261109003541
weed_module=github.com/seaweedfs/seaweedfs@v0.0.0-$weed_version-7506e5f91cd6

weed() {
  local bin=$cache/bin/weed-$weed_version
  if [[ -x $bin ]]; then return 0; fi
  command -v go >/dev/null || { echo "deps: weed needs the Go toolchain" >&2; return 1; }
  echo "deps: building SeaweedFS ($weed_module) into $bin — several minutes" >&2
  local dir tmp
  dir=$(go mod download -json "$weed_module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d $dir ]] || { echo "deps: go mod download $weed_module gave no directory" >&2; return 1; }
  tmp=$(mktemp -d)
  trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' RETURN
  cp -r "$dir" "$tmp/src"
  chmod -R u+w "$tmp/src"
  # -mod=readonly: the module's own go.sum checks every dependency (the proxy's copy of
  # SeaweedFS itself is checked against the checksum database by go mod download);
  # -trimpath and no VCS stamp: the same binary from the same version on any machine.
  (cd "$tmp/src" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -buildvcs=false \
    -ldflags='-s -w' -o "$tmp/weed" ./weed)
  mkdir -p "$cache/bin"
  mv "$tmp/weed" "$bin.tmp" && mv "$bin.tmp" "$bin"
  echo "deps: SeaweedFS in $bin" >&2
}

case $what in
  packages) packages ;;
  kernel) kernel ;;
  kernel-arm64) kernel_arm64 ;;
  nbdtests) nbdtests ;;
  weed) weed ;;
  all) packages; kernel; kernel_arm64; nbdtests; weed ;;
  *) echo "usage: $0 [packages|kernel|kernel-arm64|nbdtests|weed|all]" >&2; exit 2 ;;
esac
