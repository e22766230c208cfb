"""Single-machine speed paths give the same probabilities as the plain path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftuseg.inference.engine import TorchTileFn, autocast_dtype
from ftuseg.inference.sliding_window import iter_tile_batches, sliding_window_predict
from ftuseg.inference.tiling import TileGrid, blend_window, pad_to_cover


def _plain_reference(tile_fn, image, tile, overlap, blend):
    """The seed's loop: one tile at a time, no batching, no prefetch."""
    h, w = image.shape[:2]
    padded, (top, left) = pad_to_cover(image, tile, tile // 4)
    grid = TileGrid.from_overlap(padded.shape[0], padded.shape[1], tile, overlap)
    wgt = blend_window(tile, blend)
    acc = np.zeros(padded.shape[:2], np.float64)
    wsum = np.zeros(padded.shape[:2], np.float64)
    for y, x in grid.positions():
        p = tile_fn(padded[None, y : y + tile, x : x + tile])[0]
        acc[y : y + tile, x : x + tile] += p * wgt
        wsum[y : y + tile, x : x + tile] += wgt
    return (acc / wsum)[top : top + h, left : left + w]


def _position_fn(tiles: np.ndarray) -> np.ndarray:
    """A tile function whose output depends on the tile's content only (so order/batching bugs show)."""
    t = tiles.astype(np.float32)
    return (t[..., 0] * 0.5 + t[..., 1] * 0.3 + t[..., 2] * 0.2) / 255.0


@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize("prefetch", [False, True])
def test_batching_and_prefetch_match_plain_loop(batch_size, prefetch):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (150, 211, 3), dtype=np.uint8)
    ref = _plain_reference(_position_fn, image, 64, 0.5, "gaussian")
    out = sliding_window_predict(_position_fn, image, 64, overlap=0.5, batch_size=batch_size, blend="gaussian",
                                 prefetch=prefetch)
    assert out.shape == image.shape[:2] and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_prefetch_yields_every_position_once_in_order():
    padded = np.arange(40 * 40 * 3, dtype=np.uint32).reshape(40, 40, 3).astype(np.uint8)
    positions = [(y, x) for y in range(0, 33, 8) for x in range(0, 33, 8)]
    got = list(iter_tile_batches(padded, positions, 8, 4, prefetch=True))
    assert [p for chunk, _ in got for p in chunk] == positions
    for chunk, batch in got:
        assert batch.shape == (len(chunk), 8, 8, 3)
        for (y, x), t in zip(chunk, batch, strict=True):
            np.testing.assert_array_equal(t, padded[y : y + 8, x : x + 8])


def test_prefetch_propagates_tile_fn_errors():
    def broken(tiles):
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        sliding_window_predict(broken, np.zeros((200, 200, 3), np.uint8), 64, batch_size=2, prefetch=True)


@pytest.fixture(scope="module")
def tiny_model():
    from conftest import tiny_config
    from ftuseg.models.factory import build_model

    torch.manual_seed(0)
    return build_model(tiny_config()).eval()


@pytest.mark.slow
def test_torch_tile_fn_channels_last_batching_matches_plain_forward(tiny_model):
    """TorchTileFn (channels_last, inference_mode, batched) vs a plain NCHW forward one tile at a time."""
    import copy

    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    plain = copy.deepcopy(tiny_model)
    with torch.no_grad():
        ref = np.stack([torch.sigmoid(plain(torch.from_numpy(t).permute(2, 0, 1)[None].float()))[0, 0].numpy()
                        for t in tiles])
    fn = TorchTileFn(copy.deepcopy(tiny_model), "cpu")
    assert fn.dtype is None  # fp32 on CPU by default
    out = fn(tiles)
    assert out.shape == (5, 64, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-4)
    # flip TTA = the mean of the four flipped predictions, each flipped back
    tta = TorchTileFn(copy.deepcopy(tiny_model), "cpu", tta=True)(tiles)
    manual = [fn(np.ascontiguousarray(np.flip(tiles, axes)))[(slice(None),) + tuple(
        slice(None, None, -1) if a in axes else slice(None) for a in (1, 2))] if axes else fn(tiles)
        for axes in ((), (2,), (1,), (1, 2))]
    np.testing.assert_allclose(tta, np.mean(manual, axis=0), atol=1e-4)
    assert np.abs(tta - out).max() > 1e-3  # TTA really changed something
    # D4 TTA = the mean over the four flips of the tile and of its transpose, each mapped back
    d4 = TorchTileFn(copy.deepcopy(tiny_model), "cpu", tta="d4")(tiles)
    transposed = np.ascontiguousarray(tiles.transpose(0, 2, 1, 3))
    tta_t = TorchTileFn(copy.deepcopy(tiny_model), "cpu", tta="flip")(transposed).transpose(0, 2, 1)
    np.testing.assert_allclose(d4, (tta + tta_t) / 2, atol=1e-4)
    assert np.abs(d4 - tta).max() > 1e-3
    with pytest.raises(ValueError, match="none, flip or d4"):
        TorchTileFn(copy.deepcopy(tiny_model), "cpu", tta="rot")


def test_precision_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype(cpu, "auto") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cuda, "fp32") is None
    assert autocast_dtype(cuda, "auto", amp=False) is None
    with pytest.raises(ValueError):
        autocast_dtype(cpu, "int8")


@pytest.mark.slow
def test_bf16_on_cpu_stays_close(tiny_model):
    """The opt-in bf16 CPU path runs and stays near fp32 (tolerance from measurements on trained models)."""
    import copy

    rng = np.random.default_rng(1)
    tiles = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    fp32 = TorchTileFn(copy.deepcopy(tiny_model), "cpu")(tiles)
    bf16 = TorchTileFn(copy.deepcopy(tiny_model), "cpu", precision="bf16")(tiles)
    assert bf16.dtype == np.float32
    assert np.abs(fp32 - bf16).mean() < 0.05
