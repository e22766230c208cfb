"""Training samples: whole images squashed to a square (seed) or physical-resolution tiles (tiled).

A sample is ``(image (3, H, W) float 0-255, target)``. The target is the mask (1, H, W) or, when any image
of the table has a region-of-interest annotation (partial annotation, see :mod:`ftuseg.io.annotations`),
the mask and a loss weight (2, H, W): 1 inside the ROIs, 0 outside them (and 1 everywhere on images
annotated in full). Augmentation moves both channels alike; :class:`~ftuseg.training.losses.BCEDiceLoss`
reads the weight from the second channel.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from ftuseg.config import RunConfig
from ftuseg.inference.resample import resize_image, resize_mask, resize_target, scale_factor
from ftuseg.io.dataset import read_row_image, read_row_truth


def _to_tensors(
    img: np.ndarray, mask: np.ndarray, weight: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
    y = torch.from_numpy(np.ascontiguousarray(mask)).unsqueeze(0).float()
    if weight is not None:
        y = torch.cat([y, torch.from_numpy(np.ascontiguousarray(weight)).unsqueeze(0).float()])
    return x, y


def has_regions(table: pd.DataFrame) -> bool:
    """Whether any row may carry a region-of-interest annotation (then samples carry a loss weight)."""
    if "annotation_path" not in table.columns:
        return False
    paths = table["annotation_path"].dropna().astype(str)
    return bool(paths.str.lower().str.endswith((".geojson", ".json")).any())


class WholeImageDataset(Dataset):
    """The seed's input: every image resized to ``size x size`` once, kept in memory (small)."""

    def __init__(self, table: pd.DataFrame, size: int, progress: bool = False):
        from tqdm.auto import tqdm

        self.table = table.reset_index(drop=True)
        self.images = np.empty((len(table), size, size, 3), dtype=np.uint8)
        self.masks = np.empty((len(table), size, size), dtype=np.uint8)
        # loss weights only when some image is partially annotated, so full annotations train as before
        self.weights = np.ones((len(table), size, size), dtype=np.uint8) if has_regions(self.table) else None
        for i, (_, row) in enumerate(
            tqdm(self.table.iterrows(), total=len(self.table), desc="load", unit="img", disable=not progress)
        ):
            img = read_row_image(row)
            mask, roi = read_row_truth(row, img.shape[:2])
            self.images[i] = resize_image(img, (size, size))
            self.masks[i] = resize_mask(mask, (size, size))
            if roi is not None and self.weights is not None:
                self.weights[i] = resize_mask(roi.astype(np.uint8), (size, size))

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _to_tensors(self.images[i], self.masks[i], None if self.weights is None else self.weights[i])


class TileDataset(Dataset):
    """Random tiles at the configured µm/px, cut from full-resolution images on demand.

    Each item picks an image (uniformly), a centre (an FTU pixel with probability ``fg_fraction``,
    otherwise a tissue pixel), a scale (target µm/px with ``scale_jitter``), then reads only the source
    window that maps onto the tile and resamples it. Decoded images are kept in a small per-worker LRU
    cache, never the whole data set. On a partially annotated image (ROI annotations) centres are drawn
    inside the ROIs only, and the target carries the ROI as its loss weight.
    """

    def __init__(self, table: pd.DataFrame, cfg: RunConfig, length: int, seed: int = 0, cache_mib: float = 1024):
        self.table = table.reset_index(drop=True)
        self.cfg = cfg
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        # decoding dominates loading once windows are cheap (a 1600x1200 JPEG: ~14 ms), so keep as many
        # decoded images as fit in this budget (per worker); at least one, whatever its size
        self.cache_bytes = int(cache_mib * 2**20)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = (
            OrderedDict())
        self._cached = 0
        self.weighted = has_regions(self.table)
        self.resize_truth = resize_target if cfg.target_resample == "area" else resize_mask

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        row = self.table.iloc[i]
        img = read_row_image(row)
        mask, roi = read_row_truth(row, img.shape[:2])
        fg_grid = mask[::4, ::4] != 0
        # tissue = not near-white background, on a coarse grid (cheap and good enough for centring)
        tissue_grid = img[::4, ::4].min(axis=-1) < 215
        if roi is not None:
            # partial annotation: centre only on grid points inside a ROI (whose 4x4 cell is then
            # re-checked at full resolution in _centre), else on any ROI point when it holds no tissue
            inside = roi[::4, ::4]
            fg_grid &= inside
            tissue_grid = tissue_grid & inside if (tissue_grid & inside).any() else inside
        entry = (img, mask, np.flatnonzero(fg_grid.ravel()), np.flatnonzero(tissue_grid.ravel()), roi)
        self._cache[i] = entry
        self._cached += sum(a.nbytes for a in entry if a is not None)
        while self._cached > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= sum(a.nbytes for a in old if a is not None)
        return entry

    def _centre(self, rng: np.random.Generator, mask: np.ndarray, fg: np.ndarray, tissue: np.ndarray,
                roi: np.ndarray | None) -> tuple[int, int]:
        """A tile centre (row, col): an FTU pixel with probability ``fg_fraction``, else a tissue pixel,
        always inside the ROIs of a partially annotated image."""
        h, w = mask.shape
        sub_w = (w + 3) // 4
        if fg.size and rng.random() < self.cfg.fg_fraction:
            flat = fg[rng.integers(fg.size)]
        elif tissue.size:
            flat = tissue[rng.integers(tissue.size)]
        else:
            flat = None
        if flat is None:
            return int(rng.integers(h)), int(rng.integers(w))
        cy = min(h - 1, (flat // sub_w) * 4 + int(rng.integers(4)))
        cx = min(w - 1, (flat % sub_w) * 4 + int(rng.integers(4)))
        if roi is not None and not roi[cy, cx]:
            # the jitter inside the 4x4 cell left the ROI (its edge crosses the cell): its grid point is inside
            cy, cx = int((flat // sub_w) * 4), int((flat % sub_w) * 4)
        return int(cy), int(cx)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        i = int(rng.integers(len(self.table)))
        img, mask, fg, tissue, roi = self._load(i)
        row = self.table.iloc[i]
        cy, cx = self._centre(rng, mask, fg, tissue, roi)
        tile = self.cfg.tile_size
        jitter = 1.0 + (rng.random() * 2 - 1) * self.cfg.scale_jitter
        pixel_size = float(row["pixel_size"])
        mpp = self.cfg.image_mpp(row.get("organ"), mask.shape[0], mask.shape[1], pixel_size)
        factor = scale_factor(pixel_size, mpp) * jitter
        src = max(2, int(round(tile / factor)))  # source pixels that map onto the tile
        y0, x0 = int(cy) - src // 2, int(cx) - src // 2
        crop_img = window_at_tile_scale(img, y0, x0, src, tile, resize_image)
        crop_mask = window_at_tile_scale(mask, y0, x0, src, tile, self.resize_truth)
        if not self.weighted:
            return _to_tensors(crop_img, crop_mask)
        weight = np.ones_like(crop_mask) if roi is None else window_at_tile_scale(
            roi.astype(np.uint8), y0, x0, src, tile, self.resize_truth)
        return _to_tensors(crop_img, crop_mask, weight)


def window_at_tile_scale(
    arr: np.ndarray, y0: int, x0: int, src: int, tile: int, resize: Callable[[np.ndarray, tuple[int, int]], np.ndarray]
) -> np.ndarray:
    """The ``src x src`` window at (y0, x0) resampled to ``tile x tile``, reflect-padded where it leaves ``arr``.

    Only the part inside ``arr`` is resampled, and the padding is added at tile scale: at coarse µm/px the
    window is many times the tile (1536 source px for a 256 px tile at 6 µm/px), and padding it at source
    scale first would cost more than the whole rest of the sample.
    """
    h, w = arr.shape[:2]
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + src), min(w, x0 + src)
    scale = tile / src
    # where the inside part lands in the tile (rounded; at least one tile pixel)
    ty0, tx0 = int(round((ys - y0) * scale)), int(round((xs - x0) * scale))
    ty1 = min(tile, max(ty0 + 1, int(round((ye - y0) * scale))))
    tx1 = min(tile, max(tx0 + 1, int(round((xe - x0) * scale))))
    ty0, tx0 = min(ty0, ty1 - 1), min(tx0, tx1 - 1)
    inner = resize(arr[ys:ye, xs:xe], (ty1 - ty0, tx1 - tx0))
    if (ty0, tx0, ty1, tx1) == (0, 0, tile, tile):
        return inner
    return _pad_reflect(inner, ty0, tile - ty1, tx0, tile - tx1)


def _pad_reflect(arr: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    pads = [(top, bottom), (left, right)] + [(0, 0)] * (arr.ndim - 2)
    small = min(arr.shape[:2])
    mode = "reflect" if small > 1 and max(top, bottom, left, right) < small else "symmetric"
    return np.pad(arr, pads, mode=mode)


class EpochKeyed(Dataset):
    """``dataset[(epoch, i)]``: the item of epoch ``epoch``, set in whichever process reads it.

    A loader with persistent workers then serves every epoch from one set of worker processes, whose copies of
    the dataset keep their decoded images (TileDataset's cache) instead of decoding them again each epoch.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[i]


class EpochOrder(Sampler):
    """Each epoch's sample order as ``(epoch, index)`` keys for :class:`EpochKeyed`: DistributedSampler's
    permutation for (``seed``, epoch), this rank's share of it (every rank the same size; all of it in one process)."""

    def __init__(self, n: int, seed: int, world_size: int = 1, rank: int = 0):
        self.epoch = 0
        self.shard = DistributedSampler(range(n), world_size, rank, shuffle=True, seed=seed, drop_last=True)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.shard.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.shard)

    def __iter__(self):
        return iter([(self.epoch, int(i)) for i in self.shard])
