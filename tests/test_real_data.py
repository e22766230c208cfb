"""On the real annotated images of ../shared/data/ftu-bench (skipped when it is absent)."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from ftuseg.baseline import random_baseline
from ftuseg.cli import main
from ftuseg.evaluate import score_submission
from ftuseg.io.dataset import load_table
from ftuseg.rle import decode_rle, encode_rle


def test_rle_round_trip_on_every_row(ftu_bench):
    df = pd.read_csv(ftu_bench / "train.csv", dtype={"id": str})
    assert len(df) == 247
    for _, row in df.iterrows():
        mask = decode_rle(row["rle"], (row["img_height"], row["img_width"]))
        assert mask.any(), row["id"]
        assert encode_rle(mask) == row["rle"].strip(), row["id"]


def test_every_image_resolves_and_groups_come_from_meta(ftu_bench):
    t = load_table(ftu_bench, "train", need_rle=True)
    assert t["image_path"].str.endswith((".png", ".jpg")).all()
    assert set(t["organ"]) == {"kidney", "largeintestine", "prostate"}
    assert t["group"].notna().sum() >= 200


def test_ground_truth_against_itself_scores_one(ftu_bench, tmp_path, capsys):
    sub = tmp_path / "truth_as_sub.csv"
    pd.read_csv(ftu_bench / "train.csv")[["id", "rle"]].to_csv(sub, index=False)
    out = tmp_path / "s.json"
    assert main(["evaluate", str(sub), str(ftu_bench / "train.csv"), "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["mean_dice"] == 1.0 and s["n_images"] == 247
    assert set(s["by_data_source"]) == {"HuBMAP", "AIDPATH", "GlaS", "RINGS"}


def test_random_baseline_matches_its_expected_dice(ftu_bench):
    """Random 50% masks score 2·0.5·f/(0.5+f) per image in expectation (f: FTU fraction)."""
    truth = load_table(ftu_bench, "train", need_rle=True, need_images=False)
    sub = random_baseline(truth, seed=0)
    per = score_submission(sub, truth)
    f = per["true_pixels"] / (truth["img_height"] * truth["img_width"]).to_numpy()
    expected = (2 * 0.5 * f / (0.5 + f)).mean()
    assert per["dice"].mean() == pytest.approx(expected, abs=0.01)
    assert 0.1 < per["dice"].mean() < 0.5


@pytest.mark.slow
def test_short_real_training_lowers_the_loss(ftu_bench, tmp_path):
    """Six real kidney and colon images, whole-image seed mode at 128 px: the loss must go down."""
    import shutil

    from ftuseg.training.trainer import train

    t = pd.read_csv(ftu_bench / "train.csv", dtype={"id": str})
    pick = pd.concat([t[t["organ"] == "kidney"].head(3), t[t["organ"] == "largeintestine"].head(3)])
    data = tmp_path / "data"
    (data / "train_images").mkdir(parents=True)
    pick.to_csv(data / "train.csv", index=False)
    for image_id in pick["id"]:
        src = next((ftu_bench / "train_images").glob(f"{image_id}.*"))
        (data / "train_images" / src.name).symlink_to(src)  # link, never copy, the real images
    shutil.copy(ftu_bench / "meta.csv", data / "meta.csv")
    cfg = tiny_config(encoder="resnet18", image_size=128, batch_size=6, epochs=6, lr=3e-3, val_fraction=0.0)
    res = train(cfg, data, tmp_path / "run", progress=False)
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < 0.85 * losses[0]
