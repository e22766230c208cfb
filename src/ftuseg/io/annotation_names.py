"""Annotation folder naming: which file is an image, and which files beside it annotate it.

Image ``NAME.EXT`` is annotated by ``NAME.geojson`` / ``NAME.json`` or ``NAME_mask.png|tif|tiff`` /
``NAME.mask.png|tif|tiff``; files named as masks are never images (see :mod:`ftuseg.io.annotations`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ftuseg.io.images import IMAGE_EXTENSIONS

ANNOTATIONS_CSV = "annotations.csv"
IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", *IMAGE_EXTENSIONS)
GEOJSON_SUFFIXES = (".geojson", ".json")
MASK_MARKERS = ("_mask", ".mask")
MASK_SUFFIXES = (".png", ".tif", ".tiff")


# ------------------------------------------------------------------------------------------------
# File naming
def image_stem(path: str | os.PathLike) -> str | None:
    """``NAME`` of an image file ``NAME.EXT``; None for non-images and for mask files (``*_mask.png``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            stem = name[: -len(suffix)]
            return None if not stem or stem.lower().endswith(MASK_MARKERS) else stem
    return None


def is_mask_file(path: str | os.PathLike) -> bool:
    """An image-format file named as a mask (``*_mask.*`` / ``*.mask.*``): an annotation, never an image."""
    lower = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return lower[: -len(suffix)].endswith(MASK_MARKERS)
    return False


def annotation_candidates(image_path: str | os.PathLike) -> list[Path]:
    """The files that may annotate ``image_path`` by the naming rule, whether they exist or not."""
    image_path = Path(image_path)
    stem = image_stem(image_path) or image_path.stem
    folder = image_path.parent
    out = [folder / f"{stem}{s}" for s in GEOJSON_SUFFIXES]
    out += [folder / f"{stem}{m}{s}" for m in MASK_MARKERS for s in MASK_SUFFIXES]
    return out


def find_annotations(image_path: str | os.PathLike) -> list[Path]:
    """The annotation files beside ``image_path`` (existing ones, in rule order)."""
    return [p for p in annotation_candidates(image_path) if p.is_file()]


def is_geojson_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(GEOJSON_SUFFIXES)


def _rule_text(stem: str) -> str:
    return f"{stem}.geojson, {stem}.json, {stem}_mask.png or {stem}.mask.png (or .tif)"
