"""Bad CSV tables, RLE masks and pixel sizes through the CLI: each a non-zero exit with ONE clear stderr
line naming the file, row and column and the problem, never a traceback."""

from __future__ import annotations

import pandas as pd
import pytest
from bad_inputs import (
    assert_ok,
    assert_one_error,
    edit_row,
    read_csv,
    run_cli,
    train_argv,
    write_csv,
)

from ftuseg.cli import main


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
