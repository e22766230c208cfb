import numpy as np
import pytest

from ftuseg.inference.resample import resize_prob, scale_factor, scaled_shape
from ftuseg.inference.sliding_window import sliding_window_predict
from ftuseg.inference.tiling import TileGrid, blend_window


@pytest.mark.parametrize("h, w, tile, overlap", [(100, 37, 32, 0.5), (32, 32, 32, 0.5), (257, 300, 64, 0.25)])
def test_grid_covers_every_pixel(h, w, tile, overlap):
    grid = TileGrid.from_overlap(h, w, tile, overlap)
    cover = np.zeros((h, w), int)
    for y, x in grid.positions():
        assert 0 <= y <= h - tile and 0 <= x <= w - tile
        cover[y:y + tile, x:x + tile] += 1
    assert cover.min() >= 1


@pytest.mark.parametrize("kind", ["gaussian", "cosine"])
def test_blend_window_positive_and_centred(kind):
    w = blend_window(64, kind)
    assert w.min() > 0 and w.max() == pytest.approx(1.0)
    assert w[32, 32] > w[0, 0]


@pytest.mark.parametrize("blend", ["gaussian", "cosine"])
def test_constant_model_gives_seamless_constant_map(blend):
    img = np.random.default_rng(0).integers(0, 255, (203, 150, 3), dtype=np.uint8)
    out = sliding_window_predict(lambda t: np.full(t.shape[:3], 0.37, np.float32), img, 64, 0.5, 4, blend)
    assert out.shape == (203, 150)
    np.testing.assert_allclose(out, 0.37, atol=1e-5)


def local_mean_fn(tiles: np.ndarray) -> np.ndarray:
    """A translation-equivariant 'model' (3x3 box mean of the red channel) to test stitching."""
    import cv2

    return np.stack([cv2.blur(t[..., 0].astype(np.float32) / 255, (3, 3)) for t in tiles])


def test_stitching_reproduces_a_local_model_and_shifts_with_the_image():
    import cv2

    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (180, 220, 3), dtype=np.uint8)
    out = sliding_window_predict(local_mean_fn, img, 64, 0.5, 8)
    direct = cv2.blur(img[..., 0].astype(np.float32) / 255, (3, 3))
    # away from tile borders a local model's output is exact, so blending must reproduce it
    np.testing.assert_allclose(out[2:-2, 2:-2], direct[2:-2, 2:-2], atol=0.02)
    shifted = np.roll(img, (17, 23), axis=(0, 1))
    out2 = sliding_window_predict(local_mean_fn, shifted, 64, 0.5, 8)
    np.testing.assert_allclose(out2[40:-10, 40:-10], np.roll(out, (17, 23), axis=(0, 1))[40:-10, 40:-10], atol=0.02)


def test_image_smaller_than_tile_and_single_pixel():
    for shape in [(1, 1, 3), (10, 50, 3)]:
        img = np.full(shape, 100, np.uint8)
        out = sliding_window_predict(lambda t: t[..., 0].astype(np.float32) / 255, img, 64, 0.5, 2)
        assert out.shape == shape[:2]
        np.testing.assert_allclose(out, 100 / 255, atol=1e-5)


def test_scale_round_trip_shape_and_alignment():
    h, w = 301, 457
    f = scale_factor(0.5, 1.0)
    assert f == 0.5
    small = scaled_shape(h, w, f)
    assert small == (150, 228) or small == (151, 228) or small == (150, 229)
    # a vertical edge at column 200 in the original stays at column 200 after down- and up-sampling
    prob = np.zeros((h, w), np.float32)
    prob[:, 200:] = 1
    import cv2

    down = cv2.resize(prob, small[::-1], interpolation=cv2.INTER_AREA)
    back = resize_prob(down, (h, w))
    assert back.shape == (h, w)
    edge = np.argmax(back[h // 2] > 0.5)
    assert abs(edge - 200) <= 1
