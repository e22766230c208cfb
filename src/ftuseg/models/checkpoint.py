"""Checkpoints are state_dicts plus our own config, written atomically; never pickled modules."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftuseg.config import RunConfig, load_config
from ftuseg.errors import FtusegError
from ftuseg.io.atomic import atomic_save

if TYPE_CHECKING:  # torch loads on use: a run predicted through its ONNX export never needs it
    import torch

# a shipped model's weights (ftuseg.zoo): fp16 safetensors beside its config.yaml and zoo.json manifest
SAFETENSORS_NAME = "model.safetensors"
MANIFEST_NAME = "zoo.json"


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, cfg: RunConfig, **extra: Any) -> Path:
    """Write ``{"model": state_dict, "config": dict, **extra}`` atomically."""
    import torch

    module = model.module if hasattr(model, "module") else model
    payload = {"model": module.state_dict(), "config": cfg.to_dict(), "format": "ftuseg-checkpoint-v1", **extra}
    return atomic_save(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    import torch

    path = Path(path)
    if not path.exists():
        raise FtusegError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        return load_safetensors_checkpoint(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise FtusegError(f"{path}: corrupt or unreadable checkpoint ({reason})") from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise FtusegError(f"{path}: not an ftuseg checkpoint (no 'model' state_dict)")
    return payload


def save_safetensors_checkpoint(path: str | os.PathLike, state: dict[str, torch.Tensor],
                                keep_fp32: frozenset[str] | set[str] = frozenset(),
                                metadata: dict[str, str] | None = None) -> Path:
    """Write a state_dict as safetensors atomically, floating tensors in fp16 except those in ``keep_fp32``.

    fp16 halves the file; a tensor that fp16 cannot hold (a value beyond ±65504) stays fp32 rather than
    turning into infinities. Integer tensors (BatchNorm step counters) keep their type."""
    import torch
    from safetensors.torch import save_file

    # one metadata entry holding sorted JSON: safetensors writes several in hash-map order, so the same
    # weights would not always give the same bytes (and SHA-256)
    packed = {"ftuseg": json.dumps(metadata, sort_keys=True)} if metadata else None
    out = {}
    for key, value in state.items():
        t = value.detach().cpu().contiguous()
        if t.is_floating_point() and key not in keep_fp32:
            half = t.to(torch.float16)
            t = half if bool(torch.isfinite(half).all()) or not bool(torch.isfinite(t).all()) else t.float()
        out[key] = t.clone()  # safetensors refuses tensors that share memory
    def save(tmp: Path) -> None:
        save_file(out, str(tmp), metadata=packed)
        # safetensors replaces the file with a 0600 one; a shipped model must be readable by every user
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)

    return atomic_save(path, save, suffix=".safetensors")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_sha256(path: Path) -> str:
    """The SHA-256 that the manifest (``zoo.json``) beside a safetensors file records for it."""
    manifest = path.parent / MANIFEST_NAME
    if not manifest.is_file():
        raise FtusegError(f"{path}: no {MANIFEST_NAME} beside it, so its SHA-256 cannot be checked")
    try:
        entry = json.loads(manifest.read_text())
        sha = entry["sha256"] if entry.get("file", SAFETENSORS_NAME) == path.name else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FtusegError(f"{manifest}: invalid model manifest ({type(exc).__name__}: {exc})") from None
    if not isinstance(sha, str) or len(sha) != 64:
        raise FtusegError(f"{manifest}: records no SHA-256 for {path.name}")
    return sha.lower()


def load_safetensors_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A shipped model's weights, checked against the SHA-256 in its manifest and restored to fp32.

    Returned like :func:`load_checkpoint` (``{"model": state_dict, "config": dict | None, ...}``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    expected = expected_sha256(path)
    data = path.read_bytes()  # hash and parse the same bytes: the file cannot change in between
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise FtusegError(f"{path}: SHA-256 {actual[:16]}... does not match {expected[:16]}... recorded in "
                          f"{MANIFEST_NAME}: the model file is corrupt or was modified; reinstall ftuseg")
    try:
        tensors = load(data)
        # the header (8-byte little-endian length, then JSON) carries the metadata written at packaging
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
        meta = json.loads((header.get("__metadata__") or {}).get("ftuseg") or "{}")
    except (SafetensorError, OSError, ValueError) as exc:
        raise FtusegError(f"{path}: unreadable safetensors file ({str(exc).splitlines()[0][:120]})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    try:
        config = json.loads(meta["config"]) if isinstance(meta.get("config"), str) else None
    except ValueError:
        config = None
    return {"model": state, "config": config, "format": meta.get("format", "ftuseg-zoo-v1"), "sha256": actual}


def resolve_checkpoint(run_dir: str | os.PathLike, which: str = "best") -> Path:
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise FtusegError(f"{run_dir}: run folder not found")
    for name in (f"{which}.pt", "best.pt", "last.pt", SAFETENSORS_NAME):
        if (run_dir / name).exists():
            return run_dir / name
    raise FtusegError(f"{run_dir}: no checkpoint (best.pt, last.pt or {SAFETENSORS_NAME}) in the run folder")


def load_run_model(run_dir: str | os.PathLike, which: str = "best",
                   weights: str = "model") -> tuple[torch.nn.Module, RunConfig]:
    """Rebuild the model of a run folder (or a checkpoint file) with its weights; eval mode, CPU.

    ``weights``: ``model`` (the trained weights) or ``ema`` (their moving average, in runs trained with
    ``ema_decay``)."""
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
    if weights not in payload:
        raise FtusegError(f"{ckpt_path}: no '{weights}' weights in this checkpoint"
                          + (" (train with ema_decay > 0 to keep a moving average)" if weights == "ema" else ""))
    payload = {**payload, "model": payload[weights]}
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
