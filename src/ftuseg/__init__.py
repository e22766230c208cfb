"""ftuseg: segmentation of functional tissue units (FTUs) in histology images."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftuseg.errors import FtusegError
from ftuseg.metrics import dice_score, mean_dice
from ftuseg.rle import decode_rle, encode_rle

if TYPE_CHECKING:
    from ftuseg.inference.predictor import Predictor

__version__ = "0.1.0"

__all__ = ["FtusegError", "decode_rle", "dice_score", "encode_rle", "load_model", "mean_dice", "__version__"]


def load_model(name: str, device: str = "auto", tta: bool | str | None = None, engine: str = "torch",
               tta_scales: list[float] | str | None = None) -> Predictor:
    """A shipped model (``ftuseg models``) as a :class:`~ftuseg.inference.predictor.Predictor`, hash-checked.

    ``ftuseg.load_model("glomeruli-pas").predict_mask(rgb, pixel_size, "kidney")``. Imported on use, so that
    ``import ftuseg`` stays light."""
    from ftuseg.zoo.registry import load_model as _load_model

    return _load_model(name, device=device, tta=tta, engine=engine, tta_scales=tta_scales)

