"""A deterministic synthetic data set in the exact Kaggle layout (the embedded default).

Each image is pink stroma-like texture with nuclei, pale background holes, and FTU-like objects whose
look depends on the organ (glomeruli with a Bowman's space, crypts/glands with a lumen and a nuclear
rim, dense white pulp, thin-walled alveoli). FTU sizes are physical (µm), so their size in pixels
follows each image's ``pixel_size`` the way real tissue does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ftuseg.io.atomic import atomic_save, atomic_write
from ftuseg.io.dataset import TEST_COLUMNS, TRAIN_COLUMNS
from ftuseg.rle import encode_rle

# organ -> (HuBMAP pixel size µm/px, FTU radius µm, aspect range)
ORGANS: dict[str, tuple[float, float, tuple[float, float]]] = {
    "kidney": (0.5, 11.0, (1.0, 1.3)),
    "largeintestine": (0.229, 7.0, (1.8, 2.6)),
    "lung": (0.7562, 16.0, (1.0, 1.4)),
    "prostate": (0.4, 12.0, (1.1, 1.8)),  # HuBMAP prostate (6.263) would make glands sub-pixel here
    "spleen": (0.4945, 14.0, (1.0, 1.3)),
}
HPA_PIXEL_SIZE = 0.4


@dataclass(frozen=True)
class SynthSpec:
    n_train: int = 40
    n_test: int = 12
    min_size: int = 224
    max_size: int = 352
    seed: int = 0
    organs: tuple[str, ...] = tuple(ORGANS)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = rng.standard_normal(shape).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigma)
    return field / (field.std() + 1e-6)


def _blob_polygon(rng: np.random.Generator, cx: float, cy: float, r: float, aspect: float) -> np.ndarray:
    """An irregular closed outline: an ellipse with low-frequency radial wobble, randomly rotated."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    wobble = 1 + sum(rng.uniform(-0.08, 0.08) * np.cos(k * t + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
    theta = rng.uniform(0, np.pi)
    x = a * np.cos(t) * wobble
    y = b * np.sin(t) * wobble
    xr = cx + x * np.cos(theta) - y * np.sin(theta)
    yr = cy + x * np.sin(theta) + y * np.cos(theta)
    return np.stack([xr, yr], axis=1).round().astype(np.int32)


def _nuclei(rng: np.random.Generator, canvas: np.ndarray, region: np.ndarray, density: float, radius: float,
            colour: tuple[int, int, int]) -> None:
    """Stamp dark nuclei at random inside ``region`` (bool mask) with the given areal density."""
    ys, xs = np.nonzero(region)
    if ys.size == 0:
        return
    n = int(ys.size * density / (np.pi * radius**2 + 1e-6))
    idx = rng.integers(0, ys.size, size=n)
    for y, x in zip(ys[idx], xs[idx], strict=True):
        rr = max(1, int(round(radius * rng.uniform(0.7, 1.3))))
        cv2.circle(canvas, (int(x), int(y)), rr, colour, -1, lineType=cv2.LINE_AA)


def synth_image(rng: np.random.Generator, organ: str, height: int, width: int,
                pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic RGB image (H, W, 3) uint8 and its FTU mask (H, W) uint8."""
    _, radius_um, (amin, amax) = ORGANS[organ]
    r_px = radius_um / pixel_size
    # stroma: eosin pink with smooth variation
    tone = _smooth_noise(rng, (height, width), sigma=max(4.0, r_px / 2))
    base = np.array([225, 160, 195], np.float32) + rng.normal(0, 8, 3).astype(np.float32)
    img = base[None, None, :] + tone[..., None] * np.array([10, 14, 10], np.float32)
    # background holes (no tissue)
    holes = _smooth_noise(rng, (height, width), sigma=max(10.0, r_px * 1.5)) > 1.3
    img[holes] = np.array([242, 238, 240], np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    tissue = ~holes
    _nuclei(rng, img, tissue, density=0.04, radius=max(1.0, 0.12 * r_px), colour=(110, 60, 150))

    mask = np.zeros((height, width), np.uint8)
    n_objects = int(rng.integers(2, 6))
    for _ in range(n_objects):
        r = r_px * rng.uniform(0.75, 1.25)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        poly = _blob_polygon(rng, cx, cy, r, rng.uniform(amin, amax))
        obj = np.zeros_like(mask)
        cv2.fillPoly(obj, [poly], 1)
        inside = obj.astype(bool)
        if organ == "kidney":
            # Bowman's space: a pale ring outside the tuft, then a dense purple tuft
            ring = cv2.dilate(obj, np.ones((5, 5), np.uint8), iterations=max(1, int(r * 0.08))).astype(bool)
            img[ring & ~inside] = (236, 222, 232)
            img[inside] = (200, 120, 180)
            _nuclei(rng, img, inside, density=0.35, radius=max(1.0, 0.08 * r), colour=(90, 40, 140))
        elif organ in ("largeintestine", "prostate"):
            # gland: a rim of nuclei around a pale lumen
            img[inside] = (215, 175, 210) if organ == "largeintestine" else (222, 185, 205)
            lumen = cv2.erode(obj, np.ones((3, 3), np.uint8), iterations=max(1, int(r * 0.3))).astype(bool)
            _nuclei(rng, img, inside & ~lumen, density=0.45, radius=max(1.0, 0.07 * r), colour=(80, 40, 130))
            img[lumen] = (245, 240, 245)
        elif organ == "spleen":
            img[inside] = (150, 90, 170)
            _nuclei(rng, img, inside, density=0.5, radius=max(1.0, 0.05 * r), colour=(70, 30, 120))
        else:  # lung alveolus: thin pink wall, empty air space
            wall = cv2.dilate(obj, np.ones((3, 3), np.uint8), iterations=max(1, int(r * 0.06))).astype(bool)
            img[wall & ~inside] = (210, 130, 175)
            img[inside] = (248, 244, 247)
        mask |= obj
    noise = rng.normal(0, 4, img.shape).astype(np.float32)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 0.6)
    return img, mask


def make_synthetic_dataset(out_dir: str | os.PathLike, spec: SynthSpec = SynthSpec()) -> Path:
    """Write train/test splits in the Kaggle layout under ``out_dir``; returns ``out_dir``.

    Layout: ``train.csv``, ``train_images/``, ``test.csv``, ``test_images/``, ``test_solution.csv``
    (the hidden truth, for ``ftuseg evaluate``) and ``meta.csv`` (a ``group`` per simulated patient).
    Images are PNG, with every fifth one a TIFF, as in a mixed real-world folder.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(spec.seed)
    rows, meta = [], []
    n_total = spec.n_train + spec.n_test
    for k in range(n_total):
        split = "train" if k < spec.n_train else "test"
        organ = spec.organs[k % len(spec.organs)]
        hubmap = rng.random() < 0.5
        pixel_size = ORGANS[organ][0] if hubmap else HPA_PIXEL_SIZE
        h = int(rng.integers(spec.min_size, spec.max_size + 1))
        w = int(rng.integers(spec.min_size, spec.max_size + 1))
        img, mask = synth_image(rng, organ, h, w, pixel_size)
        image_id = str(10000 + k)
        ext = ".tiff" if k % 5 == 4 else ".png"
        folder = out / f"{split}_images"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{image_id}{ext}"
        if ext == ".tiff":
            import tifffile

            atomic_save(path, lambda tmp, im=img: tifffile.imwrite(tmp, im, photometric="rgb"), suffix=".tiff")
        else:
            ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            with atomic_write(path, "wb") as fh:
                fh.write(buf.tobytes())
        rows.append({
            "split": split, "id": image_id, "organ": organ, "data_source": "HuBMAP" if hubmap else "HPA",
            "img_height": h, "img_width": w, "pixel_size": pixel_size, "tissue_thickness": 4 if hubmap else 10,
            "rle": encode_rle(mask), "age": int(rng.integers(20, 80)),
            "sex": "Male" if rng.random() < 0.5 else "Female",
        })
        meta.append({"id": image_id, "group": f"patient-{k // 4}", "ftu": organ})
    df = pd.DataFrame(rows)
    train, test = df[df["split"] == "train"], df[df["split"] == "test"]
    _write_csv(out / "train.csv", train[list(TRAIN_COLUMNS)])
    _write_csv(out / "test.csv", test[list(TEST_COLUMNS)])
    _write_csv(out / "test_solution.csv", test[list(TRAIN_COLUMNS)])
    _write_csv(out / "meta.csv", pd.DataFrame(meta))
    return out


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_write(path) as fh:
        df.to_csv(fh, index=False)
