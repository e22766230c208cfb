"""ftuseg: segmentation of functional tissue units (FTUs) in histology images."""

from ftuseg.errors import FtusegError
from ftuseg.metrics import dice_score, mean_dice
from ftuseg.rle import decode_rle, encode_rle

__version__ = "0.1.0"

__all__ = ["FtusegError", "decode_rle", "dice_score", "encode_rle", "mean_dice", "__version__"]
