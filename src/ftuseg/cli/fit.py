"""ftuseg fit: the best recipe end to end (specialist fold runs from an ImageNet encoder, then
post-processing tuned out of fold), for a user who just wants the best model for their data."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit", help="train the best recipe end to end: specialists x folds, then tuned post-processing",
        description="Train one organ specialist per FTU family (glomeruli, glands, any other organ alone) on "
                    "every grouped fold of DATA from the offline ImageNet EfficientNet-Lite0 encoder (needs "
                    "ftuseg[pretrained]), then tune per-organ threshold, minimum area and hole filling on the "
                    "out-of-fold predictions. Predict with: ftuseg predict OUT/*/fold* INPUT ...")
    p.add_argument("data", help="data folder with train.csv + train_images/ (and optional meta.csv)")
    p.add_argument("--out", required=True, help="folder for OUT/<family>/fold<k> run folders and recipe.json")
    p.add_argument("--minutes", type=float, required=True,
                   help="whole training budget in minutes, shared equally by every (family, fold) run")
    p.add_argument("--n-folds", type=int, default=5, help="grouped folds (default 5)")
    p.add_argument("--folds", help="comma list of the folds to train (default: all)")
    p.add_argument("--encoder-weights", default=None,
                   help="override the recipe's imagenet-lite0 (e.g. a local checkpoint of the same encoder)")
    p.add_argument("--num-workers", type=int, default=1, help="tile-loading worker processes per run (default 1)")
    p.add_argument("--max-steps", type=int, help="stop every run after this many optimiser steps (smoke tests)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.errors import FtusegError
    from ftuseg.training.recipe import train_recipe

    folds = None
    if args.folds:
        try:
            folds = [int(f) for f in args.folds.split(",") if f.strip()]
        except ValueError:
            raise FtusegError(f"--folds: expected a comma list of fold numbers, got {args.folds!r}") from None
    overrides = {"num_workers": args.num_workers}
    if args.encoder_weights:
        overrides["encoder_weights"] = args.encoder_weights
    result = train_recipe(args.data, args.out, args.minutes, n_folds=args.n_folds, folds=folds,
                          progress=not getattr(args, "quiet", False), max_steps=args.max_steps, **overrides)
    for row in result.tuning:
        info(args, f"{row['organ']}: out-of-fold dice {row['dice_at_0.5']:.4f} at 0.5 -> {row['dice_tuned']:.4f} "
                   f"(threshold {row['threshold']:.2f}, min area {row['min_area_um2']:g} µm², "
                   f"holes up to {row['fill_holes_um2']:g} µm² filled)")
    info(args, f"done: {len(result.run_dirs)} runs in {result.out_dir}; predict with "
               f"ftuseg predict {result.out_dir}/*/fold* INPUT --out-dir OUT")
    return 0
