#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Assemble the pool demo's tiles into one PNG (no imaging library needed).

    python3 assemble.py RESULTS_JSON WIDTH HEIGHT OUT.png

RESULTS_JSON is `harvest-pool results --outputs --json`; each accepted result
of a task named tile-X-Y holds a P6 tile of the image at pixel (X, Y)."""
import base64
import json
import struct
import sys
import zlib


def parse_ppm(data):
    parts = data.split(b"\n", 3)
    if parts[0] != b"P6":
        raise ValueError("not a P6 tile")
    tw, th = (int(v) for v in parts[1].split())
    return tw, th, parts[3]


def png(w, h, rgb):
    rows = b"".join(b"\x00" + rgb[y * w * 3:(y + 1) * w * 3] for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def main():
    results = json.load(open(sys.argv[1]))
    w, h, out = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    img = bytearray(w * h * 3)
    done = set()
    for r in results:
        if not r["accepted"] or not r["task"].startswith("tile-") or r["task"] in done:
            continue
        _, x, y = r["task"].split("-")
        x, y = int(x), int(y)
        tw, th, px = parse_ppm(base64.b64decode(r["outputs"][0]["data_base64"]))
        for row in range(th):
            o = ((y + row) * w + x) * 3
            img[o:o + tw * 3] = px[row * tw * 3:(row + 1) * tw * 3]
        done.add(r["task"])
    with open(out, "wb") as f:
        f.write(png(w, h, bytes(img)))
    print(len(done))


if __name__ == "__main__":
    main()
