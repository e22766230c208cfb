"""Annotation folders: images with QuPath GeoJSON or mask images beside them, loaded into the training table.

A folder without ``train.csv`` / ``test.csv`` that holds images is an *annotation folder*. Each image
``NAME.EXT`` (``.tif .tiff .ome.tif .png .jpg .jpeg .bmp``) is annotated by the one file beside it named

* ``NAME.geojson`` or ``NAME.json``: QuPath GeoJSON (a FeatureCollection, a Feature, or a bare list of
  features); Polygon / MultiPolygon with holes, in full-resolution pixel coordinates, or
* ``NAME_mask.png`` / ``NAME.mask.png`` (or ``.tif`` / ``.tiff``): a mask image of the image's size,
  binary or labels (any non-zero pixel is FTU, so instance labels work as they are).

Files named ``*_mask.*`` / ``*.mask.*`` are never images. An optional ``annotations.csv`` (columns
``image``, and optionally ``annotation``, ``organ``, ``pixel_size``, ``group``; paths relative to the
folder) lists the images explicitly instead; an empty ``annotation`` cell falls back to the rule above.

GeoJSON classes: features classified as an FTU class (Glomerulus, Crypt, Alveolus, Gland, White pulp,
FTU; case-insensitive, a derived class ``Glomerulus: x`` counts as its base) or not classified at all
are FTUs. Features classified ``Region*`` / ``Region...`` or ``ROI`` are regions of interest: when an
image has any, only pixels inside them are annotated (tiles are centred inside them, loss and validation
Dice count only there). Other classes are ignored with a warning.

The folder loads into the same table as the Kaggle layout (``id``, ``organ``, ``pixel_size``,
``img_height``, ``img_width``, ``image_path``, ``group``) plus ``annotation_path``; masks come from
:func:`read_annotation_masks` instead of an RLE column, so folds, tiling, augmentation, thresholds and
evaluation are unchanged.

This module scans folders; :mod:`ftuseg.io.annotation_names` holds the naming rule,
:mod:`ftuseg.io.annotation_formats` reads one GeoJSON or mask file and :mod:`ftuseg.io.annotation_export`
writes Kaggle rows as a folder. Their public names are importable from here too.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftuseg.errors import FtusegError, FtusegWarning
from ftuseg.io.annotation_export import export_kaggle_annotations, main
from ftuseg.io.annotation_formats import (
    FTU_CLASS_ORGANS,
    OUTSIDE_TOLERANCE,
    ROI_CLASS_HINT,
    Annotation,
    check_mask_file,
    class_kind,
    load_annotation,
    mask_image_shape,
    parse_geojson,
    rasterize_polygons,
    read_annotation_masks,
    read_mask_image,
)
from ftuseg.io.annotation_names import (
    ANNOTATIONS_CSV,
    GEOJSON_SUFFIXES,
    IMAGE_SUFFIXES,
    MASK_MARKERS,
    MASK_SUFFIXES,
    _rule_text,
    annotation_candidates,
    find_annotations,
    image_stem,
    is_geojson_file,
    is_mask_file,
)
from ftuseg.io.dataset import KNOWN_ORGANS, Problem, read_csv_checked

# the public names of the annotation modules, importable from here as before the split
__all__ = [
    "ANNOTATIONS_CSV", "FTU_CLASS_ORGANS", "GEOJSON_SUFFIXES", "IMAGE_SUFFIXES", "MASK_MARKERS", "MASK_SUFFIXES",
    "OUTSIDE_TOLERANCE", "ROI_CLASS_HINT", "Annotation", "annotation_candidates", "check_mask_file", "class_kind",
    "export_kaggle_annotations", "find_annotations", "image_header", "image_stem", "is_annotation_folder",
    "is_geojson_file", "is_mask_file", "load_annotation", "load_annotation_table", "main", "mask_image_shape",
    "parse_geojson", "rasterize_polygons", "read_annotation_masks", "read_mask_image", "scan_annotation_folder",
]


def is_annotation_folder(root: str | os.PathLike) -> bool:
    """A folder without ``train.csv`` / ``test.csv`` that holds ``annotations.csv`` or images."""
    root = Path(root)
    if not root.is_dir() or (root / "train.csv").exists() or (root / "test.csv").exists():
        return False
    if (root / ANNOTATIONS_CSV).is_file():
        return True
    with os.scandir(root) as entries:
        return any(image_stem(e.name) for e in entries if e.is_file() and not e.name.startswith("."))


# ------------------------------------------------------------------------------------------------
# The folder -> the training table
def image_header(path: Path) -> tuple[int, int, float | None]:
    """(height, width, µm/px or None) of an image from its header (TIFF: tags/OME; others: dpi)."""
    from ftuseg.io.images import check_image_file, is_tiff

    check_image_file(path)
    if is_tiff(path):
        from ftuseg.io.readers import open_slide

        with open_slide(path) as slide:
            return slide.height, slide.width, slide.mpp
    from PIL import Image

    from ftuseg.io.readers import plausible_mpp

    try:
        with Image.open(path) as im:
            width, height = im.size
            dpi = im.info.get("dpi")
    except Exception as exc:
        from ftuseg.errors import ImageReadError

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageReadError(f"{path}: cannot decode image ({reason}); the file is truncated, corrupt or "
                             "not an image") from None
    try:
        mpp = plausible_mpp(25400.0 / float(dpi[0])) if dpi and float(dpi[0]) > 0 else None
    except (TypeError, ValueError, IndexError):
        mpp = None
    return int(height), int(width), mpp


@dataclass
class _Entry:
    image: Path
    annotation: Path | None
    row: int | None = None  # annotations.csv line (header = 1)
    organ: str | None = None
    pixel_size: float | None = None
    group: str | None = None


def _cell_text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def _entries_from_csv(root: Path) -> tuple[list[_Entry], list[Problem]]:
    csv_path = root / ANNOTATIONS_CSV
    file = str(csv_path)
    try:
        df = read_csv_checked(csv_path, required=("image",))
    except FtusegError as exc:
        msg = str(exc)
        return [], [Problem("error", file, msg[len(file) + 2:] if msg.startswith(file + ": ") else msg)]
    entries, problems = [], []
    for pos in range(len(df)):
        row = pos + 2
        image_cell = _cell_text(df["image"].iat[pos])
        if not image_cell:
            problems.append(Problem("error", file, "empty image path", row=row, column="image"))
            continue
        image = root / image_cell
        if not image.is_file():
            problems.append(Problem("error", file, f"image {image_cell!r} not found in {root}", row=row,
                                    column="image"))
            continue
        annotation = None
        ann_cell = _cell_text(df["annotation"].iat[pos]) if "annotation" in df.columns else ""
        if ann_cell:
            annotation = root / ann_cell
            if not annotation.is_file():
                problems.append(Problem("error", file, f"annotation {ann_cell!r} not found in {root}", row=row,
                                        column="annotation"))
                continue
            if not (is_geojson_file(annotation) or annotation.name.lower().endswith(MASK_SUFFIXES)):
                problems.append(Problem("error", file, f"annotation {ann_cell!r} is neither GeoJSON "
                                        f"({', '.join(GEOJSON_SUFFIXES)}) nor a mask image "
                                        f"({', '.join(MASK_SUFFIXES)})", row=row, column="annotation"))
                continue
        entry = _Entry(image, annotation, row=row)
        if "organ" in df.columns:
            entry.organ = _cell_text(df["organ"].iat[pos]) or None
        if "group" in df.columns:
            entry.group = _cell_text(df["group"].iat[pos]) or None
        if "pixel_size" in df.columns:
            cell = df["pixel_size"].iat[pos]
            if _cell_text(cell):
                value = pd.to_numeric(pd.Series([cell]), errors="coerce").iat[0]
                if pd.isna(value) or not np.isfinite(value) or value <= 0:
                    problems.append(Problem("error", file, f"{_cell_text(cell)!r} must be a positive number "
                                            "(micrometres per pixel)", row=row, column="pixel_size"))
                    continue
                entry.pixel_size = float(value)
        entries.append(entry)
    listed = {e.image.resolve() for e in entries} | {e.annotation.resolve() for e in entries if e.annotation}
    with os.scandir(root) as scan:
        files = sorted(scan, key=lambda e: e.name)
    for e in files:
        if e.is_file() and not e.name.startswith(".") and image_stem(e.name) and Path(e.path).resolve() not in listed:
            problems.append(Problem("warning", e.path, f"image has no row in {ANNOTATIONS_CSV}; it is ignored"))
    return entries, problems


def _entries_from_names(root: Path) -> tuple[list[_Entry], list[Problem]]:
    entries, problems = [], []
    with os.scandir(root) as scan:
        names = sorted(e.name for e in scan if e.is_file() and not e.name.startswith("."))
    used: set[str] = set()
    for name in names:
        stem = image_stem(name)
        if stem is None:
            continue
        image = root / name
        found = find_annotations(image)
        if not found:
            problems.append(Problem("warning", str(image), f"no annotation beside it ({_rule_text(stem)}); "
                                    "image ignored"))
            continue
        if len(found) > 1:
            problems.append(Problem("error", str(image), f"several annotations ({', '.join(p.name for p in found)}); "
                                    f"keep one or name it in {ANNOTATIONS_CSV}"))
            continue
        used.add(found[0].name)
        entries.append(_Entry(image, found[0]))
    stems = {image_stem(n) for n in names} - {None}
    for name in names:
        lower = name.lower()
        if name in used or name == ANNOTATIONS_CSV or image_stem(name):
            continue
        if lower.endswith(GEOJSON_SUFFIXES) or any(lower.endswith(m + s) for m in MASK_MARKERS for s in MASK_SUFFIXES):
            base = name
            for suffix in (*GEOJSON_SUFFIXES, *(m + s for m in MASK_MARKERS for s in MASK_SUFFIXES)):
                if lower.endswith(suffix):
                    base = name[: -len(suffix)]
                    break
            if base not in stems:
                problems.append(Problem("warning", str(root / name), f"no image {base}.tif/.png/.jpg beside it; "
                                        "ignored"))
    return entries, problems


def scan_annotation_folder(
    root: str | os.PathLike,
    pixel_size: float | None = None,
    organ: str | None = None,
    decode: bool = False,
) -> tuple[pd.DataFrame, list[Problem]]:
    """Every image of an annotation folder as a table row, and every problem found, one line each.

    ``pixel_size`` / ``organ`` (the ``--pixel-size`` / ``--organ`` flags) apply to every image and override
    ``annotations.csv`` and the image metadata. Pixel size otherwise comes from ``annotations.csv``, then
    the image's metadata (OME PhysicalSizeX, TIFF resolution, dpi). Organ otherwise comes from
    ``annotations.csv``, then the FTU class the GeoJSON names. With ``decode`` every image and mask is
    fully decoded (``ftuseg check``: finds truncated files); otherwise headers are read.
    """
    from ftuseg.io.images import read_image

    root = Path(root)
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        return pd.DataFrame(), [Problem("error", str(root), f"--pixel-size must be a positive number (µm per "
                                        f"pixel), got {pixel_size}")]
    if (root / ANNOTATIONS_CSV).exists():
        entries, problems = _entries_from_csv(root)
    else:
        entries, problems = _entries_from_names(root)
    rows: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for entry in entries:
        file = str(entry.image)
        stem = image_stem(entry.image.name) or entry.image.stem
        if stem in seen:
            problems.append(Problem("error", file, f"another image is also named {stem!r} ({seen[stem].name}); "
                                    "image names (without extension) must be unique", row=entry.row))
            continue
        seen[stem] = entry.image
        if entry.annotation is None:
            found = find_annotations(entry.image)
            if len(found) != 1:
                what = "no annotation" if not found else f"several annotations ({', '.join(p.name for p in found)})"
                problems.append(Problem("error", str(root / ANNOTATIONS_CSV), f"{what} for {entry.image.name} "
                                        f"({_rule_text(stem)}); name it in the annotation column",
                                        row=entry.row, column="annotation"))
                continue
            entry.annotation = found[0]
        try:
            h, w, meta_mpp = image_header(entry.image)
            if decode:
                img = read_image(entry.image)
                if img.shape[:2] != (h, w):
                    h, w = img.shape[:2]
                del img
        except FtusegError as exc:
            msg = str(exc)
            problems.append(Problem("error", file, msg[len(file) + 2:] if msg.startswith(file + ": ") else msg,
                                    row=entry.row))
            continue
        mpp = pixel_size if pixel_size is not None else entry.pixel_size if entry.pixel_size is not None else meta_mpp
        if mpp is None:
            where = f"{ANNOTATIONS_CSV} has no pixel_size for it, " if entry.row is not None else ""
            problems.append(Problem("error", file, f"no pixel size: {where}the image's metadata has none and no "
                                    f"--pixel-size was given; give one (µm per pixel) with --pixel-size or a "
                                    f"pixel_size column in {ANNOTATIONS_CSV}", row=entry.row))
            continue
        organ_hint = None
        if is_geojson_file(entry.annotation):
            ann, found_problems = parse_geojson(entry.annotation, (h, w))
            problems += found_problems
            if ann is None:
                continue
            organ_hint = ann.organ_hint
        else:
            found_problems = check_mask_file(entry.annotation, (h, w), decode)
            problems += found_problems
            if any(p.severity == "error" for p in found_problems):
                continue
        row_organ = organ or entry.organ or organ_hint or ""
        rows.append({
            "id": stem, "organ": row_organ, "data_source": "annotations", "img_height": h, "img_width": w,
            "pixel_size": float(mpp), "image_path": str(entry.image), "annotation_path": str(entry.annotation),
            "group": entry.group,
        })
    if not rows and not any(p.severity == "error" for p in problems):
        problems.append(Problem("error", str(root), "no annotated image found: put each image's annotation beside "
                                "it (IMAGE.geojson, IMAGE_mask.png or IMAGE.mask.png) or list them in "
                                f"{ANNOTATIONS_CSV} (columns image, annotation, organ, pixel_size)"))
    table = pd.DataFrame(rows, columns=["id", "organ", "data_source", "img_height", "img_width", "pixel_size",
                                        "image_path", "annotation_path", "group"])
    unknown = sorted(set(table["id"][~table["organ"].isin(KNOWN_ORGANS)]))
    if unknown:
        names = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        problems.append(Problem("warning", str(root), f"no known organ for {names} (known: {', '.join(KNOWN_ORGANS)}; "
                                f"give --organ or an organ column in {ANNOTATIONS_CSV}); organ-specific "
                                "settings fall back to the defaults"))
    return table, problems


def load_annotation_table(
    root: str | os.PathLike, pixel_size: float | None = None, organ: str | None = None,
) -> pd.DataFrame:
    """The training table of an annotation folder; the first error raises, warnings go to ``warnings``."""
    table, problems = scan_annotation_folder(root, pixel_size=pixel_size, organ=organ)
    errors = [str(p) for p in problems if p.severity == "error"]
    if errors:
        raise FtusegError(errors[0] + (f" (and {len(errors) - 1} more problems; run `ftuseg check`)"
                                       if len(errors) > 1 else ""))
    for p in problems:
        warnings.warn(str(p), FtusegWarning, stacklevel=2)
    return table.reset_index(drop=True)


if __name__ == "__main__":
    raise SystemExit(main())
