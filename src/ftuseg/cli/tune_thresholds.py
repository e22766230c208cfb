"""ftuseg tune-thresholds: per-organ threshold + minimum area from out-of-fold predictions."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune-thresholds", help="tune per-organ thresholds on out-of-fold predictions",
                       description="Tune a threshold and a minimum object area per organ on the out-of-fold "
                                   "probabilities of fold runs; saves thresholds.json into every run folder.")
    p.add_argument("paths", nargs="+", metavar="RUN_DIR... DATA", help="fold run folders, then the data folder")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.errors import FtusegError
    from ftuseg.inference.threshold_tuning import tune_thresholds

    if len(args.paths) < 2:
        raise FtusegError("tune-thresholds needs at least one RUN_DIR and the DATA folder")
    *runs, data = args.paths
    result, report = tune_thresholds(runs, data)
    print(report.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    info(args, f"global threshold {result.threshold:.2f}, min area {result.min_area_um2:g} µm²; "
               f"saved thresholds.json in {len(runs)} run folder(s)")
    return 0
