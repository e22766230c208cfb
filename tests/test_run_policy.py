"""Run policy shared by the local and Ray paths (ftuseg.inference.run_policy)."""

from __future__ import annotations

import json
import shutil

import pytest

from ftuseg.errors import FtusegError
from ftuseg.inference.inputs import PredictInput
from ftuseg.inference.postprocess import Thresholds
from ftuseg.inference.run_policy import ModelSpec, claim_out_dir


def test_an_output_folder_holds_one_setting(tmp_path):
    settings = ModelSpec(["runs/a"], threshold=0.4).settings()
    out = claim_out_dir(tmp_path / "new" / "out", settings)  # created, parents too
    assert json.loads((out / "predict.json").read_text()) == settings
    claim_out_dir(out, settings)  # resuming with the same settings is fine
    with pytest.raises(FtusegError, match=r"other settings \(threshold, tta\); use a new --out-dir"):
        claim_out_dir(out, ModelSpec(["runs/a"], threshold=0.5, tta=True).settings())
    (tmp_path / "file").write_text("x")
    with pytest.raises(FtusegError, match="is a file"):
        claim_out_dir(tmp_path / "file", settings)


def test_multiscale_tta_is_a_setting_of_the_output_folder_and_reaches_every_member(tiny_tiled_run, tmp_path):
    assert "tta_scales" not in ModelSpec(["runs/a"]).settings()  # folders from before the option still resume
    spec = ModelSpec([tiny_tiled_run], device="cpu", tta_scales="0.8,1")
    assert spec.tta_scales == [0.8, 1.0]
    out = claim_out_dir(tmp_path / "out", spec.settings())
    with pytest.raises(FtusegError, match=r"other settings \(tta_scales\)"):
        claim_out_dir(out, ModelSpec([tiny_tiled_run], device="cpu").settings())
    assert [m.cfg.tta_scales for m in spec.load().members] == [[0.8, 1.0]]
    assert [m.cfg.tta_scales for m in ModelSpec([tiny_tiled_run], device="cpu").load().members] == [[1.0]]
    with pytest.raises(FtusegError, match="tta_scales must be distinct factors"):
        ModelSpec(["runs/a"], tta_scales="1,5")


@pytest.fixture
def tuned_run(tiny_tiled_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_tiled_run, run)
    Thresholds(0.5, 0.0, {"kidney": {"threshold": 0.2}}).save(run / "thresholds.json")
    return run


def test_threshold_override_reaches_the_loaded_predictor(tuned_run):
    assert ModelSpec([tuned_run], device="cpu").load().thresholds.for_organ("kidney") == (0.2, 0.0)
    overridden = ModelSpec([tuned_run], device="cpu", threshold=0.7).load().thresholds
    assert overridden.organs == {} and overridden.for_organ("kidney") == (0.7, 0.0)


def test_organ_checks_name_the_input_before_loading(tuned_run, tmp_path):
    spec = ModelSpec([tuned_run])
    spec.check_organs([PredictInput("a", tmp_path / "a.tif", organ="kidney")])
    with pytest.raises(FtusegError, match=r"b\.tif: organ 'lung' has no tuned threshold"):
        spec.check_organs([PredictInput("a", tmp_path / "a.tif", organ="kidney"),
                           PredictInput("b", tmp_path / "b.tif", organ="lung")])
    with pytest.raises(FtusegError, match=r"c\.tif: organ 'kidny' is not a known organ"):
        ModelSpec([tuned_run], threshold=0.5).check_organs([PredictInput("c", tmp_path / "c.tif", organ="kidny")])
    ModelSpec([tuned_run], threshold=0.5).check_organs([PredictInput("b", tmp_path / "b.tif", organ="lung")])
