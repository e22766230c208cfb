import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from ftuseg.errors import FtusegError
from ftuseg.io.dataset import load_table, read_row_image, read_row_mask
from ftuseg.io.images import read_image


def test_synthetic_layout_loads_with_groups(synth_data):
    t = load_table(synth_data, "train", need_rle=True)
    assert list(t.columns[:10]) == ["id", "organ", "data_source", "img_height", "img_width", "pixel_size",
                                    "tissue_thickness", "rle", "age", "sex"]
    assert "group" in t.columns and t["group"].notna().all()
    exts = {p.rsplit(".", 1)[1] for p in t["image_path"]}
    assert exts == {"png", "tiff"}  # mixed extensions resolved by id
    row = t.iloc[0]
    img = read_row_image(row)
    assert img.dtype == np.uint8 and img.shape == (row["img_height"], row["img_width"], 3)
    assert read_row_mask(row).shape == img.shape[:2]


def test_default_split_prefers_test(synth_data):
    t = load_table(synth_data)
    assert "rle" not in t.columns and len(t) == 4


def test_test_csv_without_optional_columns(tmp_path, synth_data):
    shutil.copytree(synth_data / "test_images", tmp_path / "test_images")
    df = pd.read_csv(synth_data / "test.csv", dtype={"id": str})
    df[["id", "organ", "pixel_size"]].assign(extra="kept").to_csv(tmp_path / "test.csv", index=False)
    t = load_table(tmp_path)
    assert (t["extra"] == "kept").all() and (t["data_source"] == "unknown").all()


@pytest.mark.parametrize("kind", ["gray", "rgba", "uint16", "planar_tiff", "bmp", "jpg"])
def test_image_formats_convert_to_rgb_uint8(tmp_path, kind):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    if kind == "gray":
        path = tmp_path / "a.png"
        Image.fromarray(rgb[..., 0]).save(path)
    elif kind == "rgba":
        path = tmp_path / "a.png"
        Image.fromarray(np.dstack([rgb, np.full((20, 30), 255, np.uint8)])).save(path)
    elif kind == "uint16":
        path = tmp_path / "a.tiff"
        tifffile.imwrite(path, rgb.astype(np.uint16) * 257, photometric="rgb")
    elif kind == "planar_tiff":
        path = tmp_path / "a.tif"
        tifffile.imwrite(path, np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    elif kind == "bmp":
        path = tmp_path / "a.bmp"
        Image.fromarray(rgb).save(path)
    else:
        path = tmp_path / "a.jpg"
        Image.fromarray(rgb).save(path, quality=95)
    img = read_image(path)
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8
    if kind in ("rgba", "uint16", "planar_tiff", "bmp"):
        np.testing.assert_array_equal(img, rgb)
    if kind == "gray":
        np.testing.assert_array_equal(img[..., 1], rgb[..., 0])


def test_missing_image_and_duplicate_image_are_clear(tmp_path, synth_data):
    shutil.copytree(synth_data, tmp_path / "d")
    d = tmp_path / "d"
    first = sorted((d / "train_images").iterdir())[0]
    shutil.copy(first, first.with_suffix(".jpg"))
    with pytest.raises(FtusegError, match="several images"):
        load_table(d, "train")
    first.with_suffix(".jpg").unlink()
    first.unlink()
    with pytest.raises(FtusegError, match=f"no image for id '{first.stem}'"):
        load_table(d, "train")
