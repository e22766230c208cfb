"""Training samples: whole images squashed to a square (seed) or physical-resolution tiles (tiled)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ftuseg.config import RunConfig
from ftuseg.inference.resample import resize_image, resize_mask, scale_factor
from ftuseg.io.dataset import read_row_image, read_row_mask


def _to_tensors(img: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
    y = torch.from_numpy(np.ascontiguousarray(mask)).unsqueeze(0).float()
    return x, y


class WholeImageDataset(Dataset):
    """The seed's input: every image resized to ``size x size`` once, kept in memory (small)."""

    def __init__(self, table: pd.DataFrame, size: int, progress: bool = False):
        from tqdm.auto import tqdm

        self.table = table.reset_index(drop=True)
        self.images = np.empty((len(table), size, size, 3), dtype=np.uint8)
        self.masks = np.empty((len(table), size, size), dtype=np.uint8)
        for i, (_, row) in enumerate(
            tqdm(self.table.iterrows(), total=len(self.table), desc="load", unit="img", disable=not progress)
        ):
            img = read_row_image(row)
            mask = read_row_mask(row, img.shape[:2])
            self.images[i] = resize_image(img, (size, size))
            self.masks[i] = resize_mask(mask, (size, size))

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _to_tensors(self.images[i], self.masks[i])


class TileDataset(Dataset):
    """Random tiles at the configured µm/px, cut from full-resolution images on demand.

    Each item picks an image (uniformly), a centre (an FTU pixel with probability ``fg_fraction``,
    otherwise a tissue pixel), a scale (target µm/px with ``scale_jitter``), then reads only the source
    window that maps onto the tile and resamples it. Decoded images are kept in a small per-worker LRU
    cache, never the whole data set.
    """

    def __init__(self, table: pd.DataFrame, cfg: RunConfig, length: int, seed: int = 0, cache_size: int = 8):
        self.table = table.reset_index(drop=True)
        self.cfg = cfg
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        self.cache_size = cache_size
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        row = self.table.iloc[i]
        img = read_row_image(row)
        mask = read_row_mask(row, img.shape[:2])
        fg = np.flatnonzero(mask[::4, ::4].ravel())
        # tissue = not near-white background, on a coarse grid (cheap and good enough for centring)
        sub = img[::4, ::4]
        tissue = np.flatnonzero((sub.min(axis=-1) < 215).ravel())
        entry = (img, mask, fg, tissue)
        self._cache[i] = entry
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        i = int(rng.integers(len(self.table)))
        img, mask, fg, tissue = self._load(i)
        row = self.table.iloc[i]
        h, w = mask.shape
        sub_w = (w + 3) // 4
        if fg.size and rng.random() < self.cfg.fg_fraction:
            flat = fg[rng.integers(fg.size)]
        elif tissue.size:
            flat = tissue[rng.integers(tissue.size)]
        else:
            flat = None
        if flat is None:
            cy, cx = rng.integers(h), rng.integers(w)
        else:
            cy = min(h - 1, (flat // sub_w) * 4 + int(rng.integers(4)))
            cx = min(w - 1, (flat % sub_w) * 4 + int(rng.integers(4)))
        tile = self.cfg.tile_size
        jitter = 1.0 + (rng.random() * 2 - 1) * self.cfg.scale_jitter
        factor = scale_factor(float(row["pixel_size"]), self.cfg.mpp_for(row.get("organ"))) * jitter
        src = max(2, int(round(tile / factor)))  # source pixels that map onto the tile
        y0, x0 = int(cy) - src // 2, int(cx) - src // 2
        crop_img = _crop_reflect(img, y0, x0, src)
        crop_mask = _crop_reflect(mask, y0, x0, src)
        crop_img = resize_image(crop_img, (tile, tile))
        crop_mask = resize_mask(crop_mask, (tile, tile))
        return _to_tensors(crop_img, crop_mask)


def _crop_reflect(arr: np.ndarray, y0: int, x0: int, size: int) -> np.ndarray:
    """A ``size x size`` window at (y0, x0), reflect-padded where it leaves the array."""
    h, w = arr.shape[:2]
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + size), min(w, x0 + size)
    crop = arr[ys:ye, xs:xe]
    pads = [(ys - y0, y0 + size - ye), (xs - x0, x0 + size - xe)] + [(0, 0)] * (arr.ndim - 2)
    if any(p for pair in pads for p in pair):
        mode = "reflect" if min(crop.shape[:2]) > 1 and max(max(p) for p in pads[:2]) < min(crop.shape[:2]) \
            else "symmetric"
        crop = np.pad(crop, pads, mode=mode)
    return crop
