#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `make interop`: install QEMU and debootstrap if missing, build (or reuse) the Debian guest with
# rxe, perftest and ibverbs-utils, then run rnic-interop (ibv_rc_pingpong both ways, ib_write_bw,
# ib_read_bw, ib_send_bw) against a simulated NIC on each backend of $INTEROP_BACKENDS.
# Prints "SKIP: <reason>" and exits 0 where the guest cannot be had (no QEMU, no debootstrap,
# no room, no Debian mirror). See docs/interop.md.
set -uo pipefail
cd "$(dirname "$0")/.."
BACKENDS="${INTEROP_BACKENDS:-model,rtl,lockstep}"
CARGO="${CARGO:-cargo}"
export DEBIAN_FRONTEND=noninteractive

skip() { echo "SKIP: interop: $*"; exit 0; }

need=""
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
command -v debootstrap >/dev/null || need="$need debootstrap"
command -v cpio >/dev/null || need="$need cpio"
command -v tshark >/dev/null || need="$need tshark"
if [ -n "$need" ]; then
  [ "$(id -u)" = 0 ] || skip "missing:$need (and not root to install them)"
  echo "installing:$need"
  apt-get update -qq || skip "apt-get update failed (no Debian mirror?)"
  if ! apt-get install -y -qq --no-install-recommends $need; then
    # Bookworm's qemu-system-common (7.2) breaks a newer qemu-utils from backports, which some
    # machine images carry: take bookworm's qemu-utils with it.
    qu=$(apt-cache madison qemu-utils | awk -F'|' '/bookworm\/main/{gsub(/ /,"",$2); print $2; exit}')
    [ -n "$qu" ] && apt-get install -y -qq --no-install-recommends --allow-downgrades $need "qemu-utils=$qu" \
      || skip "cannot install$need"
  fi
fi

t0=$(date +%s)
bash interop/build-image.sh
rc=$?
[ $rc = 3 ] && exit 0          # build-image.sh printed its SKIP line
[ $rc = 0 ] || { echo "interop: building the guest image failed"; exit 1; }
echo "interop: guest image ready ($(( $(date +%s) - t0 )) s)"

$CARGO build --release -q -p rnic-testbench --bin rnic-interop || exit 1
$CARGO run --release -q -p rnic-testbench --bin rnic-interop -- --backend "$BACKENDS" ${INTEROP_ARGS:-}
