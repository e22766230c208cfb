"""Shared CLI pieces: --quiet/--debug, and flags generated from every RunConfig field."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from ftuseg.config import PRESETS, RunConfig, make_config
from ftuseg.errors import FtusegError

QUIET_HELP = "no progress bars or informational output"
DEBUG_HELP = "show full tracebacks on errors"


def add_common(p: argparse.ArgumentParser) -> None:
    """--quiet/--debug after the verb too. SUPPRESS keeps the value given before the verb (``ftuseg -q
    train``): a sub-parser default would overwrite it."""
    p.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)


def info(args: argparse.Namespace, *msg: object) -> None:
    if not getattr(args, "quiet", False):
        print(*msg, file=sys.stderr, flush=True)


def parse_mapping(text: str) -> dict[str, float]:
    """``organ=value,organ=value`` -> {organ: value} (the ``--organ-mpp`` flag's type)."""
    out = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in part:
            raise argparse.ArgumentTypeError(f"expected organ=value pairs, got {part!r}")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{k}: {v!r} is not a number") from None
    return out


def _optional_number(text: str) -> float | None:
    return None if text.lower() in ("none", "null", "") else float(text)


def _lr(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lr must be a number or 'auto', got {text!r}") from None


def add_config_args(p: argparse.ArgumentParser, skip: tuple[str, ...] = ("preset",)) -> None:
    """Every RunConfig field becomes ``--field-name`` (defaults come from the preset, not argparse)."""
    g = p.add_argument_group("run configuration (defaults from --preset, then --config YAML)")
    g.add_argument("--preset", choices=sorted(PRESETS), default="seed-512", help="named configuration")
    g.add_argument("--config", dest="config_yaml", metavar="YAML", help="YAML file of config fields")
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        kw: dict = {"dest": f"cfg_{f.name}", "default": None, "metavar": f.name.upper()}
        if f.name == "tta":
            add_tta_flags(g, dest=kw["dest"], help=config_field_help(f))
            continue
        if hint is bool:
            kw.pop("metavar")
            kw["action"] = argparse.BooleanOptionalAction
        elif f.name == "lr":
            kw["type"] = _lr
        elif f.name == "organ_mpp":
            kw["type"] = parse_mapping
            kw["metavar"] = "ORGAN=MPP,..."
        elif f.name == "organs":
            kw["type"] = str
            kw["metavar"] = "ORGAN,..."
        elif f.name in ("max_minutes",):
            kw["type"] = _optional_number
        elif f.name == "fold":
            kw["type"] = int
        elif hint in (int, float, str):
            kw["type"] = hint
        else:
            kw["type"] = str
        g.add_argument(flag, help=config_field_help(f), **kw)


def add_tta_flags(p, dest: str = "tta", help: str = "test-time augmentation") -> None:
    """``--tta`` (the 4 flips), ``--tta d4`` (8 passes: flips of the tile and of its transpose), ``--no-tta``."""
    p.add_argument("--no-tta", dest=dest, action="store_const", const=False, help="no test-time augmentation")
    p.add_argument("--tta", dest=dest, nargs="?", const=True, default=None, choices=(True, "flip", "d4"),
                   metavar="{flip,d4}", help=help)


def config_field_help(f: dataclasses.Field) -> str:
    """The field's own documentation (``metadata["help"]`` in config.py, meaning and unit), its default
    and the presets that change it. Escaped for argparse, which %-formats help strings."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    text = f"{f.metadata.get('help', f.name)}; default {_shown(default)}"
    by_preset = [f"{name}: {_shown(values[f.name])}" for name, values in PRESETS.items()
                 if f.name in values and values[f.name] != default]
    if by_preset:
        text += f" (preset {', '.join(by_preset)})"
    return text.replace("%", "%%")


def _shown(value: object) -> str:
    """A default as the user would type it on the command line."""
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def config_from_args(args: argparse.Namespace, **forced: object) -> RunConfig:
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    overrides.update({k: v for k, v in forced.items() if v is not None})
    try:
        return make_config(args.preset, getattr(args, "config_yaml", None), **overrides)
    except TypeError as exc:
        raise FtusegError(f"config: {exc}") from None
