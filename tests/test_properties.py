"""Property-based tests (hypothesis): invariants that must hold for every input, not just the examples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ftuseg.errors import RLEError
from ftuseg.inference.resample import resize_image, resize_mask, resize_prob, scale_factor, scaled_shape
from ftuseg.inference.sliding_window import sliding_window_predict
from ftuseg.inference.tiling import TileGrid, blend_window, pad_to_cover
from ftuseg.metrics import dice_score
from ftuseg.rle import decode_rle, encode_rle, rle_runs

FAST = settings(deadline=None, max_examples=60)

shapes = st.tuples(st.integers(1, 40), st.integers(1, 40))
masks = shapes.flatmap(lambda s: arrays(np.uint8, s, elements=st.integers(0, 1)))
# sparse and dense masks both matter: long runs cross column boundaries, single pixels do not
biased_masks = shapes.flatmap(
    lambda s: st.floats(0.0, 1.0).flatmap(
        lambda p: st.integers(0, 2**32 - 1).map(
            lambda seed: (np.random.default_rng(seed).random(s) < p).astype(np.uint8)
        )
    )
)


# ------------------------------------------------------------------------------------------------- RLE
@FAST
@given(st.one_of(masks, biased_masks))
def test_rle_round_trip(mask):
    rle = encode_rle(mask)
    np.testing.assert_array_equal(decode_rle(rle, mask.shape), mask)
    starts, ends = rle_runs(rle, mask.shape)  # the encoder only emits what the validator accepts
    assert (ends - starts).sum() == mask.sum()


@FAST
@given(st.one_of(masks, biased_masks))
def test_rle_is_column_major_and_one_based(mask):
    """The competition numbers pixels top to bottom, then left to right, from 1."""
    rle = encode_rle(mask)
    values = [int(v) for v in rle.split()]
    flat = mask.T.ravel()
    for start, length in zip(values[0::2], values[1::2], strict=True):
        assert flat[start - 1 : start - 1 + length].all()
        assert start == 1 or not flat[start - 2]  # runs are maximal


@FAST
@given(masks, st.integers(0, 3))
def test_rle_rejects_a_mask_of_the_wrong_size(mask, extra):
    """A mask decodes into any shape with at least as many pixels; fewer pixels must fail, never wrap."""
    rle = encode_rle(mask)
    h, w = mask.shape
    if rle:
        values = np.array(rle.split(), dtype=np.int64)
        last_pixel = int((values[0::2] + values[1::2] - 1).max())  # 1-based index of the last foreground pixel
        if last_pixel > 1:
            with pytest.raises(RLEError, match="past the end"):
                decode_rle(rle, (1, last_pixel - 1))
    assert decode_rle(rle, (h * w + extra, 1)).sum() == mask.sum()


# ---------------------------------------------------------------------------------------------- tiling
@FAST
@given(st.integers(1, 48), st.integers(0, 120), st.integers(0, 120), st.floats(0.0, 0.95))
def test_tile_grid_covers_every_pixel(tile, dh, dw, overlap):
    h, w = tile + dh, tile + dw
    grid = TileGrid.from_overlap(h, w, tile, overlap)
    cover = np.zeros((h, w), np.int32)
    for y, x in grid.positions():
        assert 0 <= y <= h - tile and 0 <= x <= w - tile
        cover[y : y + tile, x : x + tile] += 1
    assert cover.min() >= 1
    assert len(grid) == len(grid.positions())


@FAST
@given(st.integers(1, 96), st.sampled_from(["gaussian", "cosine"]))
def test_blend_window_positive_everywhere(tile, kind):
    w = blend_window(tile, kind)
    assert w.shape == (tile, tile) and w.dtype == np.float32
    assert np.isfinite(w).all() and (w > 0).all() and w.max() == pytest.approx(1.0)
    np.testing.assert_allclose(w, w.T)  # symmetric: no direction is preferred


@FAST
@given(st.integers(1, 70), st.integers(1, 70), st.sampled_from([32, 64]), st.floats(0.0, 0.75),
       st.sampled_from(["gaussian", "cosine"]), st.integers(0, 2**32 - 1))
def test_sliding_window_blend_reproduces_a_pixelwise_model(h, w, tile, overlap, blend, seed):
    """A model that returns its input pixel for pixel must come back unchanged after tiling and blending:
    every pixel is covered, and the blend weights are positive and normalised."""
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)

    def identity(tiles: np.ndarray) -> np.ndarray:
        assert tiles.shape[1:] == (tile, tile, 3)
        return tiles[..., 0].astype(np.float32) / 255.0

    out = sliding_window_predict(identity, image, tile, overlap=overlap, batch_size=3, blend=blend)
    assert out.shape == (h, w)
    np.testing.assert_allclose(out, image[..., 0] / 255.0, atol=1e-5)


@FAST
@given(st.integers(1, 50), st.integers(1, 50), st.integers(1, 64), st.integers(0, 20))
def test_pad_to_cover_keeps_the_image_and_reaches_a_tile(h, w, tile, margin):
    img = np.arange(h * w, dtype=np.int32).reshape(h, w)
    padded, (top, left) = pad_to_cover(img, tile, margin)
    assert padded.shape[0] >= tile and padded.shape[1] >= tile
    np.testing.assert_array_equal(padded[top : top + h, left : left + w], img)


# ------------------------------------------------------------------------------------------------ Dice
mask_pairs = shapes.flatmap(lambda s: st.tuples(arrays(np.uint8, s, elements=st.integers(0, 1)),
                                                arrays(np.uint8, s, elements=st.integers(0, 1))))


@FAST
@given(mask_pairs)
def test_dice_symmetric_and_bounded(pair):
    a, b = pair
    d = dice_score(a, b)
    assert d == dice_score(b, a)
    assert 0.0 <= d <= 1.0


@FAST
@given(masks)
def test_dice_of_identical_masks_is_one(mask):
    if mask.any():
        assert dice_score(mask, mask.copy()) == 1.0
        assert dice_score(mask, 1 - mask) == 0.0  # disjoint


# ---------------------------------------------------------------------------------------------- resample
@FAST
@given(st.integers(1, 100), st.integers(1, 100), st.floats(0.1, 2.0), st.floats(0.1, 2.0))
def test_resample_to_a_pixel_size_and_back_keeps_the_shape(h, w, pixel_size, target_mpp):
    shape = scaled_shape(h, w, scale_factor(pixel_size, target_mpp))
    assert shape[0] >= 1 and shape[1] >= 1
    image = np.zeros((h, w, 3), np.uint8)
    small = resize_image(image, shape)
    assert small.shape == (*shape, 3)
    prob = np.zeros(shape, np.float32)
    assert resize_prob(prob, (h, w)).shape == (h, w)
    mask = np.ones(shape, np.uint8)
    back = resize_mask(mask, (h, w))
    assert back.shape == (h, w) and back.all()  # nearest neighbour keeps labels


def test_atomic_outputs_get_normal_permissions(tmp_path):
    import os

    from ftuseg.io.atomic import atomic_write

    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "out.csv") as fh:
            fh.write("id,rle\n")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o644
