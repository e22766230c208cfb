"""Fine-tuning: ``ftuseg train DATA --init-from NAME_OR_RUN_DIR`` starts the whole network from a model.

The source is a shipped model (``ftuseg models``) or any run folder. The new run takes the source's
preset, network (architecture, encoder and the input normalisation that goes with its encoder weights)
and geometry (mode, tile/image size, µm/px per organ, organs) unless the command line or ``--config``
says otherwise; then every weight of the encoder and the decoder is copied from the source before the
first step. Folds, augmentation, checkpoint choice and threshold tuning are the ordinary ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ftuseg.config import PRESETS, RunConfig, make_config
from ftuseg.errors import FtusegError

# what a fine-tuned run keeps from its source unless told otherwise: the network and what it was trained to see
INHERITED = ("arch", "encoder", "encoder_weights", "decoder_width", "mode", "image_size", "tile_size", "target_mpp",
             "organ_mpp", "organs")


def resolve_source(init_from: str | os.PathLike) -> Path:
    """A run folder (or checkpoint file) as given, else the folder of the shipped model of that name."""
    from ftuseg.zoo.registry import get_model, list_models

    path = Path(init_from)
    if path.exists():
        return path
    names = {m.name for m in list_models()}
    if str(init_from) in names:
        return get_model(str(init_from)).path
    known = ", ".join(sorted(names)) or "none are installed"
    raise FtusegError(f"--init-from {init_from}: neither a run folder nor a shipped model (shipped: {known})")


def source_config(init_from: str | os.PathLike) -> RunConfig:
    """The configuration the source was trained with."""
    from ftuseg.config import load_config
    from ftuseg.models.checkpoint import load_checkpoint, resolve_checkpoint

    ckpt = resolve_checkpoint(resolve_source(init_from))
    cfg_path = ckpt.parent / "config.yaml"
    if cfg_path.exists():
        return load_config(cfg_path)
    saved = load_checkpoint(ckpt).get("config")
    if not isinstance(saved, dict):
        raise FtusegError(f"--init-from {init_from}: {ckpt} has no config.yaml beside it and no config inside it")
    return RunConfig(**saved).validate()


def finetune_config(init_from: str, preset: str | None = None, yaml_path: str | os.PathLike | None = None,
                    **overrides: Any) -> RunConfig:
    """The run configuration of a fine-tuning run: the source's preset, then the source's network and geometry
    (fields not set by ``yaml_path`` or ``overrides``), then the YAML file, then the overrides."""
    from ftuseg.config import _read_yaml

    src = source_config(init_from)
    preset = preset or (src.preset if src.preset in PRESETS else "seed-512")
    in_yaml = set(_read_yaml(Path(yaml_path))) if yaml_path is not None else set()
    inherited = {k: getattr(src, k) for k in INHERITED
                 if hasattr(src, k) and k not in in_yaml and overrides.get(k) is None}
    # a run folder is recorded by its absolute path (DDP workers and later resumes may start elsewhere)
    source = str(init_from) if not Path(init_from).exists() else str(Path(init_from).resolve())
    cfg = make_config(preset, yaml_path, **{**inherited, **overrides, "init_from": source})
    check_same_network(cfg, src, init_from)
    return cfg


def check_same_network(cfg: RunConfig, src: RunConfig, init_from: str | os.PathLike) -> None:
    if (cfg.arch, cfg.encoder) != (src.arch, src.encoder):
        raise FtusegError(f"--init-from {init_from}: it is a {src.arch}/{src.encoder} network and this run builds "
                          f"{cfg.arch}/{cfg.encoder}; the architecture must match (leave out --arch/--encoder to "
                          "keep the source's)")


def init_model_from(model: torch.nn.Module, cfg: RunConfig) -> int:
    """Copy every weight of ``cfg.init_from`` into ``model`` (encoder and decoder); returns the tensor count.

    The networks must be the same architecture: anything else is one clear error, never a partial load."""
    from ftuseg.models.checkpoint import _state_dict_mismatch, load_run_model

    if not cfg.init_from:
        raise FtusegError("init_model_from: the config names no init_from")
    source, src_cfg = load_run_model(resolve_source(cfg.init_from))
    check_same_network(cfg, src_cfg, cfg.init_from)
    target = model.module if hasattr(model, "module") else model
    state = source.state_dict()
    problem = _state_dict_mismatch(target.state_dict(), state)
    if problem:
        raise FtusegError(f"--init-from {cfg.init_from}: its weights do not fit this {cfg.arch}/{cfg.encoder} "
                          f"network ({problem})")
    target.load_state_dict(state)
    return len(state)
