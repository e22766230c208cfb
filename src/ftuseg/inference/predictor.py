"""Ensembles of trained runs: loading, organ routing, and images in memory (through the region core)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ftuseg.config import RunConfig
from ftuseg.errors import FtusegError
from ftuseg.inference.postprocess import Thresholds
from ftuseg.inference.region import (
    OrganRoute,
    RegionPredictor,
    member_for_image,
    member_window_proba,
    organ_route,
    whole_box,
)
from ftuseg.inference.sliding_window import TileFn, parse_scales
from ftuseg.io.readers import ArraySlideReader

if TYPE_CHECKING:  # torch loads only when a member runs on it: ONNX members keep the process torch-free
    import torch


@dataclass
class Member:
    """One model of an ensemble with the geometry it was trained at."""

    tile_fn: TileFn
    cfg: RunConfig


def member_proba(member: Member, image: np.ndarray, pixel_size: float | None, organ: str | None) -> np.ndarray:
    """Probability map (H, W) in the image's own pixel grid for one member."""
    member = member_for_image(member, image.shape[0], image.shape[1], pixel_size, organ)
    return member_window_proba(member, image, pixel_size, organ)[0]


def load_thresholds(run_dirs: Sequence[str | os.PathLike]) -> Thresholds | None:
    """The ensemble's ``thresholds.json``: the first run's, plus the organs only other runs were tuned for
    (organ specialists each bring their own organs; the first run wins ties). None when no run has one."""
    thresholds = None
    for run in run_dirs:
        tpath = (Path(run) if Path(run).is_dir() else Path(run).parent) / "thresholds.json"
        if tpath.exists():
            loaded = Thresholds.load(tpath)
            if thresholds is None:
                thresholds = loaded
            else:
                for organ, values in loaded.organs.items():
                    thresholds.organs.setdefault(organ, values)
    return thresholds


def override_threshold(thresholds: Thresholds, threshold: float | None) -> Thresholds:
    """``--threshold``: one threshold for every organ (the per-organ tuned values are cleared)."""
    if threshold is not None:
        thresholds.threshold = float(threshold)
        thresholds.organs = {}
    return thresholds


class Predictor:
    """Average of several runs (folds, architectures), with thresholds from the first run.

    Runs trained with ``organs`` (organ specialists) only predict those organs: each image is averaged
    over the runs that cover its organ, and the per-organ thresholds of every run are merged. Every
    image, in memory or on disk, goes through :class:`~ftuseg.inference.region.RegionPredictor`.
    ``allow_unknown_organ``: predict organs ftuseg does not know with an all-organ run's defaults.
    """

    def __init__(self, members: Sequence[Member], thresholds: Thresholds | None = None,
                 allow_unknown_organ: bool = False):
        if not members:
            raise ValueError("a predictor needs at least one model")
        self.members = list(members)
        self.thresholds = thresholds or Thresholds(members[0].cfg.threshold, members[0].cfg.min_area_um2)
        self.allow_unknown_organ = allow_unknown_organ

    @classmethod
    def from_runs(
        cls,
        run_dirs: Sequence[str | os.PathLike],
        device: str = "auto",
        tta: bool | str | None = None,
        which: str = "best",
        engine: str = "torch",
        allow_unknown_organ: bool = False,
        tta_scales: Sequence[float] | str | None = None,
    ) -> Predictor:
        """``tta``, ``tta_scales``: override each run's own test-time augmentation (None keeps it)."""
        members = []
        for run in run_dirs:
            member = onnx_member(Path(run), device, tta, engine, which)
            if member is None:  # torch runs it, or builds the ONNX export and times the engines first
                from ftuseg.inference.engine import pick_device
                from ftuseg.models.checkpoint import load_run_model

                model, cfg = load_run_model(run, which=which)
                use_tta = cfg.tta if tta is None else tta
                member = Member(make_tile_fn(model, cfg, Path(run), pick_device(device), use_tta, engine, which), cfg)
            if tta_scales is not None:
                member.cfg = replace(member.cfg, tta_scales=parse_scales(tta_scales))
            members.append(member)
        return cls(members, load_thresholds(run_dirs), allow_unknown_organ)

    def route(self, organ: str | None) -> OrganRoute:
        """Members and post-processing for ``organ``; refuses unknown, uncovered and untuned organs."""
        return organ_route([m.cfg for m in self.members], self.thresholds, organ, self.allow_unknown_organ)

    def members_for(self, organ: str | None) -> list[Member]:
        """The members that cover ``organ``: all-organ runs plus the specialists trained on it."""
        # Thresholds() holds no per-organ values: the organ and its coverage are checked, not its tuning
        chosen = organ_route([m.cfg for m in self.members], Thresholds(), organ, self.allow_unknown_organ)
        return [self.members[i] for i in chosen.members]

    def _region_predictor(self, image: np.ndarray, pixel_size: float | None,
                          organ: str | None) -> tuple[RegionPredictor, tuple[int, int, int, int]]:
        reader = ArraySlideReader(image, pixel_size)
        return RegionPredictor(self, reader, pixel_size, organ), whole_box(reader)

    def predict_proba(self, image: np.ndarray, pixel_size: float | None = None, organ: str | None = None) -> np.ndarray:
        """Mean probability of the members that cover ``organ`` (organ specialists are routed by organ)."""
        core, box = self._region_predictor(image, pixel_size, organ)
        return core.probability(box)[0]

    def binarize(self, prob: np.ndarray, organ: str | None = None, pixel_size: float | None = None) -> np.ndarray:
        """Threshold with the organ's tuned threshold, fill small holes and drop small objects (µm²).

        A model tuned per organ refuses an organ it has no threshold for rather than silently using
        another organ's; ``--threshold`` (which clears the per-organ values) overrides that.
        """
        return self.route(organ).binarize(prob, pixel_size)

    def predict_image(self, image: np.ndarray, pixel_size: float | None = None,
                      organ: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(mask, probability) of an image held in memory: the same route as a region of a slide."""
        core, box = self._region_predictor(image, pixel_size, organ)
        mask, prob, _, _ = core.predict(box)
        return mask, prob

    def predict_mask(self, image: np.ndarray, pixel_size: float | None = None, organ: str | None = None) -> np.ndarray:
        return self.predict_image(image, pixel_size, organ)[0]


def onnx_member(run: Path, device: str, tta: bool | str | None, engine: str, which: str = "best") -> Member | None:
    """The run as an onnxruntime member without importing torch, when nothing needs torch: a CPU, an up-to-date
    ONNX export of the checkpoint, and ``--engine onnxruntime`` or an earlier measurement that picked it for
    ``auto``. None otherwise (the caller loads the model with torch). A shipped model's weights are still
    checked against their SHA-256, since the export is keyed by it."""
    import importlib.util

    from ftuseg.config import load_config
    from ftuseg.inference.engine_choice import cached_engine
    from ftuseg.inference.onnx_engine import OnnxTileFn, default_engine, fresh_export
    from ftuseg.models.checkpoint import expected_sha256, resolve_checkpoint, sha256_file

    if engine not in ("auto", "onnxruntime") or importlib.util.find_spec("onnxruntime") is None:
        return None
    if str(device) not in ("cpu", "auto") or default_engine(device) != "onnxruntime":
        return None
    ckpt = resolve_checkpoint(run, which)
    if not (ckpt.parent / "config.yaml").exists():
        return None
    cfg = load_config(ckpt.parent / "config.yaml")
    use_tta = cfg.tta if tta is None else tta
    if engine == "auto" and cached_engine(cfg, use_tta) != "onnxruntime":
        return None
    onnx_path = fresh_export(ckpt)
    if onnx_path is None:
        return None
    if ckpt.suffix == ".safetensors" and sha256_file(ckpt) != expected_sha256(ckpt):
        return None  # the torch path refuses it with the full message
    return Member(OnnxTileFn(onnx_path, tta=use_tta, device="cpu"), cfg)


def make_tile_fn(model: torch.nn.Module, cfg: RunConfig, run_dir: Path, device: torch.device, tta: bool | str,
                 engine: str = "torch", which: str = "best") -> TileFn:
    """The engine that runs ``model`` on tiles: ``torch``, ``onnxruntime`` or ``auto``.

    ``auto`` is torch on a GPU; on a CPU it is whichever of torch and onnxruntime ran this network's tiles
    faster on this machine (timed once per CPU and network shape, then cached:
    :mod:`ftuseg.inference.engine_choice`); torch when onnxruntime is missing or cannot take the model.
    """
    if engine not in ("auto", "torch", "onnxruntime"):
        raise FtusegError(f"unknown engine {engine!r}; choose auto, torch or onnxruntime")
    from ftuseg.inference.engine import TorchTileFn
    from ftuseg.inference.onnx_engine import OnnxTileFn, default_engine

    def torch_fn() -> TileFn:
        return TorchTileFn(model, device=device, tta=tta, amp=cfg.amp)

    def ort_fn() -> TileFn:
        return OnnxTileFn.for_run(run_dir, tta=tta, which=which)

    if engine == "onnxruntime":
        return ort_fn()
    if engine == "auto" and default_engine(device) == "onnxruntime":
        from ftuseg.inference.engine_choice import choose_engine

        return choose_engine(cfg, tta, {"torch": torch_fn, "onnxruntime": ort_fn})[1]
    return torch_fn()


def predict_table(
    predictor: Predictor,
    table: pd.DataFrame,
    progress: bool = True,
    keep_proba: bool = False,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Predict every row of a data table; returns the submission frame (id, rle) and optional probs."""
    from tqdm.auto import tqdm

    from ftuseg.io.dataset import read_row_image
    from ftuseg.rle import encode_rle

    rows, probs = [], {}
    for _, row in tqdm(table.iterrows(), total=len(table), desc="predict", unit="img", disable=not progress):
        organ = row.get("organ")
        organ = None if organ is None or pd.isna(organ) or not str(organ).strip() else str(organ).strip()
        mask, prob = predictor.predict_image(read_row_image(row), float(row["pixel_size"]), organ)
        rows.append({"id": row["id"], "rle": encode_rle(mask)})
        if keep_proba:
            probs[str(row["id"])] = prob.astype(np.float16)
    return pd.DataFrame(rows, columns=["id", "rle"]), probs
