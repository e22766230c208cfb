"""ftuseg train: train a preset (or YAML config) into a run folder; --resume continues it."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, add_config_args, config_from_args, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model into a run folder",
                       description="Train on DATA (train.csv + train_images/) into --out RUN_DIR. Works under "
                                   "torchrun (DDP) unchanged.")
    p.add_argument("data", help="data folder with train.csv + train_images/ (and optional meta.csv)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, config.yaml, metrics.csv)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--folds", choices=("all",), help="train every grouped fold into RUN_DIR/fold<k>")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (smoke tests)")
    add_config_args(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ftuseg.training.trainer import train

    cfg = config_from_args(args)
    if args.folds == "all":
        for k in range(cfg.n_folds):
            res = train(cfg.replace(fold=k), args.data, Path(args.out) / f"fold{k}", resume=args.resume,
                        progress=not args.quiet, max_steps=args.max_steps)
            info(args, f"fold {k}: best val dice {res.best_dice}")
        return 0
    res = train(cfg, args.data, args.out, resume=args.resume, progress=not args.quiet, max_steps=args.max_steps)
    dice = "n/a" if res.best_dice is None else f"{res.best_dice:.4f}"
    info(args, f"done: {res.epochs} epochs, {res.steps} steps, lr {res.lr:.3g}, best val dice {dice} -> {res.run_dir}")
    return 0
