"""The one prediction core (ftuseg.inference.region): an image held in memory, the same image streamed into
``--out-dir`` and the same image on Ray give identical masks and identical refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ftuseg.cli import main
from ftuseg.config import make_config
from ftuseg.errors import FtusegError
from ftuseg.inference.inputs import PredictInput
from ftuseg.inference.postprocess import Thresholds
from ftuseg.inference.predictor import Member, Predictor
from ftuseg.inference.region import check_organ, organ_route
from ftuseg.inference.slide import SlideOptions, predict_slide
from ftuseg.io.dataset import KNOWN_ORGANS
from ftuseg.rle import decode_rle


def _sub(path: Path) -> dict[str, str]:
    return pd.read_csv(path, dtype=str, keep_default_na=False).set_index("id")["rle"].to_dict()


def _tuned_copy(run: Path, out: Path, organs: dict[str, dict[str, float]]) -> Path:
    """A copy of ``run`` at ``out`` whose thresholds.json is tuned for ``organs`` only."""
    shutil.copytree(run, out)
    Thresholds(0.5, 0.0, organs).save(out / "thresholds.json")
    return out


# ------------------------------------------------------------------------------------------ routing
def test_unknown_organ_is_refused_with_the_known_ones():
    with pytest.raises(FtusegError) as exc:
        check_organ("liverr")
    msg = str(exc.value)
    assert "'liverr'" in msg and all(o in msg for o in KNOWN_ORGANS) and "--allow-unknown-organ" in msg
    check_organ("liverr", allow_unknown=True)
    check_organ(None)
    for organ in KNOWN_ORGANS:
        check_organ(organ)


def test_route_picks_specialists_and_the_organ_settings():
    everything = make_config("tiled")
    kidney = make_config("tiled", organs=["kidney"])
    tuned = Thresholds(0.5, 0.0, {"kidney": {"threshold": 0.3, "min_area_um2": 20.0, "fill_holes_um2": 5.0},
                                  "lung": {"threshold": 0.7}})
    route = organ_route([everything, kidney], tuned, "kidney")
    assert route.members == (0, 1) and (route.threshold, route.min_area_um2, route.fill_holes_um2) == (0.3, 20.0, 5.0)
    assert route.needs_context
    lung = organ_route([everything, kidney], tuned, "lung")
    assert lung.members == (0,) and lung.threshold == 0.7 and not lung.needs_context
    with pytest.raises(FtusegError, match="no tuned threshold"):
        organ_route([everything], tuned, "spleen")
    with pytest.raises(FtusegError, match="no model in this ensemble covers it"):
        organ_route([kidney], Thresholds(), "lung")


# --------------------------------------------------------------- in memory vs a file vs --out-dir
class Stripes:
    """A deterministic stand-in network: probability from the red channel, per tile."""

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        return (tiles[..., 0].astype(np.float32) / 255.0).astype(np.float32)


def _stand_in(min_area_um2: float = 0.0) -> Predictor:
    cfg = make_config("tiled", tile_size=64, target_mpp=1.0, organ_mpp={}, overlap=0.5, infer_batch_size=8,
                      encoder="resnet18", min_area_um2=min_area_um2)
    return Predictor([Member(Stripes(), cfg)])


@pytest.mark.parametrize("min_area_um2", [0.0, 40.0])
def test_array_and_file_take_the_same_route(tmp_path, min_area_um2):
    import tifffile

    rng = np.random.default_rng(3)
    img = (rng.random((150, 170, 3)) * 100).astype(np.uint8)  # textured background, all below threshold
    img[40:80, 30:90, 0] = 250  # one object well above threshold
    img[100:104, 100:104, 0] = 250  # one tiny object: dropped by the minimum area
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, img, photometric="rgb")
    pred = _stand_in(min_area_um2)
    in_memory = pred.predict_mask(img, 0.5, "kidney")
    predict_slide(pred, path, tmp_path, SlideOptions(formats=("rle",), pixel_size=0.5, organ="kidney",
                                                     tissue_detection=False))
    streamed = decode_rle(_sub(tmp_path / "img" / "rle.csv")["img"], img.shape[:2])
    np.testing.assert_array_equal(in_memory, streamed)
    assert in_memory[60, 60] == 1
    assert in_memory[101, 101] == (0 if min_area_um2 else 1)


class ShapeRecorder(Stripes):
    """The stripes stand-in, recording the shape of every batch of windows it is given."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        self.shapes.append(tiles.shape)
        return super().__call__(tiles)


def test_inference_windows_larger_than_the_training_tile_on_every_path(tmp_path):
    import tifffile

    rng = np.random.default_rng(5)
    img = (rng.random((300, 260, 3)) * 100).astype(np.uint8)
    img[120:200, 40:150, 0] = 250
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, img, photometric="rgb")
    masks, windows = {}, {}
    for infer_tile_size in (0, 128):
        cfg = make_config("tiled", tile_size=64, target_mpp=1.0, organ_mpp={}, overlap=0.5, infer_batch_size=8,
                          encoder="resnet18", infer_tile_size=infer_tile_size)
        net = ShapeRecorder()
        pred = Predictor([Member(net, cfg)])
        masks[infer_tile_size] = pred.predict_mask(img, 0.5, "kidney")
        side = cfg.infer_tile()
        assert {s[1:3] for s in net.shapes} == {(side, side)}
        windows[infer_tile_size] = sum(s[0] for s in net.shapes)
        net.shapes.clear()
        out = tmp_path / f"w{infer_tile_size}"
        out.mkdir()
        predict_slide(pred, path, out, SlideOptions(formats=("rle",), pixel_size=0.5, organ="kidney",
                                                    tissue_detection=False))
        assert {s[1:3] for s in net.shapes} == {(side, side)}
        streamed = decode_rle(_sub(out / "img" / "rle.csv")["img"], img.shape[:2])
        np.testing.assert_array_equal(masks[infer_tile_size], streamed)
    assert windows[128] * 2 < windows[0]  # a quarter of the windows, give or take the border
    # a per-pixel network's blended probability does not depend on the window
    np.testing.assert_array_equal(masks[0], masks[128])
    assert masks[128][160, 100] == 1 and masks[128][20, 20] == 0


def test_untuned_organ_is_refused_the_same_way_in_memory_and_streamed(tmp_path):
    import tifffile

    img = np.full((80, 90, 3), 200, np.uint8)
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, img, photometric="rgb")
    pred = _stand_in()
    pred.thresholds = Thresholds(0.5, 0.0, {"kidney": {"threshold": 0.4}})
    errors = []
    for attempt in (lambda: pred.predict_mask(img, 0.5, "lung"),
                    lambda: predict_slide(pred, path, tmp_path, SlideOptions(pixel_size=0.5, organ="lung",
                                                                             formats=("rle",)))):
        with pytest.raises(FtusegError) as exc:
            attempt()
        errors.append(str(exc.value))
    assert errors[0] == errors[1] and "'lung' has no tuned threshold" in errors[0]
    with pytest.raises(FtusegError, match="not a known organ"):
        pred.predict_mask(img, 0.5, "lungg")


# ---------------------------------------------------------------------- through ftuseg predict
def _predict(capsys, *argv: object) -> tuple[int, str]:
    code = main(["predict", *map(str, argv), "-q"])
    return code, capsys.readouterr().err


def test_cli_paths_give_identical_masks(capsys, tiny_tiled_run, data, tmp_path):
    code, err = _predict(capsys, tiny_tiled_run, data, "--out", tmp_path / "mem.csv", "--engine", "torch")
    assert code == 0, err
    code, err = _predict(capsys, tiny_tiled_run, data, "--out", tmp_path / "dir.csv", "--out-dir", tmp_path / "d",
                         "--formats", "rle", "--no-tissue-detection", "--engine", "torch")
    assert code == 0, err
    in_memory, streamed = _sub(tmp_path / "mem.csv"), _sub(tmp_path / "dir.csv")
    assert list(in_memory) == list(streamed) and len(in_memory) == 4
    assert in_memory == streamed


@pytest.mark.parametrize("flags", [(), ("--out-dir", "OUT", "--formats", "rle")], ids=["in-memory", "out-dir"])
def test_cli_refusals_are_the_same_on_every_path(capsys, tiny_tiled_run, data, tmp_path, flags):
    flags = tuple(str(tmp_path / "o") if f == "OUT" else f for f in flags)
    code, err = _predict(capsys, tiny_tiled_run, data, "--out", tmp_path / "s.csv", "--organ", "liverr", *flags)
    assert code == 2 and err.count("\n") == 1 and "'liverr' is not a known organ" in err and "kidney" in err
    assert not (tmp_path / "s.csv").exists()

    tuned = _tuned_copy(tiny_tiled_run, tmp_path / "tuned", {"kidney": {"threshold": 0.5}})
    code, err = _predict(capsys, tuned, data, "--out", tmp_path / "s.csv", *flags)
    organs = set(pd.read_csv(data / "test.csv")["organ"]) - {"kidney"}
    assert code == 2 and "has no tuned threshold" in err and any(f"'{o}'" in err for o in organs)
    code, err = _predict(capsys, tuned, data, "--out", tmp_path / "s.csv", "--threshold", "0.5", *flags)
    assert code == 0, err


def test_allow_unknown_organ_predicts_with_the_defaults(capsys, tiny_tiled_run, data, tmp_path):
    test = pd.read_csv(data / "test.csv")
    image = next((data / "test_images").glob(f"{test.loc[0, 'id']}.*"))
    code, err = _predict(capsys, tiny_tiled_run, image, "--organ", "pancreas", "--pixel-size", "0.5",
                         "--out-dir", tmp_path / "o", "--formats", "rle")
    assert code == 2 and "'pancreas' is not a known organ" in err
    code, err = _predict(capsys, tiny_tiled_run, image, "--organ", "pancreas", "--pixel-size", "0.5",
                         "--out-dir", tmp_path / "o", "--formats", "rle", "--allow-unknown-organ")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / image.stem / "result.json").read_text())["organ"] == "pancreas"


@pytest.mark.slow
def test_ray_gives_the_same_masks_and_refusals(capsys, tiny_tiled_run, data, tmp_path):
    pytest.importorskip("ray")
    import ray

    from ftuseg.inference.ray_predict import RayOptions, predict_many_ray
    from ftuseg.inference.run_policy import ModelSpec

    code, err = _predict(capsys, tiny_tiled_run, data, "--out", tmp_path / "mem.csv", "--engine", "torch")
    assert code == 0, err
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        code, err = _predict(capsys, tiny_tiled_run, data, "--out", tmp_path / "ray.csv", "--out-dir", tmp_path / "r",
                             "--formats", "rle", "--no-tissue-detection", "--engine", "torch", "--ray")
        assert code == 0, err
        assert _sub(tmp_path / "ray.csv") == _sub(tmp_path / "mem.csv")

        # the refusal of the core itself, on the worker (no up-front check in this library call)
        tuned = _tuned_copy(tiny_tiled_run, tmp_path / "tuned", {"kidney": {"threshold": 0.5}})
        image = next((data / "test_images").iterdir())
        (tmp_path / "w").mkdir()
        table = predict_many_ray(ModelSpec([tuned], device="cpu"),
                                 [PredictInput("x", image, pixel_size=0.5, organ="lung")], tmp_path / "w",
                                 SlideOptions(formats=("rle",)), RayOptions(num_workers=1, progress=False),
                                 raise_on_failure=False)
        pred = ModelSpec([tuned], device="cpu").load()
        with pytest.raises(FtusegError) as exc:
            pred.predict_mask(np.zeros((64, 64, 3), np.uint8), 0.5, "lung")
        assert table.loc[0, "status"] == "failed" and table.loc[0, "error"] == str(exc.value)
    finally:
        ray.shutdown()
