"""Inference windows larger than the training tile: Dice and prediction time, on the same models, in one run.

The U-Nets are fully convolutional, so a model trained on 256 px tiles can predict through 512 px windows at the
same µm/px: each window sees four times the area (a GlaS image at 1 µm/px fits in one), fewer windows overlap, and
the blending seams move. This scores finished protocol runs (``recipe_folds.py`` fold run folders) on their
held-out folds with each window size, D4 TTA, threshold 0.5, and records each image's Dice and each fold's
prediction seconds; one size against another is paired on the same models and images.

Only folds 0-3 are accepted: the recipe's window size is chosen here, so the locked fold 4 stays out.

    python benchmarks/infer_tile.py --family glands --sizes 256,512 \
        --runs benchmarks/results/runs/recipe_folds benchmarks/results/runs/recipe_folds_seed1_p0 \
        --out benchmarks/results/infer_tile_glands.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from recipe_folds import LOCKED_FOLD

from _common import DEFAULT_DATA, machine, peak_rss_mib, scored_model, write_json


def score_sizes(run_dir: Path, data: Path, sizes: list[int], tta: str) -> dict[str, dict]:
    """Per window size: the held-out images' Dice (threshold 0.5) and the seconds predicting them took (in the
    order given: the caller alternates it so that no size always pays the first call's warm-up)."""
    from ftuseg.inference.engine import TorchTileFn
    from ftuseg.training.evaluation import evaluate_images
    from ftuseg.training.trainer import split_table

    model, run_cfg = scored_model(run_dir)
    table, _, val_idx = split_table(run_cfg, data)
    heldout = table.iloc[val_idx]
    tile_fn = TorchTileFn(model, "cpu", tta=tta)
    out = {}
    for size in sizes:
        cfg = replace(run_cfg, infer_tile_size=size).validate()
        t0 = time.perf_counter()
        scores, _ = evaluate_images(tile_fn, cfg, heldout, progress=True)
        out[str(size)] = {"predict_seconds": time.perf_counter() - t0, "per_image": scores.to_dict("records")}
    return out


def summarise(results: dict, sizes: list[int]) -> dict:
    """Per run and over all runs: mean Dice per data source for each size, the paired per-fold differences of
    each size against the first, and the prediction seconds."""
    base = str(sizes[0])
    rows, folds = [], []
    for run, by_fold in results["runs"].items():
        for k, by_size in by_fold.items():
            for size, rec in by_size.items():
                rows += [{**r, "run": run, "fold": int(k), "size": int(size)} for r in rec["per_image"]]
                folds.append({"run": run, "fold": int(k), "size": int(size), "seconds": rec["predict_seconds"]})
    df, times = pd.DataFrame(rows), pd.DataFrame(folds)
    summary: dict = {"by_size": {}, "against": base}
    for size in sizes:
        d = df[df["size"] == size]
        summary["by_size"][str(size)] = {
            "mean_dice_by_source": {str(s): float(v) for s, v in d.groupby("data_source")["dice"].mean().items()},
            "mean_dice_by_run_source": {f"{r} {s}": float(v)
                                        for (r, s), v in d.groupby(["run", "data_source"])["dice"].mean().items()},
            "predict_seconds": float(times.loc[times["size"] == size, "seconds"].sum()),
        }
    per_fold = df.groupby(["run", "fold", "data_source", "size"])["dice"].mean().unstack("size")
    secs = times.pivot_table(index=["run", "fold"], columns="size", values="seconds")
    for size in sizes[1:]:
        delta = per_fold[size] - per_fold[sizes[0]]
        summary["by_size"][str(size)]["fold_delta_by_source"] = {
            str(s): {"per_fold": [float(x) for x in v], "mean": float(v.mean()), "folds_up": int((v > 0).sum()),
                     "folds_down": int((v < 0).sum())}
            for s, v in delta.groupby(level="data_source")}
        summary["by_size"][str(size)]["time_ratio"] = float(secs[size].sum() / secs[sizes[0]].sum())
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="protocol run folders (<family>-fold<k>)")
    ap.add_argument("--family", default="glands")
    ap.add_argument("--sizes", default="256,512", help="inference windows, px (the first is the reference)")
    ap.add_argument("--folds", default="0,1,2,3")
    ap.add_argument("--tta", default="d4", choices=["d4", "flip", "none"])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"{args.data}: no ftu-bench data (train.csv)")
    sizes = [int(s) for s in args.sizes.split(",")]
    folds = [int(f) for f in args.folds.split(",")]
    if LOCKED_FOLD in folds:
        raise SystemExit(f"--folds: fold {LOCKED_FOLD} is locked; a window size is not chosen on it")
    for run in args.runs:
        if missing := [k for k in folds if not (run / f"{args.family}-fold{k}" / "best.pt").exists()]:
            raise SystemExit(f"{run}: no finished {args.family} run for fold(s) {missing}")
    tta = {"d4": "d4", "flip": True, "none": False}[args.tta]
    results: dict = {"benchmark": "infer_tile", "family": args.family, "sizes": sizes, "folds": folds,
                     "tta": args.tta, "threshold": 0.5, "machine_before": machine(), "runs": {}}
    t0 = time.perf_counter()
    for run in args.runs:
        results["runs"][run.name] = {}
        for k in folds:
            order = sizes if k % 2 == 0 else sizes[::-1]
            by_size = score_sizes(run / f"{args.family}-fold{k}", args.data, order, tta)
            results["runs"][run.name][str(k)] = {str(s): by_size[str(s)] for s in sizes}
            results["summary"] = summarise(results, sizes)
            results["wall_seconds"] = time.perf_counter() - t0
            results["peak_rss_mib"] = peak_rss_mib()
            write_json(args.out, results)
            print(run.name, k, {s: round(float(pd.DataFrame(v["per_image"])["dice"].mean()), 4)
                                for s, v in results["runs"][run.name][str(k)].items()}, flush=True)
    results["machine_after"] = machine()
    write_json(args.out, results)
    for size, s in results["summary"]["by_size"].items():
        print(size, {k: round(v, 4) for k, v in s["mean_dice_by_source"].items()}, f"{s['predict_seconds']:.0f} s")


if __name__ == "__main__":
    main()
