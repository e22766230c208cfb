"""ftuseg demo: the whole seed pipeline on the embedded synthetic data set."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synth -> baseline -> lr-find -> train -> predict -> evaluate",
                       description="Run the seed pipeline end to end on synthetic data and compare with the baseline.")
    p.add_argument("--out", default="demo_out", help="working folder")
    p.add_argument("--epochs", type=int, help="override the demo preset's epochs")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.demo import run_demo

    result = run_demo(args.out, epochs=args.epochs, progress=not args.quiet)
    print(f"baseline mean Dice: {result['baseline_dice']:.4f}")
    print(f"model    mean Dice: {result['model_dice']:.4f}  (U-Net/ResNet34, {result['train_seconds']:.0f} s training)")
    print(f"total {result['seconds']:.0f} s; outputs in {args.out}")
    return 0
