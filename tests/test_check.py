"""``ftuseg check``: every problem of a data set at once, one line each, with a summary."""

from __future__ import annotations

import shutil

import pytest
from bad_inputs import (
    edit_row,
    image_of,
    read_csv,
    run_cli,
    truncate,
    write_csv,
)


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
