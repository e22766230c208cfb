"""Tissue detection on thumbnails and box queries against the low-resolution mask."""

from __future__ import annotations

import numpy as np
import tifffile

from ftuseg.io.readers import open_slide
from ftuseg.io.tissue import TissueMap, detect_tissue, tissue_map
from ftuseg.synth import synth_image


def glass(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(242, 3, (h, w, 3)), 0, 255).astype(np.uint8)


def test_stained_tissue_is_found_and_glass_is_not():
    img = glass(200, 300)
    tissue, _ = synth_image(np.random.default_rng(1), "kidney", 100, 120, 0.5)
    img[50:150, 100:220] = tissue
    m = detect_tissue(img, dilate_px=0)
    inside = m[50:150, 100:220].mean()
    outside = np.concatenate([m[:40].ravel(), m[160:].ravel(), m[:, :90].ravel()]).mean()
    assert inside > 0.8  # synthetic tissue has pale "holes" too; most of it is still found
    assert outside < 0.01


def test_pale_tissue_everywhere_is_not_split_by_otsu():
    """A slide that is all tissue (pale and dark stain) must stay all tissue."""
    rng = np.random.default_rng(0)
    pale = np.array([235, 200, 220], np.float32)  # saturation ~ 38
    dark = np.array([150, 70, 140], np.float32)
    w = rng.random((120, 160))[..., None] > 0.5
    img = np.where(w, pale, dark) + rng.normal(0, 3, (120, 160, 3))
    m = detect_tissue(np.clip(img, 0, 255).astype(np.uint8), dilate_px=0)
    assert m.mean() > 0.95


def test_blank_slide_has_no_tissue():
    assert not detect_tissue(glass(100, 100)).any()
    assert not detect_tissue(np.full((50, 50, 3), 255, np.uint8)).any()


def test_black_scan_border_is_not_tissue():
    img = glass(100, 100)
    img[:, :10] = 0
    assert not detect_tissue(img, dilate_px=0)[:, :8].any()


def test_box_queries_use_level0_coordinates():
    mask = np.zeros((10, 20), bool)
    mask[2:4, 5:7] = True
    tm = TissueMap(mask, scale_x=100.0, scale_y=100.0)  # a 2000 x 1000 slide
    boxes = np.array([[500, 200, 200, 200],  # exactly the tissue cells
                      [0, 0, 400, 1000],  # left of it
                      [690, 390, 20, 20],  # inside the last tissue cell
                      [700, 400, 500, 500],  # starts right after it
                      [-50, -50, 2100, 1100]])  # whole slide, over the edges
    np.testing.assert_array_equal(tm.has_tissue(boxes), [True, False, True, False, True])
    assert tm.tissue_pixels(boxes)[0] == 4 and tm.tissue_pixels(boxes)[4] == 4
    assert tm.fraction == mask.mean()


def test_tissue_map_of_a_slide(tmp_path):
    img = glass(600, 800)
    tissue, _ = synth_image(np.random.default_rng(2), "spleen", 300, 300, 0.5)
    img[100:400, 400:700] = tissue
    p = tmp_path / "s.tif"
    tifffile.imwrite(p, img, photometric="rgb", tile=(128, 128))
    with open_slide(p) as r:
        tm = tissue_map(r, max_size=200, pixel_size=0.5, dilate_um=10)
    assert tm.mask.shape == (150, 200)
    assert tm.has_tissue(np.array([[450, 150, 100, 100]]))[0]
    assert not tm.has_tissue(np.array([[0, 0, 300, 600]]))[0]
    assert 0.1 < tm.fraction < 0.4
