#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Generates the 32 x 512 parity matrix of rtl/rnic_crc32.sv: row b, bit i = bit b of the raw
# (register-0, no final xor) reflected CRC-32 of a 64-byte message whose only set bit is bit i
# (bit i = byte i/8, bit i%8, byte 0 processed first).
import zlib

def raw_crc0(msg):
    # zlib.crc32 = ~raw(0xFFFFFFFF); raw with register 0: crc32(msg, init) with init chosen so the
    # inverted start register is 0 -> pass value 0xFFFFFFFF, then invert result.
    return zlib.crc32(msg, 0xFFFFFFFF) ^ 0xFFFFFFFF

rows = [0] * 32
for i in range(512):
    m = bytearray(64)
    m[i // 8] = 1 << (i % 8)
    c = raw_crc0(bytes(m))
    for b in range(32):
        if (c >> b) & 1:
            rows[b] |= 1 << i
for b in range(32):
    print("    512'h%0128x%s" % (rows[b], "," if b != 31 else ""))
