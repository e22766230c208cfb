"""``ftuseg`` command line: one module per verb, each a thin shell over a library function."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from ftuseg.errors import FtusegError

VERBS = (
    "synth", "check", "baseline", "evaluate", "lr_find", "train", "fit",
    "predict", "report", "export", "tune_thresholds", "demo", "models",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from ftuseg.cli._common import DEBUG_HELP, QUIET_HELP

    parser = argparse.ArgumentParser(
        prog="ftuseg",
        description="Segment functional tissue units (glomeruli, crypts, glands, alveoli, white pulp) in histology.",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help=QUIET_HELP)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
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
        print(f"ftuseg: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ftuseg: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # permission denied, disk full, a file that vanished: the user can fix these, so name the path
        if debug:
            raise
        if not exc.filename:
            return _unexpected(exc)
        reason = exc.strerror or type(exc).__name__
        print(f"ftuseg: error: {exc.filename}: {reason.lower()}", file=sys.stderr)
        return 2
    except Exception as exc:  # anything unforeseen still gets one line, the traceback with --debug
        if debug:
            raise
        return _unexpected(exc)


def _one_line(text: str) -> str:
    """Messages must stay one line so logs and scripts can grep them; join any extra lines."""
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _unexpected(exc: BaseException) -> int:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(f"ftuseg: error: {type(exc).__name__}: {msg} (rerun with --debug for the traceback)", file=sys.stderr)
    return 1
