"""Post-processing rules compared on saved probabilities: which way of tuning threshold, minimum object area
and hole filling on a fold run's small inner selection split carries over to its held-out fold.

``recipe_folds.py --tune-post`` tuned every organ's threshold (0.1-0.9), minimum area and hole filling on each
run's selection split (14-19 images per family). On so few images the choice is noisy: GlaS fold 3 chose
threshold 0.9 twice and lost. This script fits each rule below on every run's selection split only, applies
it to that run's held-out fold, and pools folds 0-3 beside the locked fold 4:

  threshold 0.5        no tuning
  tuned 0.1-0.9        the recipe's rule until this script: every threshold 0.1-0.9, minimum area, hole filling
  post at 0.5          threshold kept at 0.5; minimum area and hole filling tuned (the recipe's rule since
                       post_rules_keep_last.json)
  threshold 0.4-0.6    thresholds 0.4-0.6 only; minimum area and hole filling tuned (chosen in
                       post_rules_kidney3um.json: the recipe's rule until post_rules_keep_last.json)
  tuned, gain >= G     tuned 0.1-0.9, but an organ keeps the plain setting (0.5, no minimum area, no hole
                       filling) unless tuning beats it by G mean Dice on the selection images

and two rules tuned not on the run's selection split but on the held-out images of its family's other runs in
folds 0-3 (what ``ftuseg fit`` does with its out-of-fold predictions; 3-4 times the images):

  0.4-0.6, tuned on the other folds / 0.1-0.9, tuned on the other folds

The rule to adopt is the one with the best pooled folds 0-3 mean Dice over all images (written to the JSON as
``chosen``) before fold 4 is read. Nothing is predicted here: the probabilities come from a scoring run with
``--save-probs`` (held-out and selection images, uint8 in 1/255 steps, so threshold 0.5 can differ from the
float scoring in a pixel at the boundary). The README's run:

    python benchmarks/recipe_folds.py --score-only --runs benchmarks/results/runs/recipe_folds_kidney3um_zoom \\
        --tta d4 --tune-post --save-probs --out benchmarks/results/recipe_folds_kidney3um_zoom_d4_probs.json
    python benchmarks/post_rules.py --runs benchmarks/results/runs/recipe_folds_kidney3um_zoom \\
        --out benchmarks/results/post_rules_kidney3um.json

The same two commands on the runs of ``recipe_folds_keep_last.json`` chose ``post at 0.5``, the recipe's rule
since (``RECIPE_THRESHOLDS`` is 0.5 alone):

    python benchmarks/recipe_folds.py --score-only --runs benchmarks/results/runs/recipe_folds_keep_last \\
        --tta d4 --tune-post --save-probs --out benchmarks/results/recipe_folds_keep_last_d4_probs.json
    python benchmarks/post_rules.py --runs benchmarks/results/runs/recipe_folds_keep_last \\
        --recorded benchmarks/results/recipe_folds_keep_last_d4_probs.json \\
        --out benchmarks/results/post_rules_keep_last.json

Three guards measured in that run against a tuned threshold above 0.5 shrinking a faint FTU under the minimum
area (it erased an AIDPATH glomerulus there): no minimum area, the minimum area judged on the objects at 0.5, the
minimum areas tried capped at the smallest FTU in the run's training masks. They lost to ``post at 0.5`` and were
removed with the library options they needed; ``git checkout 79beee1`` reruns them.

``post_rules_kidney3um.json`` predates the two cross-fold rules; with them the same command wrote
``benchmarks/results/post_rules_crossfold.json`` (``--out``), every earlier row unchanged. A rule in between, the
recipe's with objects touching the image border spared the minimum area, lost and was removed with the library
option it needed; ``git checkout a5ef528`` reruns it (``--out benchmarks/results/post_rules_border.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from accuracy import markdown_table, pooled_row
from recipe_folds import LOCKED_FOLD

from _common import DEFAULT_DATA, machine, peak_rss_mib, rescore, write_json
from ftuseg.inference.threshold_tuning import THRESHOLD_GRID

FULL_GRID = tuple(float(t) for t in THRESHOLD_GRID)
NEAR_HALF = (0.4, 0.45, 0.5, 0.55, 0.6)  # chosen here; the recipe's RECIPE_THRESHOLDS since
# rule -> (thresholds tuning may choose, minimum selection gain to keep an organ's tuned setting); None: no tuning
RULES: dict[str, tuple[tuple[float, ...], float] | None] = {
    "threshold 0.5": None,
    "tuned 0.1-0.9": (FULL_GRID, 0.0),
    "post at 0.5": ((0.5,), 0.0),
    "threshold 0.4-0.6": (NEAR_HALF, 0.0),
    "tuned, gain >= 0.005": (FULL_GRID, 0.005),
    "tuned, gain >= 0.01": (FULL_GRID, 0.01),
}
# rule -> thresholds tried, tuned not on the run's own selection split but on the held-out images of the same
# family's other runs (folds 0-3 but the run's own; fold 4 never): what ``ftuseg fit`` does, which tunes on the
# out-of-fold predictions of all its folds, with 3 folds' images (~70 kidney, ~60 glands) instead of 14-19
CROSS_FOLD_RULES: dict[str, tuple[float, ...]] = {
    "0.4-0.6, tuned on the other folds": NEAR_HALF,
    "0.1-0.9, tuned on the other folds": FULL_GRID,
}


def pick(saved: dict[str, np.ndarray], ids: list[str], folder: Path) -> dict[str, np.ndarray]:
    """The saved probabilities of ``ids``; any missing stops the run."""
    missing = [i for i in ids if i not in saved]
    if missing:
        raise SystemExit(f"{folder}: no saved probabilities for {len(missing)} image(s), e.g. {missing[0]}; "
                         "score the run with --save-probs (and --tune-post for the selection split)")
    return {i: saved[i] for i in ids}


def run_rules(run_dir: Path, data: Path, scoring: str) -> tuple[int, dict[str, dict], tuple]:
    """(fold, {rule: {"per_image", "thresholds", "tuning"}}, held-out (family, rows, probs, records)) for one
    fold run."""
    from ftuseg.config import load_config
    from ftuseg.inference.postprocess import Thresholds
    from ftuseg.inference.threshold_tuning import load_prob_maps, tune_on_probs
    from ftuseg.training.trainer import selection_split, split_table

    cfg = load_config(run_dir / "config.yaml")
    table, train_idx, val_idx = split_table(cfg, data)
    heldout, select = table.iloc[val_idx], table.iloc[selection_split(cfg, table, train_idx)[1]]
    if select.empty:
        raise SystemExit(f"{run_dir}: no inner selection split to tune on")
    folder = run_dir / "scored" / scoring
    saved = load_prob_maps(folder)
    held_probs = pick(saved, heldout["id"].astype(str).tolist(), folder)
    select_probs = pick(saved, select["id"].astype(str).tolist(), folder)
    base = [{"id": str(r["id"]), "organ": str(r["organ"]), "data_source": str(r["data_source"])}
            for _, r in heldout.iterrows()]
    out = {}
    for name, rule in RULES.items():
        if rule is None:
            thresholds, tuning = Thresholds(), []
        else:
            grid, min_gain = rule
            thresholds, report = tune_on_probs(select_probs, select, source=str(folder), threshold_grid=grid)
            tuning = report.to_dict("records")
            for row in tuning:  # the guard: an organ whose tuning gains less than min_gain keeps the plain setting
                row["kept_plain"] = row["dice_tuned"] - row["dice_at_0.5"] < min_gain
                if row["kept_plain"]:
                    thresholds.organs[row["organ"]] = {"threshold": 0.5, "min_area_um2": 0.0, "fill_holes_um2": 0.0}
        out[name] = {"per_image": rescore(thresholds, heldout, held_probs, base), "thresholds": asdict(thresholds),
                     "tuning": tuning}
    return int(cfg.fold), out, (tuple(cfg.organs), heldout, held_probs, base)


def cross_fold_rules(held: dict[str, tuple], folds: dict[str, int]) -> dict[str, dict[str, dict]]:
    """{run: {rule: ...}} for CROSS_FOLD_RULES: each run's held-out fold through post-processing tuned on the
    held-out images of its family's other runs in the pooled folds (never the locked fold, never its own)."""
    from ftuseg.inference.threshold_tuning import tune_on_probs

    out: dict[str, dict[str, dict]] = {}
    for run, (family, rows, probs, base) in held.items():
        others = [r for r, (fam, *_) in held.items()
                  if fam == family and folds[r] not in (folds[run], LOCKED_FOLD)]
        if not others:
            raise SystemExit(f"{run}: no other pooled fold of its family to tune on")
        tune_rows = pd.concat([held[r][1] for r in others])
        tune_probs = {k: v for r in others for k, v in held[r][2].items()}
        out[run] = {}
        for name, grid in CROSS_FOLD_RULES.items():
            thresholds, report = tune_on_probs(tune_probs, tune_rows, source="other folds", threshold_grid=grid)
            out[run][name] = {"per_image": rescore(thresholds, rows, probs, base), "thresholds": asdict(thresholds),
                              "tuning": report.to_dict("records"), "tuned_on_runs": others}
        print(f"{run}: tuned on {', '.join(others)}", flush=True)
    return out


def reproduce(recorded: dict, by_fold: dict[str, dict[str, dict]], scoring: str) -> dict:
    """Largest per-image Dice difference between this script's 'threshold 0.5' and the recorded scoring of the same
    runs (``scoring``), and between its 'tuned 0.1-0.9' and 'threshold 0.4-0.6' and the recorded ``<scoring>_tuned``
    (tuned 0.1-0.9 before the recipe's grid became 0.4-0.6, 0.4-0.6 since: one of the two matches), over the
    images both have."""
    out = {}
    for rule, name in (("threshold 0.5", scoring), ("tuned 0.1-0.9", f"{scoring}_tuned"),
                       ("threshold 0.4-0.6", f"{scoring}_tuned")):
        diffs = []
        for k, runs in by_fold.items():
            if k not in recorded["folds"] or name not in recorded["folds"][k]:
                continue
            ref = {r["id"]: r["dice"] for r in recorded["folds"][k][name]["per_image"]}
            diffs += [abs(r["dice"] - ref[r["id"]]) for run in runs.values() for r in run[rule]["per_image"]
                      if r["id"] in ref]
        out[rule] = {"recorded": name, "n_images": len(diffs), "max_abs_diff": max(diffs) if diffs else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--runs", type=Path, nargs="+", required=True,
                    help="fold run folders, or folders holding them (every subfolder with a config.yaml)")
    ap.add_argument("--scoring", default="tta", help="which saved scoring's probabilities (no_tta or tta)")
    ap.add_argument("--recorded", type=Path, default=None,
                    help="the recipe_folds.py JSON that saved the probabilities: 'threshold 0.5' and the tuned rule "
                         "it used are compared with its scorings image by image (they differ only by uint8 rounding)")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")
    runs = sorted({r for p in args.runs for r in ([p] if (p / "config.yaml").exists()
                                                    else [c.parent for c in p.glob("*/config.yaml")])})
    if not runs:
        raise SystemExit(f"no fold runs (folders with a config.yaml) in {', '.join(map(str, args.runs))}")
    t0, before = time.perf_counter(), machine()
    by_fold: dict[str, dict[str, dict]] = {}
    held: dict[str, tuple] = {}
    fold_of: dict[str, int] = {}
    for run in runs:
        fold, rules, held[run.name] = run_rules(run, args.data, args.scoring)
        fold_of[run.name] = fold
        print(f"{run.name}: fold {fold}", flush=True)
        by_fold.setdefault(str(fold), {})[run.name] = rules
    for name, rules in cross_fold_rules(held, fold_of).items():
        by_fold[str(fold_of[name])][name].update(rules)
    all_rules = [*RULES, *CROSS_FOLD_RULES]
    pooled = sorted(k for k in by_fold if int(k) != LOCKED_FOLD)

    def images(folds: list[str], rule: str) -> list[dict]:
        return [r for k in folds for run in by_fold[k].values() for r in run[rule]["per_image"]]

    table = []
    for rule in all_rules:
        if pooled:
            table.append(pooled_row(f"{rule}: pooled folds {','.join(pooled)}", images(pooled, rule)))
        if str(LOCKED_FOLD) in by_fold:
            table.append(pooled_row(f"{rule}: locked fold {LOCKED_FOLD}", images([str(LOCKED_FOLD)], rule)))
    pooled_means = ({rule: float(pd.DataFrame(images(pooled, rule))["dice"].mean()) for rule in all_rules}
                    if pooled else {})
    reproduction = reproduce(json.loads(args.recorded.read_text()), by_fold, args.scoring) if args.recorded else None
    results = {"benchmark": "post_rules", "scoring": args.scoring, "runs": [str(r) for r in runs],
               "reproduction": reproduction,
               "rules": {**{k: v and {"threshold_grid": v[0], "min_gain": v[1]} for k, v in RULES.items()},
                         **{k: {"threshold_grid": v, "tuned_on": "other pooled folds"}
                            for k, v in CROSS_FOLD_RULES.items()}},
               "locked_fold": LOCKED_FOLD,
               "pooled_mean_dice": pooled_means,
               "chosen": max(pooled_means, key=pooled_means.get) if pooled_means else None,
               "folds": by_fold, "table": table, "machine_before": before, "machine_after": machine(),
               "wall_seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()}
    write_json(args.out, results)
    print(markdown_table(pd.DataFrame(table)))
    print("chosen on pooled folds:", results["chosen"])


if __name__ == "__main__":
    main()
