"""ftuseg report: one self-contained HTML page for a prediction folder or a training run."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of predictions or a run",
                       description="Write one HTML page (images embedded) for RUN_OR_PREDICTION_DIR: overlays, "
                                   "object counts and areas, and Dice per image and organ when truth is known.")
    p.add_argument("folder", metavar="RUN_OR_PREDICTION_DIR")
    p.add_argument("--out", help="HTML file to write (default: FOLDER/report.html)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.report import build_report

    out = build_report(args.folder, args.out)
    info(args, f"wrote {out}")
    return 0
