"""ftuseg lr-find: LR range test, plot and suggested LR."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lr-find", help="LR range test: saves a loss-vs-LR plot and prints the suggested LR",
                       description="Run an LR range test on the training split of DATA.")
    p.add_argument("data", help="data folder with train.csv + train_images/")
    p.add_argument("--out", default="lr_find.png", help="plot to write (PNG); a JSON is written beside it")
    p.add_argument("--iters", type=int, default=40, help="number of LR steps")
    add_config_args(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.io.atomic import check_output_dir
    from ftuseg.training.trainer import run_lr_find

    check_output_dir(args.out)
    cfg = config_from_args(args)
    result = run_lr_find(cfg, args.data, args.out, num_iter=args.iters, progress=not args.quiet)
    print(f"suggested lr: {result.suggestion:.3g} (minimum loss at {result.min_loss_lr:.3g}); plot: {args.out}")
    return 0
