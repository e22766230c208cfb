"""Pixel size (µm per pixel) from image metadata: OME, TIFF resolution tags, Aperio descriptions, PNG/JPEG dpi.

A value outside the range of scanned microscopy is a software default (72/96/300 dpi), not optics, and
is reported as "no pixel size" rather than trusted.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import Any

# Micrometres per unit for OME length units (PhysicalSizeXUnit).
_OME_UNITS_UM = {
    "m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0,
    "nm": 1e-3, "pm": 1e-6, "Å": 1e-4, "A": 1e-4, "in": 25400.0, "ft": 304800.0,
}
# Scanned microscopy lies within this range; anything outside is a default (72/96/300 dpi) written by
# software that knew nothing about the optics, so it is treated as "no pixel size" rather than trusted.
PLAUSIBLE_MPP = (0.01, 20.0)


def plausible_mpp(mpp: float | None) -> float | None:
    """``mpp`` if it looks like a real microscope pixel size, else None."""
    if mpp is None or not math.isfinite(mpp):
        return None
    return float(mpp) if PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1] else None


def ome_mpp(xml: str | None) -> float | None:
    """PhysicalSizeX of the first OME image, converted to µm from PhysicalSizeXUnit (default µm)."""
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.split("}")[-1] == "Pixels":
            value = el.attrib.get("PhysicalSizeX")
            if value is None:
                return None
            unit = el.attrib.get("PhysicalSizeXUnit", "µm")
            if unit not in _OME_UNITS_UM:
                return None
            try:
                return float(value) * _OME_UNITS_UM[unit]
            except ValueError:
                return None
    return None


def tiff_tag_mpp(page: Any) -> float | None:
    """µm/px from XResolution (pixels per unit) and ResolutionUnit (inch / cm; none means unknown)."""
    xres = page.tags.get("XResolution")
    unit = page.tags.get("ResolutionUnit")
    if xres is None:
        return None
    value = xres.value
    try:
        ppu = value[0] / value[1] if isinstance(value, tuple) else float(value)
    except (TypeError, ZeroDivisionError, IndexError):
        return None
    unit_value = int(unit.value) if unit is not None else 2  # TIFF default is inch
    um_per_unit = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}.get(unit_value)  # 4/5: mm/µm (non-standard)
    if um_per_unit is None or ppu <= 0:
        return None
    return um_per_unit / ppu


def description_mpp(description: str | None) -> float | None:
    """Aperio-style ``MPP = 0.2520`` in ImageDescription (kept by many converters)."""
    if not description:
        return None
    m = re.search(r"\bMPP\s*=\s*([0-9.]+(?:[eE][-+]?\d+)?)", description)
    return float(m.group(1)) if m else None


def dpi_mpp(dpi: Any) -> float | None:
    """µm/px from a Pillow ``info["dpi"]`` value (pixels per inch), when plausible."""
    try:
        per_inch = float(dpi[0]) if isinstance(dpi, (tuple, list)) else float(dpi)
    except (TypeError, ValueError, IndexError):
        return None
    return plausible_mpp(25400.0 / per_inch) if per_inch > 0 else None


def pillow_file_mpp(path: Any) -> float | None:
    """The dpi-derived pixel size of a png/jpg/bmp file, read from its header without decoding pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return dpi_mpp(im.info.get("dpi")) if im.info.get("dpi") else None
    except Exception:  # an undecodable file has no pixel size; reading it reports the real problem
        return None
