"""Turn a trained run folder into a shipped model: ``ftuseg models package RUN_DIR --name NAME``.

Also ``python -m ftuseg.zoo.package RUN_DIR --name NAME ...`` (the same command). The run folder needs
``best.pt`` (or ``last.pt``) and ``config.yaml``; ``thresholds.json``, ``run_info.json`` and
``split.json`` are used when present. Writes ``<out>/<name>/`` (default: the shipped folder
``src/ftuseg/zoo/models``) with ``config.yaml``, ``model.safetensors`` (fp16), ``thresholds.json``,
``MODEL_CARD.md`` and, last, ``zoo.json``: a folder without ``zoo.json`` is not a model, so a packaging
killed half-way never leaves a model that loads.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ftuseg.errors import FtusegError
from ftuseg.models.checkpoint import (
    MANIFEST_NAME,
    SAFETENSORS_NAME,
    load_checkpoint,
    load_run_model,
    resolve_checkpoint,
    save_safetensors_checkpoint,
    sha256_file,
)
from ftuseg.zoo import card as C
from ftuseg.zoo.registry import CARD_NAME, MANIFEST_FORMAT, NAME_RE, ZooModel, read_model, shipped_root

if TYPE_CHECKING:  # torch loads on use (packaging needs it; listing and loading ONNX models do not)
    import torch

# the files a model folder may hold; anything else left by an earlier packaging is removed
MODEL_FILES = ("config.yaml", SAFETENSORS_NAME, "thresholds.json", CARD_NAME, MANIFEST_NAME)
# an fp16 copy must predict like the fp32 run: the largest probability difference allowed on a check input.
# Random noise is a harsh input (out of distribution, extreme activations): a ftu-bench model part-way
# through training differed by up to 0.012 there, while its mean difference was far smaller
FP16_TOLERANCE = 0.05


@dataclass
class PackageResult:
    model: ZooModel
    fp16_max_prob_diff: float  # fp16 model vs the fp32 run on a random check input
    fp16_flipped: float = 0.0  # share of check pixels whose 0.5-threshold decision differs
    todos: list[str] = field(default_factory=list)  # card sections still marked TODO (no figures given)


def _read_mapping(value: str | os.PathLike | dict | None, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    path = Path(value)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except FileNotFoundError:
        raise FtusegError(f"{path}: {what} file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise FtusegError(f"{path}: unreadable {what} file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise FtusegError(f"{path}: {what} file must hold a mapping")
    return data


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise FtusegError(f"{path}: invalid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def _scores_for(scores: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    """A benchmark result for this model: zoo_train.json's ``models[name]``, or a record with no_tta/tta."""
    if "models" in scores:
        if name not in scores["models"]:
            raise FtusegError(f"{where}: has no scores for model {name!r} (it has {', '.join(scores['models'])})")
        return scores["models"][name]
    return scores


def _stain_for(organs: tuple[str, ...], stain: str | None, run_dir: Path) -> str:
    if stain:
        return stain
    stains = sorted({s.stain for s in C.sources_for(organs)})
    if len(stains) != 1:
        raise FtusegError(f"{run_dir}: cannot tell the stain of organs {', '.join(organs)} from ftu-bench; pass "
                          "--stain")
    return stains[0]


def _fp16_difference(fp32_model: torch.nn.Module, folder: Path, tile: int) -> tuple[float, float]:
    """Max |probability| difference between the fp32 run and the packaged fp16 model on a fixed random input,
    and the share of pixels whose 0.5-threshold decision differs."""
    import torch

    zoo_model, _ = load_run_model(folder)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, tile, tile, generator=gen) * 255.0
    with torch.inference_mode():
        a = torch.sigmoid(fp32_model.float().eval()(x))
        b = torch.sigmoid(zoo_model(x))
    return float((a - b).abs().max()), float(((a > 0.5) != (b > 0.5)).float().mean())


def package_run(
    run_dir: str | os.PathLike,
    name: str,
    stain: str | None = None,
    card: str | os.PathLike | dict | None = None,
    out: str | os.PathLike | None = None,
    scores: str | os.PathLike | dict | None = None,
    organs: Sequence[str] | None = None,
    which: str = "best",
) -> PackageResult:
    """Package the checkpoint ``which`` of ``run_dir`` as zoo model ``name`` in ``out`` (default: shipped folder).

    ``stain``: e.g. ``PAS`` or ``H&E`` (default: the stain of the run's organs in ftu-bench). ``card``: a
    mapping or YAML/JSON file of what the run folder cannot tell: ``summary``, ``accuracy_split`` (which
    images the figures are on), ``failure_modes`` (list), ``notes``. ``scores``: measured Dice, either a
    ``dice_breakdown`` per variant (``{"no_tta": {...}, "tta": {...}}``) or ``benchmarks/results/
    zoo_train.json`` (its ``models[name]``). ``organs``: for a run trained on every organ, the organs the
    model is for (a shipped model always names its organs, so that it can refuse the others).
    """
    from ftuseg import __version__
    from ftuseg.inference.postprocess import Thresholds

    run_dir = Path(run_dir)
    if not NAME_RE.match(name):
        raise FtusegError(f"model name {name!r}: use lower-case letters, digits, '.', '_' and '-' (e.g. glomeruli-pas)")
    ckpt_path = resolve_checkpoint(run_dir, which)
    if ckpt_path.suffix != ".pt":
        raise FtusegError(f"{ckpt_path}: package a training run folder (best.pt), not a packaged model")
    run_dir = ckpt_path.parent
    model, cfg = load_run_model(run_dir, which)  # also proves the weights fit the config
    payload = load_checkpoint(ckpt_path)
    card_in = _read_mapping(card, "model card")
    unknown = sorted(set(card_in) - {"summary", "accuracy_split", "failure_modes", "notes"})
    if unknown:
        raise FtusegError(f"{card}: unknown model card field(s) {', '.join(unknown)} (summary, accuracy_split, "
                          "failure_modes, notes)")
    score_data = _scores_for(_read_mapping(scores, "scores"), name, str(scores)) if scores is not None else None

    run_organs = tuple(cfg.organs)
    if organs:
        organs = tuple(str(o) for o in organs)
        if run_organs and set(organs) != set(run_organs):
            raise FtusegError(f"{run_dir}: the run was trained on {', '.join(run_organs)}, not {', '.join(organs)}")
    else:
        organs = run_organs
    if not organs:
        raise FtusegError(f"{run_dir}: the run was trained on every organ (config organs is empty); say which "
                          "organs the model is for with --organs")
    stain = _stain_for(organs, stain, run_dir)
    changes: dict[str, Any] = {"organs": list(organs), "init_from": None, "device": "auto"}
    if cfg.mode == "tiled" and len(organs) == 1:
        # the model's own scale also for an image whose organ is forced onto it (--force-model)
        changes["target_mpp"] = cfg.mpp_for(organs[0])
    zoo_cfg = cfg.replace(**changes)
    mpp = {o: zoo_cfg.mpp_for(o) for o in organs} if cfg.mode == "tiled" else {}

    folder = Path(out) if out is not None else shipped_root()
    folder = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)  # not a model until its manifest is written again
    for stale in folder.iterdir():
        if stale.is_file() and stale.name not in MODEL_FILES:
            stale.unlink()

    zoo_cfg.save(folder / "config.yaml")
    state = model.state_dict()
    buffers = {k for k, _ in model.named_buffers() if k in state}
    # parameters in fp16 halve the file; BatchNorm statistics are few and stay fp32
    save_safetensors_checkpoint(folder / SAFETENSORS_NAME, state, keep_fp32=buffers, metadata={
        "format": MANIFEST_FORMAT, "name": name, "config": json.dumps(zoo_cfg.to_dict(), sort_keys=True)})
    thresholds_src = run_dir / "thresholds.json"
    thresholds = None
    if thresholds_src.is_file():
        thresholds = Thresholds.load(thresholds_src)
        thresholds.save(folder / "thresholds.json")
    else:
        (folder / "thresholds.json").unlink(missing_ok=True)
    weights = folder / SAFETENSORS_NAME
    sha = sha256_file(weights)
    size = weights.stat().st_size
    manifest = {
        "name": name, "format": MANIFEST_FORMAT, "organs": list(organs), "stain": stain, "mpp": mpp,
        "mode": zoo_cfg.mode, "arch": zoo_cfg.arch, "encoder": zoo_cfg.encoder,
        "tile_size": zoo_cfg.tile_size if zoo_cfg.mode == "tiled" else zoo_cfg.image_size,
        "file": SAFETENSORS_NAME, "size_bytes": size, "sha256": sha,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "source_run": {"checkpoint": ckpt_path.name, "epoch": payload.get("epoch"), "step": payload.get("step")},
        "ftuseg_version": __version__,
    }
    # the hash check needs the manifest: write a provisional one to measure fp16 against fp32, then the final
    _write_manifest(folder, manifest)
    tile = min(manifest["tile_size"], 256)
    diff, flipped = _fp16_difference(model, folder, tile)
    if not diff <= FP16_TOLERANCE:
        (folder / MANIFEST_NAME).unlink(missing_ok=True)
        raise FtusegError(f"{run_dir}: the fp16 copy predicts up to {diff:.3f} away from the fp32 run "
                          f"(tolerance {FP16_TOLERANCE}); not packaged")
    manifest["fp16_max_prob_diff"] = round(diff, 6)
    manifest["fp16_flipped_pixels"] = round(flipped, 8)

    run_info = _read_json(run_dir / "run_info.json")
    split = _read_json(run_dir / "split.json") or None
    n_images = run_info.get("images") or {}
    todos: list[str] = []
    ftus = ", ".join(C.FTU_BY_ORGAN.get(o, o) for o in organs)
    if cfg.mode == "tiled":
        mpp_line = "; ".join(f"{o} {v:g} µm/px (a {zoo_cfg.tile_size} px tile spans {zoo_cfg.tile_size * v / 1000:.2f} "
                             "mm)" for o, v in mpp.items())
        mpp_line += ". Each image is resampled to it from its own pixel size (metadata, CSV or --pixel-size)"
        inference = (f"{zoo_cfg.blend}-blended sliding windows of {zoo_cfg.infer_tile()} px, "
                     f"{zoo_cfg.overlap:.0%} overlap; flip TTA with --tta")
    else:
        mpp_line = f"none: the whole image is resized to {zoo_cfg.image_size} x {zoo_cfg.image_size} px"
        inference = f"whole image resized to {zoo_cfg.image_size} px"
    if thresholds is not None and thresholds.organs:
        thr = "; ".join(f"{o}: {v.get('threshold', thresholds.threshold):g}, objects under "
                        f"{v.get('min_area_um2', thresholds.min_area_um2):g} µm² dropped"
                        for o, v in sorted(thresholds.organs.items()))
        thr = f"tuned per organ out of fold ({thr})"
    else:
        thr = f"{zoo_cfg.threshold:g} (not tuned), minimum object area {zoo_cfg.min_area_um2:g} µm²"
    weights_note = f", encoder initialised from {cfg.encoder_weights} before training" if cfg.encoder_weights else ""
    srcs = C.sources_for(organs)
    caveats = [f"- {s.name}: {s.caveat}." for s in srcs]
    caveats += [f"- {m}" for m in card_in.get("failure_modes") or []]
    caveats += [f"- Trained on {stain} only; other stains (e.g. immunohistochemistry) and other organs are refused "
                "unless forced, and untested.",
                "- The image's pixel size must be right: a wrong one changes the scale the network sees."]
    noncommercial = [s.name for s in srcs if "non-commercial" in s.licence]
    licence_note = (f"Trained on {', '.join(noncommercial)}, whose terms are research use only, non-commercial: "
                    "treat this model the same way." if noncommercial else
                    "Cite the training data sources above (CC BY 4.0 requires attribution).")
    split_text = card_in.get("accuracy_split")
    if score_data and not split_text:
        first = score_data.get("no_tta") if isinstance(score_data.get("no_tta"), dict) else score_data
        if cfg.fold is not None and first.get("n_images") == n_images.get("heldout"):
            split_text = (f"held-out fold {cfg.fold} of ftu-bench's {cfg.n_folds} grouped folds "
                          f"({first.get('n_images')} images), which neither training nor checkpoint choice saw")
    accuracy = C.accuracy_section(score_data, split_text, n_images.get("heldout"))
    if C.TODO in accuracy:
        todos.append("accuracy")
    if score_data:
        # the card's figures, machine-readable: a test re-scores the shipped model on the same images
        manifest["accuracy"] = {"split": split_text, "fold": cfg.fold, "n_folds": cfg.n_folds, "seed": cfg.seed,
                                **{k: _summary(v) for k, v in score_data.items() if k in ("no_tta", "tta")
                                   and isinstance(v, dict)}}
    summary = card_in.get("summary") or (
        f"Finds {ftus} in {stain}-stained {', '.join(organs)} histology: a {zoo_cfg.arch} / {zoo_cfg.encoder} network "
        "trained on ftu-bench.")
    notes = card_in.get("notes")
    values = {
        "name": name, "summary": summary + (f"\n\n{notes}" if notes else ""), "ftus": ftus,
        "organs": ", ".join(organs), "stain": stain, "mpp_line": mpp_line,
        "network": f"{zoo_cfg.arch} with encoder {zoo_cfg.encoder}, {manifest['n_parameters'] / 1e6:.2f} M "
                   f"parameters{weights_note}",
        "size_mb": f"{size / 1e6:.1f}",
        "dtype_note": f"parameters fp16 and BatchNorm statistics fp32, restored to fp32 at load (fp16 vs the fp32 "
                      f"run on a random check input: max probability difference {diff:.1e}, "
                      f"{flipped:.4%} of pixels on the other side of 0.5)",
        "sha256": sha, "inference": inference, "thresholds": thr, "first_organ": organs[0],
        "organ_flag": f" --organ {organs[0]}" if len(organs) > 1 else "",
        "stain_note": (f"The model was trained on {stain} only. `ftuseg predict --model {name}` assumes the input is "
                       f"{stain} (say otherwise with `--stain`) and covers {', '.join(organs)}: another stain or "
                       "organ is refused unless `--force-model` is given (see the README)."),
        "training_data": C.training_data_section(organs, split, n_images),
        "budget": C.budget_section(run_info, cfg, payload) if run_info else f"{C.TODO}: no run_info.json in the run",
        "accuracy": accuracy, "failure_modes": "\n".join(caveats), "licence_note": licence_note,
        "provenance": (f"Packaged by ftuseg {__version__} on {_dt.date.today().isoformat()} from `{run_dir}` "
                       f"({ckpt_path.name}, step {payload.get('step')}). "
                       "`config.yaml` is the run's configuration restricted to the organs above."),
    }
    if not run_info:
        todos.append("budget")
    from ftuseg.io.atomic import atomic_write

    with atomic_write(folder / CARD_NAME) as fh:
        fh.write(C.render_card(values))
    _write_manifest(folder, manifest)
    return PackageResult(read_model(folder), diff, flipped, todos)


def _summary(breakdown: dict[str, Any]) -> dict[str, Any]:
    """A dice_breakdown without its per-image rows."""
    return {k: v for k, v in breakdown.items() if k in ("mean_dice", "n_images", "by_organ", "by_data_source")}


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    from ftuseg.io.atomic import atomic_write

    with atomic_write(folder / MANIFEST_NAME) as fh:
        json.dump(manifest, fh, indent=2)
        fh.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ftuseg.zoo.package RUN_DIR --name NAME ...`` = ``ftuseg models package RUN_DIR --name NAME ...``."""
    from ftuseg.cli import main as cli_main

    return cli_main(["models", "package", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
