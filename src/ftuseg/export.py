"""Export a run's network to ONNX for onnxruntime (and any other ONNX engine).

The exported graph is the whole :class:`~ftuseg.models.factory.FTUNet`, normalisation included:
input ``image`` float32 RGB in [0, 255], NCHW, with dynamic batch, height and width (height and width
must be multiples of 32, as for the torch model); output ``logits`` (N, 1, H, W). No pre-processing
contract beyond that, so the file is self-contained.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ftuseg.errors import FtusegError
from ftuseg.io.atomic import atomic_save

if TYPE_CHECKING:  # loaded on use: finding an existing export must not pull in torch
    import torch

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
OPSET = 17


@dataclass
class ExportResult:
    onnx_path: Path
    checkpoint: Path
    max_abs_diff: float | None  # onnxruntime vs torch logits on a check input; None when not checked


def export_model_onnx(model: torch.nn.Module, path: str | os.PathLike, sample_size: int = 64) -> Path:
    """Write ``model`` (an FTUNet, eval mode, any device) to ``path`` atomically as ONNX."""
    import torch

    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    x = torch.rand(1, 3, sample_size, sample_size) * 255.0
    axes = {0: "batch", 2: "height", 3: "width"}

    def save(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            # The TorchScript-based exporter handles these convolutional networks with dynamic H/W and
            # needs no extra package (the dynamo exporter needs onnxscript).
            torch.onnx.export(
                model, (x,), str(tmp), dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, opset_version=OPSET, do_constant_folding=True,
            )

    return atomic_save(path, save, suffix=".onnx")


def check_onnx(model: torch.nn.Module, path: str | os.PathLike, shapes=((2, 3, 96, 64),), seed: int = 0) -> float:
    """Max |logit difference| between onnxruntime and torch on random inputs of the given shapes."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = model.to("cpu").eval()
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for shape in shapes:
        x = torch.rand(*shape, generator=gen) * 255.0
        with torch.inference_mode():
            ref = model(x).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def export_run(run_dir: str | os.PathLike, onnx_path: str | os.PathLike | None = None, which: str = "best",
               check: bool = True) -> ExportResult:
    """``ftuseg export``: the checkpoint ``which`` of ``run_dir`` to ONNX (default ``RUN_DIR/model.onnx``)."""
    from ftuseg.models.checkpoint import load_run_model, resolve_checkpoint

    ckpt = resolve_checkpoint(run_dir, which)
    model, cfg = load_run_model(run_dir, which)
    if onnx_path is None:
        onnx_path = default_onnx_path(ckpt)
    onnx_path = Path(onnx_path)
    size = max(64, min(cfg.tile_size if cfg.mode == "tiled" else cfg.image_size, 128))
    try:
        export_model_onnx(model, onnx_path, sample_size=size)
    except FtusegError:
        raise
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise FtusegError(f"{ckpt}: ONNX export of {cfg.arch}/{cfg.encoder} failed ({msg})") from None
    diff = check_onnx(model, onnx_path, shapes=((2, 3, size, size), (1, 3, size + 32, size))) if check else None
    return ExportResult(onnx_path, ckpt, diff)


def default_onnx_path(checkpoint: str | os.PathLike) -> Path:
    """``model.onnx`` beside ``best.pt``; ``model-<name>.onnx`` for any other checkpoint file; for a shipped
    model the user cache, keyed by its hash (its folder is part of the package and never written to)."""
    ckpt = Path(checkpoint)
    if ckpt.suffix == ".safetensors":
        from ftuseg.zoo.registry import onnx_cache_path

        return onnx_cache_path(ckpt)
    return ckpt.parent / ("model.onnx" if ckpt.stem == "best" else f"model-{ckpt.stem}.onnx")
