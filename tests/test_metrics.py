import numpy as np
import pandas as pd
import pytest

from ftuseg.metrics import dice_breakdown, dice_score, mean_dice


def test_dice_values():
    a = np.zeros((4, 4), np.uint8)
    b = np.zeros((4, 4), np.uint8)
    a[:2] = 1  # 8 px
    b[1:3] = 1  # 8 px, overlap 4
    assert dice_score(a, b) == pytest.approx(2 * 4 / 16)
    assert dice_score(a, a) == 1.0
    assert dice_score(a, np.zeros_like(a)) == 0.0
    assert dice_score(np.zeros_like(a), np.zeros_like(a)) == 1.0  # both empty: perfect by convention


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        dice_score(np.zeros((2, 2)), np.zeros((2, 3)))


def test_mean_and_breakdown():
    per = pd.DataFrame({"id": ["a", "b", "c"], "organ": ["kidney", "kidney", "spleen"],
                        "data_source": ["HPA", "Hubmap", "HPA"], "dice": [1.0, 0.5, 0.0]})
    s = dice_breakdown(per)
    assert s["mean_dice"] == pytest.approx(0.5)
    assert s["by_organ"]["kidney"]["mean_dice"] == pytest.approx(0.75)
    assert s["by_organ"]["spleen"]["n_images"] == 1
    assert s["by_data_source"]["HPA"]["mean_dice"] == pytest.approx(0.5)
    assert mean_dice([]) != mean_dice([])  # NaN for no images
