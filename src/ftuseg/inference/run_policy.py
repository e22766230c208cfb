"""The policy of a prediction run, shared by ``ftuseg predict`` on this machine and on Ray.

Which ensemble to load and how (:class:`ModelSpec`, sent as one object to every Ray worker), the refusals
that need no pixels (unknown, uncovered and untuned organs: :meth:`ModelSpec.check_organs`), one output
folder per model (:func:`claim_out_dir`), and the submission CSV (:func:`predict_submission` for images
in memory, :func:`gather_submission` from per-image outputs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftuseg.errors import FtusegError
from ftuseg.io.atomic import atomic_write

if TYPE_CHECKING:
    import pandas as pd

    from ftuseg.config import RunConfig
    from ftuseg.inference.inputs import PredictInput
    from ftuseg.inference.postprocess import Thresholds
    from ftuseg.inference.predictor import Predictor


@dataclass
class ModelSpec:
    """An ensemble of run folders and how to run it; ``load()`` gives the same predictor everywhere."""

    run_dirs: list[str] = field(default_factory=list)
    device: str = "auto"
    tta: bool | str | None = None  # None: each run's own config; False, True (4 flips) or "d4"
    which: str = "best"  # checkpoint: best or last
    engine: str = "torch"  # torch, onnxruntime or auto
    threshold: float | None = None  # one threshold for every organ (clears tuned per-organ values)
    allow_unknown_organ: bool = False
    tta_scales: list[float] | None = None  # None: each run's own config; else multi-scale TTA factors

    def __post_init__(self) -> None:
        from ftuseg.inference.sliding_window import parse_scales, parse_tta

        self.run_dirs = [str(r) for r in self.run_dirs]
        try:
            if self.tta is not None:
                self.tta = parse_tta(self.tta)
            if self.tta_scales is not None:
                self.tta_scales = parse_scales(self.tta_scales)
        except ValueError as exc:
            raise FtusegError(str(exc)) from None

    def load(self, device: str | None = None) -> Predictor:
        from ftuseg.inference.predictor import Predictor, override_threshold

        predictor = Predictor.from_runs(self.run_dirs, device=device or self.device, tta=self.tta,
                                        which=self.which, engine=self.engine,
                                        allow_unknown_organ=self.allow_unknown_organ, tta_scales=self.tta_scales)
        override_threshold(predictor.thresholds, self.threshold)
        return predictor

    def check_runs(self) -> None:
        """Every run has a checkpoint: fail here, once, rather than in every worker."""
        from ftuseg.models.checkpoint import resolve_checkpoint

        for run in self.run_dirs:
            resolve_checkpoint(run, self.which)

    def settings(self) -> dict[str, Any]:
        """What makes predictions differ: an output folder holds predictions of one setting only."""
        settings = {"runs": [str(Path(r).resolve()) for r in self.run_dirs], "checkpoint": self.which,
                    "tta": self.tta, "threshold": self.threshold, "engine": self.engine}
        if self.tta_scales is not None:  # only when set: folders written before the option still resume
            settings["tta_scales"] = self.tta_scales
        return settings

    def _tuned_thresholds(self) -> Thresholds:
        """The per-organ tuning the predictor will have (only its organs matter for the checks)."""
        from ftuseg.inference.postprocess import Thresholds
        from ftuseg.inference.predictor import load_thresholds, override_threshold

        return override_threshold(load_thresholds(self.run_dirs) or Thresholds(), self.threshold)

    def _configs(self) -> list[RunConfig]:
        """Each run's config.yaml; empty when one is missing (a bare checkpoint file keeps it inside)."""
        from ftuseg.config import load_config
        from ftuseg.models.checkpoint import resolve_checkpoint

        paths = [resolve_checkpoint(run, self.which).parent / "config.yaml" for run in self.run_dirs]
        return [load_config(p) for p in paths] if all(p.exists() for p in paths) else []

    def check_organs(self, items: Sequence[PredictInput]) -> None:
        """Refuse, before any model loads, an organ the ensemble would refuse per image (the same checks
        and messages as :meth:`Predictor.route`), naming the first input that has it."""
        from ftuseg.config import RunConfig
        from ftuseg.inference.region import organ_route

        cfgs = self._configs() or [RunConfig()]  # without configs, coverage is left to the workers
        thresholds = self._tuned_thresholds()
        seen: set[str | None] = set()
        for it in items:
            if it.organ in seen:
                continue
            seen.add(it.organ)
            try:
                organ_route(cfgs, thresholds, it.organ, self.allow_unknown_organ)
            except FtusegError as exc:
                raise FtusegError(f"{it.image_path}: {exc}") from None


def claim_out_dir(out_dir: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """Create ``out_dir`` and mark it as holding predictions of ``settings``; refuse one made with others
    (resuming with other runs or thresholds would mix predictions)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FtusegError(f"{out_dir}: is a file, not an output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / "predict.json"
    if marker.exists():
        try:
            old = json.loads(marker.read_text())
        except ValueError:
            old = None
        if old is not None and old != settings:
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise FtusegError(f"{out_dir}: holds predictions made with other settings ({', '.join(changed)}); "
                              "use a new --out-dir")
    else:
        with atomic_write(marker) as fh:
            json.dump(settings, fh, indent=2)
    return out_dir


def predict_into_dir(models: ModelSpec, items: Sequence[PredictInput], out_dir: str | os.PathLike,
                     options: Any = None, ray_options: Any = None, progress: bool = True) -> pd.DataFrame:
    """Per-image outputs of every input in ``out_dir`` (resumable), on this machine or, with
    ``ray_options`` (:class:`~ftuseg.inference.ray_predict.RayOptions`), on a Ray cluster: the same owner
    check, the same refusals and the same ``predictions.csv`` rows either way."""
    claim_out_dir(out_dir, models.settings())
    if ray_options is not None:
        from ftuseg.inference.ray_predict import predict_many_ray

        return predict_many_ray(models, items, out_dir, options, ray_options)
    from ftuseg.inference.slide import predict_many

    return predict_many(models.load(), list(items), out_dir, options, progress=progress)


def predict_submission(predictor: Predictor, data: str | os.PathLike, items: Sequence[PredictInput],
                       split: str | None = None, progress: bool = True) -> pd.DataFrame:
    """``id,rle`` of every input, predicted whole in memory (the original Kaggle path)."""
    import pandas as pd

    from ftuseg.inference.inputs import is_kaggle_folder
    from ftuseg.inference.predictor import predict_table

    if is_kaggle_folder(data, split):
        from ftuseg.io.dataset import load_table

        frame = load_table(data, split)
    else:
        frame = pd.DataFrame([{"id": it.id, "image_path": str(it.image_path), "organ": it.organ} for it in items])
    frame["pixel_size"] = [it.pixel_size for it in items]
    frame["organ"] = [it.organ for it in items]  # --organ, and organs a --model filled in or forced
    submission, _ = predict_table(predictor, frame, progress=progress)
    return submission


def gather_submission(table: pd.DataFrame, items: Sequence[PredictInput], out_dir: str | os.PathLike) -> pd.DataFrame:
    """``id,rle`` assembled from the per-image ``rle.csv`` of a ``predictions.csv`` table."""
    import pandas as pd

    rows = []
    for (_, row), it in zip(table.iterrows(), items, strict=True):
        rle = pd.read_csv(Path(out_dir) / row["slide_dir"] / "rle.csv", dtype=str, keep_default_na=False)
        rows.append({"id": it.id, "rle": rle["rle"].iloc[0]})
    return pd.DataFrame(rows, columns=["id", "rle"])


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_write(path) as fh:
        frame.to_csv(fh, index=False)
