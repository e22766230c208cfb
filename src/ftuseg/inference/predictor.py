"""Ensembles of trained runs applied to whole images at each run's own geometry."""

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
from ftuseg.inference.postprocess import Thresholds, binarize, hole_area_pixels, min_area_pixels
from ftuseg.inference.resample import resize_image, resize_prob, scale_factor, scaled_shape
from ftuseg.inference.sliding_window import TileFn, sliding_window_predict


@dataclass
class Member:
    """One model of an ensemble with the geometry it was trained at."""

    tile_fn: TileFn
    cfg: RunConfig


def member_proba(member: Member, image: np.ndarray, pixel_size: float | None, organ: str | None) -> np.ndarray:
    """Probability map (H, W) in the image's own pixel grid for one member."""
    cfg = member.cfg
    h, w = image.shape[:2]
    if cfg.mode == "whole":
        # The seed: squash the whole image to image_size x image_size, predict, stretch back.
        small = resize_image(image, (cfg.image_size, cfg.image_size))
        prob = member.tile_fn(small[None])[0]
        return resize_prob(prob, (h, w))
    if pixel_size is None:
        raise ValueError("tiled models need the image's pixel size")
    shape = scaled_shape(h, w, scale_factor(pixel_size, cfg.mpp_for(organ)))
    scaled = resize_image(image, shape)
    prob = sliding_window_predict(
        member.tile_fn, scaled, cfg.tile_size, overlap=cfg.overlap, batch_size=cfg.infer_batch_size,
        blend=cfg.blend,
    )
    return resize_prob(prob, (h, w))


class Predictor:
    """Average of several runs (folds, architectures), with thresholds from the first run.

    Runs trained with ``organs`` (organ specialists) only predict those organs: each image is averaged
    over the runs that cover its organ, and the per-organ thresholds of every run are merged.
    """

    def __init__(self, members: Sequence[Member], thresholds: Thresholds | None = None):
        if not members:
            raise ValueError("a predictor needs at least one model")
        self.members = list(members)
        self.thresholds = thresholds or Thresholds(members[0].cfg.threshold, members[0].cfg.min_area_um2)

    @classmethod
    def from_runs(
        cls,
        run_dirs: Sequence[str | os.PathLike],
        device: str = "auto",
        tta: bool | None = None,
        which: str = "best",
        engine: str = "torch",
    ) -> Predictor:
        from ftuseg.models.checkpoint import load_run_model

        dev = pick_device(device)
        members = []
        thresholds = None
        for run in run_dirs:
            model, cfg = load_run_model(run, which=which)
            use_tta = cfg.tta if tta is None else tta
            members.append(Member(make_tile_fn(model, cfg, Path(run), dev, use_tta, engine, which), cfg))
            tpath = (Path(run) if Path(run).is_dir() else Path(run).parent) / "thresholds.json"
            if tpath.exists():
                loaded = Thresholds.load(tpath)
                if thresholds is None:
                    thresholds = loaded
                else:  # organ specialists each bring their own organs' tuned values; the first run wins ties
                    for organ, values in loaded.organs.items():
                        thresholds.organs.setdefault(organ, values)
        return cls(members, thresholds)

    def members_for(self, organ: str | None) -> list[Member]:
        """The members that cover ``organ``: all-organ runs plus the specialists trained on it."""
        chosen = [m for m in self.members if m.cfg.covers(organ)]
        if not chosen:
            known = sorted({o for m in self.members for o in m.cfg.organs})
            raise FtusegError(f"organ {organ!r}: no model in this ensemble covers it (they cover {', '.join(known)})")
        return chosen

    def predict_proba(self, image: np.ndarray, pixel_size: float | None = None, organ: str | None = None) -> np.ndarray:
        """Mean probability of the members that cover ``organ`` (organ specialists are routed by organ)."""
        members = self.members_for(organ)
        acc = None
        for m in members:
            p = member_proba(m, image, pixel_size, organ)
            acc = p if acc is None else acc + p
        return acc / len(members)

    def binarize(self, prob: np.ndarray, organ: str | None = None, pixel_size: float | None = None) -> np.ndarray:
        """Threshold with the organ's tuned threshold and drop objects under its minimum area (µm²).

        A model tuned per organ refuses an organ it has no threshold for rather than silently using
        another organ's; ``--threshold`` (which clears the per-organ values) overrides that.
        """
        organs = self.thresholds.organs
        if organs and str(organ) not in organs:
            raise FtusegError(
                f"organ {organ!r} has no tuned threshold in this model (tuned for {', '.join(sorted(organs))}); "
                "pass --threshold to use one threshold for every organ"
            )
        thr, min_um2 = self.thresholds.for_organ(organ)
        holes = hole_area_pixels(self.thresholds.holes_for(organ), pixel_size)
        return binarize(prob, thr, min_area_pixels(min_um2, pixel_size), holes)

    def predict_mask(self, image: np.ndarray, pixel_size: float | None = None, organ: str | None = None) -> np.ndarray:
        return self.binarize(self.predict_proba(image, pixel_size, organ), organ, pixel_size)


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
        image = read_row_image(row)
        prob = predictor.predict_proba(image, float(row["pixel_size"]), row.get("organ"))
        mask = predictor.binarize(prob, row.get("organ"), float(row["pixel_size"]))
        rows.append({"id": row["id"], "rle": encode_rle(mask)})
        if keep_proba:
            probs[str(row["id"])] = prob.astype(np.float16)
    return pd.DataFrame(rows, columns=["id", "rle"]), probs
