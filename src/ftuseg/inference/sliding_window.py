"""Blended sliding-window prediction over an image held in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ftuseg.inference.tiling import TileGrid, blend_window, pad_to_cover

# (B, T, T, 3) uint8 tiles -> (B, T, T) float32 probabilities
TileFn = Callable[[np.ndarray], np.ndarray]

# Flip TTA of a tile function (torch and onnxruntime engines alike): each entry flips the spatial dims
# listed, counted from the end of (B, C, H, W); flips are their own inverse.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
# Dihedral (D4) TTA: the four flips, each with and without swapping H and W (on square tiles these are the
# eight rotations and reflections); an entry is (transpose, flip dims), undone as flip, then transpose.
TTA_D4: tuple[tuple[bool, tuple[int, ...]], ...] = tuple((t, dims) for t in (False, True) for dims in TTA_FLIPS)


def parse_tta(value: bool | str | None) -> bool | str:
    """A TTA setting as the engines take it: False (none), True (the 4 flips) or "d4" (8 passes).

    Accepts those, their names (none, flip, d4) and YAML/CLI spellings of booleans."""
    if isinstance(value, bool):
        return value
    name = str(value).strip().lower()
    if name in ("none", "false", "off", "no", "0"):
        return False
    if name in ("flip", "true", "on", "yes", "1"):
        return True
    if name == "d4":
        return "d4"
    raise ValueError(f"tta must be none, flip or d4, got {value!r}")


def parse_scales(value: float | str | list | tuple | None) -> list[float]:
    """Multi-scale TTA factors as a list of floats: ``None`` -> [1.0]; ``"0.8,1,1.25"``, a number or a list.

    Each factor multiplies the µm/px the network sees (0.8: the image at 1.25x the pixels). Factors must lie
    in [0.25, 4] (the network was trained within a few tens of per cent of its resolution) and not repeat."""
    if value is None:
        return [1.0]
    parts = [p for p in str(value).split(",") if p.strip()] if isinstance(value, str) else (
        list(value) if isinstance(value, list | tuple) else [value])
    try:
        scales = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"tta_scales must be numbers like 0.8,1,1.25, got {value!r}") from None
    if not scales or any(not 0.25 <= s <= 4 for s in scales) or len(set(scales)) != len(scales):
        raise ValueError(f"tta_scales must be distinct factors in [0.25, 4] (e.g. 0.8,1,1.25), got {value!r}")
    return scales


def tta_transforms(tta: bool | str) -> tuple[tuple[bool, tuple[int, ...]], ...]:
    """(transpose, flip dims) per TTA pass: none one pass, flip (True) the 4 flips, d4 all 8."""
    tta = parse_tta(tta)
    if tta == "d4":
        return TTA_D4
    return tuple((False, dims) for dims in TTA_FLIPS) if tta else ((False, ()),)


def iter_tile_batches(padded: np.ndarray, positions: list[tuple[int, int]], tile: int, batch_size: int,
                      prefetch: bool) -> Iterator[tuple[list[tuple[int, int]], np.ndarray]]:
    """(positions, stacked tiles) per batch; with ``prefetch`` the next batch is cut in a thread while the
    caller runs the model on the current one (numpy copies release the GIL)."""

    def cut(i: int) -> tuple[list[tuple[int, int]], np.ndarray]:
        chunk = positions[i : i + batch_size]
        return chunk, np.stack([padded[y : y + tile, x : x + tile] for y, x in chunk])

    starts = range(0, len(positions), batch_size)
    if not prefetch or len(starts) < 2:
        for i in starts:
            yield cut(i)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftuseg-tiles") as pool:
        pending = pool.submit(cut, starts[0])
        for nxt in [*starts[1:], None]:
            ready = pending.result()
            if nxt is not None:
                pending = pool.submit(cut, nxt)
            yield ready


def sliding_window_predict(
    tile_fn: TileFn,
    image: np.ndarray,
    tile: int,
    overlap: float = 0.5,
    batch_size: int = 8,
    blend: str = "gaussian",
    margin: int | None = None,
    prefetch: bool = True,
) -> np.ndarray:
    """Probability map (H, W) of ``image`` (H, W, 3) from overlapping tiles blended by a window.

    The image is reflect-padded by ``margin`` (default: a quarter tile) so border pixels get context,
    tiles are batched through ``tile_fn``, and overlaps are averaged with weights from
    :func:`blend_window`, which removes seams. With ``prefetch`` the next batch of tiles is cut while
    ``tile_fn`` runs; the result is identical either way.
    """
    prob, _, _ = blended_windows(tile_fn, image, tile, overlap, batch_size, blend, margin, prefetch)
    return prob


KeepFn = Callable[[list[tuple[int, int]], int, int, int], np.ndarray]


def blended_windows(
    tile_fn: TileFn,
    image: np.ndarray,
    tile: int,
    overlap: float = 0.5,
    batch_size: int = 8,
    blend: str = "gaussian",
    margin: int | None = None,
    prefetch: bool = True,
    keep_fn: KeepFn | None = None,
) -> tuple[np.ndarray, int, int]:
    """:func:`sliding_window_predict` that can skip tiles: returns (prob, tiles in the grid, tiles skipped).

    ``keep_fn(positions, top, left, tile)`` returns a boolean per tile position (padded coordinates;
    the image starts at (top, left)); pixels no kept tile covers get probability 0 (background).
    """
    h, w = image.shape[:2]
    margin = tile // 4 if margin is None else margin
    padded, (top, left) = pad_to_cover(image, tile, margin)
    grid = TileGrid.from_overlap(padded.shape[0], padded.shape[1], tile, overlap)
    positions = grid.positions()
    if keep_fn is not None:
        keep = keep_fn(positions, top, left, tile)
        positions_kept = [p for p, k in zip(positions, keep, strict=True) if k]
    else:
        positions_kept = positions
    weight = blend_window(tile, blend)
    acc = np.zeros(padded.shape[:2], dtype=np.float32)
    wsum = np.zeros(padded.shape[:2], dtype=np.float32)
    for chunk, batch in iter_tile_batches(padded, positions_kept, tile, max(1, int(batch_size)), prefetch):
        probs = tile_fn(batch)
        for (y, x), p in zip(chunk, probs, strict=True):
            acc[y : y + tile, x : x + tile] += p * weight
            wsum[y : y + tile, x : x + tile] += weight
    out = acc[top : top + h, left : left + w]
    ws = wsum[top : top + h, left : left + w]
    prob = np.divide(out, ws, out=np.zeros_like(out), where=ws > 0)
    return prob, len(positions), len(positions) - len(positions_kept)
