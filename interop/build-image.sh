#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the interop guest: a debootstrapped Debian bookworm userland with rdma-core's verbs
# library, the rxe provider, ibverbs-utils (ibv_rc_pingpong), perftest and iproute2 (rdma tool),
# packed whole as an uncompressed initramfs, plus Debian's kernel (uncompressed vmlinux when it can
# be extracted) and only the kernel modules rxe and virtio-net need.
#
# Output (cached, never committed): target/interop/guest/{vmlinux|vmlinuz,initrd.cpio,stamp}.
# The stamp holds a hash of this script and of the guest init; a matching stamp means "up to date".
# Exit codes: 0 built or cached, 3 = cannot build here (reason printed on a line "SKIP: ...").
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT_DIR="$(cd "$HERE/.." && pwd)"
OUT="${INTEROP_DIR:-$ROOT_DIR/target/interop}/guest"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
PKGS="libibverbs1,ibverbs-providers,ibverbs-utils,perftest,iproute2,kmod,procps"

skip() { echo "SKIP: $*"; exit 3; }

want_stamp="$(cat "$0" "$HERE/guest/rnic-init" | sha256sum | cut -c1-16)"
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$want_stamp" ] && [ -f "$OUT/initrd.cpio" ]; then
  echo "guest image up to date: $OUT"
  exit 0
fi

[ "$(id -u)" = 0 ] || skip "building the guest needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null || skip "debootstrap is not installed (apt-get install debootstrap)"
command -v cpio >/dev/null || skip "cpio is not installed"
# (a fresh clone has no target/ yet: create it, or df has nothing to measure)
mkdir -p "$OUT"
avail_kb=$(df -Pk "$(dirname "$OUT")" 2>/dev/null | awk 'NR==2{print $4}' || echo 0)
[ "${avail_kb:-0}" -gt 2000000 ] || skip "less than 2 GB free under $(dirname "$OUT")"

t0=$(date +%s)
mkdir -p "$OUT"
WORK="$OUT/work"
ROOTFS="$WORK/rootfs"
# A finished debootstrap of an earlier, interrupted build is reused (it depends only on $PKGS).
if [ "$(cat "$ROOTFS/.rnic-debootstrap" 2>/dev/null)" != "$PKGS" ]; then
  rm -rf "$WORK"
fi
mkdir -p "$WORK"

echo "== debootstrap $SUITE ($PKGS) from $MIRROR"
if [ -f "$ROOTFS/.rnic-debootstrap" ]; then
  echo "(reusing $ROOTFS)"
elif ! debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$ROOTFS" "$MIRROR" > "$WORK/debootstrap.log" 2>&1; then
  tail -20 "$WORK/debootstrap.log"
  if grep -qiE 'Failure trying to run|Couldn.t download|Failed getting release|Temporary failure|Could not resolve' "$WORK/debootstrap.log"; then
    skip "debootstrap could not reach $MIRROR (see $WORK/debootstrap.log)"
  fi
  echo "debootstrap failed (see $WORK/debootstrap.log)"; exit 1
else
  echo "$PKGS" > "$ROOTFS/.rnic-debootstrap"
fi
t_deboot=$(date +%s)
echo "debootstrap: $((t_deboot - t0)) s"

echo "== kernel package"
# The kernel comes from the same mirror, unpacked (not installed: no initramfs-tools run needed).
KPKG=$(chroot "$ROOTFS" apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$KPKG" ]; then
  # the chroot has no package lists yet: fetch them
  chroot "$ROOTFS" apt-get update -qq > "$WORK/apt.log" 2>&1 || skip "apt-get update in the guest root failed (no mirror?)"
  KPKG=$(chroot "$ROOTFS" apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
[ -n "$KPKG" ] || { echo "cannot resolve linux-image-amd64"; exit 1; }
(cd "$ROOTFS/tmp" && chroot "$ROOTFS" sh -c "cd /tmp && apt-get download -qq $KPKG") || skip "cannot download $KPKG"
KDIR="$ROOTFS/tmp/kernel"   # inside the root, so the root's own kmod tools can work on it
rm -rf "$KDIR"; mkdir -p "$KDIR"
dpkg-deb -x "$ROOTFS"/tmp/"$KPKG"_*.deb "$KDIR"
rm -f "$ROOTFS"/tmp/*.deb
KVER="${KPKG#linux-image-}"
echo "kernel $KVER"

echo "== modules for rxe and virtio-net"
MODS="virtio_pci virtio_net rdma_rxe ib_uverbs ib_core crc32_generic"
mkdir -p "$ROOTFS/lib/modules/$KVER"
cp "$KDIR/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$ROOTFS/lib/modules/$KVER/" 2>/dev/null || true
chroot "$ROOTFS" depmod -b /tmp/kernel "$KVER"
: > "$WORK/modlist"
for m in $MODS; do
  chroot "$ROOTFS" modprobe -d /tmp/kernel -S "$KVER" --show-depends "$m" 2>/dev/null | awk '$1=="insmod"{print $2}' >> "$WORK/modlist" || true
done
sort -u "$WORK/modlist" | while read -r ko; do
  rel="${ko#/tmp/kernel}"
  mkdir -p "$ROOTFS$(dirname "$rel")"
  cp "$ROOTFS$ko" "$ROOTFS$rel"
done
chroot "$ROOTFS" depmod "$KVER"
echo "modules: $(sort -u "$WORK/modlist" | xargs -n1 basename | tr '\n' ' ')"

echo "== kernel image"
VMLINUZ="$KDIR/boot/vmlinuz-$KVER"
rm -f "$OUT/vmlinux" "$OUT/vmlinuz"
cp "$VMLINUZ" "$OUT/vmlinuz"
# Uncompressed ELF vmlinux (booted through the PVH entry) starts faster under TCG than the
# bzImage, which would decompress itself instruction by instruction.
if python3 "$HERE/extract-vmlinux.py" "$VMLINUZ" "$OUT/vmlinux.tmp" 2>"$WORK/extract.log"; then
  mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
else
  echo "(no uncompressed vmlinux: $(cat "$WORK/extract.log"); booting vmlinuz)"
fi

echo "== guest init and pruning"
rm -rf "$KDIR"
install -m 0755 "$HERE/guest/rnic-init" "$ROOTFS/sbin/rnic-init"
rm -rf "$ROOTFS"/usr/share/{doc,man,info,locale} "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/lib/apt/lists/* \
       "$ROOTFS"/usr/share/zoneinfo "$ROOTFS"/usr/share/i18n "$ROOTFS"/var/log/*
# record what went in
chroot "$ROOTFS" dpkg-query -W -f '${Package} ${Version}\n' > "$OUT/packages.txt"
echo "kernel $KPKG" >> "$OUT/packages.txt"

echo "== initramfs"
(cd "$ROOTFS" && find . -xdev -print0 | cpio --null -o -H newc --quiet) > "$OUT/initrd.cpio.tmp"
mv "$OUT/initrd.cpio.tmp" "$OUT/initrd.cpio"
echo "$KVER" > "$OUT/kver"
rm -rf "$WORK"
echo "$want_stamp" > "$OUT/stamp"
t1=$(date +%s)
echo "guest image built in $((t1 - t0)) s: $OUT ($(du -sh "$OUT/initrd.cpio" | cut -f1) initramfs)"
