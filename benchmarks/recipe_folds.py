"""The recipe under a fixed per-fold budget: pooled out-of-fold Dice on folds 0-3, locked fold 4 beside it.

For every fold k the recipe (``ftuseg.training.recipe``: ImageNet EfficientNet-Lite0 U-Nets, one specialist
per FTU family, each run's last checkpoint kept, an inner split of its training part for post tuning) trains
on the other folds under ``--minutes`` per fold, shared by the families by ``--shares``; the held-out fold is
scored once (also with flip TTA under --tta). Folds 0-3 are pooled (per-image Dice, then mean per organ and
data source) and their per-fold spread is given; fold 4 is locked: nothing is chosen on it, it is trained and
scored last and reported beside the pooled figure. Writes benchmarks/results/recipe_folds.json after every
fold (a killed run resumes with --resume, skipping the folds already in the JSON).

    python benchmarks/recipe_folds.py --minutes 20 --folds 0,1,2,3,4 --tta --tune-post   # the README's run
    python benchmarks/recipe_folds.py --minutes 20 --folds 0,1,2,3,4 --tta --d4 --ema 0.98 \
        --out benchmarks/results/recipe_folds_variants.json   # D4 TTA, EMA weights, last checkpoint, paired
    python benchmarks/recipe_folds.py --minutes 20 --folds 0,1,2,3,4 --tta --tune-post \
        --set glomeruli.tile_size=320 --set glomeruli.target_mpp=3 --set glomeruli.small_image_zoom=2 \
        --out benchmarks/results/recipe_folds_kidney3um_zoom.json   # a candidate recipe: one family changed
    python benchmarks/recipe_folds.py --score-only --runs benchmarks/results/runs/recipe_folds_kidney3um_zoom \
        --tta d4 --tune-post --out benchmarks/results/recipe_folds_kidney3um_zoom_d4.json   # its runs, D4 TTA
    python benchmarks/recipe_folds.py --minutes 20 --families glomeruli --folds 0,1,2,3 --tta d4 --tune-post \
        --out benchmarks/results/recipe_folds_kidney_select_organ.json   # one family alone, on its share

The first two README runs were made while the recipe's kidney specialist was 384 px at 4 µm/px;
``--set glomeruli.tile_size=384 --set glomeruli.target_mpp=4 --set glomeruli.small_image_zoom=1`` reruns
that recipe. The third is the candidate that replaced it (today's recipe; ``--set`` changes nothing now).

``--score-only`` trains nothing: it re-scores finished fold runs (refusing any whose config is not the recipe's
under the given settings, inference windows aside: those of today's recipe are used), e.g. with another TTA; the
steps and seconds recorded are the runs' own.
``--save-probs`` keeps the probabilities it scores for benchmarks/post_rules.py.

``--tune-post`` tunes what the recipe tunes (``RECIPE_THRESHOLDS``: threshold 0.5 alone since
post_rules_keep_last.json, 0.4-0.6 before it, 0.1-0.9 before post_rules_kidney3um.json: ``git checkout 9aebf34``
reruns a JSON of that time so), with minimum area and hole filling.

The budget is wall-clock minutes per fold (the issue's protocol); the steps and tiles it bought and the
load average before and after are recorded beside every figure, since other jobs change what a minute buys.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from accuracy import markdown_table, merge_specialists, pooled_row

from _common import (
    DEFAULT_DATA,
    INFERENCE_ONLY,
    RESULTS,
    machine,
    mean_std,
    peak_rss_mib,
    score_run,
    train_and_score,
    trained_run,
    write_json,
)

LOCKED_FOLD = 4
OUT = RESULTS / "recipe_folds.json"
# issue 11's targets for the pooled folds (mean Dice per data source), written beside the figures
TARGETS = {"HuBMAP": 0.88, "GlaS": 0.90, "AIDPATH": 0.70, "RINGS": 0.88}
SUFFIX = {"no_tta": "", "tta": " + TTA", "no_tta_tuned": " + tuned post", "tta_tuned": " + TTA + tuned post",
          "tta_d4": " + D4 TTA", "best_ema": " (EMA weights)", "last": " (last checkpoint)",
          "last_ema": " (last checkpoint, EMA weights)"}
# further scorings of the same runs: (name, checkpoint, weights, TTA)
D4_VARIANTS = (("tta_d4", "best", "model", "d4"),)
EMA_VARIANTS = (("best_ema", "best", "ema", False), ("last", "last", "model", False),
                ("last_ema", "last", "ema", False))


def summary_rows(results: dict) -> list[dict]:
    """Pooled folds 0-3 and locked fold 4 rows (with and without TTA), per organ and data source."""
    rows = []
    pooled = [k for k in results["folds"] if int(k) != LOCKED_FOLD]
    for tta in score_names(bool(results["tta"]), results.get("tune_post", False), variant_names(results)):
        suffix = scoring_label(tta, results["tta"])
        if pooled:
            recs = [r for k in pooled for r in results["folds"][k][tta]["per_image"]]
            rows.append(pooled_row(f"pooled folds {','.join(sorted(pooled))}{suffix}", recs))
        if str(LOCKED_FOLD) in results["folds"]:
            locked = results["folds"][str(LOCKED_FOLD)][tta]["per_image"]
            rows.append(pooled_row(f"locked fold {LOCKED_FOLD}{suffix}", locked))
    return rows


def scoring_label(scoring: str, tta: bool | str) -> str:
    """A scoring's suffix in the tables; ``tta`` is the run's --tta (True: flips), which scored "tta" and
    "tta_tuned"."""
    d4 = tta == "d4" and scoring in ("tta", "tta_tuned")
    return SUFFIX[scoring].replace(" TTA", " D4 TTA") if d4 else SUFFIX[scoring]


def score_names(tta: bool, tune_post: bool, variants: tuple[str, ...] = ()) -> tuple[str, ...]:
    names = ("no_tta", "tta") if tta else ("no_tta",)
    return (names + tuple(f"{n}_tuned" for n in names) if tune_post else names) + tuple(variants)


def variants(d4: bool, ema: float) -> tuple[tuple[str, str, str, bool | str], ...]:
    return (D4_VARIANTS if d4 else ()) + (EMA_VARIANTS if ema > 0 else ())


def variant_names(results: dict) -> tuple[str, ...]:
    return tuple(v[0] for v in variants(results.get("d4", False), results.get("ema_decay", 0.0)))


def fold_spread(results: dict) -> dict:
    """Per data source: each pooled fold's mean Dice (no TTA), and their mean and standard deviation."""
    per_source: dict[str, list[float]] = {}
    for k, fold in sorted(results["folds"].items()):
        if int(k) == LOCKED_FOLD:
            continue
        df = pd.DataFrame(fold["no_tta"]["per_image"])
        for src, v in df.groupby("data_source")["dice"].mean().items():
            per_source.setdefault(str(src), []).append(float(v))
    out = {}
    for src, v in per_source.items():
        mean, std = mean_std(v)
        out[src] = {"per_fold": v, "mean": mean, "std": std}
    return out


def family_overrides(items: list[str], families: dict[str, list[str]]) -> dict[str, dict]:
    """``--set FAMILY.FIELD=VALUE`` items -> {family: {field: value}}, values read as YAML scalars."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        key, eq, value = item.partition("=")
        family, dot, name = key.partition(".")
        if not (eq and dot and name):
            raise SystemExit(f"--set {item!r}: expected FAMILY.FIELD=VALUE, e.g. glomeruli.tile_size=256")
        if family not in families:
            raise SystemExit(f"--set {item!r}: no family {family!r}; the data's families: {', '.join(families)}")
        out.setdefault(family, {})[name] = yaml.safe_load(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per fold (all families together)")
    ap.add_argument("--shares", default="glomeruli=0.55,glands=0.45",
                    help="each family's share of the per-fold budget")
    ap.add_argument("--families", default=None,
                    help="train only these families (comma list), each on its --shares share of --minutes: "
                         "an A/B of one family's setting without retraining the others")
    ap.add_argument("--folds", default="0,1,2,3,4", help="folds to run; the locked fold 4 always runs last")
    ap.add_argument("--runs", type=Path, default=None,
                    help="fold run folders (default: runs/recipe_folds, or runs/<--out's name> with --set or "
                         "--families)")
    ap.add_argument("--tta", nargs="?", const="flip", default=None, choices=("flip", "d4"),
                    help="also score with TTA: flips (4x the prediction time; the default of a bare --tta) or d4 "
                         "(8 flips and transposes, the recipe's TTA)")
    ap.add_argument("--tune-post", action="store_true",
                    help="also score with per-organ threshold, min area and hole filling tuned on each run's inner "
                         "selection split (the recipe's post-processing step, never fitted on the reported fold)")
    ap.add_argument("--d4", action="store_true", help="also score with dihedral TTA (8 flips and transposes)")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="train with a moving average of the weights of this decay; also score its weights and "
                         "the last checkpoint's (raw and averaged) beside the best raw checkpoint")
    ap.add_argument("--set", action="append", default=[], metavar="FAMILY.FIELD=VALUE", dest="sets",
                    help="change one family's recipe config field (repeatable), e.g. glomeruli.target_mpp=3; "
                         "recorded in the JSON")
    ap.add_argument("--save-probs", action="store_true",
                    help="keep every scoring's probabilities (held-out, and selection under --tune-post) under "
                         "<run>/scored/ for benchmarks/post_rules.py")
    ap.add_argument("--out", type=Path, default=OUT, help="results JSON")
    ap.add_argument("--resume", action="store_true", help="keep the folds already in the results JSON")
    ap.add_argument("--score-only", action="store_true",
                    help="train nothing: score the fold runs already in --runs (their config must be the recipe's "
                         "under these settings); steps, tiles and training seconds come from each run's run_info.json")
    args = ap.parse_args()
    # the JSON keeps True for flips (as older results files have it), "d4" for dihedral TTA
    tta = {None: False, "flip": True, "d4": "d4"}[args.tta]
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")

    from ftuseg.errors import FtusegError
    from ftuseg.io.dataset import load_table
    from ftuseg.training.recipe import recipe_config, recipe_groups

    shares = {k: float(v) for k, v in (p.split("=") for p in args.shares.split(","))}
    groups = recipe_groups(load_table(args.data, split="train", need_rle=True, need_images=False)["organ"].tolist())
    if set(groups) != set(shares):
        raise SystemExit(f"--shares must name every family of the data: {', '.join(groups)}")
    if args.families:
        keep = args.families.split(",")
        if unknown := set(keep) - set(groups):
            raise SystemExit(f"--families: no family {', '.join(sorted(unknown))}; the data's: {', '.join(groups)}")
        groups = {name: organs for name, organs in groups.items() if name in keep}
    overrides = family_overrides(args.sets, groups)
    fold_seeds = {int(overrides.get(name, {}).get("fold_seed", 0)) for name in groups}
    if len(fold_seeds) > 1:  # a fold's families must hold out the same images for the merged score
        raise SystemExit("--set: every family needs the same fold_seed (the k-fold partition)")
    for name, changed in overrides.items():  # a bad field or value stops the run before any training
        try:
            recipe_config(name, groups[name], **changed)
        except FtusegError as exc:
            raise SystemExit(f"--set: {exc}") from None
    # a changed recipe (or a part of it) trains into its own folders: the recipe's fold runs are read by other
    # benchmarks
    runs = args.runs or RESULTS / "runs" / ("recipe_folds" if not (overrides or args.families) else args.out.stem)
    folds = sorted({int(f) for f in args.folds.split(",")}, key=lambda k: (k == LOCKED_FOLD, k))
    results: dict = {"benchmark": "recipe_folds", "budget_minutes_per_fold": args.minutes, "shares": shares,
                     "families": groups, "locked_fold": LOCKED_FOLD, "tta": tta, "tune_post": args.tune_post,
                     "d4": args.d4, "ema_decay": args.ema, "fold_seed": fold_seeds.pop(),
                     "family_overrides": overrides, "targets": TARGETS, "score_only": args.score_only, "folds": {},
                     "machine_before": machine()}
    if args.resume and args.out.exists():
        old = json.loads(args.out.read_text())
        if ((old["budget_minutes_per_fold"], old["shares"], old["tta"], old.get("tune_post", False),
             old.get("d4", False), old.get("ema_decay", 0.0), old.get("family_overrides", {}),
             old["families"]) != (args.minutes, shares, tta, args.tune_post, args.d4, args.ema, overrides, groups)):
            raise SystemExit(f"--resume: {args.out} was run with other settings")
        results["folds"] = old["folds"]
    t0 = time.perf_counter()
    for k in folds:
        if str(k) in results["folds"]:
            continue
        parts, before = [], machine()
        for name, organs in groups.items():
            cfg = recipe_config(name, organs, fold=k, max_minutes=args.minutes * shares[name], num_workers=1,
                                ema_decay=args.ema, **overrides.get(name, {}))
            run_dir = runs / f"{name}-fold{k}"
            score = dict(tta=tta, tune_post=args.tune_post, variants=variants(args.d4, args.ema),
                         save_probs=run_dir / "scored" if args.save_probs else None)
            if args.score_only:
                # a run trained before an inference setting of the recipe changed is scored with today's
                inference = {f: getattr(cfg, f) for f in INFERENCE_ONLY}
                res = {**trained_run(cfg, run_dir), **score_run(args.data, run_dir, **score, inference=inference)}
            else:
                res = train_and_score(cfg, args.data, run_dir, **score)
            res["config"] = cfg.to_dict()
            parts.append(res)
        merged = merge_specialists(parts, list(groups.values()),
                                   scores=score_names(bool(tta), args.tune_post, variant_names(results)))
        merged.update({"steps": {n: p["steps"] for n, p in zip(groups, parts, strict=True)},
                       "tiles": {n: p["steps"] * p["config"]["batch_size"] for n, p in zip(groups, parts, strict=True)},
                       "machine_before": before, "machine_after": machine()})
        results["folds"][str(k)] = merged
        results["table"] = summary_rows(results)
        results["fold_spread"] = fold_spread(results)
        results["wall_seconds"] = time.perf_counter() - t0
        results["peak_rss_mib"] = peak_rss_mib()
        write_json(args.out, results)
        print(f"fold {k}:", round(merged["no_tta"]["mean_dice"], 4), merged["steps"],
              f"{merged['train_seconds'] / 60:.1f} min", flush=True)
    results["machine_after"] = machine()
    write_json(args.out, results)
    print(markdown_table(pd.DataFrame(results["table"])))


if __name__ == "__main__":
    main()
