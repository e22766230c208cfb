"""Tiled prediction works at a physical resolution: the pixel size decides the scale, not the pixel grid."""

import cv2
import numpy as np

from conftest import tiny_config
from ftuseg.inference.predictor import Member, member_proba


def opening_model(tiles: np.ndarray) -> np.ndarray:
    """A scale-sensitive 'network': dark objects survive only if wider than 15 network pixels."""
    dark = (tiles[..., 0] < 128).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    return np.stack([cv2.morphologyEx(d, cv2.MORPH_OPEN, k) for d in dark]).astype(np.float32)


def scene(pixel_size: float) -> np.ndarray:
    """200 x 200 µm of tissue: a 24 µm wide object and an 11 µm wide one."""
    n = int(round(200 / pixel_size))
    img = np.full((n, n, 3), 230, np.uint8)
    cv2.circle(img, (int(60 / pixel_size), int(60 / pixel_size)), int(round(12 / pixel_size)), (40, 40, 40), -1)
    cv2.circle(img, (int(140 / pixel_size), int(140 / pixel_size)), int(round(5.5 / pixel_size)), (40, 40, 40), -1)
    return img


def test_same_tissue_at_two_pixel_sizes_gives_the_same_physical_mask():
    # organ_mpp={}: no per-organ override (the preset sees kidney coarser), so 1 µm/px applies
    member = Member(opening_model, tiny_config(preset="tiled", target_mpp=1.0, tile_size=64, organ_mpp={}))
    fine = member_proba(member, scene(0.5), 0.5, "kidney")  # 400 x 400 px
    coarse = member_proba(member, scene(1.0), 1.0, "kidney")  # 200 x 200 px
    assert fine.shape == (400, 400) and coarse.shape == (200, 200)
    # at 0.5 µm/px the small object is 22 px wide: it would survive the 15 px opening without
    # rescaling; viewed at 1 µm/px it is 11 px wide and must vanish, as at 1 µm/px natively
    assert fine[280, 280] < 0.5 and coarse[140, 140] < 0.5
    assert fine[120, 120] > 0.5 and coarse[60, 60] > 0.5
    back = cv2.resize(coarse, (400, 400), interpolation=cv2.INTER_LINEAR)
    agree = ((back > 0.5) == (fine > 0.5)).mean()
    assert agree > 0.99


def test_organ_override_changes_the_scale():
    cfg = tiny_config(preset="tiled", target_mpp=1.0, tile_size=64, organ_mpp={"lung": 0.5})
    member = Member(opening_model, cfg)
    img = scene(1.0)
    kidney = member_proba(member, img, 1.0, "kidney")
    lung = member_proba(member, img, 1.0, "lung")  # seen at 0.5 µm/px: the small object is 22 px wide
    assert kidney[140, 140] < 0.5 and lung[140, 140] > 0.5


def test_per_organ_thresholds_apply_and_unknown_organs_are_refused():
    import pytest

    from ftuseg.errors import FtusegError
    from ftuseg.inference.postprocess import Thresholds
    from ftuseg.inference.predictor import Predictor

    member = Member(opening_model, tiny_config(preset="tiled"))
    pred = Predictor([member], Thresholds(0.5, 0.0, {"kidney": {"threshold": 0.2, "min_area_um2": 100.0}}))
    prob = np.zeros((40, 40), np.float32)
    prob[5:25, 5:25] = 0.3  # 400 px = 100 µm² at 0.5 µm/px
    prob[30:33, 30:33] = 0.9  # 9 px = 2.25 µm²: below the minimum area
    mask = pred.binarize(prob, "kidney", 0.5)
    assert mask[10, 10] == 1 and mask[31, 31] == 0
    with pytest.raises(FtusegError, match="no tuned threshold"):
        pred.binarize(prob, "spleen", 0.5)
    pred.thresholds.organs = {}
    assert pred.binarize(prob, "spleen", 0.5)[31, 31] == 1 and pred.binarize(prob, "spleen", 0.5)[10, 10] == 0


def test_multiscale_tta_is_the_mean_of_its_scales_in_the_image_grid():
    from dataclasses import replace

    from ftuseg.inference.predictor import Predictor
    from ftuseg.inference.region import RegionPredictor
    from ftuseg.io.readers import ArraySlideReader

    base = tiny_config(preset="tiled", target_mpp=1.0, tile_size=64, organ_mpp={})
    img = scene(1.0)
    single = {s: member_proba(Member(opening_model, replace(base, tta_scales=[s])), img, 1.0, "kidney")
              for s in (0.5, 1.0)}
    multi_member = Member(opening_model, replace(base, tta_scales=[0.5, 1.0]))
    multi = member_proba(multi_member, img, 1.0, "kidney")
    assert multi.shape == img.shape[:2]
    np.testing.assert_allclose(multi, (single[0.5] + single[1.0]) / 2, atol=1e-6)
    # the 11 µm object survives only the pass at 0.5 µm/px (22 px wide there): half the passes see it
    assert single[1.0][140, 140] < 0.5 < single[0.5][140, 140] and 0.3 < multi[140, 140] < 0.7
    assert multi[60, 60] > 0.9 and multi[20, 180] < 0.1
    # the region core (every entry point) gives the same, and reads one tile of context at the coarsest scale
    predictor = Predictor([multi_member])
    np.testing.assert_allclose(predictor.predict_proba(img, 1.0, "kidney"), multi, atol=1e-6)
    coarse = Predictor([Member(opening_model, replace(base, tta_scales=[1.0, 2.0]))])
    assert RegionPredictor(coarse, ArraySlideReader(img, 1.0), 1.0, "kidney").halo == 128
    assert RegionPredictor(predictor, ArraySlideReader(img, 1.0), 1.0, "kidney").halo == 64


def test_small_image_zoom_sees_an_image_smaller_than_a_tile_finer():
    # 40 x 40 µm around the 11 µm object, at 0.5 µm/px: 40 px at 1 µm/px, less than the 64 px tile
    crop = scene(0.5)[240:320, 240:320]
    plain = tiny_config(preset="tiled", target_mpp=1.0, tile_size=64, organ_mpp={})
    zoomed = plain.replace(small_image_zoom=2.0)
    assert plain.image_mpp("kidney", 80, 80, 0.5) == 1.0 and zoomed.image_mpp("kidney", 80, 80, 0.5) == 0.625
    # at 1 µm/px the object is 11 px wide and the opening removes it; at 0.625 µm/px it is 17.6 px and stays
    assert member_proba(Member(opening_model, plain), crop, 0.5, "kidney")[40, 40] < 0.5
    assert member_proba(Member(opening_model, zoomed), crop, 0.5, "kidney")[40, 40] > 0.5
    # the whole 200 µm scene fills several tiles at 1 µm/px: the zoom leaves it alone
    big = scene(0.5)
    np.testing.assert_array_equal(member_proba(Member(opening_model, zoomed), big, 0.5, "kidney"),
                                  member_proba(Member(opening_model, plain), big, 0.5, "kidney"))


def test_small_image_zoom_takes_the_same_route_in_memory_and_from_a_reader():
    from ftuseg.inference.postprocess import Thresholds
    from ftuseg.inference.predictor import Predictor

    crop = scene(0.5)[240:320, 240:320]
    member = Member(opening_model, tiny_config(preset="tiled", target_mpp=1.0, tile_size=64, organ_mpp={},
                                               small_image_zoom=2.0))
    through_reader = Predictor([member], Thresholds(0.5, 0.0, {"kidney": {}})).predict_proba(crop, 0.5, "kidney")
    np.testing.assert_array_equal(through_reader, member_proba(member, crop, 0.5, "kidney"))
    assert through_reader[40, 40] > 0.5
