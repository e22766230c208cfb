"""Run-to-run spread of the recipe: several recipe_folds.py JSONs of one recipe side by side.

Each JSON is one full run of ``benchmarks/recipe_folds.py`` (e.g. another ``--set FAMILY.seed=N``, which redraws the
inner selection split and the training order). Per run and data source it lists the pooled folds 0-3 and the locked
fold 4 under one scoring (default the recipe's: D4 TTA + tuned post), whether each meets issue 11's targets (only a
run on ftu-bench's own partition, fold_seed 0, can: on another partition "fold 4" holds other images), and the per-
fold figures; across runs, each source's mean, standard deviation and range, pooled and per fold where the runs
share their k-fold partition (otherwise only all five folds pooled, where every image is scored once whatever the
partition). A candidate recipe has to beat this spread, not one run. The runs' machines and steps are copied beside
the figures: runs from different sessions ran on different machines, so their spread holds machine noise too.

    python benchmarks/recipe_runs.py benchmarks/results/recipe_folds_select_source.json \
        benchmarks/results/recipe_folds_seed1.json --out benchmarks/results/recipe_runs.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from recipe_folds import LOCKED_FOLD

from _common import RESULTS, mean_std, write_json

SCORINGS = ("no_tta", "tta", "no_tta_tuned", "tta_tuned")


def source_means(per_image: list[dict]) -> dict[str, float]:
    df = pd.DataFrame(per_image)
    return {str(k): float(v) for k, v in df.groupby("data_source")["dice"].mean().items()}


def partition(results: dict) -> int:
    """The seed the run's k-fold partition was dealt with. Before ``fold_seed`` existed (JSONs without it) the
    training ``seed`` dealt the folds too, so a ``--set FAMILY.seed=1`` run held out other images."""
    if "fold_seed" in results:
        return int(results["fold_seed"])
    overrides = results.get("family_overrides") or {}
    seeds = {int(overrides.get(name, {}).get("seed", 0)) for name in results["families"]}
    if len(seeds) != 1:
        raise SystemExit("recipe_runs: a run whose families were dealt different folds")
    return seeds.pop()


def run_summary(results: dict, scoring: str) -> dict:
    """One run: pooled folds 0-3, locked fold 4, all folds pooled and per-fold mean Dice per data source under
    ``scoring``."""
    folds = results["folds"]
    pooled_keys = sorted(k for k in folds if int(k) != LOCKED_FOLD)
    pooled = source_means([r for k in pooled_keys for r in folds[k][scoring]["per_image"]])
    out = {"fold_partition_seed": partition(results), "pooled_folds": [int(k) for k in pooled_keys], "pooled": pooled,
           "all_folds": sorted(int(k) for k in folds),
           "all_folds_pooled": source_means([r for k in folds for r in folds[k][scoring]["per_image"]]),
           "per_fold": {k: source_means(folds[k][scoring]["per_image"]) for k in sorted(folds)},
           "steps": {k: folds[k]["steps"] for k in sorted(folds)},
           "family_overrides": results.get("family_overrides", {}),
           "machine": results["machine_before"]}
    targets = results.get("targets", {})
    out["meets_pooled_targets"] = {s: pooled.get(s, 0.0) >= t for s, t in targets.items()}
    if str(LOCKED_FOLD) in folds:
        locked = out["per_fold"][str(LOCKED_FOLD)]
        out["locked"] = locked
        out["locked_minus_pooled"] = {s: locked[s] - pooled[s] for s in locked if s in pooled}
        out["locked_within_0.03"] = all(d >= -0.03 for d in out["locked_minus_pooled"].values())
    out["meets_all"] = (out["fold_partition_seed"] == 0 and all(out["meets_pooled_targets"].values())
                        and out.get("locked_within_0.03", False))
    return out


def spread(values: list[float]) -> dict:
    mean, std = mean_std(values)
    return {"values": values, "mean": mean, "std": std, "range": max(values) - min(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="recipe_folds.py JSONs, one per run")
    ap.add_argument("--scoring", default="tta_tuned", choices=SCORINGS,
                    help="which scoring to compare (default the recipe's: TTA + tuned post)")
    ap.add_argument("--out", type=Path, default=RESULTS / "recipe_runs.json")
    args = ap.parse_args()
    if len(args.runs) < 2:
        raise SystemExit("recipe_runs: give at least two runs to compare")
    loaded = {}
    for path in args.runs:
        if not path.exists():
            raise SystemExit(f"recipe_runs: {path} does not exist")
        res = json.loads(path.read_text())
        if res.get("benchmark") != "recipe_folds":
            raise SystemExit(f"recipe_runs: {path} is not a recipe_folds.py result")
        if args.scoring not in res["folds"][next(iter(res["folds"]))]:
            raise SystemExit(f"recipe_runs: {path} has no {args.scoring!r} scoring")
        loaded[path.stem] = res
    keys = ("budget_minutes_per_fold", "shares", "tta", "families")
    first = next(iter(loaded.values()))
    for name, res in loaded.items():
        if any(res[k] != first[k] for k in keys):
            raise SystemExit(f"recipe_runs: {name} differs from the first run in {', '.join(keys)}")
    runs = {name: run_summary(res, args.scoring) for name, res in loaded.items()}
    sources = sorted(set.intersection(*(set(r["pooled"]) for r in runs.values())))
    # every image is scored once over all folds whatever the partition: that pooled figure compares across runs
    across: dict = {"all_folds_pooled": {s: spread([r["all_folds_pooled"][s] for r in runs.values()])
                                         for s in sources}}
    partitions = {r["fold_partition_seed"] for r in runs.values()}
    if len(partitions) == 1:  # per fold, folds 0-3 and the locked fold only where the runs held out the same images
        folds = sorted(set.intersection(*(set(r["per_fold"]) for r in runs.values())))
        across["pooled"] = {s: spread([r["pooled"][s] for r in runs.values()]) for s in sources}
        across["per_fold"] = {k: {s: spread([r["per_fold"][k][s] for r in runs.values()])
                                  for s in sources if all(s in r["per_fold"][k] for r in runs.values())}
                              for k in folds}
    else:
        across["note"] = ("the runs' k-fold partitions differ (fold partition seeds "
                          f"{', '.join(map(str, sorted(partitions)))}): only all folds pooled is compared")
    write_json(args.out, {"benchmark": "recipe_runs", "scoring": args.scoring, "targets": first.get("targets", {}),
                          "runs": runs, "across_runs": across})
    for name, r in runs.items():
        print(name, {s: round(v, 3) for s, v in r["pooled"].items()}, "locked",
              {s: round(v, 3) for s, v in r.get("locked", {}).items()}, "meets all:", r["meets_all"])
    for s, v in across["all_folds_pooled"].items():
        print(f"{s}: all folds pooled, mean {v['mean']:.3f} std {v['std']:.3f} range {v['range']:.3f}")
    for s, v in across.get("pooled", {}).items():
        print(f"{s}: folds 0-3 pooled, mean {v['mean']:.3f} std {v['std']:.3f} range {v['range']:.3f}")
    if "note" in across:
        print(across["note"])


if __name__ == "__main__":
    main()
