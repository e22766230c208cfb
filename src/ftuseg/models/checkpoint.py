"""Checkpoints are state_dicts plus our own config, written atomically; never pickled modules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ftuseg.config import RunConfig, load_config
from ftuseg.errors import FtusegError
from ftuseg.io.atomic import atomic_save


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, cfg: RunConfig, **extra: Any) -> Path:
    """Write ``{"model": state_dict, "config": dict, **extra}`` atomically."""
    module = model.module if hasattr(model, "module") else model
    payload = {"model": module.state_dict(), "config": cfg.to_dict(), "format": "ftuseg-checkpoint-v1", **extra}
    return atomic_save(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FtusegError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise FtusegError(f"{path}: corrupt or unreadable checkpoint ({reason})") from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise FtusegError(f"{path}: not an ftuseg checkpoint (no 'model' state_dict)")
    return payload


def resolve_checkpoint(run_dir: str | os.PathLike, which: str = "best") -> Path:
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise FtusegError(f"{run_dir}: run folder not found")
    for name in (f"{which}.pt", "best.pt", "last.pt"):
        if (run_dir / name).exists():
            return run_dir / name
    raise FtusegError(f"{run_dir}: no checkpoint (best.pt or last.pt) in the run folder")


def load_run_model(run_dir: str | os.PathLike, which: str = "best") -> tuple[torch.nn.Module, RunConfig]:
    """Rebuild the model of a run folder (or a checkpoint file) with its weights; eval mode, CPU."""
    from ftuseg.models.factory import build_model

    ckpt_path = resolve_checkpoint(run_dir, which)
    cfg_path = ckpt_path.parent / "config.yaml"
    payload = load_checkpoint(ckpt_path)
    saved = payload.get("config") if isinstance(payload.get("config"), dict) else None
    if cfg_path.exists():
        cfg = load_config(cfg_path)
    elif saved is not None:
        try:
            cfg = RunConfig(**saved).validate()
        except TypeError as exc:
            raise FtusegError(f"{ckpt_path}: config stored in the checkpoint is not valid ({exc})") from None
    else:
        raise FtusegError(f"{ckpt_path}: no config.yaml beside it and no config inside it")
    model = build_model(cfg, load_weights=False)
    problem = _state_dict_mismatch(model.state_dict(), payload["model"])
    if problem:
        trained = ""
        if saved is not None and (saved.get("arch"), saved.get("encoder")) != (cfg.arch, cfg.encoder):
            trained = f"; the checkpoint was trained as {saved.get('arch')}/{saved.get('encoder')}"
        source = cfg_path.name if cfg_path.exists() else "its config"
        raise FtusegError(
            f"{ckpt_path}: weights do not fit {cfg.arch}/{cfg.encoder} from {source} ({problem}){trained}; "
            "a checkpoint of another architecture?"
        )
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise FtusegError(f"{ckpt_path}: weights do not fit {cfg.arch}/{cfg.encoder} ({first})") from None
    model.eval()
    return model, cfg


def _state_dict_mismatch(expected: dict[str, Any], given: object) -> str:
    """A short description of how ``given`` differs from the model's state_dict ('' if it fits)."""
    if not isinstance(given, dict):
        return f"'model' is a {type(given).__name__}, not a state_dict"
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [k for k in expected if k in given and hasattr(given[k], "shape") and given[k].shape != expected[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected e.g. {unexpected[0]}")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape e.g. {k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}")
    return ", ".join(parts)
