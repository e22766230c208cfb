"""Kidney at full detail with context: the recipe's glomeruli specialist against its variants, one run.

Every variant is the recipe's kidney specialist (ImageNet EfficientNet-Lite0 U-Net, checkpoint chosen on an
inner split of the training part) with other geometry, trained under the same wall-clock budget per fold
(default 11 minutes: the glomeruli share of the recipe's 20 minutes per fold) and scored on the same held-out
kidney images (HuBMAP and AIDPATH), threshold 0.5, no TTA:

  context 384 @ 4      the recipe today: 384 px tiles at 4 µm/px (1.5 mm seen at once, a glomerulus ~50 px)
  two-res 256 @ 2 x4   256 px at 2 µm/px (0.5 mm, a glomerulus ~100 px) plus a context encoder on the
                       concentric 2 mm window at 8 µm/px (``context_factor=4``, ftuseg.models.context)
  detail 256 @ 2       the same detail tile without the context encoder (what the context buys)

Folds run in order with the variants interleaved inside each fold, so load drifts hit them alike; folds 0-3
are pooled, the locked fold 4 (``--folds ...,4``) runs last and is reported beside them. Writes
benchmarks/results/kidney_variants.json after every fold (``--resume`` keeps the folds already there).

    python benchmarks/kidney_variants.py --minutes 11 --folds 0,1,2,3 --variants "context 384 @ 4,two-res 256 @ 2 x4"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from accuracy import markdown_table, pooled_row

from _common import DEFAULT_DATA, RESULTS, machine, peak_rss_mib, train_and_score, write_json

LOCKED_FOLD = 4
OUT = RESULTS / "kidney_variants.json"
VARIANTS: dict[str, dict] = {
    "context 384 @ 4": {},
    "two-res 256 @ 2 x4": dict(tile_size=256, target_mpp=2.0, context_factor=4),
    "detail 256 @ 2": dict(tile_size=256, target_mpp=2.0),  # not in the README run (time); --variants adds it
}


def summary_rows(results: dict) -> list[dict]:
    rows = []
    pooled = [k for k in results["folds"] if int(k) != LOCKED_FOLD]
    for name in results["variants"]:
        if pooled:
            recs = [r for k in pooled for r in results["folds"][k][name]["per_image"]]
            rows.append(pooled_row(f"{name}: pooled folds {','.join(sorted(pooled))}", recs))
        if str(LOCKED_FOLD) in results["folds"]:
            rows.append(pooled_row(f"{name}: locked fold {LOCKED_FOLD}",
                                   results["folds"][str(LOCKED_FOLD)][name]["per_image"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--minutes", type=float, default=11.0, help="training budget per variant and fold")
    ap.add_argument("--folds", default="0,1,2,3", help="folds to run; the locked fold 4 always runs last")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list of variant names")
    ap.add_argument("--runs", type=Path, default=RESULTS / "runs" / "kidney_variants")
    ap.add_argument("--resume", action="store_true", help="keep the folds already in kidney_variants.json")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")

    from ftuseg.training.recipe import recipe_config

    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    folds = sorted({int(f) for f in args.folds.split(",")}, key=lambda k: (k == LOCKED_FOLD, k))
    results: dict = {"benchmark": "kidney_variants", "budget_minutes_per_variant_and_fold": args.minutes,
                     "variants": {n: VARIANTS[n] for n in names}, "locked_fold": LOCKED_FOLD, "folds": {},
                     "machine_before": machine()}
    if args.resume and OUT.exists():
        old = json.loads(OUT.read_text())
        if old["budget_minutes_per_variant_and_fold"] != args.minutes or list(old["variants"]) != names:
            raise SystemExit("--resume: kidney_variants.json was run with another budget or variants")
        results["folds"] = old["folds"]
    t0 = time.perf_counter()
    for k in folds:
        if str(k) in results["folds"]:
            continue
        fold: dict = {}
        for name in names:
            cfg = recipe_config("glomeruli", ["kidney"], fold=k, max_minutes=args.minutes, num_workers=1,
                                **VARIANTS[name])
            before = machine()
            slug = name.replace(" ", "").replace("@", "at")
            res = train_and_score(cfg, args.data, args.runs / f"{slug}-fold{k}")
            res.update(config=cfg.to_dict(), tiles=res["steps"] * cfg.batch_size, machine_before=before,
                       machine_after=machine())
            fold[name] = {"steps": res["steps"], "tiles": res["tiles"], "train_seconds": res["train_seconds"],
                          "mean_dice": res["no_tta"]["mean_dice"], "per_image": res["no_tta"]["per_image"],
                          "predict_seconds": res["no_tta"]["predict_seconds"], "config": res["config"],
                          "machine_before": before, "machine_after": res["machine_after"]}
            print(f"fold {k} {name}: {res['no_tta']['mean_dice']:.4f} in {res['steps']} steps", flush=True)
        results["folds"][str(k)] = fold
        results["table"] = summary_rows(results)
        spread = {}
        for name in names:
            per = [float(pd.DataFrame(results["folds"][f][name]["per_image"])["dice"].mean())
                   for f in sorted(results["folds"]) if int(f) != LOCKED_FOLD]
            if per:
                spread[name] = {"per_fold": per, "mean": float(np.mean(per)), "std": float(np.std(per))}
        results["fold_spread"] = spread
        results["wall_seconds"] = time.perf_counter() - t0
        results["peak_rss_mib"] = peak_rss_mib()
        write_json(OUT, results)
    results["machine_after"] = machine()
    write_json(OUT, results)
    print(markdown_table(pd.DataFrame(results["table"])))


if __name__ == "__main__":
    main()
