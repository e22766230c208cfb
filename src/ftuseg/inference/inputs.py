"""What ``ftuseg predict`` can read: a Kaggle-layout folder, one image, a folder of images, or a CSV.

Every input becomes a :class:`PredictInput` (id, image file, pixel size, organ, ground truth if known).
Pixel size comes from ``--pixel-size`` first, then a ``pixel_size`` column, then the image metadata;
when none exists the run stops before predicting anything, naming the file: a wrong guess would
silently change every object's size.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ftuseg.errors import FtusegError
from ftuseg.io.annotations import is_mask_file
from ftuseg.io.pixel_size import pillow_file_mpp
from ftuseg.io.readers import PILLOW_EXTENSIONS, is_slide_file, slide_stem


@dataclass
class PredictInput:
    id: str
    image_path: Path
    pixel_size: float | None = None  # µm/px; None: read from the image metadata
    organ: str | None = None
    rle: str | None = None  # ground truth when the source has it (Kaggle train.csv)
    img_height: int | None = None
    img_width: int | None = None


def _index_slides(folder: Path, skip_masks: bool = False) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        # in an annotation folder NAME_mask.png annotates NAME.png: predicting it would be meaningless
        if skip_masks and is_mask_file(entry.name):
            continue
        if entry.is_file() and is_slide_file(entry.name):
            found.setdefault(slide_stem(entry.name), []).append(Path(entry.path))
    return found


def _check_unique(items: list[PredictInput], where: Path) -> list[PredictInput]:
    seen: dict[str, Path] = {}
    for it in items:
        stem = slide_stem(it.image_path)
        if stem in seen and seen[stem] != it.image_path:
            raise FtusegError(f"{where}: {seen[stem].name} and {it.image_path.name} have the same name {stem!r}; "
                              "outputs are per name, keep one")
        seen[stem] = it.image_path
    return items


def _positive(value: object, where: str) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (v > 0 and math.isfinite(v)):
        raise FtusegError(f"{where}: pixel_size {value!r} must be a positive number (micrometres per pixel)")
    return v


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    s = str(value).strip()
    return s or None


def _from_kaggle(root: Path, split: str | None) -> list[PredictInput]:
    from ftuseg.io.dataset import load_table

    table = load_table(root, split)
    items = []
    for _, row in table.iterrows():
        h, w = row.get("img_height"), row.get("img_width")
        items.append(PredictInput(
            id=str(row["id"]), image_path=Path(row["image_path"]), pixel_size=float(row["pixel_size"]),
            organ=_text(row.get("organ")), rle=(_text(row.get("rle")) or "") if "rle" in table.columns else None,
            img_height=None if h is None or pd.isna(h) else int(h),
            img_width=None if w is None or pd.isna(w) else int(w),
        ))
    return items


def _from_csv(csv_path: Path, images_dir: Path | None) -> list[PredictInput]:
    from ftuseg.io.dataset import read_csv_checked

    df = read_csv_checked(csv_path, required=())
    if "path" not in df.columns and "id" not in df.columns:
        raise FtusegError(f"{csv_path}: needs a 'path' column (image files) or an 'id' column (with an image folder)")
    folder = images_dir or csv_path.parent
    index = _index_slides(folder) if "path" not in df.columns and folder.is_dir() else {}
    items = []
    for i, row in df.iterrows():
        where = f"{csv_path}: row {i + 2}"
        if "path" in df.columns and _text(row.get("path")):
            p = Path(str(row["path"]).strip())
            p = p if p.is_absolute() else csv_path.parent / p
            if not p.is_file():
                raise FtusegError(f"{where}: image {p} not found")
        else:
            rid = _text(row.get("id"))
            if rid is None:
                raise FtusegError(f"{where}: empty path/id")
            files = index.get(rid, [])
            if not files:
                raise FtusegError(f"{where}: no image for id {rid!r} in {folder}")
            if len(files) > 1:
                raise FtusegError(f"{where}: id {rid!r} has several images in {folder} "
                                  f"({', '.join(f.name for f in files)}); keep one")
            p = files[0]
        rid = _text(row.get("id")) or slide_stem(p)
        px = _positive(row.get("pixel_size"), where) if "pixel_size" in df.columns else None
        rle = (_text(row.get("rle")) or "") if "rle" in df.columns else None
        items.append(PredictInput(id=rid, image_path=p, pixel_size=px, organ=_text(row.get("organ")), rle=rle))
    return _check_unique(items, csv_path)


def is_kaggle_folder(data: str | os.PathLike, split: str | None = None) -> bool:
    """A data folder in the competition layout (train.csv / test.csv), rather than a folder of images."""
    data = Path(data)
    return data.is_dir() and bool(split or (data / "test.csv").exists() or (data / "train.csv").exists())


def resolve_inputs(
    data: str | os.PathLike,
    pixel_size: float | None = None,
    split: str | None = None,
    images_dir: str | os.PathLike | None = None,
    organ: str | None = None,
) -> list[PredictInput]:
    """Every image to predict, with pixel size / organ from the flags first, then the table."""
    data = Path(data)
    if pixel_size is not None and not (pixel_size > 0 and math.isfinite(pixel_size)):
        raise FtusegError(f"--pixel-size must be a positive number of µm per pixel, got {pixel_size}")
    if not data.exists():
        raise FtusegError(f"{data}: input not found (expected a data folder, an image, a folder of images or a CSV)")
    if data.is_dir():
        if is_kaggle_folder(data, split):
            items = _from_kaggle(data, split)
        else:
            found = _index_slides(data, skip_masks=True)
            if not found:
                raise FtusegError(f"{data}: no images found (and no train.csv/test.csv)")
            items = []
            for stem, files in found.items():
                if len(files) > 1:
                    raise FtusegError(f"{data}: {', '.join(f.name for f in files)} have the same name {stem!r}; "
                                      "outputs are per name, keep one")
                items.append(PredictInput(id=stem, image_path=files[0]))
    elif data.suffix.lower() == ".csv":
        items = _from_csv(data, Path(images_dir) if images_dir else None)
    elif is_slide_file(data):
        items = [PredictInput(id=slide_stem(data), image_path=data)]
    else:
        raise FtusegError(f"{data}: not an image, a CSV or a folder")
    for it in items:
        if pixel_size is not None:
            it.pixel_size = float(pixel_size)
        if organ is not None:
            it.organ = organ
    return items


def metadata_pixel_size(path: str | os.PathLike) -> float | None:
    """Pixel size recorded in an image file, without decoding its pixels."""
    path = Path(path)
    if path.name.lower().endswith(PILLOW_EXTENSIONS):
        return pillow_file_mpp(path)  # from the header: a png/jpg would otherwise be decoded whole
    from ftuseg.io.readers import open_slide

    with open_slide(path) as reader:
        return reader.mpp


def require_pixel_sizes(items: list[PredictInput]) -> None:
    """Fill missing pixel sizes from metadata; stop at the first image that has none."""
    for it in items:
        if it.pixel_size is None:
            mpp = metadata_pixel_size(it.image_path)
            if mpp is None:
                raise FtusegError(
                    f"{it.image_path}: no pixel size in the image metadata; pass --pixel-size MICRONS_PER_PIXEL "
                    "or give a pixel_size column in a CSV"
                )
            it.pixel_size = mpp
