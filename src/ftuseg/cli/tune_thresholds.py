"""ftuseg tune-thresholds: per-organ threshold + minimum area from out-of-fold predictions."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune-thresholds", help="tune per-organ thresholds on out-of-fold predictions",
                       description="Tune a threshold and a minimum object area per organ on the out-of-fold "
                                   "probabilities of fold runs; saves thresholds.json into every run folder.")
    p.add_argument("paths", nargs="+", metavar="RUN_DIR... DATA", help="fold run folders, then the data folder")
    p.add_argument("--threshold-range", default=None, metavar="LO,HI",
                   help="try thresholds from LO to HI in steps of 0.05 (default 0.1,0.9; `ftuseg fit` uses 0.4,0.6, "
                        "which held up better on small tuning sets)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.errors import FtusegError
    from ftuseg.inference.threshold_tuning import tune_thresholds

    if len(args.paths) < 2:
        raise FtusegError("tune-thresholds needs at least one RUN_DIR and the DATA folder")
    *runs, data = args.paths
    grid = {} if args.threshold_range is None else {"threshold_grid": threshold_range(args.threshold_range)}
    result, report = tune_thresholds(runs, data, **grid)
    print(report.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    info(args, f"global threshold {result.threshold:.2f}, min area {result.min_area_um2:g} µm²; "
               f"saved thresholds.json in {len(runs)} run folder(s)")
    return 0


def threshold_range(text: str) -> tuple[float, ...]:
    """``"LO,HI"`` -> the thresholds LO, LO + 0.05, ..., HI (both in (0, 1))."""
    import numpy as np

    from ftuseg.errors import FtusegError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise FtusegError(f"--threshold-range {text!r}: expected LO,HI, e.g. 0.4,0.6") from None
    if not 0 < lo <= hi < 1:
        raise FtusegError(f"--threshold-range {text!r}: need 0 < LO <= HI < 1")
    return tuple(float(v) for v in np.round(np.arange(lo, hi + 1e-9, 0.05), 4))
