"""The bad-input matrix: every case through the CLI, each a non-zero exit with ONE clear stderr line that
names the file (and row/column where there is one) and the problem, never a traceback (issue 6).

Cases that must be converted rather than rejected (1x1 images, images smaller than a tile, RGBA, 16-bit
and grayscale images, unknown organs) assert a zero exit and a usable output instead.

Each test copies the session's synthetic data set into ``tmp_path`` before corrupting it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ftuseg.cli import main

TRAIN_FLAGS = ["--encoder", "resnet18", "--image-size", "64", "--batch-size", "4", "--lr", "1e-3", "--epochs", "1",
               "--max-steps", "1", "--val-fraction", "0", "-q"]


# ------------------------------------------------------------------------------------------------ helpers
def run_cli(capsys, *argv: str | os.PathLike) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(code: int, err: str, *needles: str) -> str:
    """Non-zero exit, exactly one non-empty stderr line, an ``ftuseg: error:`` line containing every needle."""
    assert code != 0, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    line = lines[0]
    assert line.startswith("ftuseg: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def assert_ok(code: int, err: str) -> None:
    assert code == 0, err
    assert "Traceback" not in err


@pytest.fixture
def data(synth_data, tmp_path) -> Path:
    """A private copy of the synthetic data set to corrupt."""
    return Path(shutil.copytree(synth_data, tmp_path / "data"))


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False)


def edit_row(csv: Path, row: int, **values: str) -> str:
    """Set columns of data row ``row`` (0-based) and return its id."""
    df = read_csv(csv)
    for k, v in values.items():
        df.loc[row, k] = v
    write_csv(df, csv)
    return df.loc[row, "id"]


def image_of(data: Path, split: str, image_id: str) -> Path:
    (path,) = [p for p in (data / f"{split}_images").iterdir() if p.name.split(".")[0] == image_id]
    return path


def first_id_with_ext(data: Path, split: str, ext: str) -> tuple[int, str]:
    df = read_csv(data / f"{split}.csv")
    for pos, image_id in enumerate(df["id"]):
        if image_of(data, split, image_id).suffix == ext:
            return pos, image_id
    raise AssertionError(f"no {ext} image in {split}")


def truncate(path: Path, fraction: float = 0.5) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])


def train_argv(data: Path, out: Path, *extra: str) -> list:
    return ["train", data, "--out", out, *TRAIN_FLAGS, *extra]


# ------------------------------------------------------------------------------------------- CSV problems
def test_missing_csv(capsys, data, tmp_path):
    (data / "train.csv").unlink()
    code, _, err = run_cli(capsys, "baseline", data, "--split", "train", "--out", tmp_path / "s.csv", "-q")
    assert_one_error(code, err, str(data / "train.csv"), "file not found")
    assert not (tmp_path / "s.csv").exists()


def test_no_csv_at_all(capsys, data, tmp_path):
    for name in ("train.csv", "test.csv"):
        (data / name).unlink()
    code, _, err = run_cli(capsys, "baseline", data, "--out", tmp_path / "s.csv", "-q")
    assert_one_error(code, err, str(data), "no train.csv or test.csv")


def test_missing_submission_csv(capsys, data, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "nope.csv", data / "test_solution.csv", "-q")
    assert_one_error(code, err, "nope.csv", "file not found")


@pytest.mark.parametrize("content", ["", "\n\n", "id,organ,pixel_size\n"], ids=["zero-bytes", "blank", "header-only"])
def test_empty_csv(capsys, data, tmp_path, content):
    (data / "test.csv").write_text(content)
    code, _, err = run_cli(capsys, "baseline", data, "--out", tmp_path / "s.csv", "-q")
    line = assert_one_error(code, err, str(data / "test.csv"))
    assert "empty" in line or "no rows" in line


def test_missing_required_column(capsys, data, tmp_path):
    df = read_csv(data / "test.csv").drop(columns=["pixel_size"])
    write_csv(df, data / "test.csv")
    code, _, err = run_cli(capsys, "baseline", data, "--out", tmp_path / "s.csv", "-q")
    assert_one_error(code, err, str(data / "test.csv"), "missing required column", "pixel_size")


def test_missing_rle_column_in_truth(capsys, data, tmp_path):
    sub = tmp_path / "sub.csv"
    assert main(["baseline", str(data), "--out", str(sub), "-q"]) == 0
    truth = data / "test_solution.csv"
    write_csv(read_csv(truth).drop(columns=["rle"]), truth)
    capsys.readouterr()
    code, _, err = run_cli(capsys, "evaluate", sub, truth, "-q")
    assert_one_error(code, err, str(truth), "missing required column", "rle")


def test_semicolon_csv_gets_a_hint(capsys, data, tmp_path):
    df = read_csv(data / "test.csv")
    df.to_csv(data / "test.csv", index=False, sep=";")
    code, _, err = run_cli(capsys, "baseline", data, "--out", tmp_path / "s.csv", "-q")
    assert_one_error(code, err, str(data / "test.csv"), "semicolon")


def test_byte_order_mark_is_accepted(capsys, data, tmp_path):
    """Spreadsheets write a BOM; it must not hide the ``id`` column."""
    csv = data / "test.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    code, _, err = run_cli(capsys, "baseline", data, "--out", tmp_path / "s.csv", "-q")
    assert_ok(code, err)
    assert len(pd.read_csv(tmp_path / "s.csv")) == len(read_csv(csv))


def test_duplicate_ids(capsys, data, tmp_path):
    df = read_csv(data / "test.csv")
    df.loc[2, "id"] = df.loc[1, "id"]
    write_csv(df, data / "test.csv")
    code, _, err = run_cli(capsys, "baseline", data, "--out", tmp_path / "s.csv", "-q")
    assert_one_error(code, err, str(data / "test.csv"), f"duplicate id '{df.loc[1, 'id']}'", "rows [3, 4]")


def test_duplicate_ids_in_submission(capsys, data, tmp_path):
    sub = tmp_path / "sub.csv"
    assert main(["baseline", str(data), "--out", str(sub), "-q"]) == 0
    df = read_csv(sub)
    df.loc[1, "id"] = df.loc[0, "id"]
    write_csv(df, sub)
    capsys.readouterr()
    code, _, err = run_cli(capsys, "evaluate", sub, data / "test_solution.csv", "-q")
    assert_one_error(code, err, str(sub), "duplicate id", "rows [2, 3]")


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


# ------------------------------------------------------------------------------------------- RLE problems
RLE_CASES = {
    "odd-count": ("1 5 20", "odd number of values"),
    "non-integer": ("1 5 20 2.5", "non-integer token '2.5'"),
    "text": ("1 5 abc 3", "non-integer token 'abc'"),
    "zero-start": ("0 5", "start 0"),
    "negative-start": ("-4 5", "start -4"),
    "zero-length": ("3 0", "length 0"),
    "past-the-end": ("1 5 {n} 2", "runs past the end"),
    "unsorted": ("100 5 10 5", "unsorted"),
    "overlapping": ("10 5 12 5", "overlapping"),
}


@pytest.mark.parametrize("case", list(RLE_CASES))
def test_bad_rle_in_training_csv(capsys, data, tmp_path, case):
    rle, problem = RLE_CASES[case]
    csv = data / "train.csv"
    df = read_csv(csv)
    n = int(df.loc[2, "img_height"]) * int(df.loc[2, "img_width"])
    image_id = edit_row(csv, 2, rle=rle.format(n=n))
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run"))
    assert_one_error(code, err, str(csv), "row 4", f"id {image_id}", "column rle", problem)


@pytest.mark.parametrize("case", ["odd-count", "past-the-end", "overlapping"])
def test_bad_rle_in_submission(capsys, data, tmp_path, case):
    sub = tmp_path / "sub.csv"
    assert main(["baseline", str(data), "--out", str(sub), "-q"]) == 0
    truth = read_csv(data / "test_solution.csv")
    n = int(truth.loc[1, "img_height"]) * int(truth.loc[1, "img_width"])
    rle, problem = RLE_CASES[case]
    df = read_csv(sub)
    df.loc[1, "rle"] = rle.format(n=n)
    write_csv(df, sub)
    capsys.readouterr()
    code, _, err = run_cli(capsys, "evaluate", sub, data / "test_solution.csv", "-q")
    assert_one_error(code, err, str(sub), "row 3", f"id {df.loc[1, 'id']}", "column rle", problem)


# ------------------------------------------------------------------------------------ pixel_size problems
@pytest.mark.parametrize("value", ["abc", "0", "-0.5", "", "0,4"], ids=["text", "zero", "negative", "blank", "comma"])
def test_bad_pixel_size(capsys, data, tmp_path, value):
    image_id = edit_row(data / "test.csv", 1, pixel_size=value)
    code, _, err = run_cli(capsys, "baseline", data, "--out", tmp_path / "s.csv", "-q")
    assert_one_error(code, err, str(data / "test.csv"), "row 3", f"id {image_id}", "column pixel_size",
                     "must be a positive number")


def test_bad_img_height(capsys, data, tmp_path):
    edit_row(data / "test.csv", 0, img_height="12.5")
    code, _, err = run_cli(capsys, "baseline", data, "--out", tmp_path / "s.csv", "-q")
    assert_one_error(code, err, str(data / "test.csv"), "row 2", "column img_height", "positive integer")


def test_several_problems_name_the_first_and_count_the_rest(capsys, data, tmp_path):
    csv = data / "test.csv"
    edit_row(csv, 0, pixel_size="-1")
    edit_row(csv, 2, pixel_size="x")
    code, _, err = run_cli(capsys, "baseline", data, "--out", tmp_path / "s.csv", "-q")
    assert_one_error(code, err, "row 2", "and 1 more problem", "ftuseg check")


# ------------------------------------------------------------- inputs that are converted, not rejected
def test_unknown_organ_is_a_warning_not_an_error(capsys, data, tmp_path, tiny_run):
    image_id = edit_row(data / "test.csv", 0, organ="pancreas")
    code, out, err = run_cli(capsys, "check", data, "-q")
    assert code == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "unknown organ 'pancreas'" in warnings[0] and f"id {image_id}" in warnings[0]
    assert "column organ" in warnings[0] and "0 errors" in out.splitlines()[-1]
    sub = tmp_path / "sub.csv"
    code, _, err = run_cli(capsys, "predict", tiny_run, data, "--out", sub, "-q")
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


# ------------------------------------------------------------------------------------------- checkpoints
def _copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run_copy"))


def test_checkpoint_of_another_architecture(capsys, data, tmp_path, tiny_run):
    run = _copy_run(tiny_run, tmp_path)
    cfg = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(cfg.replace("arch: unet", "arch: fpn"))
    code, _, err = run_cli(capsys, "predict", run, data, "--out", tmp_path / "s.csv", "-q")
    assert_one_error(code, err, str(run / "best.pt"), "weights do not fit fpn/resnet18", "trained as unet/resnet18")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not-ftuseg"])
def test_corrupt_checkpoint(capsys, data, tmp_path, tiny_run, damage):
    run = _copy_run(tiny_run, tmp_path)
    ckpt = run / "best.pt"
    if damage == "truncated":
        truncate(ckpt)
    elif damage == "garbage":
        ckpt.write_bytes(b"this is not a checkpoint" * 10)
    elif damage == "empty":
        ckpt.write_bytes(b"")
    else:
        torch.save({"weights": [1, 2, 3]}, ckpt)
    code, _, err = run_cli(capsys, "predict", run, data, "--out", tmp_path / "s.csv", "-q")
    line = assert_one_error(code, err, str(ckpt))
    assert "corrupt or unreadable checkpoint" in line or "not an ftuseg checkpoint" in line


def test_corrupt_checkpoint_on_resume(capsys, data, tmp_path, tiny_run):
    run = _copy_run(tiny_run, tmp_path)
    truncate(run / "last.pt")
    code, _, err = run_cli(capsys, *train_argv(data, run, "--resume"))
    assert_one_error(code, err, str(run / "last.pt"), "corrupt or unreadable checkpoint")


def test_encoder_weights_missing(capsys, data, tmp_path):
    missing = tmp_path / "no-such-weights.pth"
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run", "--encoder-weights", missing))
    assert_one_error(code, err, str(missing), "file not found")


def test_encoder_weights_of_another_architecture(capsys, data, tmp_path):
    weights = tmp_path / "other.pth"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2)).state_dict(), weights)
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run", "--encoder-weights", weights))
    assert_one_error(code, err, str(weights), "no tensor matches encoder")


def test_encoder_weights_of_another_backbone_of_the_same_family(capsys, data, tmp_path, tiny_run):
    """Same tensor names, other shapes (e.g. a ResNet-50 file for a ResNet-18): refuse, do not half-load."""
    state = torch.load(tiny_run / "best.pt", map_location="cpu", weights_only=True)["model"]
    enc = {k[len("net.encoder."):]: v for k, v in state.items() if k.startswith("net.encoder.")}
    enc["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    weights = tmp_path / "resnet-other.pth"
    torch.save(enc, weights)
    code, _, err = run_cli(capsys, *train_argv(data, tmp_path / "run", "--encoder-weights", weights))
    assert_one_error(code, err, str(weights), "another backbone", "layer1.0.conv1.weight 64x64x1x1 vs 64x64x3x3")


def test_encoder_weights_from_an_ftuseg_run_are_accepted(tiny_run):
    """A whole ftuseg checkpoint is a fine encoder initialisation: its decoder is simply ignored."""
    from ftuseg.models.factory import build_model
    from tests.conftest import tiny_config

    model = build_model(tiny_config(encoder_weights=str(tiny_run / "best.pt")))
    state = torch.load(tiny_run / "best.pt", map_location="cpu", weights_only=True)["model"]
    torch.testing.assert_close(model.encoder.conv1.weight, state["net.encoder.conv1.weight"])


# ------------------------------------------------------------------------------------------ output paths
def test_output_in_missing_folder(capsys, data, tmp_path):
    out = tmp_path / "no" / "such" / "sub.csv"
    code, _, err = run_cli(capsys, "baseline", data, "--out", out, "-q")
    assert_one_error(code, err, str(out), "does not exist")


def test_output_below_a_file(capsys, data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "sub.csv"
    code, _, err = run_cli(capsys, "baseline", data, "--out", out, "-q")
    assert_one_error(code, err, str(out), "is not a folder")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write to, root included (tests run as root in CI).

    Non-root: chmod 555. Root ignores permission bits, so make the folder immutable with ``chattr +i``
    (needs CAP_LINUX_IMMUTABLE); failing that, /sys, which the kernel refuses new files in for anyone.
    """
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    if Path("/sys").is_dir():
        yield Path("/sys")
        return
    pytest.skip("cannot make a read-only folder here")


def test_output_in_read_only_folder(capsys, data, read_only_dir):
    out = read_only_dir / "sub.csv"
    code, _, err = run_cli(capsys, "baseline", data, "--out", out, "-q")
    assert_one_error(code, err, str(out), "not writable")
    assert not out.exists()


def test_evaluate_report_in_read_only_folder(capsys, data, tmp_path, read_only_dir):
    sub = tmp_path / "sub.csv"
    assert main(["baseline", str(data), "--out", str(sub), "-q"]) == 0
    capsys.readouterr()
    out = read_only_dir / "dice.json"
    code, _, err = run_cli(capsys, "evaluate", sub, data / "test_solution.csv", "--json", out, "-q")
    assert_one_error(code, err, str(out), "not writable")


def test_train_into_read_only_folder(capsys, data, read_only_dir):
    out = read_only_dir / "run"
    code, _, err = run_cli(capsys, *train_argv(data, out))
    assert_one_error(code, err, str(out))


def test_predict_into_read_only_folder(capsys, data, tiny_run, read_only_dir):
    out = read_only_dir / "sub.csv"
    code, _, err = run_cli(capsys, "predict", tiny_run, data, "--out", out, "-q")
    assert_one_error(code, err, str(out), "not writable")


# ------------------------------------------------------------------------------------------ ftuseg check
def test_check_clean_data_set(capsys, data):
    code, out, _ = run_cli(capsys, "check", data, "-q")
    assert code == 0
    assert out.strip().splitlines() == [f"{data}: OK, no problems found"]


def test_check_missing_data_folder(capsys, tmp_path):
    code, out, err = run_cli(capsys, "check", tmp_path / "nope", "-q")
    assert code == 1 and "Traceback" not in err
    assert f"error: {tmp_path / 'nope'}: data folder not found" in out


@pytest.mark.parametrize("content", ["", "id,organ\n"], ids=["empty", "header-only"])
def test_check_empty_csv(capsys, data, content):
    (data / "test.csv").write_text(content)
    code, out, _ = run_cli(capsys, "check", data, "--split", "test", "-q")
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(data / "test.csv") in errors[0]


def test_check_reports_every_problem_at_once(capsys, data):
    """One broken data set, many problems: ``ftuseg check`` lists all of them, with rows and columns."""
    train = data / "train.csv"
    df = read_csv(train)
    n2 = int(df.loc[2, "img_height"]) * int(df.loc[2, "img_width"])
    df.loc[1, "id"] = df.loc[0, "id"]                        # duplicate id (rows 2 and 3)
    df.loc[2, "rle"] = f"1 5 {n2} 2"                         # run past the end
    df.loc[3, "rle"] = "1 2 3"                               # odd count
    df.loc[4, "pixel_size"] = "zero"                         # non-numeric pixel size
    df.loc[5, "pixel_size"] = "-1"                           # negative pixel size
    df.loc[6, "organ"] = "heart"                             # unknown organ: warning
    df.loc[7, "img_width"] = str(int(df.loc[7, "img_width"]) + 3)  # size differs from the image
    ids = read_csv(train)["id"].tolist()
    write_csv(df, train)
    image_of(data, "train", ids[8]).unlink()                 # id without image
    truncate(image_of(data, "train", ids[9]))                # truncated image (a TIFF in the synthetic set)
    png = image_of(data, "train", ids[10])
    shutil.copy(png, png.with_suffix(".jpg"))                # two images for one id
    shutil.copy(png, data / "train_images" / "orphan.png")   # image without a row: warning
    test = data / "test.csv"
    write_csv(read_csv(test).drop(columns=["organ"]), test)  # missing required column

    code, out, err = run_cli(capsys, "check", data, "-q")
    assert code == 1 and "Traceback" not in err
    lines = out.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    warnings = [line for line in lines if line.startswith("warning:")]
    assert lines[-1] == f"{data}: {len(errors)} errors, {len(warnings)} warnings"
    assert len(errors) + len(warnings) == len(lines) - 1

    def one(needles: tuple[str, ...], pool: list[str]) -> None:
        hits = [line for line in pool if all(n in line for n in needles)]
        assert len(hits) == 1, (needles, pool)

    one((str(train), "row 2", "column id", f"duplicate id '{ids[0]}'"), errors)
    one((str(train), "row 4", "column rle", "runs past the end"), errors)
    one((str(train), "row 5", "column rle", "odd number"), errors)
    one((str(train), "row 6", "column pixel_size", "'zero'"), errors)
    one((str(train), "row 7", "column pixel_size", "'-1'"), errors)
    one((str(train), "row 8", "column organ", "unknown organ 'heart'"), warnings)
    one(("row 9", "column img_width", "img_width="), errors)
    one((str(train), "row 10", f"no image {ids[8]}"), errors)
    one(("row 11", str(image_of(data, "train", ids[9])), "cannot decode image"), errors)
    one((str(train), "row 12", "several images", ".jpg"), errors)
    one(("orphan.png", "no row in train.csv"), warnings)
    one((f"{ids[1]}.png", "no row in train.csv"), warnings)  # the image whose id was overwritten
    one((str(test), "column organ", "missing required column"), errors)
    assert len(errors) == 10 and len(warnings) == 3


def test_check_library_returns_records(data):
    from ftuseg.check import check_dataset

    edit_row(data / "test.csv", 2, pixel_size="0")
    (problem,) = check_dataset(data, "test")
    assert (problem.severity, problem.file, problem.row, problem.column) == ("error", str(data / "test.csv"), 4,
                                                                            "pixel_size")
    assert "positive number" in problem.message


def test_check_without_decoding_skips_image_contents(capsys, data):
    truncate(image_of(data, "test", read_csv(data / "test.csv")["id"][0]))
    assert run_cli(capsys, "check", data, "--no-decode", "-q")[0] == 0
    assert run_cli(capsys, "check", data, "-q")[0] == 1


# ------------------------------------------------------------------------------- through a real process
def test_process_exit_has_no_traceback_and_debug_shows_one(data, tmp_path):
    """The installed entry point: one line and exit 2 normally; ``--debug`` shows the traceback."""
    edit_row(data / "test.csv", 0, pixel_size="abc")
    cmd = [sys.executable, "-m", "ftuseg", "baseline", str(data), "--out", str(tmp_path / "s.csv"), "-q"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "Traceback" not in res.stderr
    assert "column pixel_size: 'abc' must be a positive number" in res.stderr
    res = subprocess.run([sys.executable, "-m", "ftuseg", "--debug", *cmd[3:]], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode != 0 and "Traceback" in res.stderr and "FtusegError" in res.stderr
