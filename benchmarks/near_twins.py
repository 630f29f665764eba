"""How long finding near-identical font faces takes as a font folder grows: every pair of faces'
binarised renders is compared (the glyph set's design groups), once with a population count of
the packed XOR (what horkd does) and once by unpacking the XOR to bits (what it did), side by
side on the same random faces; prints the seconds of each and their ratio, and checks they find
the same pairs.

    python benchmarks/near_twins.py            # 500 and 1,500 faces
    python benchmarks/near_twins.py 3000
"""

from __future__ import annotations

import sys
import time

import numpy as np

from horkd.data.glyphs.designs import NEAR_TWIN, near_twins

PIXELS = 62 * 32 * 32  # one bit per pixel of a face's 62 plain renders at 32 px


def unpacked(shapes: np.ndarray, pixels: int, limit: float = NEAR_TWIN) -> list[tuple[int, int]]:
    pairs = []
    for i in range(len(shapes) - 1):
        diff = np.unpackbits(np.bitwise_xor(shapes[i + 1:], shapes[i]), axis=1).sum(
            axis=1, dtype=np.int64)
        pairs += [(i, i + 1 + int(j)) for j in np.flatnonzero(diff < limit * pixels)]
    return pairs


def main(sizes: list[int]) -> None:
    rng = np.random.default_rng(0)
    print(f"{'faces':>6} {'popcount s':>11} {'unpacked s':>11} {'ratio':>6}")
    for n in sizes:
        shapes = np.packbits(rng.random((n, PIXELS)) < 0.2, axis=1)
        shapes[1] = shapes[0]  # one true twin
        start = time.perf_counter()
        fast = near_twins(shapes, PIXELS)
        middle = time.perf_counter()
        slow = unpacked(shapes, PIXELS)
        end = time.perf_counter()
        assert fast == slow and (0, 1) in fast
        print(f"{n:6d} {middle - start:11.2f} {end - middle:11.2f} "
              f"{(end - middle) / (middle - start):6.1f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [500, 1500])
