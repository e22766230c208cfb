"""Segmentation networks: a factory over segmentation-models-pytorch and checkpoint I/O.

The factory (torch, segmentation-models-pytorch) loads on first use, so that reading a checkpoint's
config or running its ONNX export never imports them.
"""

from ftuseg.models.checkpoint import load_checkpoint, load_run_model, save_checkpoint

__all__ = ["FTUNet", "build_model", "load_checkpoint", "load_encoder_weights", "load_run_model", "save_checkpoint"]


def __getattr__(name: str):
    if name in ("FTUNet", "build_model", "load_encoder_weights"):
        from ftuseg.models import factory

        return getattr(factory, name)
    raise AttributeError(f"module 'ftuseg.models' has no attribute {name!r}")
