"""ftuseg evaluate: mean per-image Dice of a submission, by organ and data source."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ftuseg.cli._common import add_common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a submission (mean Dice, by organ and data source)",
                       description="Score SUBMISSION against TRUTH (a CSV with rle, or a data folder).")
    p.add_argument("submission", help="submission CSV (id,rle)")
    p.add_argument("truth", help="truth CSV (train.csv / test_solution.csv) or a data folder")
    p.add_argument("--json", dest="json_out", help="JSON summary path (default: SUBMISSION.dice.json)")
    p.add_argument("--per-image", help="also write the per-image Dice table to this CSV")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.evaluate import evaluate_files, format_summary
    from ftuseg.io.atomic import atomic_write

    per_image, summary = evaluate_files(args.submission, args.truth)
    out = Path(args.json_out) if args.json_out else Path(args.submission).with_suffix(".dice.json")
    summary["per_image"] = per_image[["id", "organ", "data_source", "dice"]].to_dict("records")
    with atomic_write(out) as fh:
        json.dump(summary, fh, indent=2, default=str)
    if args.per_image:
        with atomic_write(args.per_image) as fh:
            per_image.to_csv(fh, index=False)
    print(format_summary(summary))
    return 0
