"""Validate a data set (the competition layout or an annotation folder) and report every problem at once.

Training and prediction stop at the first bad row (with one clear message); ``ftuseg check`` instead
walks the whole data set so a user can fix a spreadsheet-edited CSV or a half-downloaded image folder
in one pass. The rules are the loaders' own (:func:`ftuseg.io.dataset.row_issues`, image decoding,
RLE validation, :func:`ftuseg.io.annotations.scan_annotation_folder`), so a data set that checks clean
also loads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ftuseg.errors import FtusegError
from ftuseg.io.dataset import (
    REQUIRED_COLUMNS,
    DataSource,
    Problem,
    index_images,
    read_csv_checked,
    row_issues,
)
from ftuseg.io.images import read_image
from ftuseg.rle import rle_runs

__all__ = ["Problem", "check_dataset", "check_split", "format_problems", "summary_line"]

SPLITS = ("train", "test")


def _strip_prefix(message: str, path: str | os.PathLike) -> str:
    """Errors raised by loaders start with the file name; the Problem record carries it separately."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def check_dataset(
    root: str | os.PathLike,
    split: str | None = None,
    decode_images: bool = True,
    progress: bool = False,
    pixel_size: float | None = None,
    organ: str | None = None,
) -> list[Problem]:
    """Every problem of the data folder ``root`` (both splits present, or only ``split``).

    Returns :class:`~ftuseg.io.dataset.Problem` records (severity ``error`` or ``warning``, file, CSV
    row, column, message) in the order found; an empty list means the data set is clean. With
    ``decode_images`` every image is fully decoded, which is the only way to find truncated files.
    An annotation folder (images + GeoJSON / mask images, no train.csv) is checked image by image;
    ``pixel_size`` / ``organ`` are then its ``--pixel-size`` / ``--organ``.
    """
    from ftuseg.io.annotations import is_annotation_folder, scan_annotation_folder

    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "data folder not found"
        return [Problem("error", str(root), what)]
    if is_annotation_folder(root):
        return scan_annotation_folder(root, pixel_size=pixel_size, organ=organ, decode=decode_images)[1]
    if pixel_size is not None or organ:
        return [Problem("error", str(root), "--pixel-size / --organ apply to annotation folders; train.csv gives "
                        "pixel_size and organ per row")]
    if split is not None:
        splits: Iterable[str] = (split,)
    else:
        splits = [s for s in SPLITS if (root / f"{s}.csv").exists()]
        if not splits:
            return [Problem("error", str(root), "no train.csv or test.csv found (nor images with annotations "
                            "beside them)")]
    problems: list[Problem] = []
    for s in splits:
        problems += check_split(DataSource(root, s), decode_images=decode_images, progress=progress)
    meta = root / "meta.csv"
    if meta.exists():
        problems += _check_meta(meta)
    return problems


def check_split(src: DataSource, decode_images: bool = True, progress: bool = False) -> list[Problem]:
    """Every problem of one split: its CSV, its rows, and the images they name."""
    csv = str(src.csv_path)
    try:
        df = read_csv_checked(src.csv_path, required=())
    except FtusegError as exc:
        return [Problem("error", csv, _strip_prefix(str(exc), csv))]
    required = REQUIRED_COLUMNS + (("rle",) if src.split == "train" else ())
    problems = [Problem("error", csv, "missing required column", column=c) for c in required if c not in df.columns]
    if "id" not in df.columns:
        return problems  # nothing else can be tied to a row or an image
    problems += row_issues(df, src.csv_path, need_rle=False, check_rle=True)
    if not src.images_dir.is_dir():
        problems.append(Problem("error", str(src.images_dir), "image folder not found"))
        return problems
    problems += _check_images(df, src, decode_images, progress)
    return problems


def _numeric_sizes(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    if "img_height" not in df.columns or "img_width" not in df.columns:
        return None
    h = pd.to_numeric(df["img_height"], errors="coerce").to_numpy(dtype=float)
    w = pd.to_numeric(df["img_width"], errors="coerce").to_numpy(dtype=float)
    return h, w


def _check_images(df: pd.DataFrame, src: DataSource, decode_images: bool, progress: bool) -> list[Problem]:
    from tqdm.auto import tqdm

    csv = str(src.csv_path)
    index = index_images(src.images_dir)
    ids = df["id"].astype(str).tolist()
    sizes = _numeric_sizes(df)
    problems: list[Problem] = []
    to_decode: list[tuple[int, str, Path]] = []
    seen: set[str] = set()
    for pos, image_id in enumerate(ids):
        if image_id == "" or image_id in seen:
            continue  # empty and repeated ids are already errors; their image is checked once
        seen.add(image_id)
        files = index.get(image_id, [])
        row = pos + 2
        if not files:
            problems.append(Problem("error", csv, f"no image {image_id}.tiff/.png/.jpg in {src.images_dir}",
                                    row=row, column="id", id=image_id))
        elif len(files) > 1:
            names = ", ".join(sorted(f.name for f in files))
            problems.append(Problem("error", csv, f"several images for one id in {src.images_dir} ({names}); "
                                    "keep one", row=row, column="id", id=image_id))
        else:
            to_decode.append((pos, image_id, files[0]))
    known = set(ids)
    for stem in sorted(set(index) - known):
        for f in index[stem]:
            problems.append(Problem("warning", str(f), f"image has no row in {src.csv_path.name}; it is ignored"))
    if not decode_images:
        return problems
    for pos, image_id, path in tqdm(to_decode, desc=f"check {src.split}", unit="img", disable=not progress):
        row = pos + 2
        try:
            img = read_image(path)
        except FtusegError as exc:
            problems.append(Problem("error", str(path), _strip_prefix(str(exc), path), row=row, id=image_id))
            continue
        h, w = img.shape[:2]
        del img
        csv_h = csv_w = None
        if sizes is not None and np.isfinite(sizes[0][pos]) and np.isfinite(sizes[1][pos]):
            csv_h, csv_w = int(sizes[0][pos]), int(sizes[1][pos])
            if (csv_h, csv_w) != (h, w):
                cols = [c for c, a, b in (("img_height", csv_h, h), ("img_width", csv_w, w)) if a != b]
                problems.append(Problem(
                    "error", str(path), f"image is {h}x{w} (HxW) but {src.csv_path.name} says "
                    f"img_height={csv_h}, img_width={csv_w}", row=row, column="/".join(cols), id=image_id))
        if csv_h is None and "rle" in df.columns:
            # row_issues could not check the RLE without a size from the CSV; the image gives one
            try:
                rle_runs(df["rle"].iat[pos], (h, w))
            except FtusegError as exc:
                problems.append(Problem("error", csv, str(exc), row=row, column="rle", id=image_id))
    return problems


def _check_meta(path: Path) -> list[Problem]:
    try:
        meta = read_csv_checked(path, required=("id",))
    except FtusegError as exc:
        return [Problem("error", str(path), _strip_prefix(str(exc), path))]
    dup = meta["id"][meta["id"].duplicated()]
    return [Problem("warning", str(path), f"duplicate id {i!r}; the first row is used", column="id", id=i)
            for i in sorted(set(dup))]


def format_problems(problems: Iterable[Problem]) -> list[str]:
    """One line per problem: ``error: FILE: row N (id X): column C: message``."""
    return [f"{p.severity}: {p}" for p in problems]


def summary_line(problems: list[Problem], root: str | os.PathLike) -> str:
    n_err = sum(p.severity == "error" for p in problems)
    n_warn = len(problems) - n_err
    if not problems:
        return f"{root}: OK, no problems found"
    return (f"{root}: {n_err} error{'s' if n_err != 1 else ''}, {n_warn} warning{'s' if n_warn != 1 else ''}"
            + ("" if n_err else " (usable)"))
