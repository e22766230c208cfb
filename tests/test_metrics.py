import numpy as np
import pandas as pd
import pytest

from ftuseg.metrics import dice_breakdown, dice_score, mean_dice, object_errors


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


def _dice_from_terms(e: dict) -> float:
    wrong = e["fp_spurious_px"] + e["fp_boundary_px"] + e["fn_missed_px"] + e["fn_boundary_px"]
    return 2 * e["tp_px"] / (2 * e["tp_px"] + wrong)


def test_object_errors_counts_and_pixels():
    truth = np.zeros((60, 60), np.uint8)
    pred = np.zeros_like(truth)
    truth[5:15, 5:15] = 1  # found, predicted one pixel row too tall
    pred[4:15, 5:15] = 1
    truth[30:40, 30:40] = 1  # missed: the prediction covers a third of it (IoU 1/3)
    pred[30:40, 30:33] = 1
    pred[50:55, 50:55] = 1  # spurious: no true object there
    e = object_errors(pred, truth)
    assert (e["truth_objects"], e["pred_objects"], e["matched"], e["missed"], e["spurious"]) == (2, 3, 1, 1, 2)
    assert e["tp_px"] == 100 + 30
    assert e["fp_boundary_px"] == 10 and e["fp_spurious_px"] == 25
    assert e["fn_boundary_px"] == 0 and e["fn_missed_px"] == 70
    assert _dice_from_terms(e) == pytest.approx(dice_score(pred, truth))


def test_object_errors_sum_to_dice_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        truth = (rng.random((40, 50)) < 0.3).astype(np.uint8)
        pred = truth.copy()
        flip = rng.random(truth.shape) < 0.2
        pred[flip] = 1 - pred[flip]
        e = object_errors(pred, truth)
        assert _dice_from_terms(e) == pytest.approx(dice_score(pred, truth))
        assert e["matched"] + e["missed"] == e["truth_objects"]
        assert e["spurious"] == e["pred_objects"] - e["matched"]  # one-to-one above IoU 0.5


def test_object_errors_roi_and_arguments():
    truth = np.zeros((20, 20), np.uint8)
    pred = np.zeros_like(truth)
    pred[2:6, 2:6] = 1  # outside the annotated region: not an error
    truth[12:18, 12:18] = pred[12:18, 12:18] = 1
    roi = np.zeros(truth.shape, bool)
    roi[10:, 10:] = True
    e = object_errors(pred, truth, roi)
    assert (e["pred_objects"], e["spurious"], e["fp_spurious_px"]) == (1, 0, 0)
    assert object_errors(pred, truth)["spurious"] == 1
    with pytest.raises(ValueError, match="iou_match"):
        object_errors(pred, truth, iou_match=0.3)
    with pytest.raises(ValueError, match="shapes differ"):
        object_errors(pred, truth[:10])
