"""A recipe specialist against variants of it, paired: same folds, same minutes, one run.

Every variant is the recipe's specialist of ``--family`` (glomeruli: kidney, 320 px tiles at 3 µm/px
with crops smaller than a tile seen up to 2x finer, 11 minutes per fold; glands: colon and prostate, 256 px
at 1-2 µm/px, 9 minutes; both an ImageNet EfficientNet-Lite0 U-Net, checkpoint chosen on an inner split of
the fold's training part) with some config fields changed, trained under the same wall-clock budget per
fold (default: the family's share of the recipe's 20 minutes) and scored on the same held-out images of
the family, threshold 0.5, no TTA:

  recipe          the recipe as ``ftuseg fit`` trains it
  context 384 @ 4  384 px tiles at 4 µm/px, no zoom (kidney: ~1.5 mm seen; the recipe's kidney specialist
                  until 320 px @ 3 µm/px with the zoom replaced it)
  decoder 0.5     U-Net decoder at half width (``decoder_width=0.5``): cheaper steps, so more of them
  detail 256 @ 2  256 px tiles at 2 µm/px (kidney: 0.5 mm seen, a glomerulus ~100 px instead of ~50)
  mid 256 @ 3     256 px tiles at 3 µm/px (kidney: 0.77 mm seen, a glomerulus ~67 px; cheap steps)
  mid 320 @ 3     320 px tiles at 3 µm/px (kidney: 0.96 mm seen)
  mid 320 @ 3 zoom 2  the same, but an image smaller than a tile at 3 µm/px is seen up to 2x finer, so that
                  it fills the tile (``small_image_zoom``: AIDPATH's 0.5 mm crops at 1.6 µm/px, HuBMAP unchanged)
  lite1, lite2    the wider and deeper EfficientNet-Lite1 / Lite2 from the same offline ImageNet release

Folds run in order with the variants interleaved inside each fold, so load drifts hit them alike; folds 0-3
are pooled, the locked fold 4 (``--folds ...,4``) runs last and is reported beside them. Writes ``--out``
after every fold (``--resume`` keeps the folds already there). The README's runs:

    python benchmarks/specialist_variants.py --folds 0,1,2 --variants "recipe,decoder 0.5" \
        --out benchmarks/results/kidney_decoder.json
    python benchmarks/specialist_variants.py --folds 0,1,2 --variants "recipe,detail 256 @ 2" \
        --out benchmarks/results/kidney_detail.json
    python benchmarks/specialist_variants.py --folds 0,1,2 --variants "recipe,mid 256 @ 3,mid 320 @ 3" \
        --out benchmarks/results/kidney_mid.json
    python benchmarks/specialist_variants.py --folds 0,1,2 --variants "recipe,mid 320 @ 3,mid 320 @ 3 zoom 2" \
        --out benchmarks/results/kidney_zoom.json
    python benchmarks/specialist_variants.py --folds 3 --variants "mid 320 @ 3,mid 320 @ 3 zoom 2" \
        --out benchmarks/results/kidney_zoom_fold3.json

Every README run above but the last two was made while ``recipe`` meant 384 px at 4 µm/px (today's
``context 384 @ 4``) and the tile variants had no zoom to switch off; ``git checkout a29858e`` reruns them
exactly as they were.

An earlier session's two-resolution model (a context encoder at 8 µm/px beside a 256 px @ 2 µm/px tile;
``kidney_variants.json``) was measured with this script, then ``kidney_variants.py``, at commit 2c2a20c
and removed after it lost.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from accuracy import markdown_table, pooled_row

from _common import DEFAULT_DATA, RESULTS, machine, mean_std, peak_rss_mib, train_and_score, write_json

LOCKED_FOLD = 4
VARIANTS: dict[str, dict] = {
    "recipe": {},
    "decoder 0.5": dict(decoder_width=0.5),
    # the tile variants switch the recipe's small-image zoom off, so that each is the setting its name says
    "context 384 @ 4": dict(tile_size=384, target_mpp=4.0, small_image_zoom=1.0),
    "detail 256 @ 2": dict(tile_size=256, target_mpp=2.0, small_image_zoom=1.0),
    "mid 256 @ 3": dict(tile_size=256, target_mpp=3.0, small_image_zoom=1.0),
    "mid 320 @ 3": dict(tile_size=320, target_mpp=3.0, small_image_zoom=1.0),
    "mid 320 @ 3 zoom 2": dict(tile_size=320, target_mpp=3.0, small_image_zoom=2.0),
    "lite1": dict(encoder="tu-tf_efficientnet_lite1", encoder_weights="imagenet-lite1"),
    "lite2": dict(encoder="tu-tf_efficientnet_lite2", encoder_weights="imagenet-lite2"),
}
# each family's organs and its share of the recipe's 20 minutes per fold
FAMILIES: dict[str, tuple[list[str], float]] = {
    "glomeruli": (["kidney"], 11.0), "glands": (["largeintestine", "prostate"], 9.0)}


def variant_slug(name: str) -> str:
    """A variant's name as a folder name: its fold runs are ``<family>-<slug>-fold<k>`` under ``--runs``."""
    return name.replace(" ", "").replace("@", "at")


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
    ap.add_argument("--family", default="glomeruli", choices=list(FAMILIES), help="the recipe specialist to vary")
    ap.add_argument("--minutes", type=float, default=None,
                    help="training budget per variant and fold (default: the family's share, 11 or 9)")
    ap.add_argument("--folds", default="0,1,2,3", help="folds to run; the locked fold 4 always runs last")
    ap.add_argument("--variants", default="recipe,decoder 0.5", help=f"comma list of: {', '.join(VARIANTS)}")
    ap.add_argument("--runs", type=Path, default=RESULTS / "runs" / "specialist_variants")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    ap.add_argument("--resume", action="store_true", help="keep the folds already in --out")
    args = ap.parse_args()
    if not (args.data / "train.csv").exists():
        raise SystemExit(f"ftu-bench not found at {args.data}: nothing to benchmark")

    from ftuseg.training.recipe import recipe_config

    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    organs, share = FAMILIES[args.family]
    minutes = share if args.minutes is None else args.minutes
    folds = sorted({int(f) for f in args.folds.split(",")}, key=lambda k: (k == LOCKED_FOLD, k))
    results: dict = {"benchmark": "specialist_variants", "family": args.family, "organs": organs,
                     "budget_minutes_per_variant_and_fold": minutes,
                     "variants": {n: VARIANTS[n] for n in names}, "locked_fold": LOCKED_FOLD, "folds": {},
                     "machine_before": machine()}
    if args.resume and args.out.exists():
        old = json.loads(args.out.read_text())
        if (old["budget_minutes_per_variant_and_fold"] != minutes or list(old["variants"]) != names
                or old.get("family", "glomeruli") != args.family):
            raise SystemExit(f"--resume: {args.out} was run with another family, budget or variants")
        results["folds"] = old["folds"]
    t0 = time.perf_counter()
    for k in folds:
        if str(k) in results["folds"]:
            continue
        fold: dict = {}
        for name in names:
            cfg = recipe_config(args.family, organs, fold=k, max_minutes=minutes, num_workers=1,
                                **VARIANTS[name])
            before = machine()
            res = train_and_score(cfg, args.data, args.runs / f"{args.family}-{variant_slug(name)}-fold{k}")
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
                mean, std = mean_std(per)
                spread[name] = {"per_fold": per, "mean": mean, "std": std}
        results["fold_spread"] = spread
        results["wall_seconds"] = time.perf_counter() - t0
        results["peak_rss_mib"] = peak_rss_mib()
        write_json(args.out, results)
    results["machine_after"] = machine()
    write_json(args.out, results)
    print(markdown_table(pd.DataFrame(results["table"])))


if __name__ == "__main__":
    main()
