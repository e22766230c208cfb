"""The competition data layout: ``train.csv`` / ``test.csv`` plus ``train_images/`` / ``test_images/``.

``load_table`` reads and validates the CSV and resolves each id to its image file (any supported
extension). A ``meta.csv`` beside it (ftu-bench) is merged in, which provides the ``group`` column
used for grouped splits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ftuseg.errors import FtusegError
from ftuseg.io.images import IMAGE_EXTENSIONS, read_image
from ftuseg.rle import decode_rle

REQUIRED_COLUMNS = ("id", "organ", "pixel_size")
TRAIN_COLUMNS = (
    "id", "organ", "data_source", "img_height", "img_width", "pixel_size", "tissue_thickness", "rle", "age", "sex",
)
TEST_COLUMNS = tuple(c for c in TRAIN_COLUMNS if c not in ("rle", "age", "sex"))
KNOWN_ORGANS = ("kidney", "largeintestine", "lung", "prostate", "spleen")


@dataclass(frozen=True)
class DataSource:
    """Where one split of a data set lives."""

    root: Path
    split: str  # "train" or "test"

    @property
    def csv_path(self) -> Path:
        return self.root / f"{self.split}.csv"

    @property
    def images_dir(self) -> Path:
        return self.root / f"{self.split}_images"


def resolve_split(root: str | os.PathLike, split: str | None = None) -> DataSource:
    """Pick the split of a data folder: the one asked for, else ``test`` if present, else ``train``."""
    root = Path(root)
    if not root.exists():
        raise FtusegError(f"{root}: data folder not found")
    if split:
        return DataSource(root, split)
    for candidate in ("test", "train"):
        if (root / f"{candidate}.csv").exists():
            return DataSource(root, candidate)
    raise FtusegError(f"{root}: no train.csv or test.csv found")


def read_csv_checked(path: Path, required: tuple[str, ...] = ("id",)) -> pd.DataFrame:
    """Read a CSV with ``id`` kept as text; one clear error for missing/empty/malformed files."""
    if not path.exists():
        raise FtusegError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype={"id": str, "rle": str}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise FtusegError(f"{path}: CSV is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise FtusegError(f"{path}: cannot parse CSV ({str(exc).splitlines()[0]})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise FtusegError(f"{path}: missing required column(s) {', '.join(missing)}")
    if len(df) == 0:
        raise FtusegError(f"{path}: CSV has a header but no rows")
    if "id" in df.columns:
        df["id"] = df["id"].astype(str).str.strip()
    return df


def index_images(images_dir: Path) -> dict[str, list[Path]]:
    """Map image stem -> files with a supported extension in ``images_dir``."""
    found: dict[str, list[Path]] = {}
    if not images_dir.is_dir():
        return found
    for entry in os.scandir(images_dir):
        name = entry.name
        lower = name.lower()
        for ext in (".ome.tiff", ".ome.tif", *IMAGE_EXTENSIONS):
            if lower.endswith(ext):
                found.setdefault(name[: -len(ext)], []).append(Path(entry.path))
                break
    return found


def row_problems(df: pd.DataFrame, csv_path: Path, need_rle: bool) -> list[str]:
    """Every problem in a table's rows (validation collects them all; loading raises the first)."""
    problems: list[str] = []
    dup = df["id"][df["id"].duplicated(keep=False)]
    for i in sorted(set(dup)):
        rows = [int(r) + 2 for r in df.index[df["id"] == i]]
        problems.append(f"{csv_path}: duplicate id {i!r} on rows {rows}")
    px = pd.to_numeric(df["pixel_size"], errors="coerce")
    for idx in df.index[px.isna() | (px <= 0)]:
        problems.append(
            f"{csv_path}: row {idx + 2} (id {df.at[idx, 'id']}): pixel_size {df.at[idx, 'pixel_size']!r} "
            "must be a positive number (micrometres per pixel)"
        )
    for col in ("img_height", "img_width"):
        if col in df.columns:
            v = pd.to_numeric(df[col], errors="coerce")
            for idx in df.index[v.isna() | (v < 1)]:
                problems.append(
                    f"{csv_path}: row {idx + 2} (id {df.at[idx, 'id']}): {col} {df.at[idx, col]!r} "
                    "must be a positive integer"
                )
    if need_rle and "rle" not in df.columns:
        problems.append(f"{csv_path}: missing required column rle")
    return problems


def load_table(
    root: str | os.PathLike,
    split: str | None = None,
    need_rle: bool = False,
    need_images: bool = True,
) -> pd.DataFrame:
    """Load and validate a split: returns its rows with ``image_path`` (and ``group`` from meta.csv)."""
    src = resolve_split(root, split)
    df = read_csv_checked(src.csv_path, required=REQUIRED_COLUMNS + (("rle",) if need_rle else ()))
    problems = row_problems(df, src.csv_path, need_rle)
    if problems:
        raise FtusegError(problems[0] + (f" (and {len(problems) - 1} more problems; run `ftuseg check`)"
                                         if len(problems) > 1 else ""))
    df["pixel_size"] = df["pixel_size"].astype(float)
    if "data_source" not in df.columns:
        df["data_source"] = "unknown"
    df["organ"] = df["organ"].astype(str).str.strip()
    meta_path = src.root / "meta.csv"
    if meta_path.exists() and "group" not in df.columns:
        meta = read_csv_checked(meta_path)
        keep = [c for c in meta.columns if c == "id" or c not in df.columns]
        df = df.merge(meta[keep], on="id", how="left")
    if need_images:
        df["image_path"] = [str(p) for p in resolve_image_paths(df["id"], src.images_dir)]
    return df.reset_index(drop=True)


def resolve_image_paths(ids: pd.Series, images_dir: Path) -> list[Path]:
    """Resolve each id to exactly one image file; a clear error for none or several."""
    if not images_dir.is_dir():
        raise FtusegError(f"{images_dir}: image folder not found")
    index = index_images(images_dir)
    paths = []
    for row, i in enumerate(ids):
        files = index.get(str(i), [])
        if not files:
            raise FtusegError(f"{images_dir}: no image for id {i!r} (row {row + 2}); expected {i}.tiff/.png/.jpg")
        if len(files) > 1:
            names = ", ".join(sorted(f.name for f in files))
            raise FtusegError(f"{images_dir}: id {i!r} has several images ({names}); keep one")
        paths.append(files[0])
    return paths


def read_row_image(row: pd.Series) -> np.ndarray:
    """Read a row's image and check it against ``img_height``/``img_width`` when given."""
    img = read_image(row["image_path"])
    h, w = expected_shape(row, default=img.shape[:2])
    if img.shape[:2] != (h, w):
        raise FtusegError(
            f"{row['image_path']}: image is {img.shape[0]}x{img.shape[1]} (HxW) but the CSV says "
            f"img_height={h}, img_width={w}"
        )
    return img


def expected_shape(row: pd.Series, default: tuple[int, int] | None = None) -> tuple[int, int]:
    h, w = row.get("img_height"), row.get("img_width")
    if h is None or w is None or pd.isna(h) or pd.isna(w):
        if default is None:
            raise FtusegError(f"id {row['id']}: img_height/img_width unknown")
        return int(default[0]), int(default[1])
    return int(h), int(w)


def read_row_mask(row: pd.Series, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a row's ``rle`` into a mask of its image size; errors name the id."""
    shape = shape or expected_shape(row)
    try:
        return decode_rle(row.get("rle"), shape)
    except FtusegError as exc:
        raise FtusegError(f"id {row['id']}: {exc}") from None
