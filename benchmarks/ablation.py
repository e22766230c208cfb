"""Ablation: what each part of the recipe buys, under the same training budget, in one run.

Methods (all `tiled`, organ specialists kidney | glands, the CPU geometry of accuracy.py: 256 px tiles,
kidney at 6 µm/px, colon at 1 µm/px, prostate at 2 µm/px; fixed LR 1e-3 one-cycle):
  r34-random       ResNet34 U-Net from random initialisation (the previous `tiled` recipe)
  lite0-random     EfficientNet-Lite0 U-Net from random initialisation
  lite0-imagenet   EfficientNet-Lite0 U-Net from the offline ImageNet checkpoint (ftuseg[pretrained])

The budget is the same number of optimiser steps (and so tiles) for every method, so that other jobs on
the machine change the minutes but not the result; the minutes each method took are recorded beside it.
Checkpoints are chosen on an inner split of the training part; the held-out fold is scored once.

    python benchmarks/ablation.py --folds 0 --epochs 8     # the README's run: 2 x 256 steps of 8 tiles
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from accuracy import CPU_TILED, markdown_table, merge_specialists, pooled_row

from _common import DEFAULT_DATA, RESULTS, machine, peak_rss_mib, train_and_score, write_json

METHODS = {
    "r34-random": dict(encoder="resnet34", encoder_weights=None),
    "lite0-random": dict(encoder="tu-tf_efficientnet_lite0", encoder_weights=None),
    "lite0-imagenet": dict(encoder="tu-tf_efficientnet_lite0", encoder_weights="imagenet-lite0"),
}
GROUPS = [["kidney"], ["largeintestine", "prostate"]]


def pooled_table(results: dict) -> pd.DataFrame:
    """Per-image Dice pooled over folds, mean per organ and data source, one row per (method, TTA)."""
    rows = []
    for method in results["methods"]:
        for tta in ("no_tta", "tta"):
            recs = [r for fold in results["folds"].values() for r in fold[method][tta]["per_image"]]
            rows.append(pooled_row(method + (" + TTA" if tta == "tta" else ""), recs))
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--folds", default="0", help="comma list of held-out folds (never 4: it is locked)")
    ap.add_argument("--epochs", type=int, default=8, help="epochs of 256 tiles per specialist (32 steps each)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--runs", type=Path, default=RESULTS / "runs" / "ablation")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")
    folds = [int(f) for f in args.folds.split(",")]
    if 4 in folds:
        raise SystemExit("fold 4 is locked: it is scored only for the final candidate recipe (zoo_train.py)")

    from ftuseg.config import make_config

    methods = args.methods.split(",")
    t0 = time.perf_counter()
    results: dict = {"benchmark": "ablation", "epochs": args.epochs, "steps_per_specialist": args.epochs * 32,
                     "tiles_per_specialist": args.epochs * 256, "geometry": CPU_TILED, "methods": methods,
                     "machine_before": machine(), "folds": {}}
    for k in folds:
        results["folds"][str(k)] = {}
        for method in methods:
            parts = []
            for organs in GROUPS:
                cfg = make_config("tiled", **{**CPU_TILED, **METHODS[method], "organs": organs, "fold": k,
                                             "epochs": args.epochs, "val_every": 4})
                parts.append(train_and_score(cfg, args.data, args.runs / f"{method}-{'+'.join(organs)}-fold{k}",
                                             tta=True))
            merged = merge_specialists(parts, GROUPS)
            merged["steps"] = sum(p["steps"] for p in parts)
            results["folds"][str(k)][method] = merged
            print(method, f"fold {k}:", round(merged["no_tta"]["mean_dice"], 4),
                  f"{merged['train_seconds'] / 60:.1f} min", flush=True)
    summary = pooled_table(results)
    results["table"] = summary.to_dict("records")
    results["machine_after"] = machine()
    results["wall_seconds"] = time.perf_counter() - t0
    results["peak_rss_mib"] = peak_rss_mib()
    write_json(RESULTS / "ablation.json", results)
    text = markdown_table(summary)
    (RESULTS / "ablation.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
