"""Ray inference on a local cluster (num_cpus=2): same outputs as the single-process path, resumable,
one failing slide does not lose the others."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")
slide = pytest.importorskip("ftuseg.inference.slide")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def images(synth_data, tmp_path_factory):
    """Two small images (one region each) and a 300x280 one that spans 2x2 regions of 256 px."""
    import tifffile

    from ftuseg.io.dataset import load_table, read_row_image

    folder = tmp_path_factory.mktemp("slides")
    table = load_table(synth_data, "train")
    paths = []
    for i in range(2):
        img = read_row_image(table.iloc[i])
        p = folder / f"small{i}.tif"
        tifffile.imwrite(p, img, photometric="rgb")
        paths.append(p)
    big = np.tile(read_row_image(table.iloc[2]), (3, 3, 1))[:280, :300]
    p = folder / "big.tif"
    tifffile.imwrite(p, np.ascontiguousarray(big), photometric="rgb")
    paths.append(p)
    return paths


def _mask(out: Path, image: Path) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_array(store=str(out / image.stem / "mask.zarr"), mode="r")[:, :])


def test_ray_outputs_equal_single_process_and_resume(ray_local, tiny_tiled_run, images, tmp_path):
    import pandas as pd

    from ftuseg.errors import FtusegError
    from ftuseg.inference.inputs import PredictInput
    from ftuseg.inference.predictor import Predictor
    from ftuseg.inference.ray_predict import RayOptions, predict_many_ray, run_ray_slides
    from ftuseg.inference.run_policy import ModelSpec

    two_workers = RayOptions(num_workers=2, progress=False)
    options = slide.SlideOptions(formats=("geojson", "ome-tiff"), pixel_size=0.5, region_size=256, quiet=True)
    single = tmp_path / "single"
    single.mkdir()
    predictor = Predictor.from_runs([tiny_tiled_run], device="cpu")
    expected = {p.stem: slide.predict_slide(predictor, p, single, options) for p in images}
    assert len(slide.plan_regions(images[2], options)) == 4  # the big one is really split

    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"this is not a tiff")
    out = tmp_path / "ray"
    out.mkdir()
    # PredictInput items carry their own pixel size (the options' one is unset here)
    items = [PredictInput(id=p.stem, image_path=p, pixel_size=0.5) for p in [*images, broken]]
    no_px = slide.SlideOptions(formats=("geojson", "ome-tiff"), region_size=256, quiet=True)
    with pytest.raises(FtusegError, match=r"1 of 4 image\(s\) failed \(first: .*broken\.tif"):
        predict_many_ray(ModelSpec([tiny_tiled_run], device="cpu"), items, out, no_px, two_workers)
    table = pd.read_csv(out / "predictions.csv").set_index("id")
    assert table["status"].to_dict() == {"small0": "done", "small1": "done", "big": "done", "broken": "failed"}
    assert table.loc["small0", "tasks"] == 1 and table.loc["big", "tasks"] == 4  # start, 2 chunks, finalize
    assert "broken.tif" in table.loc["broken", "error"] and "\n" not in table.loc["broken", "error"]
    for p in images:
        np.testing.assert_array_equal(_mask(out, p), _mask(single, p))
        assert table.loc[p.stem, "n_objects"] == expected[p.stem].n_objects
        assert table.loc[p.stem, "tiles_total"] == expected[p.stem].tiles_total
        a = json.loads((out / p.stem / f"{p.stem}.geojson").read_text())
        b = json.loads((single / p.stem / f"{p.stem}.geojson").read_text())
        assert a == b
        assert slide.slide_outputs_complete(p, out, options)

    # resumable: complete images are skipped; one missing only its outputs is finalised again
    (out / "big" / "result.json").unlink()
    again = run_ray_slides(ModelSpec([tiny_tiled_run], device="cpu"), images, out, options, two_workers)
    assert [o.status for o in again] == ["skipped", "skipped", "done"]
    assert again[2].result.n_objects == expected["big"].n_objects
    np.testing.assert_array_equal(_mask(out, images[2]), _mask(single, images[2]))


def test_missing_run_dir_fails_before_starting_workers(ray_local, images, tmp_path):
    from ftuseg.errors import FtusegError
    from ftuseg.inference.ray_predict import RayOptions, predict_many_ray

    with pytest.raises(FtusegError, match="run folder not found"):
        predict_many_ray([tmp_path / "nope"], images[:1], tmp_path, slide.SlideOptions(pixel_size=1.0),
                         RayOptions(progress=False))


def test_without_ray_the_error_names_the_extra(monkeypatch):
    import builtins

    from ftuseg.errors import FtusegError
    from ftuseg.inference import ray_predict

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(FtusegError, match=r"ftuseg\[ray\]"):
        ray_predict._import_ray()
