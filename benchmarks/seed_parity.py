"""Seed parity: the seed-512 preset (whole images squashed to 512x512) on ftu-bench, grouped split.

Trains for a fixed wall-clock budget and writes per-organ validation Dice next to the random
baseline's on the same held-out images, wall time and peak RAM.

    python benchmarks/seed_parity.py --minutes 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import DEFAULT_DATA, RESULTS, seed_parity_record, train_and_score, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--n-folds", type=int, default=5)
    ap.add_argument("--run-dir", type=Path, default=RESULTS / "runs" / "seed-512")
    ap.add_argument("--out", type=Path, default=RESULTS / "seed_parity.json")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")

    from ftuseg.config import make_config

    t0 = time.perf_counter()
    cfg = make_config("seed-512", fold=args.fold, n_folds=args.n_folds, max_minutes=args.minutes, epochs=10_000,
                      lr=1e-3, val_every=2)
    result = train_and_score(cfg, args.data, args.run_dir)
    result = seed_parity_record(result, cfg, args.data, args.minutes, time.perf_counter() - t0)
    write_json(args.out, result)
    r = result["no_tta"]
    print(f"seed-512 val mean Dice {r['mean_dice']:.4f} vs baseline {result['baseline']['mean_dice']:.4f}")
    for organ, v in r["by_organ"].items():
        print(f"  {organ:<16} {v['mean_dice']:.4f} ({v['n_images']} images)")
    print(f"wall {result['wall_seconds']:.0f} s, peak RSS {result['peak_rss_mib']:.0f} MiB -> {args.out}")


if __name__ == "__main__":
    main()
