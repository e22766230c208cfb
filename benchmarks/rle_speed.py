"""RLE speed on a 3000x3000 mask (the competition's HPA image size): encode and decode, best of N.

    python benchmarks/rle_speed.py
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from _common import RESULTS, machine, write_json
from ftuseg.rle import decode_rle, encode_rle


def best_of(fn, n: int = 10) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1000


def main() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((3000, 3000), np.uint8)
    for _ in range(60):  # glomerulus-like disks, ~100 px radius
        cv2.circle(mask, tuple(int(v) for v in rng.integers(0, 3000, 2)), int(rng.integers(60, 140)), 1, -1)
    noisy = (rng.random((3000, 3000)) < 0.5).astype(np.uint8)  # worst case: ~4.5 M runs
    out = {"benchmark": "rle_speed", "shape": [3000, 3000], "machine": machine()}
    for name, m in (("ftu_like", mask), ("random_noise", noisy)):
        rle = encode_rle(m)
        assert np.array_equal(decode_rle(rle, m.shape), m)
        out[name] = {"runs": len(rle.split()) // 2, "encode_ms": best_of(lambda m=m: encode_rle(m)),
                     "decode_ms": best_of(lambda r=rle, s=m.shape: decode_rle(r, s))}
        print(f"{name:>13}: {out[name]['runs']:>8} runs  encode {out[name]['encode_ms']:.1f} ms  "
              f"decode {out[name]['decode_ms']:.1f} ms")
    write_json(RESULTS / "rle_speed.json", out)


if __name__ == "__main__":
    main()
