#!/usr/bin/env bash
# Builds the nbd project's protocol test client (tests/run/nbd-tester-client) from an nbd
# source tree and puts it, with the suite's traces and certificates, where TestNBDSuite
# looks: $NBDROOT_CACHE/nbd-tests (default ~/.cache/nbdroot/nbd-tests).
#
#   scripts/nbd-tests.sh NBD_SOURCE_DIR
#
# NBD_SOURCE_DIR is a release tree of NetworkBlockDevice/nbd (3.26.1: scripts/deps.sh
# nbdtests fetches Debian's pinned upstream tarball and calls this). Only the tester is
# compiled, with no configure run: it needs GLib and GnuTLS and nothing of the server; the
# few answers configure would give are written below (x86_64/arm64 LP64 type sizes).
set -euo pipefail

src=${1:?usage: $0 NBD_SOURCE_DIR}
cache=${NBDROOT_CACHE:-$HOME/.cache/nbdroot}
out=$cache/nbd-tests
for f in tests/run/nbd-tester-client.c cliserv.c buffer.c crypto-gnutls.c \
  tests/run/integrity-test.tr tests/run/integrityhuge-test.tr tests/run/certs/server-cert.pem; do
  [[ -e $src/$f ]] || { echo "nbd-tests: $src/$f is missing: not an nbd source tree?" >&2; exit 2; }
done

if ! pkg-config --exists glib-2.0 gnutls 2>/dev/null; then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo=sudo
  echo "nbd-tests: installing libglib2.0-dev libgnutls28-dev" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    gcc pkg-config libglib2.0-dev libgnutls28-dev >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The few answers configure would give the tester's sources.
cat >"$tmp/config.h" <<'H'
#define HAVE_GNUTLS 1
#define HAVE_MKSTEMP 1
#define HAVE_FDATASYNC 1
#define NBD_LFS 1
#define SIZEOF_UNSIGNED_SHORT_INT 2
#define SIZEOF_UNSIGNED_INT 4
#define SIZEOF_UNSIGNED_LONG_INT 8
#define SIZEOF_UNSIGNED_LONG_LONG_INT 8
H
# shellcheck disable=SC2046
gcc -O2 -o "$tmp/nbd-tester-client" -I"$tmp" -I"$src" -I"$src/tests/run" \
  "$src/tests/run/nbd-tester-client.c" "$src/cliserv.c" "$src/buffer.c" "$src/crypto-gnutls.c" \
  $(pkg-config --cflags --libs glib-2.0 gnutls)

rm -rf "$out.tmp" && mkdir -p "$out.tmp"
cp "$tmp/nbd-tester-client" "$src/tests/run/integrity-test.tr" "$src/tests/run/integrityhuge-test.tr" "$out.tmp/"
cp -r "$src/tests/run/certs" "$out.tmp/certs"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "nbd-tests: $out (go test ./test -run TestNBDSuite)" >&2
