"""The registry of per-image output formats (ftuseg.outputs.formats): a new format is one registered writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from ftuseg.config import make_config
from ftuseg.errors import FtusegError
from ftuseg.inference.predictor import Member, Predictor
from ftuseg.inference.slide import SlideOptions, predict_slide
from ftuseg.outputs import formats


def test_builtin_formats_are_registered_in_write_order():
    assert list(formats.output_formats()) == ["geojson", "ome-tiff", "prob", "png", "rle", "overlay"]
    assert [f.name for f in formats.output_formats().values() if f.traces_polygons] == ["geojson"]


def test_a_registered_format_is_written_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "_REGISTRY", dict(formats._REGISTRY))  # the test's format leaves with it
    seen = {}

    @formats.register("pixels")
    def write_pixel_count(out: formats.SlideOutput):
        seen["organ"], seen["pixel_size"] = out.organ, out.pixel_size
        path = out.slide_dir / "pixels.txt"
        path.write_text(str(int(np.asarray(out.mask[:, :]).sum())))
        return path

    img = np.zeros((90, 120, 3), np.uint8)
    img[20:50, 30:70, 0] = 255
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, img, photometric="rgb")
    cfg = make_config("tiled", tile_size=64, target_mpp=1.0, organ_mpp={}, encoder="resnet18")
    pred = Predictor([Member(lambda tiles: tiles[..., 0].astype(np.float32) / 255.0, cfg)])
    res = predict_slide(pred, path, tmp_path, SlideOptions(formats=("pixels", "geojson"), pixel_size=0.5,
                                                           organ="kidney", tissue_detection=False))
    assert (tmp_path / "img" / "pixels.txt").read_text() == str(30 * 40)
    assert seen == {"organ": "kidney", "pixel_size": 0.5}
    assert res.outputs["pixels"] == str(tmp_path / "img" / "pixels.txt") and res.n_objects == 1
    assert json.loads((tmp_path / "img" / "result.json").read_text())["formats"] == ["pixels", "geojson"]


def test_unknown_format_names_the_registered_ones():
    with pytest.raises(FtusegError, match="unknown output format.*svg.*choose from geojson, ome-tiff"):
        SlideOptions(formats="geojson,svg")
