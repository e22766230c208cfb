"""One typed configuration per run: presets, YAML round trip, CLI overrides.

The same dataclass drives training, inference and the saved run directory (``config.yaml``), so a
run directory alone is enough to rebuild its model and its pre-processing.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ftuseg.errors import FtusegError

SELECT_STRATA = ("organ", "data_source")  # what a fold run's inner selection split may be balanced by


@dataclass
class RunConfig:
    # --- identity -----------------------------------------------------------------------------
    preset: str = field(default="seed-512", metadata={"help": "named starting configuration (seed-512, tiled, demo)"})
    # --- model --------------------------------------------------------------------------------
    arch: str = field(default="unet", metadata={"help": "decoder architecture (segmentation_models_pytorch name)"})
    encoder: str = field(default="resnet34", metadata={"help": "encoder backbone (timm / smp name)"})
    encoder_weights: str | None = field(default=None, metadata={
        "help": "initial encoder weights: none, a local checkpoint path, or imagenet (online only)"})
    decoder_width: float = field(default=1.0, metadata={
        "help": "U-Net decoder channels as a multiple of smp's (256, 128, 64, 32, 16); 0.5 halves them (cheaper "
                "steps on CPU)"})
    # fine-tuning: the whole network (encoder + decoder) starts from this shipped model or run folder; its
    # architecture, input normalisation and pixel sizes are kept unless given explicitly
    init_from: str | None = field(default=None, metadata={
        "help": "fine-tune: start the whole network from a shipped model (ftuseg models) or a run folder; "
                "keeps its architecture, normalisation and µm/px unless overridden"})
    # --- geometry -----------------------------------------------------------------------------
    mode: str = field(default="whole", metadata={
        "help": "whole: each image resized to image_size (the seed); tiled: tiles at target_mpp"})
    image_size: int = field(default=512, metadata={"help": "side of the resized whole image, px (mode whole)"})
    tile_size: int = field(default=512, metadata={"help": "side of a network tile, px (mode tiled)"})
    target_mpp: float = field(default=1.0, metadata={"help": "resolution the network sees, µm/px (mode tiled)"})
    organ_mpp: dict[str, float] = field(default_factory=dict, metadata={
        "help": "per-organ override of target_mpp, µm/px (kidney=3.0,...)"})
    # a 1024 px crop at 0.5 µm/px is 171 px at 3 µm/px: in a 320 px tile the rest would be mirrored copies of
    # it, so such images trade the context they lack for detail (training and inference alike)
    small_image_zoom: float = field(default=1.0, metadata={
        "help": "an image whose shorter side is less than one tile at target_mpp is seen up to this many times "
                "finer, as far as makes it fill the tile (never finer than its own pixels); 1: off"})
    organs: list[str] = field(default_factory=list, metadata={
        "help": "organ specialist: train on and predict these organs only (empty: every organ); "
                "folds are cut on the whole table first, so specialists of one fold hold out the same images"})
    # annotation folders (images + GeoJSON / masks, no train.csv): what the images may lack; the Kaggle
    # layout's train.csv gives both per row, so they are an error there
    data_pixel_size: float | None = field(default=None, metadata={
        "help": "annotation folders: µm/px of every image, overriding annotations.csv and image metadata "
                "(alias --pixel-size)"})
    data_organ: str | None = field(default=None, metadata={
        "help": "annotation folders: organ of every image, overriding annotations.csv and the GeoJSON class "
                "(alias --organ)"})
    # --- training -----------------------------------------------------------------------------
    epochs: int = field(default=20, metadata={"help": "training epochs (a max_minutes budget may end sooner)"})
    batch_size: int = field(default=8, metadata={"help": "images or tiles per optimiser step (per process)"})
    lr: float | str = field(default="auto", metadata={
        "help": "peak learning rate of the one-cycle schedule, or auto for the LR range test's suggestion"})
    # a pretrained encoder and a randomly initialised decoder may want different step sizes: the encoder's
    # peak LR is lr x this (the decoder and head keep lr)
    encoder_lr_scale: float = field(default=1.0, metadata={
        "help": "the encoder's peak learning rate as a multiple of lr, 0-10 (0.33 with lr 3e-3: the encoder "
                "peaks at 1e-3, the decoder and head at 3e-3); 1: one LR for the whole network"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    ema_decay: float = field(default=0.0, metadata={
        "help": "also keep an exponential moving average of the weights (and BatchNorm statistics) with this "
                "decay per step, saved as 'ema' in the checkpoints beside the raw weights, 0-1 (0: off)"})
    max_minutes: float | None = field(default=None, metadata={
        "help": "wall-clock training budget, minutes; the one-cycle schedule follows it (none: no budget)"})
    val_fraction: float = field(default=0.2, metadata={
        "help": "share of images held out (grouped) for validation when no fold is given, 0-1"})
    n_folds: int = field(default=5, metadata={"help": "number of grouped cross-validation folds"})
    fold: int | None = field(default=None, metadata={
        "help": "grouped k-fold index to hold out, 0..n_folds-1 (none: a single split of val_fraction)"})
    select_fraction: float = field(default=0.15, metadata={
        "help": "share of a fold run's training images held out (grouped) to choose the best checkpoint, 0-1, "
                "so the reported fold never chooses anything; 0 keeps the last checkpoint"})
    select_stratify: str = field(default="organ", metadata={
        "help": "column the inner selection split is balanced by (organ or data_source): its groups are dealt "
                "largest first to the inner fold with the fewest images of their stratum, and one inner fold is "
                "held out; by organ a kidney inner split is one HuBMAP block, by data_source it also gets AIDPATH "
                "crops"})
    select_after: float = field(default=0.0, metadata={
        "help": "share of the schedule (steps or budget, whichever runs out first) before which validations do not "
                "compete for the best checkpoint, 0-1; from there on every epoch is validated (0: every validation "
                "competes; 1: the last epoch's checkpoint is kept, the inner split still logs validation Dice). "
                "Late in a one-cycle schedule the LR has annealed and a small selection split's noise cannot pick "
                "a peak-LR checkpoint"})
    seed: int = field(default=0, metadata={
        "help": "random seed (the single validation split, the inner selection split, sampling, initialisation); "
                "it does not move the k-fold partition (fold_seed), so runs of two seeds report the same images"})
    fold_seed: int = field(default=0, metadata={
        "help": "seed of the grouped k-fold partition (0: ftu-bench's folds, whose fold 4 the benchmarks keep "
                "locked); another value deals the groups into other folds"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes (0: load in the main process)"})
    augment: str = field(default="flips", metadata={
        "help": "flips (the seed), full (D4 + scale jitter + stain/colour) or none"})
    tiles_per_epoch: int = field(default=256, metadata={"help": "training tiles per epoch (mode tiled)"})
    fg_fraction: float = field(default=0.5, metadata={
        "help": "share of training tiles centred on an FTU pixel, 0-1 (the rest anywhere on tissue); more FTU "
                "tiles push towards over-segmentation (ftu-bench: 0.2 beat 0.5)"})
    scale_jitter: float = field(default=0.15, metadata={
        "help": "random scale change of training tiles, as a fraction (0.15: x0.85-1.15; augment full)"})
    target_resample: str = field(default="nearest", metadata={
        "help": "how a training tile's mask is resampled to the tile's µm/px: nearest (0/1 labels; OpenCV's "
                "mapping, up to half a tile pixel off the image when shrinking) or area (the FTU share of each "
                "tile pixel, aligned with the image)"})
    amp: bool = field(default=True, metadata={
        "help": "training autocast: bf16/fp16 on CUDA, bf16 on CPUs with native bf16 (else fp32)"})
    val_every: int = field(default=1, metadata={"help": "validate every N epochs (and after the last; 0: only "
                                                        "after the last)"})
    # --- inference ----------------------------------------------------------------------------
    overlap: float = field(default=0.5, metadata={"help": "overlap of inference windows, fraction of a tile, 0-1"})
    blend: str = field(default="gaussian", metadata={"help": "window blending overlapping tiles: gaussian or cosine"})
    infer_margin: float = field(default=0.25, metadata={
        "help": "context reflect-padded around an image at inference, fraction of an inference window "
                "(0: the minimal grid)"})
    infer_batch_size: int = field(default=8, metadata={"help": "tiles per batch at inference"})
    infer_tile_size: int = field(default=0, metadata={
        "help": "side of an inference window, px (0: tile_size). The network is fully convolutional: a larger "
                "window sees more context and needs fewer windows, each at the same µm/px as training"})
    tta: bool | str = field(default=False, metadata={
        "help": "test-time augmentation at inference: false, true (flip: the 4 flips) or d4 (the 4 flips of the "
                "tile and of its transpose: 8 passes)"})
    tta_scales: list[float] = field(default_factory=lambda: [1.0], metadata={
        "help": "multi-scale test-time augmentation: factors on the µm/px the network sees, probabilities "
                "averaged in the image's grid (0.8,1,1.25: three passes, 1.56x + 1x + 0.64x the pixels)"})
    threshold: float = field(default=0.5, metadata={"help": "probability above which a pixel is FTU, 0-1"})
    min_area_um2: float = field(default=0.0, metadata={"help": "objects smaller than this are dropped, µm²"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present, else CPU), cpu or cuda[:N]"})

    # ------------------------------------------------------------------------------------------
    def validate(self) -> RunConfig:
        if self.mode not in ("whole", "tiled"):
            raise FtusegError(f"config: mode must be 'whole' or 'tiled', got {self.mode!r}")
        if self.augment not in ("flips", "full", "none"):
            raise FtusegError(f"config: augment must be flips, full or none, got {self.augment!r}")
        for name in ("image_size", "tile_size"):
            v = getattr(self, name)
            if v < 32 or v % 32:
                raise FtusegError(f"config: {name} must be a multiple of 32 and >= 32, got {v}")
        if self.infer_tile_size and (self.infer_tile_size < 32 or self.infer_tile_size % 32):
            raise FtusegError(f"config: infer_tile_size must be 0 (tile_size) or a multiple of 32 and >= 32, "
                              f"got {self.infer_tile_size}")
        if self.val_every < 0:
            raise FtusegError(f"config: val_every must be >= 0 (0: only after the last epoch), got {self.val_every}")
        if not 0 <= self.overlap < 1:
            raise FtusegError(f"config: overlap must be in [0, 1), got {self.overlap}")
        if self.target_mpp <= 0:
            raise FtusegError(f"config: target_mpp must be positive, got {self.target_mpp}")
        if isinstance(self.lr, str):
            if self.lr != "auto":
                try:
                    self.lr = float(self.lr)
                except ValueError:
                    raise FtusegError(f"config: lr must be a number or 'auto', got {self.lr!r}") from None
        if not 1 <= self.small_image_zoom <= 8:
            raise FtusegError(f"config: small_image_zoom must be in [1, 8], got {self.small_image_zoom}")
        if not 0 < self.decoder_width <= 4:
            raise FtusegError(f"config: decoder_width must be in (0, 4], got {self.decoder_width}")
        from ftuseg.inference.sliding_window import parse_scales, parse_tta

        try:
            self.tta = parse_tta(self.tta)
            self.tta_scales = parse_scales(self.tta_scales)
        except ValueError as exc:
            raise FtusegError(f"config: {exc}") from None
        if not 0 < self.encoder_lr_scale <= 10:
            raise FtusegError(f"config: encoder_lr_scale must be in (0, 10], got {self.encoder_lr_scale}")
        if not 0 <= self.ema_decay < 1:
            raise FtusegError(f"config: ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.select_fraction < 1:
            raise FtusegError(f"config: select_fraction must be in [0, 1), got {self.select_fraction}")
        if self.select_stratify not in SELECT_STRATA:
            raise FtusegError(f"config: select_stratify must be one of {', '.join(SELECT_STRATA)}, "
                              f"got {self.select_stratify!r}")
        if not 0 <= self.select_after <= 1:
            raise FtusegError(f"config: select_after must be in [0, 1], got {self.select_after}")
        if self.fold is not None and not 0 <= self.fold < self.n_folds:
            raise FtusegError(f"config: fold must be in [0, {self.n_folds}), got {self.fold}")
        if isinstance(self.data_pixel_size, str):  # a flag or YAML string
            try:
                self.data_pixel_size = float(self.data_pixel_size)
            except ValueError:
                bad = self.data_pixel_size
                raise FtusegError(f"config: data_pixel_size must be a number (µm/px), got {bad!r}") from None
        if self.data_pixel_size is not None and not self.data_pixel_size > 0:
            raise FtusegError(f"config: data_pixel_size must be positive (µm/px), got {self.data_pixel_size}")
        if isinstance(self.organs, str):
            self.organs = [o.strip() for o in self.organs.split(",") if o.strip()]
        self.organs = [str(o) for o in (self.organs or [])]
        if not 0 <= self.infer_margin <= 1:
            raise FtusegError(f"config: infer_margin must be in [0, 1] (a fraction of a tile), got {self.infer_margin}")
        if self.blend not in ("gaussian", "cosine"):
            raise FtusegError(f"config: blend must be gaussian or cosine, got {self.blend!r}")
        if self.target_resample not in ("nearest", "area"):
            raise FtusegError(f"config: target_resample must be nearest or area, got {self.target_resample!r}")
        return self

    def infer_tile(self) -> int:
        """Side of an inference window in network pixels: ``infer_tile_size``, or the training tile."""
        return self.infer_tile_size or self.tile_size

    def infer_margin_px(self) -> int:
        """Reflect padding around an image at inference, in network pixels."""
        return int(round(self.infer_tile() * self.infer_margin))

    def mpp_for(self, organ: str | None) -> float:
        return float(self.organ_mpp.get(str(organ), self.target_mpp)) if organ is not None else self.target_mpp

    def image_mpp(self, organ: str | None, height: int, width: int, pixel_size: float) -> float:
        """The µm/px the network sees one ``height x width`` image of ``pixel_size`` µm/px at: :meth:`mpp_for`,
        or finer (``small_image_zoom``) when the image's shorter side is less than one tile at that scale."""
        mpp = self.mpp_for(organ)
        if self.mode != "tiled" or self.small_image_zoom <= 1:
            return mpp
        fill = min(height, width) * float(pixel_size) / self.tile_size
        if fill >= mpp:
            return mpp
        return max(fill, mpp / self.small_image_zoom, min(float(pixel_size), mpp))

    def for_image(self, organ: str | None, height: int, width: int, pixel_size: float | None) -> RunConfig:
        """This config with one image's µm/px (:meth:`image_mpp`) fixed: what inference on that image runs."""
        mpp = self.image_mpp(organ, height, width, pixel_size) if pixel_size is not None else self.mpp_for(organ)
        if mpp == self.mpp_for(organ):
            return self
        return dataclasses.replace(self, target_mpp=mpp, organ_mpp={}, small_image_zoom=1.0)

    def scaled_mpps(self, organ: str | None) -> list[float]:
        """The µm/px of each multi-scale TTA pass for ``organ`` (one, at :meth:`mpp_for`, by default)."""
        return [self.mpp_for(organ) * s for s in self.tta_scales]

    def covers(self, organ: str | None) -> bool:
        """Whether this run predicts ``organ`` (an all-organ run covers every organ, and unknown ones)."""
        return not self.organs or str(organ) in self.organs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        from ftuseg.io.atomic import atomic_write

        with atomic_write(path) as fh:
            yaml.safe_dump(self.to_dict(), fh, sort_keys=False)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes).validate()


PRESETS: dict[str, dict[str, Any]] = {
    # The seed write-up: whole images squashed to 512x512, flips only, one-cycle AdamW.
    "seed-512": dict(mode="whole", image_size=512, augment="flips", epochs=20, batch_size=8, lr="auto"),
    # Tiles at a physical resolution, stain/geometry augmentation, blended sliding windows.
    "tiled": dict(
        mode="tiled", tile_size=512, target_mpp=1.0, augment="full", epochs=30, batch_size=8,
        tiles_per_epoch=256, fg_fraction=0.2, overlap=0.5, lr=1e-3,
        # kidney needs context more than detail: without the cortex around it, the renal capsule looks
        # like a gland. On ftu-bench (256 px tiles, fold 1) kidney Dice went 0.57 / 0.79 / 0.83 at
        # 2 / 4 / 6 µm/px, i.e. tiles of 0.5 / 1 / 1.5 mm; 512 px at 3 µm/px spans the same 1.5 mm.
        organ_mpp={"kidney": 3.0},
    ),
    # The embedded demo: the seed pipeline shrunk to finish in minutes on two CPU cores.
    "demo": dict(mode="whole", image_size=128, augment="flips", epochs=12, batch_size=8, lr="auto"),
}


def config_field_names() -> list[str]:
    return [f.name for f in fields(RunConfig)]


def make_config(preset: str = "seed-512", yaml_path: str | os.PathLike | None = None, **overrides: Any) -> RunConfig:
    """Preset, then YAML file, then explicit overrides (``None`` values are ignored)."""
    if preset not in PRESETS:
        raise FtusegError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values: dict[str, Any] = {"preset": preset, **PRESETS[preset]}
    if yaml_path is not None:
        values.update(_read_yaml(Path(yaml_path)))
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(config_field_names()))
    if unknown:
        raise FtusegError(f"config: unknown field(s) {', '.join(unknown)}")
    return RunConfig(**values).validate()


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FtusegError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise FtusegError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise FtusegError(f"{path}: expected a mapping of config fields")
    return data


def load_config(path: str | os.PathLike) -> RunConfig:
    """Load a saved run config (``config.yaml``)."""
    data = _read_yaml(Path(path))
    unknown = sorted(set(data) - set(config_field_names()))
    if unknown:
        raise FtusegError(f"{path}: unknown config field(s) {', '.join(unknown)}")
    return RunConfig(**data).validate()
