"""Per-image outputs that people open in other tools: QuPath GeoJSON, OME-TIFF masks, PNGs, overlays."""

# organ -> (FTU class name, RGB colour) as shown in QuPath
FTU_CLASSES: dict[str, tuple[str, tuple[int, int, int]]] = {
    "kidney": ("Glomerulus", (230, 60, 60)),
    "largeintestine": ("Crypt", (60, 160, 230)),
    "lung": ("Alveolus", (80, 200, 120)),
    "prostate": ("Gland", (230, 160, 40)),
    "spleen": ("White pulp", (160, 90, 220)),
}
DEFAULT_CLASS: tuple[str, tuple[int, int, int]] = ("FTU", (255, 200, 0))


def ftu_class(organ: str | None) -> tuple[str, tuple[int, int, int]]:
    """The FTU class (name, colour) for an organ; a generic "FTU" class when the organ is unknown."""
    return FTU_CLASSES.get(str(organ).strip().lower(), DEFAULT_CLASS) if organ else DEFAULT_CLASS
