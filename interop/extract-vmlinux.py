#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Extract the uncompressed ELF vmlinux from a bzImage (like the kernel's scripts/extract-vmlinux).
Usage: extract-vmlinux.py bzImage out.elf"""
import gzip, lzma, sys, zlib

def candidates(data):
    for magic, kind in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd")):
        start = 0
        while True:
            i = data.find(magic, start)
            if i < 0:
                break
            yield i, kind
            start = i + 1

def main():
    data = open(sys.argv[1], "rb").read()
    for off, kind in candidates(data):
        try:
            if kind == "xz":
                out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[off:])
            elif kind == "gzip":
                out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[off:])
            else:
                continue  # no zstd in the standard library
        except Exception:
            continue
        if out[:4] == b"\x7fELF":
            open(sys.argv[2], "wb").write(out)
            return 0
    print("no ELF payload found", file=sys.stderr)
    return 1

sys.exit(main())
