"""ftuseg baseline: the seed's random-uniform submission."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline", help="write a random-uniform submission (the seed's baseline)",
                       description="Write a seeded random-uniform submission (id,rle) for a data folder.")
    p.add_argument("data", help="data folder (train.csv/test.csv + *_images/)")
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.add_argument("--split", choices=("train", "test"), help="default: test if present, else train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cell", type=int, default=32, help="side of the random blocks in pixels (1 = per pixel)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.baseline import random_baseline
    from ftuseg.io.atomic import atomic_write, check_output_dir
    from ftuseg.io.dataset import load_table

    check_output_dir(args.out)
    table = load_table(args.data, args.split, need_images=False)
    sub = random_baseline(table, seed=args.seed, cell=max(1, args.cell))
    with atomic_write(args.out) as fh:
        sub.to_csv(fh, index=False)
    info(args, f"wrote {len(sub)} random masks to {args.out}")
    return 0
