"""The training loop: plain PyTorch, AdamW + one-cycle, autocast on CUDA, DDP under torchrun,
rank-0 atomic checkpoints (best + last), per-epoch CSV log, exact resume."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from ftuseg.config import RunConfig
from ftuseg.errors import FtusegError
from ftuseg.inference.engine import TorchTileFn, cpu_has_native_bf16
from ftuseg.io.atomic import atomic_write
from ftuseg.io.dataset import load_table
from ftuseg.models.checkpoint import load_checkpoint, save_checkpoint
from ftuseg.models.factory import build_model
from ftuseg.training import distributed as D
from ftuseg.training.augment import augment_batch
from ftuseg.training.datasets import EpochKeyed, EpochOrder, TileDataset, WholeImageDataset
from ftuseg.training.evaluation import evaluate_images, save_oof  # moved there; callers still import them here
from ftuseg.training.losses import BCEDiceLoss
from ftuseg.training.lr_finder import LRFinderResult, lr_range_test, plot_lr_find
from ftuseg.training.splits import train_val_split

LOG_FIELDS = ["epoch", "step", "lr", "train_loss", "val_dice", "epoch_seconds", "elapsed_seconds", "tiles_per_s"]


@dataclass
class TrainResult:
    run_dir: Path
    best_dice: float | None
    epochs: int
    steps: int
    lr: float
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def param_groups(model: torch.nn.Module, encoder_lr_scale: float = 1.0) -> list[dict]:
    """AdamW parameter groups, each with the ``lr_scale`` its LR is multiplied by: one group for the whole
    network, or the encoder (``encoder_lr_scale``) apart from the decoder and head (1)."""
    if encoder_lr_scale == 1.0:
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, torch.nn.Module):
        raise FtusegError(f"config: encoder_lr_scale needs a model with an encoder, not {type(model).__name__}")
    own = list(encoder.parameters())
    ids = {id(p) for p in own}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": own, "lr_scale": float(encoder_lr_scale)}, {"params": rest, "lr_scale": 1.0}]


def one_cycle_lr(max_lr: float, progress: float, pct_start: float = 0.3, div: float = 25.0,
                 final_div: float = 1e4) -> float:
    """torch's OneCycleLR (cosine) as a function of progress in [0, 1], so it can follow a time budget."""
    p = min(max(progress, 0.0), 1.0)
    lo, hi, end = max_lr / div, max_lr, max_lr / (div * final_div)
    if p < pct_start:
        t = p / pct_start
        return hi + (lo - hi) * (1 + math.cos(math.pi * t)) / 2
    t = (p - pct_start) / (1 - pct_start)
    return end + (hi - end) * (1 + math.cos(math.pi * t)) / 2


def train_autocast(cfg: RunConfig, device: torch.device) -> tuple[bool, torch.dtype]:
    """Whether training runs under autocast, and in which dtype.

    CUDA: bf16 where supported, else fp16 (with a GradScaler). CPU: bf16 only where oneDNN has native
    kernels (AVX512-BF16 / AMX); there a ResNet34 U-Net training step on 256 px tiles ran 2.6x faster
    than fp32 on this project's 2-core CPU (benchmarks/tile_loading.py). Emulated bf16 is slower than fp32,
    so other CPUs train in fp32. Weights, optimiser state and the loss stay fp32 either way.
    """
    if not cfg.amp:
        return False, torch.float32
    if device.type == "cuda":
        return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return True, torch.bfloat16
    return False, torch.float32


def make_train_dataset(cfg: RunConfig, table: pd.DataFrame, progress: bool = False) -> Dataset:
    if cfg.mode == "whole":
        return WholeImageDataset(table, cfg.image_size, progress=progress)
    return TileDataset(table, cfg, length=cfg.tiles_per_epoch, seed=cfg.seed)


def split_table(cfg: RunConfig, data_dir: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    table = load_table(data_dir, split="train", need_rle=True, pixel_size=cfg.data_pixel_size, organ=cfg.data_organ)
    # the k-fold partition has its own seed: a rerun with another training seed reports the same images
    seed = cfg.fold_seed if cfg.fold is not None else cfg.seed
    train_idx, val_idx = train_val_split(table, cfg.val_fraction, cfg.fold, cfg.n_folds, seed)
    if cfg.organs:
        # filter after splitting: a specialist's folds are the all-organ folds restricted to its organs
        keep = table["organ"].astype(str).isin(cfg.organs).to_numpy()
        missing = sorted(set(cfg.organs) - set(table["organ"].astype(str)))
        if "annotation_path" in table.columns:
            # your own annotations may cover some of a specialist's organs (colon only, for the glands model)
            if not keep.any():
                raise FtusegError(f"{data_dir}: no image of organ {', '.join(cfg.organs)} (config organs, kept by "
                                  "--init-from); give --organ or an organ column in annotations.csv")
        elif missing:
            raise FtusegError(f"{data_dir}: organs {', '.join(missing)} (config organs) not in train.csv")
        train_idx, val_idx = train_idx[keep[train_idx]], val_idx[keep[val_idx]]
    if len(train_idx) == 0:
        raise FtusegError(f"{data_dir}: no training images left after the validation split")
    return table, train_idx, val_idx


def selection_split(cfg: RunConfig, table: pd.DataFrame, train_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fit, select) row indices: a fold run chooses its best checkpoint on a grouped inner split of its own
    training part, never on the fold it reports. Without a fold (or with ``select_fraction`` 0, or a single
    group) nothing is held back: the run validates on its validation split as before."""
    if cfg.fold is None or cfg.select_fraction <= 0:
        return train_idx, np.arange(0)
    fit, select = train_val_split(table.iloc[train_idx].reset_index(drop=True), cfg.select_fraction,
                                  seed=cfg.seed + 1, stratify=cfg.select_stratify)
    if len(select) == 0 or len(fit) == 0:
        return train_idx, np.arange(0)
    return train_idx[fit], train_idx[select]


def write_run_info(run_dir: Path, cfg: RunConfig, n_train: int, n_select: int, n_heldout: int, **budget) -> None:
    """``run_info.json``: the machine (CPU model and AVX2/AVX-512/BF16/AMX, threads, load) and the budget
    spent in steps, tiles and seconds, so that figures from different machines are never mixed up."""
    from ftuseg.hardware import machine_info

    use_amp, dtype = train_autocast(cfg, torch.device("cpu") if cfg.device in ("auto", "cpu") and
                                    not torch.cuda.is_available() else torch.device("cuda"))
    info = {"machine": machine_info(), "images": {"train": n_train, "select": n_select, "heldout": n_heldout},
            "precision": str(dtype).replace("torch.", "") if use_amp else "float32",
            "max_minutes": cfg.max_minutes, "tile_size": cfg.tile_size if cfg.mode == "tiled" else cfg.image_size,
            **budget}
    with atomic_write(run_dir / "run_info.json") as fh:
        json.dump(info, fh, indent=2, default=float)


def weight_ema(model: torch.nn.Module, decay: float, state: dict | None = None):
    """An exponential moving average of ``model``'s weights and buffers (BatchNorm statistics), updated after
    every optimiser step, or None when ``decay`` is 0. Checkpoints carry it as ``ema`` beside the raw
    weights; selection and the reported model stay the raw weights unless a caller loads ``ema``."""
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if state is not None:
        ema.module.load_state_dict(state)
        ema.n_averaged.fill_(1)  # resumed: keep averaging from the saved average, not restart from a copy
    return ema


def _write_log(path: Path, history: list[dict]) -> None:
    with atomic_write(path) as fh:
        w = csv.DictWriter(fh, fieldnames=LOG_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(history)


def find_lr(cfg: RunConfig, model: torch.nn.Module, dataset: Dataset, device: torch.device,
            num_iter: int = 40, progress: bool = True) -> LRFinderResult:
    loss_fn = BCEDiceLoss()
    gen = torch.Generator().manual_seed(cfg.seed + 7)

    def batches():
        loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=len(dataset) > cfg.batch_size,
                            num_workers=cfg.num_workers, generator=gen)
        for x, y in loader:
            x, y = augment_batch(x, y, cfg.augment, gen)
            yield x.to(device), y.to(device)

    use_amp, amp_dtype = train_autocast(cfg, device)
    return lr_range_test(model, batches, loss_fn, device=device, num_iter=num_iter,
                         weight_decay=cfg.weight_decay, progress=progress,
                         # fp16 would need a GradScaler here; the sweep then runs in fp32
                         autocast_dtype=amp_dtype if use_amp and amp_dtype == torch.bfloat16 else None)


def run_lr_find(cfg: RunConfig, data_dir: str | os.PathLike, out_png: str | os.PathLike,
                num_iter: int = 40, progress: bool = True) -> LRFinderResult:
    """``ftuseg lr-find``: LR range test on the training split; saves the plot and a JSON beside it."""
    seed_everything(cfg.seed)
    table, train_idx, _ = split_table(cfg, data_dir)
    dataset = make_train_dataset(cfg, table.iloc[train_idx], progress=progress)
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device in ("auto", "cuda") else "cpu")
    model = build_model(cfg).to(device)
    result = find_lr(cfg, model, dataset, device, num_iter=num_iter, progress=progress)
    plot_lr_find(result, out_png)
    with atomic_write(Path(out_png).with_suffix(".json")) as fh:
        json.dump(result.to_dict(), fh, indent=2)
    return result


def train(
    cfg: RunConfig,
    data_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    save_oof_probs: bool = True,
) -> TrainResult:
    """Train ``cfg`` on ``data_dir`` (competition layout) into ``run_dir``.

    Works the same in one process and under ``torchrun`` (DDP, DistributedSampler, rank-0 writes).
    ``max_steps`` stops early after that many optimiser steps (tests, smoke runs).
    """
    info, device = D.init_distributed(cfg.device)
    run_dir = Path(run_dir)
    try:
        return _train(cfg, data_dir, run_dir, resume, progress and info.is_main, max_steps, save_oof_probs,
                      info, device)
    finally:
        D.cleanup(info)


def _train(cfg, data_dir, run_dir: Path, resume, progress, max_steps, save_oof_probs, info, device) -> TrainResult:
    from tqdm.auto import tqdm

    seed_everything(cfg.seed)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(run_dir, os.W_OK):
            raise FtusegError(f"{run_dir}: run folder is not writable")
    state = None
    if resume:
        last = run_dir / "last.pt"
        if last.exists():
            state = load_checkpoint(last)
            saved = RunConfig(**state["config"]).validate()
            if (saved.arch, saved.encoder, saved.mode) != (cfg.arch, cfg.encoder, cfg.mode):
                raise FtusegError(f"{last}: cannot resume a {saved.arch}/{saved.encoder} run as "
                                  f"{cfg.arch}/{cfg.encoder}")
    table, train_idx, heldout_idx = split_table(cfg, data_dir)
    fit_idx, select_idx = selection_split(cfg, table, train_idx)
    heldout_table = table.iloc[heldout_idx]
    train_table = table.iloc[fit_idx]
    # the images that choose the best checkpoint: a fold run's inner split, else the validation split
    val_table = table.iloc[select_idx] if len(select_idx) else (heldout_table if cfg.fold is None else
                                                              heldout_table.iloc[:0])
    # validation and out-of-fold scoring run one pass per image, like their tile function (no TTA): the run's
    # tta and tta_scales are its prediction settings
    eval_cfg = replace(cfg, tta_scales=[1.0])
    if info.is_main:
        cfg.save(run_dir / "config.yaml")
        with atomic_write(run_dir / "split.json") as fh:
            json.dump({"train": train_table["id"].tolist(), "select": val_table["id"].tolist(),
                       "val": heldout_table["id"].tolist()}, fh)
        write_run_info(run_dir, cfg, len(train_table), len(val_table), len(heldout_table))
    dataset = make_train_dataset(cfg, train_table, progress=progress)

    # fine-tuning (--init-from): every weight comes from the source, so no encoder weights are loaded first
    model = build_model(cfg, load_weights=state is None and not cfg.init_from).to(device)
    if state is not None:
        model.load_state_dict(state["model"])
    elif cfg.init_from:
        from ftuseg.zoo.finetune import init_model_from

        init_model_from(model, cfg)

    # --- learning rate ------------------------------------------------------------------------
    if state is not None:
        lr = float(state["lr"])
    elif cfg.lr == "auto":
        lr = 0.0
        if info.is_main:
            result = find_lr(cfg, model, dataset, device, progress=progress)
            plot_lr_find(result, run_dir / "lr_find.png")
            with atomic_write(run_dir / "lr_find.json") as fh:
                json.dump(result.to_dict(), fh, indent=2)
            lr = result.suggestion
        lr = D.broadcast_float(lr, info)
    else:
        lr = float(cfg.lr)

    # channels_last before DDP wraps the model: DDP's gradient buckets must see the final parameter layout
    # (converting later, e.g. inside TorchTileFn on rank 0 only, would silently desynchronise the buckets)
    model = model.to(memory_format=torch.channels_last)
    core = model
    if info.enabled:
        if device.type == "cuda":
            model = core = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # no per-forward buffer broadcast: BatchNorm running statistics are averaged over ranks once per
        # epoch instead (D.average_buffers), which uses every rank's data and keeps replicas identical
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, **D.no_forward_buffer_sync(),
        )
    groups = param_groups(core, cfg.encoder_lr_scale)
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
    ema = weight_ema(core, cfg.ema_decay, state.get("ema") if state else None)
    if state is not None and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        # the config, not the checkpoint, says how the groups scale (older checkpoints do not say at all)
        for g, fresh in zip(opt.param_groups, groups, strict=True):
            g["lr_scale"] = fresh["lr_scale"]
    loss_fn = BCEDiceLoss()
    use_amp, amp_dtype = train_autocast(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    # DistributedSampler(drop_last=True) gives every rank floor(N / world) samples: equal step counts
    per_rank = len(dataset) // info.world_size if info.enabled else len(dataset)
    if per_rank == 0:
        raise FtusegError(f"{data_dir}: {len(dataset)} training samples cannot feed {info.world_size} processes")
    steps_per_epoch = max(1, per_rank // cfg.batch_size if per_rank >= cfg.batch_size else 1)
    total_steps = steps_per_epoch * cfg.epochs
    budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes else None

    history: list[dict] = list(state.get("history", [])) if state else []
    start_epoch = int(state["epoch"]) + 1 if state else 0
    step = int(state["step"]) if state else 0
    best = state.get("best_dice") if state else None
    elapsed_before = float(state.get("elapsed", 0.0)) if state else 0.0
    t0 = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t0

    def shared_elapsed() -> float:
        # under DDP every rank must see the same clock, or the LR (and the stop step) would differ per rank
        return D.all_reduce_max(elapsed(), info)

    def progress_frac(now: float | None) -> float:
        frac = step / total_steps
        # under a wall-clock budget the schedule follows whichever runs out first: steps or time
        return max(frac, now / budget_s) if budget_s and now is not None else frac

    epoch = start_epoch - 1
    stop = False
    best_written = state is not None and (run_dir / "best.pt").exists()
    # one loader for the whole run: its workers persist, and with them their decoded images (a fresh loader per
    # epoch forked fresh workers that decoded every image again)
    order = EpochOrder(len(dataset), cfg.seed, info.world_size, info.rank)
    loader = DataLoader(
        EpochKeyed(dataset), batch_size=cfg.batch_size, sampler=order, drop_last=per_rank >= cfg.batch_size,
        num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0, pin_memory=device.type == "cuda",
    )
    for epoch in range(start_epoch, cfg.epochs):
        order.set_epoch(epoch)
        # augmentation draws differ per rank (rank 0 keeps the single-process stream)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch + 1_000_003 * info.rank)
        model.train()
        te = time.perf_counter()
        losses, seen = [], 0
        now = shared_elapsed() if budget_s else None
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress, leave=False)
        for x, y in bar:
            x, y = augment_batch(x, y, cfg.augment, gen)
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            cur_lr = one_cycle_lr(lr, progress_frac(now))
            for g in opt.param_groups:
                g["lr"] = cur_lr * g["lr_scale"]
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise FtusegError(f"training diverged (loss {float(loss)}) at step {step}; lower the LR")
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update_parameters(core)
            step += 1
            seen += x.shape[0]
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses):.4f}", lr=f"{cur_lr:.2e}")
            if budget_s:
                now = shared_elapsed()
            if (max_steps is not None and step >= max_steps) or (budget_s and now >= budget_s):
                stop = True
                break
        bar.close()
        epoch_s = time.perf_counter() - te
        train_loss = D.all_reduce_mean(float(np.mean(losses)) if losses else float("nan"), info)
        last_epoch = stop or epoch == cfg.epochs - 1
        val_dice = None
        D.average_buffers(core, info)
        # selection window: only validations this far into the schedule may become best.pt (every epoch in it)
        in_window = progress_frac(now) >= cfg.select_after or last_epoch
        if info.is_main and len(val_table) and ((cfg.val_every and (epoch + 1) % cfg.val_every == 0) or last_epoch
                                                 or (cfg.select_after > 0 and in_window)):
            scores, _ = evaluate_images(TorchTileFn(core, device, amp=cfg.amp), eval_cfg, val_table, progress=progress)
            val_dice = float(scores["dice"].mean())
        record = {"epoch": epoch + 1, "step": step, "lr": cur_lr if losses else lr, "train_loss": train_loss,
                  "val_dice": val_dice, "epoch_seconds": round(epoch_s, 3), "elapsed_seconds": round(elapsed(), 3),
                  "tiles_per_s": round(seen * info.world_size / max(epoch_s, 1e-9), 3)}
        history.append(record)
        if info.is_main:
            improved = val_dice is not None and in_window and (best is None or val_dice > best)
            if improved:
                best = val_dice
            ema_state = {"ema": ema.module.state_dict()} if ema is not None else {}
            extra = dict(optimizer=opt.state_dict(), epoch=epoch, step=step, lr=lr, best_dice=best,
                         elapsed=elapsed(), history=history, **ema_state)
            save_checkpoint(run_dir / "last.pt", core, cfg, **extra)
            # a fresh run writes best.pt at its first epoch: one left in the folder by an earlier run must
            # not survive as this run's "best" until its first validation
            if improved or (len(val_table) == 0) or not best_written:
                save_checkpoint(run_dir / "best.pt", core, cfg, epoch=epoch, step=step, lr=lr, best_dice=best,
                                **ema_state)
                best_written = True
            _write_log(run_dir / "metrics.csv", history)
            if progress:
                msg = f"epoch {epoch + 1}: loss {train_loss:.4f}"
                if val_dice is not None:
                    msg += f"  val dice {val_dice:.4f}"
                tqdm.write(msg)
        D.barrier(info)
        if stop:  # budget or max_steps reached: this epoch is the last (and was checkpointed above)
            break
    bar = loader = None  # its persistent workers (and their decoded images) go before scoring

    if info.is_main:
        write_run_info(run_dir, cfg, len(train_table), len(val_table), len(heldout_table),
                       steps=step, tiles=step * cfg.batch_size * info.world_size, seconds=elapsed(),
                       best_dice=best, world_size=info.world_size)
    if info.is_main and save_oof_probs and len(heldout_table) and cfg.fold is not None:
        from ftuseg.models.checkpoint import load_run_model

        best_model, _ = load_run_model(run_dir, "best")
        scores, probs = evaluate_images(TorchTileFn(best_model, device, amp=cfg.amp), eval_cfg, heldout_table,
                                        progress=progress, keep_proba=True)
        save_oof(run_dir, probs, scores)
    return TrainResult(run_dir, best, epoch + 1, step, lr, history)
