#!/usr/bin/env bash
# Regenerates the ext2/ext4 images the ext4 package's tests read (e2fsprogs, no mount, no
# root). The trees are fixed; mke2fs gets a fixed UUID and hash seed (the images still differ
# in inode times from run to run). Run from this directory: ./mkimages.sh
set -euo pipefail
export E2FSPROGS_FAKE_TIME=1700000000 SOURCE_DATE_EPOCH=1700000000
uuid=2f1d8a6c-4f1e-4c59-9b4e-7c3d0b5e1a01
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# tree DIR: the common tree every image holds.
tree() {
  local d=$1
  mkdir -p "$d/dir/sub" "$d/big" "$d/links" "$d/boot"
  printf 'hello\n' >"$d/hello.txt"
  printf 'a in dir\n' >"$d/dir/a.txt"
  printf 'deep\n' >"$d/dir/sub/deep.txt"
  : >"$d/empty"
  # 300 entries with long names: several directory blocks, indexed by e2fsck -D below.
  for i in $(seq -w 0 299); do printf '%s\n' "$i" >"$d/big/entry-with-a-rather-long-name-$i"; done
  # A sparse file: one 1 KiB block of data every 2 KiB, 400 times: 400 extents, an
  # extent tree of depth 2 with 1 KiB blocks (4 in the inode, 84 per leaf).
  for i in $(seq 0 399); do
    printf 'block %04d ' "$i" | head -c 1024 | dd of="$d/sparse" bs=1024 seek=$((2*i)) conv=notrunc status=none
  done
  ln -s /hello.txt "$d/links/abs"
  ln -s ../hello.txt "$d/links/rel"
  ln -s loop2 "$d/links/loop1"
  ln -s loop1 "$d/links/loop2"
  ln -s self "$d/links/self"
  ln -s nowhere "$d/links/dangling"
  ln -s ../../../../../hello.txt "$d/links/escape"
  ln -s ../dir "$d/links/dirlink"
  ln -s "../dir/sub/./../sub/././././././././././././././././././././././././././././././deep.txt" "$d/links/slow"
  ln -s ../hello.txt/x "$d/links/notdir"
  printf 'kernel 6.1\n' >"$d/boot/vmlinuz-6.1.0-18-amd64"
  printf 'initramfs 6.1\n' >"$d/boot/nbdroot.img-6.1.0-18-amd64"
  find "$d" -exec touch -h -d @1700000000 {} +
}

mk() { # NAME SIZE mkfs-args…
  local name=$1 size=$2; shift 2
  rm -rf "$tmp/t" && tree "$tmp/t"
  rm -f "$tmp/$name.img"
  mke2fs -q -F -U "$uuid" -E hash_seed=$uuid,root_owner=0:0 -L "$name" -d "$tmp/t" "$@" "$tmp/$name.img" "$size"
  e2fsck -fyD "$tmp/$name.img" >/dev/null 2>&1 || [[ $? -le 1 ]]
  gzip -9n <"$tmp/$name.img" >"$name.img.gz"
}

mk ext4-1k 2M -t ext4 -b 1024 -N 1024 -O ^has_journal
mk ext4-4k 8M -t ext4 -b 4096 -N 1024
mk ext4-metabg 2M -t ext4 -b 1024 -g 256 -N 512 -O meta_bg,^resize_inode,^has_journal
mk ext2 2M -t ext2 -b 1024 -N 1024

# Inline data: small files and directories live in the inode.
rm -rf "$tmp/t" && mkdir -p "$tmp/t/small" "$tmp/t/boot"
printf 'short\n' >"$tmp/t/small/short"                       # in i_block
head -c 100 /dev/zero | tr '\0' 'x' >"$tmp/t/small/hundred"  # i_block + system.data
printf 'kernel\n' >"$tmp/t/boot/vmlinuz-6.2"
printf 'initramfs\n' >"$tmp/t/boot/nbdroot.img-6.2"
find "$tmp/t" -exec touch -h -d @1700000000 {} +
rm -f "$tmp/inline.img"
mke2fs -q -F -U "$uuid" -E root_owner=0:0 -t ext4 -b 1024 -I 256 -N 32 -O inline_data,^has_journal -d "$tmp/t" "$tmp/inline.img" 128K
gzip -9n <"$tmp/inline.img" >inline.img.gz

# The fuzz seed: every structure the reader knows in 128 KiB (fuzzing mutates all of it).
rm -rf "$tmp/t" && mkdir -p "$tmp/t/d" "$tmp/t/boot"
printf 'hello\n' >"$tmp/t/hello"
for i in $(seq -w 0 39); do : >"$tmp/t/d/name-of-some-length-$i"; done
for i in 0 2 4 6 8 10; do printf 'x' | dd of="$tmp/t/frag" bs=1024 seek=$i conv=notrunc status=none; done
ln -s loop "$tmp/t/loop"
ln -s /hello "$tmp/t/abs"
ln -s "d/../d/../d/../d/../d/../d/../d/../d/../d/../d/../../hello" "$tmp/t/slow"
printf 'k\n' >"$tmp/t/boot/vmlinuz-1"
printf 'i\n' >"$tmp/t/boot/nbdroot.img-1"
find "$tmp/t" -exec touch -h -d @1700000000 {} +
rm -f "$tmp/fuzz.img"
mke2fs -q -F -U "$uuid" -E root_owner=0:0 -t ext4 -b 1024 -N 64 -O ^has_journal,^resize_inode -d "$tmp/t" "$tmp/fuzz.img" 128K
e2fsck -fyD "$tmp/fuzz.img" >/dev/null 2>&1 || [[ $? -le 1 ]]
gzip -9n <"$tmp/fuzz.img" >fuzz.img.gz
