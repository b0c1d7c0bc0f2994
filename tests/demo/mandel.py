#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""One tile of the Mandelbrot set, for the pool demo (tests/demo-pool.sh).

    python3 mandel.py WIDTH HEIGHT X0 Y0 TILE_W TILE_H [MAXITER]

renders pixels [X0, X0+TILE_W) x [Y0, Y0+TILE_H) of a WIDTH x HEIGHT view of
the set and writes them to stdout as a binary PPM (P6), colour by smooth
escape count. Pure Python and deterministic: every worker that renders a
tile produces the same bytes, so replicas agree on its hash."""
import math
import sys


def colour(it, zr, zi, maxiter):
    if it >= maxiter:
        return b"\x00\x00\x00"
    # Smooth iteration count, then a cosine palette.
    nu = it + 1 - math.log(math.log(math.sqrt(zr * zr + zi * zi))) / math.log(2)
    t = nu / 48.0
    r = int(255 * (0.5 + 0.5 * math.cos(6.2832 * (t + 0.00))))
    g = int(255 * (0.5 + 0.5 * math.cos(6.2832 * (t + 0.33))))
    b = int(255 * (0.5 + 0.5 * math.cos(6.2832 * (t + 0.67))))
    return bytes((r, g, b))


def main():
    w, h, x0, y0, tw, th = (int(a) for a in sys.argv[1:7])
    maxiter = int(sys.argv[7]) if len(sys.argv) > 7 else 200
    # The classic view: real -2.2..0.8, imaginary centred, square pixels.
    scale = 3.0 / w
    out = bytearray(b"P6\n%d %d\n255\n" % (tw, th))
    for py in range(y0, y0 + th):
        ci = (py - h / 2) * scale
        for px in range(x0, x0 + tw):
            cr = -2.2 + px * scale
            zr = zi = 0.0
            it = 0
            while it < maxiter:
                zr2, zi2 = zr * zr, zi * zi
                if zr2 + zi2 > 16.0:
                    break
                zi = 2 * zr * zi + ci
                zr = zr2 - zi2 + cr
                it += 1
            out += colour(it, zr, zi, maxiter)
    sys.stdout.buffer.write(out)


if __name__ == "__main__":
    main()
