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
  colon 1.5       glands only: colon at 1.5 µm/px instead of 1 (a 256 px tile spans 384 µm, most of a GlaS crop)
  tile 320        glands only: 320 px tiles at the same µm/px (320 µm of colon seen; 1.56x the pixels a step)
  ftu share 0.5   half the training tiles centred on an FTU pixel (the recipe: 0.2), the rest anywhere on tissue
  lite1, lite2    the wider and deeper EfficientNet-Lite1 / Lite2 from the same offline ImageNet release
  lr 3e-3, lr 5e-4  peak learning rate of the one-cycle schedule instead of the recipe's 1e-3 (the LR range
                  test on fold 0 suggests 4e-3 for kidney, 6e-3 for glands)

Folds run in order with the variants interleaved inside each fold, so load drifts hit them alike; folds 0-3
are pooled, the locked fold 4 (``--folds ...,4``) runs last and is reported beside them. Writes ``--out``
after every fold (``--resume`` keeps the folds already there). ``--tta d4`` and ``--tune-post`` also score
each run as the recipe predicts (D4 TTA, post-processing tuned on the run's inner selection split);
``--score-only`` trains nothing and scores the finished runs under ``--runs`` (refusing any whose config is not
the variant's), ``--reuse`` scores those and trains the missing ones (a variant added to an earlier run's
baseline in the same session); ``--save-probs`` keeps the probabilities for benchmarks/post_rules.py. The
README's runs:

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
    python benchmarks/specialist_variants.py --family glands --folds 0,1,2,3 --variants "recipe,decoder 0.5" \
        --runs benchmarks/results/runs/glands_decoder --out benchmarks/results/glands_decoder.json
    python benchmarks/specialist_variants.py --family glands --folds 0,1 --variants "recipe,colon 1.5" \
        --runs benchmarks/results/runs/glands_decoder --reuse --out benchmarks/results/glands_colon.json
    python benchmarks/specialist_variants.py --family glands --folds 0,1 --variants "recipe,tile 320" \
        --runs benchmarks/results/runs/glands_decoder --reuse --out benchmarks/results/glands_tile320.json
    python benchmarks/specialist_variants.py --family glomeruli --folds 0,1,2,3 --variants "recipe,ftu share 0.5" \
        --tta d4 --tune-post --runs benchmarks/results/runs/kidney_ftu_share \
        --out benchmarks/results/kidney_ftu_share.json   # stopped after fold 1
    python benchmarks/specialist_variants.py --family glomeruli --folds 0,1 --variants "recipe,lite1" --tta d4 \
        --tune-post --runs benchmarks/results/runs/kidney_ftu_share --reuse --out benchmarks/results/kidney_lite1.json
    python benchmarks/specialist_variants.py --family glands --folds 0,1,2,3 --variants "recipe,lr 3e-3" --tta d4 \
        --tune-post --runs benchmarks/results/runs/glands_lr --out benchmarks/results/glands_lr.json  # stopped: fold 2
    python benchmarks/specialist_variants.py --family glands --folds 0,1,2,3 --variants "recipe,lr 5e-4" --tta d4 \
        --tune-post --runs benchmarks/results/runs/glands_lr --reuse --out benchmarks/results/glands_lr5e-4.json

The kidney runs above but the two ``kidney_zoom`` ones were made while ``recipe`` meant 384 px at 4 µm/px (today's
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
from recipe_folds import LOCKED_FOLD, score_names, scoring_label

from _common import (
    DEFAULT_DATA,
    RESULTS,
    finished_run,
    machine,
    mean_std,
    peak_rss_mib,
    score_run,
    train_and_score,
    trained_run,
    write_json,
)

VARIANTS: dict[str, dict] = {
    "recipe": {},
    "decoder 0.5": dict(decoder_width=0.5),
    # the tile variants switch the recipe's small-image zoom off, so that each is the setting its name says
    "context 384 @ 4": dict(tile_size=384, target_mpp=4.0, small_image_zoom=1.0),
    "detail 256 @ 2": dict(tile_size=256, target_mpp=2.0, small_image_zoom=1.0),
    "mid 256 @ 3": dict(tile_size=256, target_mpp=3.0, small_image_zoom=1.0),
    "mid 320 @ 3": dict(tile_size=320, target_mpp=3.0, small_image_zoom=1.0),
    "mid 320 @ 3 zoom 2": dict(tile_size=320, target_mpp=3.0, small_image_zoom=2.0),
    # glands: colon (GlaS crops ~480 x 320 µm) seen at 1.5 µm/px instead of 1: a 256 px tile spans 384 µm
    "colon 1.5": dict(organ_mpp={"largeintestine": 1.5}),
    "tile 320": dict(tile_size=320),
    "ftu share 0.5": dict(fg_fraction=0.5),
    "lite1": dict(encoder="tu-tf_efficientnet_lite1", encoder_weights="imagenet-lite1"),
    "lite2": dict(encoder="tu-tf_efficientnet_lite2", encoder_weights="imagenet-lite2"),
    # one peak LR for the whole network (glands_lr*.json; "recipe" was one peak of 1e-3 until the decoder LR)
    "lr 3e-3": dict(lr=3e-3, encoder_lr_scale=1.0),
    "lr 5e-4": dict(lr=5e-4, encoder_lr_scale=1.0),
    "one peak lr 1e-3": dict(lr=1e-3, encoder_lr_scale=1.0),
    # the randomly initialised decoder and head at 3e-3, the ImageNet encoder kept at 1e-3: the recipe since
    # kidney_decoder_lr.json (kidney) and glands_decoder_lr.json (glands), where "recipe" was "one peak lr 1e-3"
    "decoder lr 3e-3": dict(lr=3e-3, encoder_lr_scale=1 / 3),
    # the tile's mask resampled like its image (the FTU share of each pixel, aligned) instead of nearest
    # neighbour (0/1, shifted by up to half a tile pixel: 0.42 px for HuBMAP kidney shrunk 6x to 3 µm/px)
    "area targets": dict(target_resample="area"),
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
        for scoring in ("no_tta", *results.get("scorings", [])):
            label = name + scoring_label(scoring, results.get("tta", False))
            if pooled:
                recs = [r for k in pooled for r in scored_images(results["folds"][k][name], scoring)]
                rows.append(pooled_row(f"{label}: pooled folds {','.join(sorted(pooled))}", recs))
            if str(LOCKED_FOLD) in results["folds"]:
                locked = scored_images(results["folds"][str(LOCKED_FOLD)][name], scoring)
                rows.append(pooled_row(f"{label}: locked fold {LOCKED_FOLD}", locked))
    return rows


def scored_images(res: dict, scoring: str) -> list[dict]:
    """One variant's per-image Dice in one fold under ``scoring`` (``no_tta`` is kept at the top level)."""
    return res["per_image"] if scoring == "no_tta" else res["scores"][scoring]["per_image"]


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
    ap.add_argument("--tta", default=None, choices=("flip", "d4"),
                    help="also score with TTA: flips, or d4 (8 flips and transposes, the recipe's TTA)")
    ap.add_argument("--tune-post", action="store_true",
                    help="also score with per-organ threshold, min area and hole filling tuned on each run's inner "
                         "selection split")
    ap.add_argument("--score-only", action="store_true",
                    help="train nothing: score the finished runs under --runs (each must have the variant's config)")
    ap.add_argument("--reuse", action="store_true",
                    help="score, without training again, the runs under --runs that an earlier run of this script "
                         "finished (same variant config, else it stops); train the others")
    ap.add_argument("--save-probs", action="store_true",
                    help="keep every scoring's probabilities under <run>/scored/ (for benchmarks/post_rules.py)")
    args = ap.parse_args()
    tta = {None: False, "flip": True, "d4": "d4"}[args.tta]
    scorings = list(score_names(bool(tta), args.tune_post)[1:])  # beyond "no_tta", kept at the top level
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
                     "variants": {n: VARIANTS[n] for n in names}, "locked_fold": LOCKED_FOLD, "tta": tta,
                     "tune_post": args.tune_post, "scorings": scorings, "score_only": args.score_only, "folds": {},
                     "machine_before": machine()}
    if args.resume and args.out.exists():
        old = json.loads(args.out.read_text())
        if (old["budget_minutes_per_variant_and_fold"] != minutes or list(old["variants"]) != names
                or old.get("family", "glomeruli") != args.family or old.get("scorings", []) != scorings
                or old.get("tta", False) != tta):
            raise SystemExit(f"--resume: {args.out} was run with another family, budget, variants or scorings")
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
            run_dir = args.runs / f"{args.family}-{variant_slug(name)}-fold{k}"
            score = dict(tta=tta, tune_post=args.tune_post, save_probs=run_dir / "scored" if args.save_probs else None)
            reused = args.score_only or (args.reuse and finished_run(run_dir))
            if reused:
                res = {**trained_run(cfg, run_dir), **score_run(args.data, run_dir, **score)}
            else:
                res = train_and_score(cfg, args.data, run_dir, **score)
            fold[name] = {"steps": res["steps"], "tiles": res["steps"] * cfg.batch_size,
                          "train_seconds": res["train_seconds"], "mean_dice": res["no_tta"]["mean_dice"],
                          "per_image": res["no_tta"]["per_image"], "predict_seconds": res["no_tta"]["predict_seconds"],
                          "scores": {s: res[s] for s in scorings}, "reused_run": reused,
                          "trained_on": res.get("trained_on", before),
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
