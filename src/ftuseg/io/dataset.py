"""The competition data layout: ``train.csv`` / ``test.csv`` plus ``train_images/`` / ``test_images/``.

``load_table`` reads and validates the CSV and resolves each id to its image file (any supported
extension). A ``meta.csv`` beside it (ftu-bench) is merged in, which provides the ``group`` column
used for grouped splits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ftuseg.errors import FtusegError
from ftuseg.io.images import IMAGE_EXTENSIONS, read_image
from ftuseg.rle import decode_rle, rle_runs

REQUIRED_COLUMNS = ("id", "organ", "pixel_size")
TRAIN_COLUMNS = (
    "id", "organ", "data_source", "img_height", "img_width", "pixel_size", "tissue_thickness", "rle", "age", "sex",
)
TEST_COLUMNS = tuple(c for c in TRAIN_COLUMNS if c not in ("rle", "age", "sex"))
KNOWN_ORGANS = ("kidney", "largeintestine", "lung", "prostate", "spleen")


@dataclass(frozen=True)
class Problem:
    """One finding about a data set: where it is (file, CSV row, column) and what is wrong.

    ``row`` is the line number in the CSV as a spreadsheet shows it (header = 1, first data row = 2).
    """

    severity: Literal["error", "warning"]
    file: str
    message: str
    row: int | None = None
    column: str | None = None
    id: str | None = None

    def __str__(self) -> str:
        where = [self.file]
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (id {self.id})" if self.id not in (None, "") else ""))
        elif self.id not in (None, ""):
            where.append(f"id {self.id}")
        if self.column:
            where.append(f"column {self.column}")
        return ": ".join(where) + f": {self.message}"


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
    raise FtusegError(f"{root}: no train.csv or test.csv found (nor images with annotations beside them)")


def read_csv_checked(path: Path, required: tuple[str, ...] = ("id",)) -> pd.DataFrame:
    """Read a CSV with ``id`` kept as text; one clear error for missing/empty/malformed files."""
    path = Path(path)
    if not path.exists():
        raise FtusegError(f"{path}: file not found")
    if path.is_dir():
        raise FtusegError(f"{path}: is a folder, expected a CSV file")
    try:
        # utf-8-sig: spreadsheets often prepend a byte-order mark, which would rename the first column
        df = pd.read_csv(path, dtype={"id": str, "rle": str}, keep_default_na=True, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise FtusegError(f"{path}: CSV is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise FtusegError(f"{path}: cannot parse CSV ({str(exc).strip().splitlines()[0]})") from None
    except OSError as exc:
        raise FtusegError(f"{path}: cannot read CSV ({exc.strerror or exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        hint = ""
        if len(df.columns) == 1 and ";" in df.columns[0]:
            hint = " (the file looks semicolon-separated; save it with commas)"
        raise FtusegError(f"{path}: missing required column(s) {', '.join(missing)}{hint}")
    if len(df) == 0:
        raise FtusegError(f"{path}: CSV has a header but no rows")
    if "id" in df.columns:
        df["id"] = df["id"].fillna("").astype(str).str.strip()
    return df


def index_images(images_dir: Path) -> dict[str, list[Path]]:
    """Map image stem -> files with a supported extension in ``images_dir``."""
    found: dict[str, list[Path]] = {}
    if not images_dir.is_dir():
        return found
    for entry in os.scandir(images_dir):
        name = entry.name
        if name.startswith("."):  # hidden files, e.g. temp files of an interrupted atomic write
            continue
        lower = name.lower()
        for ext in (".ome.tiff", ".ome.tif", *IMAGE_EXTENSIONS):
            if lower.endswith(ext):
                found.setdefault(name[: -len(ext)], []).append(Path(entry.path))
                break
    return found


def row_issues(df: pd.DataFrame, csv_path: Path, need_rle: bool, check_rle: bool = True) -> list[Problem]:
    """Every problem in a table's rows as :class:`Problem` records (only columns present are checked).

    Covers empty and duplicate ids, ``pixel_size`` and ``img_height``/``img_width`` that are not
    positive numbers, unknown organs (a warning) and malformed RLE (checked against the CSV's image
    size when it is known). Image files are not opened here (see :mod:`ftuseg.check`).
    """
    file = str(csv_path)
    out: list[Problem] = []
    if "id" not in df.columns:
        return [Problem("error", file, "missing required column id", column="id")]
    ids = df["id"].astype(str)

    def ident(idx: int) -> str:
        return ids.iat[idx]

    for pos in np.flatnonzero((ids == "").to_numpy()):
        out.append(Problem("error", file, "empty id", row=int(pos) + 2, column="id"))
    dup = ids[(ids != "") & ids.duplicated(keep=False)]
    for i in sorted(set(dup)):
        rows = [int(r) + 2 for r in np.flatnonzero((ids == i).to_numpy())]
        out.append(Problem("error", file, f"duplicate id {i!r} on rows {rows}", row=rows[0], column="id", id=i))
    if "pixel_size" in df.columns:
        px = pd.to_numeric(df["pixel_size"], errors="coerce")
        for pos in np.flatnonzero((px.isna() | ~np.isfinite(px) | (px <= 0)).to_numpy()):
            out.append(Problem("error", file, f"{_cell(df['pixel_size'].iat[pos])} must be a positive number "
                               "(micrometres per pixel)", row=int(pos) + 2, column="pixel_size", id=ident(pos)))
    sizes_ok = np.ones(len(df), dtype=bool)
    for col in ("img_height", "img_width"):
        if col in df.columns:
            v = pd.to_numeric(df[col], errors="coerce")
            bad = (v.isna() | (v < 1) | (v != np.floor(v))).to_numpy()
            sizes_ok &= ~bad
            for pos in np.flatnonzero(bad):
                out.append(Problem("error", file, f"{_cell(df[col].iat[pos])} must be a positive integer",
                                   row=int(pos) + 2, column=col, id=ident(pos)))
        else:
            sizes_ok[:] = False
    if "organ" in df.columns:
        organs = df["organ"].fillna("").astype(str).str.strip()
        for pos in np.flatnonzero((~organs.isin(KNOWN_ORGANS)).to_numpy()):
            what = "empty organ" if organs.iat[pos] == "" else f"unknown organ {organs.iat[pos]!r}"
            out.append(Problem("warning", file, f"{what} (known: {', '.join(KNOWN_ORGANS)}); organ-specific "
                               "settings fall back to the defaults", row=int(pos) + 2, column="organ",
                               id=ident(pos)))
    if need_rle and "rle" not in df.columns:
        out.append(Problem("error", file, "missing required column rle", column="rle"))
    if check_rle and "rle" in df.columns and sizes_ok.any():
        h = pd.to_numeric(df["img_height"], errors="coerce")
        w = pd.to_numeric(df["img_width"], errors="coerce")
        for pos in np.flatnonzero(sizes_ok):
            try:
                rle_runs(df["rle"].iat[pos], (int(h.iat[pos]), int(w.iat[pos])))
            except FtusegError as exc:
                out.append(Problem("error", file, str(exc), row=int(pos) + 2, column="rle", id=ident(pos)))
    return out


def _cell(value: object) -> str:
    """A CSV cell as the user typed it: text quoted, numbers plain, blanks named."""
    if isinstance(value, str):
        return repr(value)
    if value is None or pd.isna(value):
        return "empty cell"
    return str(value.item() if isinstance(value, np.generic) else value)


def row_problems(df: pd.DataFrame, csv_path: Path, need_rle: bool) -> list[str]:
    """Every error in a table's rows as one-line messages (validation collects them all; loading
    raises the first). Warnings (unknown organs) are left to :func:`row_issues`."""
    return [str(p) for p in row_issues(df, csv_path, need_rle, check_rle=need_rle) if p.severity == "error"]


def load_table(
    root: str | os.PathLike,
    split: str | None = None,
    need_rle: bool = False,
    need_images: bool = True,
    pixel_size: float | None = None,
    organ: str | None = None,
) -> pd.DataFrame:
    """Load and validate a split: returns its rows with ``image_path`` (and ``group`` from meta.csv).

    An annotation folder (images with QuPath GeoJSON or mask images beside them, no train.csv; see
    :mod:`ftuseg.io.annotations`) loads into the same table, with ``annotation_path`` instead of ``rle``;
    ``pixel_size`` / ``organ`` then apply to every image (they are an error for the Kaggle layout, whose
    CSV gives both per row).
    """
    from ftuseg.io.annotations import is_annotation_folder, load_annotation_table

    if is_annotation_folder(root):
        return load_annotation_table(root, pixel_size=pixel_size, organ=organ)
    if pixel_size is not None or organ:
        flags = " and ".join(f for f, v in (("--pixel-size", pixel_size), ("--organ", organ)) if v)
        raise FtusegError(f"{root}: {flags} apply to annotation folders; train.csv gives pixel_size and organ "
                          "per row")
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
        meta = read_csv_checked(meta_path).drop_duplicates("id")  # a duplicated id would duplicate rows
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
            f"{row['image_path']}: id {row['id']}: image is {img.shape[0]}x{img.shape[1]} (HxW) but the CSV says "
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
    """A row's FTU mask at its image size: its ``rle``, or its annotation file; errors name the id."""
    return read_row_truth(row, shape)[0]


def read_row_truth(row: pd.Series, shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(FTU mask uint8, region-of-interest bool mask or None) of a row at its image size.

    The ROI is None when the whole image is annotated (every Kaggle row); otherwise only pixels inside it
    are annotated, and training and validation count only those.
    """
    shape = shape or expected_shape(row)
    annotation = row.get("annotation_path")
    if isinstance(annotation, str) and annotation:
        from ftuseg.io.annotations import read_annotation_masks

        return read_annotation_masks(annotation, shape)
    try:
        return decode_rle(row.get("rle"), shape), None
    except FtusegError as exc:
        raise FtusegError(f"id {row['id']}: {exc}") from None
