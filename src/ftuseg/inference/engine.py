"""Turn a network into a tile function: batches of uint8 tiles in, probabilities out."""

from __future__ import annotations

import numpy as np
import torch

from ftuseg.inference.sliding_window import TileFn


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# Flip TTA: each entry flips the spatial dims listed; flips are their own inverse.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


class TorchTileFn:
    """Runs an ``FTUNet`` on tile batches with ``inference_mode``, channels_last and optional flip TTA."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu", tta: bool = False,
                 amp: bool = True):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.channels_last = True
        self.model = self.model.to(memory_format=torch.channels_last)
        self.flips = TTA_FLIPS if tta else ((),)
        self.amp = amp and self.device.type == "cuda"

    @torch.inference_mode()
    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
        acc = None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            for dims in self.flips:
                xi = x.flip(dims) if dims else x
                p = torch.sigmoid(self.model(xi).float())
                p = p.flip(dims) if dims else p
                acc = p if acc is None else acc + p
        out = (acc / len(self.flips))[:, 0]
        return out.cpu().numpy().astype(np.float32, copy=False)


def as_tile_fn(model: torch.nn.Module, device: torch.device | str = "cpu", tta: bool = False) -> TileFn:
    return TorchTileFn(model, device=device, tta=tta)
