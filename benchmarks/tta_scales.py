"""Multi-scale TTA on the recipe's fold runs: pooled folds 0-3 choose the scales, locked fold 4 checks them.

Re-scores the fold runs that ``recipe_folds.py`` left in ``--runs`` (each fold's best checkpoint, both
specialists) with ``--tta`` (default D4) at every factor of ``--scales`` on the µm/px the network sees,
then scores each set of ``--sets`` (the mean of its factors' probabilities, as ``--tta-scales`` does in
``ftuseg predict``) from the same per-scale probabilities: paired, same models, same images, one run.
The set with the highest pooled mean Dice on folds 0-3 is chosen before locked fold 4 is scored (ties:
fewer passes); fold 4 then reports every set once. The set {1} reproduces the recipe's own D4 scoring;
the JSON records how far each image lies from the figure ``--recorded`` holds for it.

    python benchmarks/tta_scales.py   # the README's first run (~40 min on a 2-core CPU with AMX)
    python benchmarks/tta_scales.py --runs benchmarks/results/runs/recipe_folds_kidney3um_zoom \
        --recorded benchmarks/results/recipe_folds_kidney3um_zoom_d4.json \
        --out benchmarks/results/tta_scales_kidney3um.json   # today's recipe (~71 min on a 2-core EPYC)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from accuracy import pooled_row

from _common import DEFAULT_DATA, RESULTS, machine, peak_rss_mib, write_json

LOCKED_FOLD = 4
FAMILIES = ("glomeruli", "glands")
SETS = "1;0.9,1,1.1;0.8,1,1.25;0.8,0.9,1,1.1,1.25;0.8,1;1,1.25"


def set_name(scales: tuple[float, ...]) -> str:
    return ",".join(f"{s:g}" for s in scales)


def score_fold(run_dir: Path, data: Path, scales: tuple[float, ...], sets: list[tuple[float, ...]],
               tta: str, progress: bool) -> dict:
    """Per image: the Dice of every set's mean probability; per scale: the seconds its passes took."""
    from tqdm.auto import tqdm

    from ftuseg.inference.engine import TorchTileFn
    from ftuseg.inference.predictor import Member, member_proba
    from ftuseg.io.dataset import read_row_image, read_row_truth
    from ftuseg.metrics import roi_dice
    from ftuseg.models.checkpoint import load_run_model
    from ftuseg.training.trainer import split_table

    model, cfg = load_run_model(run_dir, "best")
    tile_fn = TorchTileFn(model, "cpu", tta=tta)
    members = {s: Member(tile_fn, replace(cfg, tta_scales=[s])) for s in scales}
    table, _, val_idx = split_table(cfg, data)
    seconds = dict.fromkeys(map(set_name, [(s,) for s in scales]), 0.0)
    records = []
    for _, row in tqdm(table.iloc[val_idx].iterrows(), total=len(val_idx), desc=run_dir.name, unit="img",
                       disable=not progress):
        img = read_row_image(row)
        truth, roi = read_row_truth(row, img.shape[:2])
        probs = {}
        for s, member in members.items():
            t0 = time.perf_counter()
            probs[s] = member_proba(member, img, float(row["pixel_size"]), row.get("organ"))
            seconds[set_name((s,))] += time.perf_counter() - t0
        dice = {set_name(c): roi_dice(np.mean([probs[s] for s in c], axis=0) > cfg.threshold, truth, roi)
                for c in sets}
        records.append({"id": row["id"], "organ": row["organ"], "data_source": row["data_source"], "dice": dice})
    return {"per_image": records, "seconds_per_scale": seconds, "threshold": cfg.threshold}


def set_records(folds: dict, keys: list[str], name: str) -> list[dict]:
    return [{**{k: r[k] for k in ("id", "organ", "data_source")}, "dice": r["dice"][name]}
            for k in keys for fam in FAMILIES for r in folds[k][fam]["per_image"]]


def choose(folds: dict, sets: list[tuple[float, ...]]) -> str:
    """The set with the highest pooled mean Dice over the non-locked folds; ties go to fewer passes."""
    pooled = [k for k in folds if int(k) != LOCKED_FOLD]
    means = {set_name(c): float(pd.DataFrame(set_records(folds, pooled, set_name(c)))["dice"].mean()) for c in sets}
    return set_name(max(sets, key=lambda c: (round(means[set_name(c)], 6), -len(c))))


def relative_seconds(folds: dict, sets: list[tuple[float, ...]]) -> dict[str, float]:
    """Prediction time of each set over all scored folds, as a multiple of the single pass at scale 1."""
    total: dict[str, float] = {}
    for fold in folds.values():
        for fam in FAMILIES:
            for s, v in fold[fam]["seconds_per_scale"].items():
                total[s] = total.get(s, 0.0) + v
    return {set_name(c): round(sum(total[set_name((s,))] for s in c) / total["1"], 2) for c in sets} if "1" in total \
        else {}


def reproduction(folds: dict, recorded: Path, tta: str) -> dict | None:
    """How far the set {1} lies from the figures ``recorded`` (recipe_folds' own scoring) holds per image."""
    if not recorded.exists():
        return None
    recorded_json = json.loads(recorded.read_text())
    old = recorded_json["folds"]
    # the TTA of each recipe_folds scoring: "tta" is flips, or D4 in a run made with --tta d4
    used = {"no_tta": "none", "tta": {True: "flip", "d4": "d4"}.get(recorded_json.get("tta")), "tta_d4": "d4"}
    key = next((k for k, mode in used.items() if mode == tta), None)
    diffs = [abs(r["dice"]["1"] - o["dice"]) for k in folds if k in old and key in old[k]
             for fam in FAMILIES for r, o in [(r, next(o for o in old[k][key]["per_image"] if o["id"] == r["id"]))
                                              for r in folds[k][fam]["per_image"]]]
    if not diffs:
        return None
    return {"file": recorded.name, "scoring": key, "images": len(diffs), "max_abs_dice_difference": max(diffs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--runs", type=Path, default=RESULTS / "runs" / "recipe_folds",
                    help="recipe_folds.py's run folders (<family>-fold<k>)")
    ap.add_argument("--recorded", type=Path, default=RESULTS / "recipe_folds_variants.json",
                    help="the recipe_folds JSON those runs came from (to check the single-scale figures)")
    ap.add_argument("--folds", default="0,1,2,3,4", help="folds to score; the locked fold 4 always runs last")
    ap.add_argument("--scales", default="0.8,0.9,1,1.1,1.25", help="factors on each run's µm/px to predict at")
    ap.add_argument("--sets", default=SETS, help="';'-separated sets of those factors to average")
    ap.add_argument("--tta", default="d4", choices=("none", "flip", "d4"), help="TTA of every pass")
    ap.add_argument("--out", type=Path, default=RESULTS / "tta_scales.json")
    ap.add_argument("--resume", action="store_true", help="keep the folds already in the results JSON")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")
    from ftuseg.inference.sliding_window import parse_scales

    scales = tuple(parse_scales(args.scales))
    sets = [tuple(parse_scales(s)) for s in args.sets.split(";")]
    if any(s not in scales for c in sets for s in c):
        raise SystemExit("--sets may only use factors listed in --scales")
    folds = sorted({int(f) for f in args.folds.split(",")}, key=lambda k: (k == LOCKED_FOLD, k))
    for k in folds:
        for fam in FAMILIES:
            if not (args.runs / f"{fam}-fold{k}" / "best.pt").exists():
                raise SystemExit(f"{args.runs / f'{fam}-fold{k}'}: no best.pt; run recipe_folds.py first")
    results: dict = {"benchmark": "tta_scales", "tta": args.tta, "scales": list(scales),
                     "sets": [set_name(c) for c in sets], "locked_fold": LOCKED_FOLD, "folds": {},
                     "machine_before": machine()}
    if args.resume and args.out.exists():
        old = json.loads(args.out.read_text())
        if (old["tta"], old["scales"], old["sets"]) != (results["tta"], results["scales"], results["sets"]):
            raise SystemExit(f"--resume: {args.out} was run with other settings")
        kept = ("folds", "chosen", "machine_before", "wall_seconds", "table", "reproduction", "peak_rss_mib")
        results.update({k: old[k] for k in kept if k in old})
    t0 = time.perf_counter()
    for k in folds:
        if str(k) in results["folds"]:
            continue
        if k == LOCKED_FOLD and "chosen" not in results and any(int(f) != LOCKED_FOLD for f in results["folds"]):
            results["chosen"] = choose(results["folds"], sets)  # fixed before the locked fold is scored
        before = machine()
        fold = {fam: score_fold(args.runs / f"{fam}-fold{k}", args.data, scales, sets, args.tta, not args.quiet)
                for fam in FAMILIES}
        fold.update({"machine_before": before, "machine_after": machine(),
                     "checkpoints": {fam: time.ctime((args.runs / f"{fam}-fold{k}" / "best.pt").stat().st_mtime)
                                     for fam in FAMILIES}})
        results["folds"][str(k)] = fold
        keys = sorted(results["folds"])
        pooled = [f for f in keys if int(f) != LOCKED_FOLD]
        results["table"] = [pooled_row(f"{label} {set_name(c)}", set_records(results["folds"], ks, set_name(c)))
                            for label, ks in ((f"pooled folds {','.join(pooled)}", pooled),
                                              (f"locked fold {LOCKED_FOLD}", [str(LOCKED_FOLD)] if str(LOCKED_FOLD)
                                               in results["folds"] else []))
                            if ks for c in sets]
        results["reproduction"] = reproduction(results["folds"], args.recorded, args.tta)
        results["wall_seconds"] = results.get("wall_seconds", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        results["peak_rss_mib"] = peak_rss_mib()
        write_json(args.out, results)
        print(f"fold {k}:", {row["method"]: round(row["all"], 4) for row in results["table"]}, flush=True)
    results["relative_seconds"] = relative_seconds(results["folds"], sets)
    results["machine_after"] = machine()
    write_json(args.out, results)


if __name__ == "__main__":
    main()
