"""The best recipe, end to end: organ-specialist fold runs from an ImageNet encoder, then post-processing
tuned out of fold. ``ftuseg fit DATA --out DIR --minutes M`` is this module's :func:`train_recipe`.

The recipe is what the shipped models are trained with (benchmarks/zoo_train.py reads it from here): an
EfficientNet-Lite0 U-Net from the offline ImageNet checkpoint, one specialist per FTU family (kidney at
3 µm/px on 320 px tiles: ~1 mm of context per tile with a glomerulus ~67 px across, and a crop smaller than
a tile seen up to 2x finer; glands see 0.25-0.5 mm at finer detail), each fold run's last checkpoint kept
(an inner split of its training part logs validation Dice), threshold 0.5 and per-organ minimum object area
and hole filling tuned on the out-of-fold probabilities.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftuseg.config import RunConfig, make_config
from ftuseg.errors import FtusegError

# lr: the randomly initialised decoder and head peak at 3e-3, the ImageNet encoder at 1e-3 (encoder_lr_scale).
# Against one peak of 1e-3 for the whole network, pooled folds 0-3: kidney 0.869 vs 0.861, AIDPATH 0.740 vs 0.683
# (benchmarks/results/kidney_decoder_lr.json); glands with D4 TTA + tuned post GlaS 0.896 vs 0.878, RINGS 0.924 vs
# 0.898 (glands_decoder_lr.json; locked fold 4 in *_decoder_lr_fold4.json). A whole-network peak of 3e-3 or 5e-4
# lost GlaS about a point (glands_lr*.json).
# The whole recipe with it under the full protocol: recipe_folds_glands_decoder_lr.json.
RECIPE_COMMON: dict[str, Any] = dict(
    encoder="tu-tf_efficientnet_lite0", encoder_weights="imagenet-lite0", batch_size=8, tiles_per_epoch=256,
    lr=3e-3, encoder_lr_scale=1 / 3, infer_batch_size=8, epochs=100_000,
    # validation only after the last epoch: with the last checkpoint kept it only logs, and every 4 epochs it took
    # 2-3% of the budget (benchmarks/results/train_throughput.json, between_epochs)
    val_every=0,
    # the last checkpoint is kept (the inner split logs validation Dice and tunes post-processing): on folds 0-3 of
    # two full runs no last checkpoint scored more than 0.001 below the inner split's pick, which lost up to 6 points
    # when it picked a peak-LR epoch (benchmarks/results/checkpoint_choice.json); a window over the last 30% of the
    # budget still kept a kidney epoch 7 of 10 (recipe_folds_area_select07.json)
    select_after=1.0,
    # the minimal tile grid: the reflect-padded border margin bought no mean Dice out of fold (0.841 vs 0.840)
    # for 2.1x the tiles (benchmarks/results/margin.json); earlier runs keep the margin they were measured with
    infer_margin=0.0,
)
# FTU families: each trains one specialist. Organs of the data that no family names get one of their own.
RECIPE_GROUPS: dict[str, dict[str, Any]] = {
    # kidney: 320 px at 3 µm/px with small crops seen up to 2x finer beat 384 px at 4 µm/px at equal minutes
    # (benchmarks/results/kidney_zoom.json; full protocol in recipe_folds_kidney3um_zoom.json)
    "glomeruli": dict(organs=["kidney"], tile_size=320, target_mpp=3.0, small_image_zoom=2.0, organ_mpp={}),
    # glands predict through 512 px windows (trained on 256 px tiles): on folds 0-3 of two runs GlaS 0.9016 against
    # 0.9004, RINGS 0.8804 against 0.8799, in 0.67x the prediction time (benchmarks/results/infer_tile_glands.json).
    # Kidney's 640 px windows scored the same on folds 0-1 for 0.61x the time (infer_tile_kidney.json): not yet
    # measured widely enough to adopt
    "glands": dict(organs=["largeintestine", "prostate"], tile_size=256, target_mpp=2.0,
                   organ_mpp={"largeintestine": 1.0}, infer_tile_size=512),
}
OTHER_ORGAN: dict[str, Any] = dict(tile_size=256, target_mpp=2.0, organ_mpp={})
# thresholds the post-processing tuning may choose (minimum area and hole filling are tuned beside): on folds
# 0-3 the full 0.1-0.9 grid overfitted small tuning sets (GlaS fold 3 chose 0.9) and lost to threshold 0.5;
# 0.4-0.6 won once (0.881 vs 0.879 for 0.5 alone, post_rules_kidney3um.json) and lost on the next run's models
# (0.872 vs 0.878, post_rules_keep_last.json: kidney's 0.6, tuned on one HuBMAP block, erased a faint AIDPATH
# glomerulus). Over both runs the threshold kept at 0.5 is ahead (0.879 + 0.878 vs 0.881 + 0.872): it stays there
RECIPE_THRESHOLDS: tuple[float, ...] = (0.5,)


def recipe_config(group: str, organs: list[str] | None = None, **overrides: Any) -> RunConfig:
    """The recipe's RunConfig for one family (``group``), or for an organ outside every family."""
    settings = RECIPE_GROUPS.get(group, {**OTHER_ORGAN, "organs": organs or [group]})
    values = {**RECIPE_COMMON, **settings, **({"organs": organs} if organs else {}), **overrides}
    return make_config("tiled", **values)


def recipe_groups(organs: list[str]) -> dict[str, list[str]]:
    """Family name -> the data's organs in it; every organ lands in exactly one family."""
    present = sorted(set(organs))
    groups = {name: [o for o in g["organs"] if o in present] for name, g in RECIPE_GROUPS.items()}
    groups = {name: members for name, members in groups.items() if members}
    covered = {o for members in groups.values() for o in members}
    groups.update({o: [o] for o in present if o not in covered})
    return groups


def _check_folds(table, groups: dict[str, list[str]], folds: list[int], n_folds: int, data_dir,
                 fold_seed: int = 0) -> None:
    """Fail before any training when a family would have no training or no held-out image in some fold."""
    from ftuseg.training.splits import grouped_folds

    assignment = grouped_folds(table, n_folds, seed=fold_seed)
    organ = table["organ"].astype(str).to_numpy()
    for name, members in groups.items():
        mine = assignment[[o in members for o in organ]]
        for k in folds:
            if (mine == k).all() or not (mine == k).any():
                raise FtusegError(f"{data_dir}: family {name} ({', '.join(members)}) has {len(mine)} images in too "
                                  f"few groups for {n_folds} folds (fold {k} would leave it no training or no "
                                  "held-out image); use fewer --n-folds")


@dataclass
class RecipeResult:
    out_dir: Path
    runs: dict[str, list[Path]] = field(default_factory=dict)  # family -> fold run folders
    tuning: list[dict] = field(default_factory=list)  # per organ: OOF Dice before and after tuning

    @property
    def run_dirs(self) -> list[Path]:
        return [r for runs in self.runs.values() for r in runs]


def train_recipe(
    data_dir: str | os.PathLike, out_dir: str | os.PathLike, minutes: float, n_folds: int = 5,
    folds: list[int] | None = None, progress: bool = True, max_steps: int | None = None, **overrides: Any,
) -> RecipeResult:
    """Train every family's fold runs into ``out_dir/<family>/fold<k>`` and tune their post-processing.

    ``minutes`` is the whole budget, shared equally by the (family, fold) runs. ``folds`` defaults to all
    ``n_folds``; tuning needs out-of-fold predictions for every image it tunes on, so with a subset of
    folds only those folds' images are used. ``overrides`` are RunConfig fields applied to every run.
    Writes ``out_dir/recipe.json`` (families, runs, budget, tuned values) last.
    """
    from ftuseg.inference.threshold_tuning import tune_thresholds
    from ftuseg.io.atomic import atomic_write
    from ftuseg.io.dataset import load_table
    from ftuseg.training.trainer import train

    if minutes <= 0:
        raise FtusegError(f"fit: --minutes must be positive, got {minutes}")
    table = load_table(data_dir, split="train", need_rle=True, need_images=False)
    groups = recipe_groups(table["organ"].astype(str).tolist())
    folds = list(range(n_folds)) if folds is None else folds
    bad = [k for k in folds if not 0 <= k < n_folds]
    if bad:
        raise FtusegError(f"fit: fold {bad[0]} is not in [0, {n_folds})")
    _check_folds(table, groups, folds, n_folds, data_dir, fold_seed=int(overrides.get("fold_seed", 0)))
    per_run = minutes / (len(groups) * len(folds))
    out = Path(out_dir)
    result = RecipeResult(out)
    t0 = time.perf_counter()
    for name, organs in groups.items():
        cfg = recipe_config(name, organs, n_folds=n_folds, max_minutes=per_run, **overrides)
        runs = []
        for k in folds:
            run = out / name / f"fold{k}"
            train(cfg.replace(fold=k), data_dir, run, progress=progress, max_steps=max_steps)
            runs.append(run)
        result.runs[name] = runs
        _, report = tune_thresholds(runs, data_dir, threshold_grid=RECIPE_THRESHOLDS)
        result.tuning += report.to_dict("records")
    summary = {"data": str(data_dir), "minutes": minutes, "minutes_per_run": per_run, "n_folds": n_folds,
               "folds": folds, "families": groups, "runs": {k: [str(r) for r in v] for k, v in result.runs.items()},
               "tuning": result.tuning, "wall_seconds": time.perf_counter() - t0, "overrides": overrides}
    with atomic_write(out / "recipe.json") as fh:
        json.dump(summary, fh, indent=2, default=float)
    return result
