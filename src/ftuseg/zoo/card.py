"""Model cards: Markdown filled from the facts a run folder records, plus the figures the caller measured.

Everything the card says about the network, pixel sizes, training images, budget and machine is read
from the run (``config.yaml``, ``run_info.json``, ``split.json``, the checkpoint); the data sources and
their licences come from ftu-bench's own documentation (``sources/*.md``). Accuracy figures are never
made up: without measured figures the card carries a ``TODO`` placeholder, and the shipped-model test
refuses a card that still has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

TEMPLATE = Path(__file__).resolve().parent / "MODEL_CARD.template.md"
TODO = "TODO(lead)"

# what the network finds, per organ (the GeoJSON classification names)
FTU_BY_ORGAN = {"kidney": "glomeruli", "largeintestine": "colon glands / crypts", "prostate": "prostate glands",
                "lung": "alveoli", "spleen": "white pulp"}


@dataclass(frozen=True)
class Source:
    """One ftu-bench source, as its ``sources/*.md`` describes it."""

    name: str
    organ: str
    stain: str
    id_prefix: str  # ftu-bench ids carry a source prefix
    origin: str
    licence: str
    caveat: str


# From ../shared/data/ftu-bench/README.md and sources/*.md (licences as stated there).
FTU_BENCH_SOURCES = (
    Source("HuBMAP", "kidney", "PAS", "hbk-",
           "HuBMAP Vanderbilt kidney PAS tiles with LabelMe glomerulus polygons (github.com/cns-iu/ccf-research-ftu)",
           "repository MIT; images open access on the HuBMAP Data Portal",
           "pixel size not stated (estimated ~1.0 µm/px from glomerulus size); who drew the polygons is not recorded"),
    Source("AIDPATH", "kidney", "PAS", "aid-",
           "AIDPATH kidney biopsies, 20x Aperio (Mendeley Data doi:10.17632/k7nvtgn2x6.3), tiles labelled by a "
           "Kaggle uploader", "CC BY 4.0 (images); the labels' licence is not stated",
           "some glomeruli are not masked; pixel size estimated ~0.5 µm/px"),
    Source("GlaS", "largeintestine", "H&E", "glas-",
           "GlaS / Warwick-QU colon gland segmentation challenge (MICCAI 2015), 20x Zeiss MIRAX MIDI",
           "research use only, non-commercial; cite Sirinukunwattana et al. 2017 and 2015",
           "mostly colorectal adenocarcinoma (T3/T4); touching glands merged into one mask"),
    Source("RINGS", "prostate", "H&E", "rings-",
           "RINGS prostate biopsies (Salvi et al. 2021; Mendeley Data doi:10.17632/h8bdwrtnr5.1), resized to 512 px "
           "by a third party", "CC BY 4.0; cite Salvi et al. 2021",
           "8 images from 2 patients: a smoke test, not a stable estimate; pixel size derived (~2.74 µm/px)"),
)


def sources_for(organs: list[str] | tuple[str, ...]) -> list[Source]:
    return [s for s in FTU_BENCH_SOURCES if s.organ in organs]


def count_by_source(ids: list[str]) -> dict[str, int]:
    return {s.name: sum(str(i).startswith(s.id_prefix) for i in ids) for s in FTU_BENCH_SOURCES}


def render_card(values: dict[str, str]) -> str:
    """Fill the template (``$name`` placeholders); a missing value is an error, not an empty line."""
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(values)


def training_data_section(organs: tuple[str, ...], split: dict[str, list[str]] | None, n_images: dict) -> str:
    """Table of the ftu-bench sources the run was trained on, with licences and image counts per split part."""
    rows = ["| source | organ | stain | images: train / checkpoint choice / held out | licence as stated |",
            "|---|---|---|---|---|"]
    srcs = sources_for(organs)
    counts = {k: count_by_source(split.get(k, [])) for k in ("train", "select", "val")} if split else None
    for s in srcs:
        n = (f"{counts['train'][s.name]} / {counts['select'][s.name]} / {counts['val'][s.name]}"
             if counts else "see run_info")
        rows.append(f"| {s.name}: {s.origin} | {s.organ} | {s.stain} | {n} | {s.licence} |")
    total = (f"{n_images.get('train', '?')} training images, {n_images.get('select', '?')} used only to choose the "
             f"checkpoint, {n_images.get('heldout', '?')} held out") if n_images else ""
    lines = ["ftu-bench (real annotated histology in the HuBMAP + HPA Kaggle layout; see its README), organ "
             f"specialist restricted to {', '.join(organs)}. {total}.", "", *rows]
    other = [i for i in (split or {}).get("train", []) if not any(str(i).startswith(s.id_prefix) for s in srcs)]
    if other:
        lines += ["", f"Also {len(other)} training images from sources not listed above."]
    return "\n".join(lines)


def budget_section(run_info: dict[str, Any], cfg: Any, ckpt: dict[str, Any]) -> str:
    m = run_info.get("machine") or {}
    flags = ", ".join(m.get("cpu_flags") or []) or "none of AVX2/AVX-512/BF16/AMX"
    machine = (f"{m.get('cpu_model', 'unknown CPU')} ({flags}), {m.get('cpu_count', '?')} cores, "
               f"{m.get('torch_threads', '?')} torch threads" + (f", GPU {m['cuda']}" if m.get("cuda") else ", no GPU"))
    seconds = run_info.get("seconds")
    lr = (f"peak LR {cfg.lr:g}" if cfg.encoder_lr_scale == 1.0
          else f"peak LR {cfg.lr:g} for the decoder and head, {cfg.lr * cfg.encoder_lr_scale:.3g} for the encoder")
    lines = [
        f"- Budget: {cfg.max_minutes:g} minutes of wall-clock training" if cfg.max_minutes
        else "- Budget: no time limit",
        f"- Spent: {run_info.get('steps', '?')} optimiser steps of {cfg.batch_size} tiles "
        f"({run_info.get('tiles', '?')} tiles) in {seconds / 60:.1f} minutes" if seconds is not None
        else f"- Spent: {run_info.get('steps', '?')} steps, {run_info.get('tiles', '?')} tiles",
        f"- Machine: {machine}; torch {m.get('torch', '?')}, precision {run_info.get('precision', '?')}"
        + (f", {run_info['world_size']} process(es)" if run_info.get("world_size") else ""),
        f"- Recipe: {cfg.preset} preset, {cfg.tile_size} px tiles, {cfg.fg_fraction:g} of tiles centred on an FTU, "
        f"augmentation {cfg.augment}, AdamW one-cycle {lr}, seed {cfg.seed}",
    ]
    if ckpt.get("step") is not None:
        sel = ckpt.get("best_dice")
        chosen = f" (Dice {sel:.3f} on the checkpoint-choice images)" if isinstance(sel, float) else ""
        lines.append(f"- Shipped checkpoint: epoch {int(ckpt.get('epoch', 0)) + 1}, step {ckpt['step']}{chosen}")
    return "\n".join(lines)


def accuracy_section(scores: dict[str, Any] | None, split_text: str | None, n_heldout: int | None) -> str:
    """Per-source (and per-organ, overall) mean Dice from a ``dice_breakdown`` per variant (no TTA, TTA)."""
    if not scores:
        return (f"{TODO}: measured Dice per source on images the model never saw (say which split), e.g. "
                "`--scores benchmarks/results/zoo_train.json`. No figure has been measured for this card yet.")
    variants = [(label, scores[key]) for key, label in (("no_tta", "Dice"), ("tta", "Dice, flip TTA"))
                if isinstance(scores.get(key), dict)]
    if not variants:
        variants = [("Dice", scores)]
    header = "| images | n | " + " | ".join(label for label, _ in variants) + " |"
    rows = [header, "|---|---:|" + "---:|" * len(variants)]
    first = variants[0][1]

    def row(label: str, get) -> None:
        vals = [get(v) for _, v in variants]
        n = get(first, "n_images")
        rows.append(f"| {label} | {n if n is not None else '?'} | "
                    + " | ".join("?" if x is None else f"{x:.3f}" for x in vals) + " |")

    def pick(group: str | None, key: str | None):
        def get(v: dict, field: str = "mean_dice"):
            d = v if group is None else (v.get(group) or {}).get(key) or {}
            return d.get(field)
        return get

    row("all", pick(None, None))
    for organ in sorted(first.get("by_organ") or {}):
        row(f"organ {organ}", pick("by_organ", organ))
    for src in sorted(first.get("by_data_source") or {}):
        row(f"source {src}", pick("by_data_source", src))
    where = split_text or f"{TODO}: say which split these images are"
    note = ""
    if n_heldout is not None and first.get("n_images") not in (None, n_heldout):
        note = (f"\n\nNote: the run held out {n_heldout} images, the figures cover {first.get('n_images')}.")
    return f"Mean per-image Dice on {where}.\n\n" + "\n".join(rows) + note
