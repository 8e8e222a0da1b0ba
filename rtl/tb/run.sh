#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Builds and runs the framer unit testbench (rnic_crc32, rnic_tx_frame, rnic_rx_frame).
# Usage: rtl/tb/run.sh [seed ...]   (default seeds: 1 2 3)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
rtl=$(dirname "$here")
cd "$here"
mkdir -p obj_dir
verilator --cc --exe --build -O2 -j 2 -Wall \
  -CFLAGS "-O2 -std=c++17" \
  --top-module tb_frame_top -Mdir obj_dir \
  "$rtl/lint/verilator_waiver.vlt" \
  "$rtl/rnic_reg_pkg.sv" "$rtl/rnic_pkg.sv" "$rtl/rnic_crc32.sv" \
  "$rtl/rnic_tx_frame.sv" "$rtl/rnic_rx_frame.sv" tb_frame_top.sv tb_frame.cpp >obj_dir/build.log 2>&1 \
  || { cat obj_dir/build.log; exit 1; }
[ $# -gt 0 ] || set -- 1 2 3
status=0
for seed in "$@"; do
  ./obj_dir/Vtb_frame_top "$seed" || status=1
done
[ $status -eq 0 ] && echo "tb_frame: ALL PASS" || echo "tb_frame: FAILURES"
exit $status
