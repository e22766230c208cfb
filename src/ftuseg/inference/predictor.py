"""Ensembles of trained runs: loading, organ routing, and images in memory (through the region core)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ftuseg.config import RunConfig
from ftuseg.errors import FtusegError
from ftuseg.inference.engine import TorchTileFn, pick_device
from ftuseg.inference.postprocess import Thresholds
from ftuseg.inference.region import (
    OrganRoute,
    RegionPredictor,
    member_window_proba,
    organ_route,
    whole_box,
)
from ftuseg.inference.sliding_window import TileFn
from ftuseg.io.readers import ArraySlideReader


@dataclass
class Member:
    """One model of an ensemble with the geometry it was trained at."""

    tile_fn: TileFn
    cfg: RunConfig


def member_proba(member: Member, image: np.ndarray, pixel_size: float | None, organ: str | None) -> np.ndarray:
    """Probability map (H, W) in the image's own pixel grid for one member."""
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
        tta: bool | None = None,
        which: str = "best",
        engine: str = "torch",
        allow_unknown_organ: bool = False,
    ) -> Predictor:
        from ftuseg.models.checkpoint import load_run_model

        dev = pick_device(device)
        members = []
        for run in run_dirs:
            model, cfg = load_run_model(run, which=which)
            use_tta = cfg.tta if tta is None else tta
            members.append(Member(make_tile_fn(model, cfg, Path(run), dev, use_tta, engine, which), cfg))
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


def make_tile_fn(model: torch.nn.Module, cfg: RunConfig, run_dir: Path, device: torch.device, tta: bool,
                 engine: str = "torch", which: str = "best") -> TileFn:
    """The engine that runs ``model`` on tiles: ``torch``, ``onnxruntime`` or ``auto``.

    ``auto`` picks onnxruntime on CPU (measured 1.5-1.7x faster than torch fp32 there, same outputs to
    1e-5; benchmarks/throughput.py) and torch on GPU, and falls back to torch if the model cannot be
    exported.
    """
    if engine not in ("auto", "torch", "onnxruntime"):
        raise FtusegError(f"unknown engine {engine!r}; choose auto, torch or onnxruntime")
    if engine in ("auto", "onnxruntime"):
        from ftuseg.inference.onnx_engine import OnnxTileFn, default_engine

        if engine == "onnxruntime" or default_engine(device) == "onnxruntime":
            try:
                return OnnxTileFn.for_run(run_dir, tta=tta, which=which)
            except FtusegError:
                if engine == "onnxruntime":
                    raise
    return TorchTileFn(model, device=device, tta=tta, amp=cfg.amp)


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
