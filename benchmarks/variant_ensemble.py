"""Two variants of a specialist averaged: scored from the fold runs ``specialist_variants.py`` left behind.

Each held-out image of every fold in ``--results`` is predicted by each listed variant's run (its best
checkpoint, at its own µm/px and tile, threshold 0.5, no TTA, as ``specialist_variants.py`` scored it) and
by their mean probability in the image grid, which is what ``ftuseg predict RUN_A RUN_B`` does with two runs
of one organ. The single variants must reproduce the figures ``--results`` holds for them image for image
(the JSON records the largest difference): paired, same models, same images, one run. Training cost is
the sum of the members': the ensemble of two 11-minute runs had 22 minutes.

    python benchmarks/variant_ensemble.py --results benchmarks/results/kidney_detail.json \\
        --runs benchmarks/results/runs/kidney_variants --variants "recipe,detail 256 @ 2" \\
        --out benchmarks/results/kidney_detail_ensemble.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from accuracy import markdown_table, pooled_row
from specialist_variants import variant_slug

from _common import DEFAULT_DATA, machine, peak_rss_mib, write_json


def run_dir(runs: Path, family: str | None, name: str, fold: str) -> Path:
    """Where specialist_variants.py put a variant's fold run (older runs lack the family prefix)."""
    slug = variant_slug(name)
    candidates = [runs / f"{family}-{slug}-fold{fold}"] if family else []
    candidates.append(runs / f"{slug}-fold{fold}")
    for c in candidates:
        if (c / "config.yaml").exists():
            return c
    raise SystemExit(f"no run for variant {name!r} fold {fold} under {runs}")


def score_fold(dirs: dict[str, Path], data: Path, progress: bool) -> dict[str, list[dict]]:
    from tqdm.auto import tqdm

    from ftuseg.inference.engine import TorchTileFn
    from ftuseg.inference.predictor import Member, member_proba
    from ftuseg.io.dataset import read_row_image, read_row_truth
    from ftuseg.metrics import roi_dice
    from ftuseg.models.checkpoint import load_run_model
    from ftuseg.training.trainer import split_table

    members, cfgs = {}, {}
    for name, d in dirs.items():
        model, cfg = load_run_model(d, "best")
        members[name], cfgs[name] = Member(TorchTileFn(model, "cpu", tta=False), cfg), cfg
    first = next(iter(cfgs.values()))
    table, _, val_idx = split_table(first, data)
    for name, cfg in cfgs.items():  # every member must hold out the same images
        other = split_table(cfg, data)
        if list(other[0].iloc[other[2]]["id"]) != list(table.iloc[val_idx]["id"]):
            raise SystemExit(f"{dirs[name]}: held-out images differ from {dirs[next(iter(dirs))]}")
    ensemble = " + ".join(dirs)
    out: dict[str, list[dict]] = {name: [] for name in [*dirs, ensemble]}
    for _, row in tqdm(table.iloc[val_idx].iterrows(), total=len(val_idx), unit="img", disable=not progress):
        img = read_row_image(row)
        truth, roi = read_row_truth(row, img.shape[:2])
        probs = {n: member_proba(m, img, float(row["pixel_size"]), row.get("organ")) for n, m in members.items()}
        probs[ensemble] = np.mean(list(probs.values()), axis=0)
        for name, p in probs.items():
            out[name].append({"id": row["id"], "organ": row["organ"], "data_source": row["data_source"],
                              "dice": roi_dice(p > first.threshold, truth, roi)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--results", type=Path, required=True, help="specialist_variants.py's JSON")
    ap.add_argument("--runs", type=Path, required=True, help="the run folders it trained")
    ap.add_argument("--variants", required=True, help="comma list of the variants to average")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")
    recorded = json.loads(args.results.read_text())
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    missing = [n for n in names if n not in recorded["variants"]]
    if len(names) < 2 or missing:
        raise SystemExit(f"--variants: need two or more of {list(recorded['variants'])}; unknown {missing}")
    results: dict = {"benchmark": "variant_ensemble", "results": args.results.name, "variants": names,
                     "training_minutes_per_fold": recorded["budget_minutes_per_variant_and_fold"] * len(names),
                     "machine_before": machine(), "folds": {}}
    t0 = time.perf_counter()
    diffs = []
    for k in sorted(recorded["folds"]):
        dirs = {n: run_dir(args.runs, recorded.get("family"), n, k) for n in names}
        fold = score_fold(dirs, args.data, not args.quiet)
        for n in names:
            old = {r["id"]: r["dice"] for r in recorded["folds"][k][n]["per_image"]}
            diffs += [abs(r["dice"] - old[r["id"]]) for r in fold[n]]
        results["folds"][k] = fold
    methods = list(results["folds"][next(iter(results["folds"]))])
    pooled = ",".join(sorted(results["folds"]))
    results["table"] = [pooled_row(f"{m}: pooled folds {pooled}",
                                   [r for f in results["folds"].values() for r in f[m]]) for m in methods]
    results["reproduction"] = {"images": len(diffs), "max_abs_dice_difference": max(diffs)}
    results["wall_seconds"] = time.perf_counter() - t0
    results["peak_rss_mib"] = peak_rss_mib()
    results["machine_after"] = machine()
    write_json(args.out, results)
    print(markdown_table(pd.DataFrame(results["table"])))
    print(f"single variants reproduce {args.results.name}: largest difference "
          f"{results['reproduction']['max_abs_dice_difference']:.2g} over {len(diffs)} images")


if __name__ == "__main__":
    main()
