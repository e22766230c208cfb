"""Organ specialists: runs trained on some organs only, routed by organ at prediction."""

import json

import numpy as np
import pytest

from conftest import tiny_config
from ftuseg.errors import FtusegError
from ftuseg.inference.postprocess import Thresholds
from ftuseg.inference.predictor import Member, Predictor
from ftuseg.io.dataset import load_table
from ftuseg.training.trainer import split_table, train


def constant(value: float):
    def tile_fn(tiles: np.ndarray) -> np.ndarray:
        return np.full(tiles.shape[:3], value, dtype=np.float32)

    return tile_fn


def test_organs_field_parses_and_covers():
    cfg = tiny_config(organs="kidney, lung")
    assert cfg.organs == ["kidney", "lung"]
    assert cfg.covers("kidney") and not cfg.covers("spleen")
    everything = tiny_config()
    assert everything.organs == [] and everything.covers("spleen") and everything.covers(None)


def test_specialist_split_is_the_all_organ_fold_restricted_to_its_organs(synth_data):
    table = load_table(synth_data, "train", need_rle=True)
    organ = sorted(table["organ"].unique())[0]
    base = tiny_config(fold=0, n_folds=3)
    _, all_train, all_val = split_table(base, synth_data)
    _, sp_train, sp_val = split_table(base.replace(organs=[organ]), synth_data)
    assert set(table.iloc[sp_train]["organ"]) == {organ}
    assert set(sp_val) <= set(all_val) and set(sp_train) <= set(all_train)
    expected_val = [i for i in all_val if table.iloc[i]["organ"] == organ]
    assert sorted(sp_val) == sorted(expected_val)


def test_unknown_specialist_organ_is_one_clear_error(synth_data):
    with pytest.raises(FtusegError, match="brain"):
        split_table(tiny_config(organs=["brain"]), synth_data)


def test_training_a_specialist_uses_only_its_organ(synth_data, tmp_path):
    table = load_table(synth_data, "train", need_rle=True)
    organ = table["organ"].value_counts().index[0]
    run = tmp_path / "run"
    train(tiny_config(organs=[organ]), synth_data, run, progress=False, max_steps=1)
    split = json.loads((run / "split.json").read_text())
    organs = dict(zip(table["id"], table["organ"], strict=True))
    assert {organs[i] for i in split["train"] + split["val"]} == {organ}
    assert "organs:\n- " + organ in (run / "config.yaml").read_text()


def test_predictor_routes_each_organ_to_the_runs_that_cover_it():
    kidney = Member(constant(0.9), tiny_config(preset="tiled", organs=["kidney"]))
    colon = Member(constant(0.1), tiny_config(preset="tiled", organs=["largeintestine"]))
    general = Member(constant(0.5), tiny_config(preset="tiled"))
    image = np.full((80, 90, 3), 128, np.uint8)
    pred = Predictor([kidney, colon, general])
    np.testing.assert_allclose(pred.predict_proba(image, 1.0, "kidney"), 0.7, atol=1e-6)  # (0.9 + 0.5) / 2
    np.testing.assert_allclose(pred.predict_proba(image, 1.0, "largeintestine"), 0.3, atol=1e-6)
    np.testing.assert_allclose(pred.predict_proba(image, 1.0, "spleen"), 0.5, atol=1e-6)
    with pytest.raises(FtusegError, match="spleen.*no model"):
        Predictor([kidney, colon]).predict_proba(image, 1.0, "spleen")


def test_specialist_thresholds_merge_over_runs(tmp_path, tiny_run):
    import shutil

    runs = []
    for organ, thr in (("kidney", 0.3), ("lung", 0.7)):
        run = tmp_path / organ
        shutil.copytree(tiny_run, run)
        Thresholds(0.5, 0.0, {organ: {"threshold": thr, "min_area_um2": 0.0}}).save(run / "thresholds.json")
        runs.append(run)
    pred = Predictor.from_runs(runs, device="cpu", engine="torch")
    assert pred.thresholds.for_organ("kidney")[0] == 0.3
    assert pred.thresholds.for_organ("lung")[0] == 0.7
