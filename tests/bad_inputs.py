"""Helpers of the bad-input tests (tests/test_bad_*.py, tests/test_check.py): run the CLI, assert ONE clear
error line, and corrupt a private copy of the synthetic data set."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

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
