"""``ftuseg`` command line: one module per verb, each a thin shell over a library function."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from ftuseg.errors import FtusegError

VERBS = ("synth", "baseline", "evaluate", "lr_find", "train", "predict", "demo")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="ftuseg",
        description="Segment functional tissue units (glomeruli, crypts, glands, alveoli, white pulp) in histology.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        module = importlib.import_module(f"ftuseg.cli.{verb}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub unless the user asks for imagenet
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("FTUSEG_DEBUG") == "1"
    if not debug:
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    try:
        return int(args.func(args) or 0)
    except FtusegError as exc:
        if debug:
            raise
        print(f"ftuseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ftuseg: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything unforeseen still gets one line, the traceback with --debug
        if debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"ftuseg: error: {type(exc).__name__}: {msg} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
