"""``overlay``: a downsampled image of the slide with the predicted outlines drawn on it."""

from __future__ import annotations

from pathlib import Path

from ftuseg.io.readers import open_slide
from ftuseg.outputs.formats import SlideOutput, register
from ftuseg.outputs.overlay import write_overlay


@register("overlay")
def write(out: SlideOutput) -> Path:
    with open_slide(out.image_path) as reader:
        thumb = reader.thumbnail(out.overlay_size)
    path = out.slide_dir / "overlay.png"
    write_overlay(path, thumb, out.mask)
    return path
