#!/bin/sh
# Makes the Debian package from a tree `make install DESTDIR=TREE PREFIX=/usr` wrote:
#
#   scripts/deb.sh TREE VERSION ARCH OUT.deb [COMPRESSION]       (make deb runs it)
#
# No debhelper: the control files are written here, conffiles are everything under /etc,
# the manual page is compressed as Debian's policy asks, and dpkg-deb builds the archive
# with root as the owner of every file. The binaries are static: no Depends.
set -eu
tree=$1 version=$2 arch=$3 out=$4 compression=${5:-xz}

# pacman's hooks have no use on Debian.
rm -rf "$tree/usr/share/libalpm"
gzip -9nf "$tree/usr/share/man/man8/nbdroot.8"

mkdir -p "$tree/DEBIAN"
(cd "$tree" && find etc -type f | sed 's|^|/|' | sort) > "$tree/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$tree" | cut -f1)
cat > "$tree/DEBIAN/control" <<CONTROL
Package: nbdroot
Version: $version
Architecture: $arch
Maintainer: nbdroot developers <nbdroot@users.noreply.github.com>
Installed-Size: $size
Section: admin
Priority: optional
Recommends: ipxe
Suggests: pxelinux, syslinux-common
Homepage: https://github.com/nbdroot/nbdroot
Description: diskless Linux from a root file system on NBD
 nbdroot boots diskless machines (PXE thin clients) from a root file system on
 a Network Block Device, optionally LUKS-encrypted: a Go initramfs
 (nbdroot-init) with its NBD client, and the nbdroot tool, whose NBD server
 boots clients over HTTP, TFTP and proxyDHCP with the kernels in each image.
 .
 Installed in a client root (then "nbdroot install --root /"), its kernel
 hooks build /boot/nbdroot.img-VERSION for every kernel the package manager
 installs; on a server they do nothing.
CONTROL

# The maintainer scripts work chrooted (dpkg --root, dpkg in a chroot) and chrootless
# (dpkg --force-script-chrootless, DPKG_ROOT set).
cat > "$tree/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
# A client root (nbdroot install made it one): rebuild its kernels' images with this
# version's init. A failure fails the configuration: the old images stay as they were.
if [ "$1" = configure ] && [ -e "$DPKG_ROOT/etc/nbdroot/initramfs.conf" ]; then
	"$DPKG_ROOT/usr/bin/nbdroot" install --root "${DPKG_ROOT:-/}" >&2
fi
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
SCRIPT
cat > "$tree/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
# The images in /boot and /etc/nbdroot/initramfs.conf stay: the client still boots with
# them. The server's state (/var/lib/nbdroot: clients' overlays) is never removed here.
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
SCRIPT
chmod 0755 "$tree/DEBIAN/postinst" "$tree/DEBIAN/postrm"
dpkg-deb --root-owner-group -Z"$compression" --build "$tree" "$out" >/dev/null
echo "$out"
