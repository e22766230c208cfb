"""Registry of per-image output formats: each format is one small module here that registers a writer.

``finalize_slide`` hands every writer a :class:`SlideOutput` (the finished mask store and what is known
about the image) and records the path it returns. A new format is one new module, imported below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Write order: formats that trace polygons first, so objects are counted once whatever is requested.
_MODULES = ("geojson", "ome_tiff", "prob", "png", "rle", "overlay")


@dataclass
class SlideOutput:
    """What a writer may use: the 0/1 mask (a zarr array), the slide folder and the image's facts."""

    image_path: Path
    slide_dir: Path
    stem: str
    mask: Any
    pixel_size: float
    organ: str | None
    overlay_size: int
    polygons: Iterator[Any]  # objects of the mask, traced region by region (consume at most once)


@dataclass(frozen=True)
class OutputFormat:
    name: str
    write: Callable[[SlideOutput], Path]
    traces_polygons: bool = False


_REGISTRY: dict[str, OutputFormat] = {}


def register(name: str, traces_polygons: bool = False) -> Callable[[Callable[[SlideOutput], Path]], Callable]:
    """Decorator: make ``write(out) -> path`` the writer of ``--formats name``."""

    def deco(write: Callable[[SlideOutput], Path]) -> Callable[[SlideOutput], Path]:
        _REGISTRY[name] = OutputFormat(name, write, traces_polygons)
        return write

    return deco


def output_formats() -> dict[str, OutputFormat]:
    """Every registered format, in write order."""
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return dict(_REGISTRY)
