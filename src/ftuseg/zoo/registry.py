"""The registry of shipped models: one folder per model under ``src/ftuseg/zoo/models/<name>/``.

A model folder is an ordinary ftuseg run folder as far as prediction is concerned (``config.yaml``
beside the weights, optional ``thresholds.json``), so everything that takes run folders takes it:
images, folders, CSVs, whole slides, ``--out-dir``, Ray, the ONNX engine. What differs:

- the weights are ``model.safetensors`` (fp16 parameters, restored to fp32 at load), never pickled;
- ``zoo.json`` records the model's facts (organs, stain, µm/px, size) and the SHA-256 of the weights,
  checked every time they are loaded (:func:`ftuseg.models.checkpoint.load_safetensors_checkpoint`);
- ``MODEL_CARD.md`` says what the model is, what it was trained on and how well it does;
- nothing is ever written into the folder (it is part of the installed package): ONNX exports of a
  shipped model go to the user cache, keyed by the weights' hash (:func:`onnx_cache_path`).

``FTUSEG_ZOO`` (folders separated by ``os.pathsep``) replaces the shipped folder as the place models
are looked up, for tests and for a lab's own packaged models.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftuseg.errors import FtusegError
from ftuseg.models.checkpoint import MANIFEST_NAME, SAFETENSORS_NAME, sha256_file

if TYPE_CHECKING:
    from ftuseg.inference.predictor import Predictor

ZOO_ENV = "FTUSEG_ZOO"
CARD_NAME = "MODEL_CARD.md"
MANIFEST_FORMAT = "ftuseg-zoo-v1"
# lower-case letters, digits, '.', '_' and '-': a name that is also a safe folder name and CLI word
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def shipped_root() -> Path:
    """The folder of the models that ship inside the ftuseg package."""
    return Path(__file__).resolve().parent / "models"


def zoo_roots() -> list[Path]:
    """Where models are looked up: ``$FTUSEG_ZOO`` (os.pathsep-separated folders) if set, else the shipped folder."""
    env = os.environ.get(ZOO_ENV)
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [shipped_root()]


def normalise_stain(stain: str) -> str:
    """``H&E``, ``HE``, ``h-e`` -> ``he``; ``PAS`` -> ``pas``: stains compared as the same words."""
    return re.sub(r"[\s&_+\-/.]", "", str(stain)).lower()


@dataclass(frozen=True)
class ZooModel:
    """One shipped model: its folder and the facts its ``zoo.json`` records."""

    name: str
    path: Path
    organs: tuple[str, ...]
    stain: str
    mpp: dict[str, float]
    size_bytes: int
    sha256: str
    arch: str
    encoder: str
    tile_size: int
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def weights(self) -> Path:
        return self.path / str(self.manifest.get("file", SAFETENSORS_NAME))

    @property
    def card_path(self) -> Path:
        return self.path / CARD_NAME

    def covers(self, organ: str | None) -> bool:
        return organ is not None and str(organ) in self.organs

    def verify(self) -> None:
        """Check the weights' size and SHA-256 against the manifest; one clear line naming the file if not."""
        if not self.weights.is_file():
            raise FtusegError(f"{self.weights}: weights of model {self.name!r} are missing")
        actual = sha256_file(self.weights)
        if actual != self.sha256:
            raise FtusegError(f"{self.weights}: SHA-256 {actual[:16]}... does not match {self.sha256[:16]}... "
                              f"recorded in {MANIFEST_NAME}: the model file is corrupt or was modified")

    def mpp_text(self) -> str:
        return ", ".join(f"{self.mpp[o]:g}" for o in self.organs if o in self.mpp)


def read_model(folder: str | os.PathLike) -> ZooModel:
    """The model in ``folder`` (its ``zoo.json``); one clear line naming the file when it is not valid."""
    folder = Path(folder)
    manifest = folder / MANIFEST_NAME
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise FtusegError(f"{folder}: not a shipped model folder (no {MANIFEST_NAME})") from None
    except (OSError, ValueError) as exc:
        raise FtusegError(f"{manifest}: invalid model manifest ({exc})") from None
    try:
        organs = tuple(str(o) for o in data["organs"])
        model = ZooModel(
            name=str(data["name"]), path=folder, organs=organs, stain=str(data["stain"]),
            mpp={str(k): float(v) for k, v in data["mpp"].items()}, size_bytes=int(data["size_bytes"]),
            sha256=str(data["sha256"]).lower(), arch=str(data["arch"]), encoder=str(data["encoder"]),
            tile_size=int(data["tile_size"]), manifest=data,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FtusegError(f"{manifest}: invalid model manifest (field {exc})") from None
    if not organs:
        raise FtusegError(f"{manifest}: invalid model manifest (no organs)")
    return model


def list_models(roots: Sequence[str | os.PathLike] | None = None) -> list[ZooModel]:
    """Every model in the zoo folders, sorted by name (the first folder wins when two hold one name)."""
    found: dict[str, ZooModel] = {}
    for root in (Path(r) for r in (roots if roots is not None else zoo_roots())):
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file()):
            model = read_model(folder)
            found.setdefault(model.name, model)
    return [found[k] for k in sorted(found)]


def get_model(name: str, roots: Sequence[str | os.PathLike] | None = None) -> ZooModel:
    """The model called ``name``; an unknown name is one line listing the known ones."""
    models = list_models(roots)
    for m in models:
        if m.name == name:
            return m
    known = ", ".join(m.name for m in models) or "none are installed"
    raise FtusegError(f"unknown model {name!r}; shipped models: {known} (ftuseg models lists them)")


def model_dir(name: str) -> Path:
    """The folder of model ``name``: a run folder for every command that takes run folders."""
    return get_model(name).path


def resolve_models(names: Sequence[str]) -> list[Path]:
    """``--model`` names -> their folders, in order."""
    return [model_dir(n) for n in names]


def model_card(name: str) -> str:
    """The Markdown model card of ``name`` (``ftuseg models show NAME``)."""
    model = get_model(name)
    if not model.card_path.is_file():
        raise FtusegError(f"{model.card_path}: model {name!r} has no model card")
    return model.card_path.read_text(encoding="utf-8")


def load_model(name: str, device: str = "auto", tta: bool | str | None = None, engine: str = "torch",
               tta_scales: list[float] | str | None = None) -> Predictor:
    """``ftuseg.load_model("glomeruli-pas")``: a :class:`~ftuseg.inference.predictor.Predictor` of a shipped
    model (its pixel sizes and thresholds included); the weights' SHA-256 is checked as they load.

    ``predictor.predict_mask(image, pixel_size, organ)`` then segments an RGB array; the organ must be
    one the model was trained on (``ftuseg models`` lists them)."""
    from ftuseg.inference.predictor import Predictor

    return Predictor.from_runs([model_dir(name)], device=device, tta=tta, engine=engine,
                               tta_scales=tta_scales)


def zoo_manifest_of(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a shipped model's weights file, or None for an ordinary checkpoint."""
    ckpt = Path(checkpoint)
    manifest = ckpt.parent / MANIFEST_NAME
    if ckpt.suffix != ".safetensors" or not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def onnx_cache_path(checkpoint: str | os.PathLike) -> Path:
    """Where the ONNX export of a shipped model goes: the user cache, keyed by the weights' SHA-256.

    A model folder is part of the installed package and must never receive generated files; keying by
    the hash means a changed model never reuses an old export. Creates the cache folder."""
    ckpt = Path(checkpoint)
    data = zoo_manifest_of(ckpt) or {}
    sha = str(data.get("sha256") or sha256_file(ckpt))
    name = re.sub(r"[^a-z0-9._-]", "_", str(data.get("name") or ckpt.parent.name).lower())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ftuseg" / "onnx"
    root.mkdir(parents=True, exist_ok=True)
    return root / f"zoo-{name}-{sha[:24]}.onnx"


def format_models_table(models: Sequence[ZooModel]) -> str:
    """``ftuseg models``: name first, then organ(s), stain, µm/px (per organ, same order) and file size."""
    rows = [("name", "organs", "stain", "µm/px", "size")]
    for m in models:
        rows.append((m.name, ", ".join(m.organs), m.stain, m.mpp_text(), f"{m.size_bytes / 1e6:.1f} MB"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
