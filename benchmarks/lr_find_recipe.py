"""The LR range test on each recipe specialist: what learning rate does the loss curve suggest against the
recipe's fixed peak of 1e-3?

For each FTU family, the recipe's config (ImageNet Lite0 U-Net, the family's tiles and µm/px) on the training
part of ``--fold``, ``--iters`` steps of exponentially growing LR from 1e-6 (``ftuseg lr-find``'s
``run_lr_find``; weights restored afterwards). Writes the suggestion (a tenth of the LR of minimum smoothed
loss), the LR of minimum loss and the whole curve, with the machine, to ``--out``:

    python benchmarks/lr_find_recipe.py --out benchmarks/results/lr_find_recipe.json

The suggestion is a starting point for a screen, not a setting: ``specialist_variants.py``'s ``lr 3e-3`` and
``lr 5e-4`` variants measure what a peak LR buys under the recipe's budget.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import DEFAULT_DATA, machine, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--fold", type=int, default=0, help="the range test runs on this fold's training part")
    ap.add_argument("--iters", type=int, default=60, help="LR steps per family")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")

    from ftuseg.training.recipe import RECIPE_COMMON, RECIPE_GROUPS, recipe_config
    from ftuseg.training.trainer import run_lr_find

    results: dict = {"benchmark": "lr_find_recipe", "fold": args.fold, "iters": args.iters,
                     "recipe_lr": RECIPE_COMMON["lr"],
                     "recipe_encoder_lr_scale": RECIPE_COMMON["encoder_lr_scale"], "families": {},
                     "machine_before": machine()}
    for family in RECIPE_GROUPS:
        cfg = recipe_config(family, fold=args.fold, num_workers=1)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            res = run_lr_find(cfg, args.data, Path(tmp) / "lr_find.png", num_iter=args.iters, progress=False)
        results["families"][family] = {**res.to_dict(), "seconds": time.perf_counter() - t0}
        print(f"{family}: suggested lr {res.suggestion:.3g} (minimum loss at {res.min_loss_lr:.3g})")
    results["machine_after"] = machine()
    write_json(args.out, results)


if __name__ == "__main__":
    main()
