"""Run-length encoding exactly as the HuBMAP + HPA competition defines it.

Pixels are numbered from 1, top to bottom then left to right (column-major, ``mask.T.flatten()``);
the encoding is space-separated ``start length`` pairs.
"""

from __future__ import annotations

import numpy as np

from ftuseg.errors import RLEError


def encode_rle(mask: np.ndarray) -> str:
    """Encode a 2-D binary mask (any non-zero value is foreground) as a competition RLE string."""
    if mask.ndim != 2:
        raise RLEError(f"mask must be 2-D, got shape {mask.shape}")
    # Column-major flatten; the transpose makes the C-order ravel walk down columns.
    flat = np.ascontiguousarray(mask.T).ravel() != 0
    if not flat.any():
        return ""
    # Pad with zeros on both sides so every run has a rising and a falling edge.
    padded = np.zeros(flat.size + 2, dtype=np.int8)
    padded[1:-1] = flat
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts = edges[0::2]
    lengths = edges[1::2] - starts
    pairs = np.empty(starts.size * 2, dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = lengths
    return " ".join(map(str, pairs.tolist()))


def _parse_numbers(rle: str) -> np.ndarray:
    tokens = rle.split()
    if not tokens:
        return np.empty(0, dtype=np.int64)
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        for t in tokens:  # name the first offending token; only reached on bad input
            try:
                v = int(t, 10)
            except ValueError:
                raise RLEError(f"RLE contains a non-integer token {t!r}") from None
            if abs(v) >= 2**62:
                raise RLEError(f"RLE contains an out-of-range number {t!r}") from None
        raise RLEError("RLE contains an unreadable number") from None
    return values


def rle_runs(rle: str | float | None, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validate an RLE string against a (height, width) mask; return 0-based run (starts, ends).

    Checks everything :func:`decode_rle` checks without allocating the mask, so whole tables can be
    validated cheaply (``ftuseg check``). Empty strings, ``None`` and NaN give no runs.
    """
    height, width = int(shape[0]), int(shape[1])
    if height <= 0 or width <= 0:
        raise RLEError(f"mask shape must be positive, got {shape}")
    n = height * width
    empty = np.empty(0, dtype=np.int64)
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        return empty, empty
    if not isinstance(rle, str):
        raise RLEError(f"RLE must be a string, got {type(rle).__name__}")
    values = _parse_numbers(rle)
    if values.size % 2:
        raise RLEError(f"RLE has an odd number of values ({values.size}); expected start/length pairs")
    if not values.size:
        return empty, empty
    starts = values[0::2] - 1
    lengths = values[1::2]
    if (starts < 0).any():
        i = int(np.flatnonzero(starts < 0)[0])
        raise RLEError(f"RLE run {i + 1} has start {starts[i] + 1}; starts are 1-based and must be >= 1")
    if (lengths <= 0).any():
        i = int(np.flatnonzero(lengths <= 0)[0])
        raise RLEError(f"RLE run {i + 1} has length {lengths[i]}; lengths must be >= 1")
    ends = starts + lengths
    if (ends > n).any():
        i = int(np.flatnonzero(ends > n)[0])
        raise RLEError(
            f"RLE run {i + 1} (start {starts[i] + 1}, length {lengths[i]}) runs past the end of a "
            f"{height}x{width} mask ({n} pixels)"
        )
    if starts.size > 1:
        gaps = starts[1:] - ends[:-1]
        if (gaps < 0).any():
            i = int(np.flatnonzero(gaps < 0)[0])
            order = "unsorted" if starts[i + 1] < starts[i] else "overlapping"
            raise RLEError(
                f"RLE runs {i + 1} and {i + 2} are {order} (start {starts[i] + 1} then {starts[i + 1] + 1})"
            )
    return starts, ends


def decode_rle(rle: str | float | None, shape: tuple[int, int]) -> np.ndarray:
    """Decode a competition RLE string into a ``uint8`` mask of ``shape`` (height, width).

    Empty strings, ``None`` and NaN (an empty CSV cell) decode to an empty mask. Malformed input
    (odd count, non-integers, non-positive starts or lengths, runs past the end, unsorted or
    overlapping runs) raises :class:`RLEError`.
    """
    starts, ends = rle_runs(rle, shape)
    height, width = int(shape[0]), int(shape[1])
    n = height * width
    if starts.size:
        # Vectorised fill: +1 at each start, -1 at each end, cumulative sum marks the runs.
        delta = np.zeros(n + 1, dtype=np.int8)
        delta[starts] = 1
        delta[ends] -= 1
        flat = np.cumsum(delta[:-1], dtype=np.int8).astype(np.uint8)
    else:
        flat = np.zeros(n, dtype=np.uint8)
    return np.ascontiguousarray(flat.reshape(width, height).T)
