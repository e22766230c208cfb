"""The recipe's kidney specialist against variants of it, paired: same folds, same minutes, one run.

Every variant is the recipe's kidney specialist (ImageNet EfficientNet-Lite0 U-Net, 384 px tiles at 4 µm/px,
checkpoint chosen on an inner split of the training part) with some config fields changed, trained under the
same wall-clock budget per fold (default 11 minutes: the glomeruli share of the recipe's 20 minutes per fold)
and scored on the same held-out kidney images (HuBMAP and AIDPATH), threshold 0.5, no TTA:

  recipe          the recipe as ``ftuseg fit`` trains it
  decoder 0.5     U-Net decoder at half width (``decoder_width=0.5``): cheaper steps, so more of them
  detail 256 @ 2  256 px tiles at 2 µm/px (0.5 mm seen, a glomerulus ~100 px instead of ~50)

Folds run in order with the variants interleaved inside each fold, so load drifts hit them alike; folds 0-3
are pooled, the locked fold 4 (``--folds ...,4``) runs last and is reported beside them. Writes ``--out``
after every fold (``--resume`` keeps the folds already there). The README's runs:

    python benchmarks/kidney_variants.py --folds 0,1,2 --variants "recipe,decoder 0.5" \
        --out benchmarks/results/kidney_decoder.json

An earlier session's two-resolution model (a context encoder at 8 µm/px beside a 256 px @ 2 µm/px tile;
``kidney_variants.json``) was measured with this script at commit 2c2a20c and removed after it lost.
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
VARIANTS: dict[str, dict] = {
    "recipe": {},
    "decoder 0.5": dict(decoder_width=0.5),
    "detail 256 @ 2": dict(tile_size=256, target_mpp=2.0),
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
    ap.add_argument("--variants", default="recipe,decoder 0.5", help=f"comma list of: {', '.join(VARIANTS)}")
    ap.add_argument("--runs", type=Path, default=RESULTS / "runs" / "kidney_variants")
    ap.add_argument("--out", type=Path, default=RESULTS / "kidney_decoder.json", help="results JSON")
    ap.add_argument("--resume", action="store_true", help="keep the folds already in --out")
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
    if args.resume and args.out.exists():
        old = json.loads(args.out.read_text())
        if old["budget_minutes_per_variant_and_fold"] != args.minutes or list(old["variants"]) != names:
            raise SystemExit(f"--resume: {args.out} was run with another budget or variants")
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
            fold[name] = {"steps": res["steps"], "tiles": res["steps"] * cfg.batch_size,
                          "train_seconds": res["train_seconds"], "mean_dice": res["no_tta"]["mean_dice"],
                          "per_image": res["no_tta"]["per_image"], "predict_seconds": res["no_tta"]["predict_seconds"],
                          "config": cfg.to_dict(), "machine_before": before, "machine_after": machine()}
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
        write_json(args.out, results)
    results["machine_after"] = machine()
    write_json(args.out, results)
    print(markdown_table(pd.DataFrame(results["table"])))


if __name__ == "__main__":
    main()
