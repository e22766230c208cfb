"""ftuseg predict: apply one or more runs (an ensemble) to a data folder and write a submission."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict masks with one or more runs and write a submission",
                       description="Predict DATA with RUN_DIR [RUN_DIR ...] (averaged) and write id,rle.")
    p.add_argument("paths", nargs="+", metavar="RUN_DIR... DATA", help="run folder(s) followed by the data folder")
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.add_argument("--split", choices=("train", "test"), help="default: test if present, else train")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="flip test-time augmentation")
    p.add_argument("--device", default="auto")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--threshold", type=float, help="override the saved threshold(s)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.errors import FtusegError
    from ftuseg.inference.predictor import Predictor, predict_table
    from ftuseg.io.atomic import atomic_write, check_output_dir
    from ftuseg.io.dataset import load_table

    if len(args.paths) < 2:
        raise FtusegError("predict needs at least one RUN_DIR and a DATA folder")
    *runs, data = args.paths
    check_output_dir(args.out)
    table = load_table(data, args.split)
    predictor = Predictor.from_runs(runs, device=args.device, tta=args.tta, which=args.checkpoint)
    if args.threshold is not None:
        predictor.thresholds.threshold = args.threshold
        predictor.thresholds.organs = {}
    sub, _ = predict_table(predictor, table, progress=not args.quiet)
    with atomic_write(args.out) as fh:
        sub.to_csv(fh, index=False)
    info(args, f"wrote {len(sub)} predictions to {args.out}")
    return 0
