#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Generates the byte tables of rtl/rnic_crc32.sv: CrcTab[p][v] = raw (register 0, no final xor)
# reflected CRC-32 of a 64-byte message that is all zero except byte p = v (byte 0 first).
# Usage: python3 rtl/tb/gen_crc32_tab.py > table.txt, then paste over the CrcTab initialiser.
import zlib


def raw_crc0(msg):
    # zlib.crc32(msg, s) runs the register from ~s and returns ~register: s = 0xFFFFFFFF starts
    # from 0, and inverting the result gives the raw register.
    return zlib.crc32(msg, 0xFFFFFFFF) ^ 0xFFFFFFFF


rows = []
for p in range(64):
    ent = []
    for v in range(256):
        m = bytearray(64)
        m[p] = v
        ent.append("32'h%08x" % raw_crc0(bytes(m)))
    lines = ["      " + ", ".join(ent[i:i + 8]) for i in range(0, 256, 8)]
    rows.append("    '{  // byte %d\n%s\n    }" % (p, ",\n".join(lines)))
print("  localparam logic [31:0] CrcTab [64][256] = '{")
print(",\n".join(rows))
print("  };")
