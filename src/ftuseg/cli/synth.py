"""ftuseg synth: write the embedded synthetic data set in the Kaggle layout."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a deterministic synthetic data set (Kaggle layout)",
                       description="Generate a deterministic synthetic data set in the competition layout.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n-train", type=int, default=40)
    p.add_argument("--n-test", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.synth import SynthSpec, make_synthetic_dataset

    out = make_synthetic_dataset(args.out, SynthSpec(n_train=args.n_train, n_test=args.n_test, seed=args.seed))
    info(args, f"wrote {args.n_train} train + {args.n_test} test images to {out}")
    return 0
