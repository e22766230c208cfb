"""ftuseg demo: the whole seed pipeline on the embedded synthetic data set."""

from __future__ import annotations

import argparse
from pathlib import Path

from ftuseg.cli._common import add_common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synth -> baseline -> lr-find -> train -> predict -> evaluate",
                       description="Run the seed pipeline end to end on synthetic data and compare with the baseline.")
    p.add_argument("--out", default="demo_out", help="working folder")
    p.add_argument("--epochs", type=int, help="override the demo preset's epochs")
    p.add_argument("--real-data", default=None, metavar="DIR",
                   help="ftu-bench (Kaggle layout) for the second part: the shipped glomeruli model on a real kidney "
                        "image it never saw (default: ../shared/data/ftu-bench when present; 'none' skips it)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.demo import run_demo

    quiet = getattr(args, "quiet", False)
    result = run_demo(args.out, epochs=args.epochs, progress=not quiet)
    print(f"baseline mean Dice: {result['baseline_dice']:.4f}")
    print(f"model    mean Dice: {result['model_dice']:.4f}  (U-Net/ResNet34, {result['train_seconds']:.0f} s training)")
    print(f"total {result['seconds']:.0f} s; outputs in {args.out}")
    real = _real_data(args.real_data)
    if real is None:
        print("shipped model on real tissue: skipped (no ftu-bench); on your own slide: "
              "ftuseg predict --model glomeruli-pas SLIDE --organ kidney --out-dir out/")
        return 0
    from ftuseg.demo import run_shipped_demo

    shipped = run_shipped_demo(real, Path(args.out) / "shipped", progress=not quiet)
    print(f"shipped model {shipped['model']} on real kidney image {shipped['image']} (never seen in training): "
          f"Dice {shipped['dice']:.4f}, {shipped['objects_predicted']} glomeruli outlined "
          f"({shipped['objects_true']} annotated), {shipped['seconds']:.0f} s; drag "
          f"{shipped['outputs']}/{Path(shipped['outputs']).name}.geojson onto the image in QuPath")
    return 0


def _real_data(arg: str | None) -> Path | None:
    if arg == "none":
        return None
    path = Path(arg) if arg else Path("..") / "shared" / "data" / "ftu-bench"
    if (path / "train.csv").is_file():
        return path
    if arg:
        from ftuseg.errors import FtusegError

        raise FtusegError(f"--real-data {arg}: no train.csv there")
    return None
