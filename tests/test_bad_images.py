"""Bad and unusual images through the CLI: missing, corrupt or mis-sized ones are one clear error;
1x1 images, images smaller than a tile, RGBA, 16-bit and grayscale ones are converted and predicted;
unknown organs are a warning for ``check`` and refused by ``predict`` unless the user allows them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bad_inputs import (
    assert_ok,
    assert_one_error,
    edit_row,
    first_id_with_ext,
    image_of,
    read_csv,
    run_cli,
    train_argv,
    truncate,
)
from PIL import Image


# ----------------------------------------------------------------------------------------- image problems
def test_id_without_image(capsys, data, tmp_path):
    image_id = read_csv(data / "train.csv")["id"][3]
    image_of(data, "train", image_id).unlink()
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run"))
    assert_one_error(code, err, str(data / "train_images"), f"no image for id '{image_id}'", "row 5")


def test_two_images_for_one_id(capsys, data, tmp_path):
    image_id = read_csv(data / "train.csv")["id"][0]
    src = image_of(data, "train", image_id)
    Image.open(src).convert("RGB").save(src.with_suffix(".jpg"))
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run"))
    assert_one_error(code, err, str(data / "train_images"), f"id '{image_id}' has several images", ".jpg")


@pytest.mark.parametrize("fmt", ["tiff", "png", "jpeg"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_image(capsys, data, tmp_path, fmt, damage):
    if fmt == "jpeg":  # the synthetic set has no JPEG: swap one PNG for a JPEG of the same pixels
        _, image_id = first_id_with_ext(data, "train", ".png")
        png = image_of(data, "train", image_id)
        path = png.with_suffix(".jpg")
        Image.open(png).convert("RGB").save(path, quality=90)
        png.unlink()
    else:
        _, image_id = first_id_with_ext(data, "train", ".tiff" if fmt == "tiff" else ".png")
        path = image_of(data, "train", image_id)
    if damage == "truncated":
        truncate(path)
    else:
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run"))
    assert_one_error(code, err, str(path), "cannot decode image")


def test_empty_image_file(capsys, data, tmp_path):
    path = image_of(data, "train", read_csv(data / "train.csv")["id"][2])
    path.write_bytes(b"")
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run"))
    assert_one_error(code, err, str(path), "empty")


def test_image_size_differs_from_csv(capsys, data, tmp_path):
    csv = data / "train.csv"
    df = read_csv(csv)
    height = int(df.loc[1, "img_height"])
    image_id = edit_row(csv, 1, img_height=str(height + 7), rle="")
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run"))
    assert_one_error(code, err, image_id, f"img_height={height + 7}", "image is")


# ------------------------------------------------------------- inputs that are converted, not rejected
def test_unknown_organ_is_a_warning_for_check_and_needs_consent_to_predict(capsys, data, tmp_path, tiny_run):
    image_id = edit_row(data / "test.csv", 0, organ="pancreas")
    code, out, err = run_cli(capsys, "check", data, "-q")
    assert code == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "unknown organ 'pancreas'" in warnings[0] and f"id {image_id}" in warnings[0]
    assert "column organ" in warnings[0] and "0 errors" in out.splitlines()[-1]
    sub = tmp_path / "sub.csv"
    code, _, err = run_cli(capsys, "predict", tiny_run, data, "--out", sub, "-q")
    assert_one_error(code, err, "'pancreas' is not a known organ", "kidney", "--allow-unknown-organ")
    assert not sub.exists()
    code, _, err = run_cli(capsys, "predict", tiny_run, data, "--out", sub, "--allow-unknown-organ", "-q")
    assert_ok(code, err)
    assert image_id in set(read_csv(sub)["id"])


def _replace_image(data: Path, split: str, row: int, array: np.ndarray, ext: str = ".png") -> str:
    """Swap row ``row``'s image for ``array`` (saved as ``ext``) and fix the CSV's size and mask."""
    csv = data / f"{split}.csv"
    image_id = read_csv(csv)["id"][row]
    image_of(data, split, image_id).unlink()
    path = data / f"{split}_images" / f"{image_id}{ext}"
    if ext == ".tiff":
        import tifffile

        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array).save(path)
    values = {"img_height": str(array.shape[0]), "img_width": str(array.shape[1])}
    if "rle" in read_csv(csv).columns:
        values["rle"] = "1 1"
    edit_row(csv, row, **values)
    return image_id


def _predicted_mask_shapes(sub: Path, data: Path) -> dict[str, int]:
    from ftuseg.rle import decode_rle

    df = read_csv(sub).set_index("id")
    truth = read_csv(data / "test.csv").set_index("id")
    return {i: decode_rle(df.loc[i, "rle"] or None, (int(truth.loc[i, "img_height"]),
                                                      int(truth.loc[i, "img_width"]))).size for i in df.index}


@pytest.mark.slow
def test_tiny_images_are_predicted(capsys, data, tmp_path, tiny_run, tiny_tiled_run):
    """A 1x1 image and an image smaller than one tile go through whole-image and tiled prediction."""
    one = _replace_image(data, "test", 0, np.full((1, 1, 3), 200, np.uint8))
    small = _replace_image(data, "test", 1, np.random.default_rng(0).integers(0, 255, (20, 37, 3), dtype=np.uint8))
    for run in (tiny_run, tiny_tiled_run):
        sub = tmp_path / f"{run.name}.csv"
        code, _, err = run_cli(capsys, "predict", run, data, "--out", sub, "-q")
        assert_ok(code, err)
        sizes = _predicted_mask_shapes(sub, data)
        assert sizes[one] == 1 and sizes[small] == 20 * 37


def test_one_pixel_image_trains(capsys, data, tmp_path):
    _replace_image(data, "train", 0, np.full((1, 1, 3), 200, np.uint8))
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run"))
    assert_ok(code, err)
    assert (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_rgba_16bit_and_grayscale_images_are_converted(capsys, data, tmp_path, tiny_run):
    from ftuseg.io.images import read_image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((50, 60), 128, np.uint8)])
    gray16 = (rng.integers(0, 255, (50, 60)).astype(np.uint16) << 8)
    gray = rgb[..., 0]
    rgb16 = rgb.astype(np.uint16) << 8
    ids = [_replace_image(data, "test", 0, rgba), _replace_image(data, "test", 1, gray16),
           _replace_image(data, "test", 2, gray, ext=".jpg"), _replace_image(data, "test", 3, rgb16, ext=".tiff")]
    for image_id in ids:
        img = read_image(image_of(data, "test", image_id))
        assert img.shape == (50, 60, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(read_image(image_of(data, "test", ids[0])), rgb)  # alpha dropped
    np.testing.assert_array_equal(read_image(image_of(data, "test", ids[3])), rgb)  # 16 -> 8 bit
    code, out, err = run_cli(capsys, "check", data, "--split", "test", "-q")
    assert code == 0, out
    sub = tmp_path / "sub.csv"
    code, _, err = run_cli(capsys, "predict", tiny_run, data, "--out", sub, "-q")
    assert_ok(code, err)
    assert set(ids) <= set(read_csv(sub)["id"])
