"""ftuseg export: a run's network as ONNX (dynamic batch/height/width, normalisation inside)."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run's network to ONNX",
                       description="Write RUN_DIR's network as ONNX: input 'image' float32 RGB 0..255 NCHW (dynamic "
                                   "batch, height, width; multiples of 32), output 'logits' N,1,H,W.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (or a checkpoint file)")
    p.add_argument("--onnx", metavar="PATH", help="ONNX file to write (default: RUN_DIR/model.onnx)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the onnxruntime-vs-torch comparison after export")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.export import export_run

    res = export_run(args.run_dir, args.onnx, which=args.checkpoint, check=args.check)
    check = "" if res.max_abs_diff is None else f" (max |logit diff| vs torch {res.max_abs_diff:.2e})"
    info(args, f"exported {res.checkpoint} -> {res.onnx_path}{check}")
    return 0
