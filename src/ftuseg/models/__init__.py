"""Segmentation networks: a factory over segmentation-models-pytorch and checkpoint I/O."""

from ftuseg.models.checkpoint import load_checkpoint, load_run_model, save_checkpoint
from ftuseg.models.factory import FTUNet, build_model, load_encoder_weights

__all__ = ["FTUNet", "build_model", "load_checkpoint", "load_encoder_weights", "load_run_model", "save_checkpoint"]
