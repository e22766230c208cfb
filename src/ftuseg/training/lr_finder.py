"""The LR range test (Smith 2015; the fastai "lr_find"): exponential LR sweep, smoothed loss."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]  # exponentially smoothed, bias-corrected
    suggestion: float
    min_loss_lr: float

    def to_dict(self) -> dict:
        return {"lrs": self.lrs, "losses": self.losses, "suggestion": self.suggestion,
                "min_loss_lr": self.min_loss_lr}


def lr_range_test(
    model: torch.nn.Module,
    batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device | str = "cpu",
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    num_iter: int = 60,
    smooth: float = 0.9,
    diverge: float = 4.0,
    weight_decay: float = 1e-4,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> LRFinderResult:
    """Sweep the learning rate from ``start_lr`` to ``end_lr`` over ``num_iter`` AdamW steps.

    ``autocast_dtype`` runs the forward pass under autocast, as training does (the losses, and so the
    suggestion, should come from the precision the run will train in). The model's weights are restored
    afterwards; see :func:`suggest_lr` for the suggestion.
    """
    from tqdm.auto import tqdm

    state = copy.deepcopy(model.state_dict())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=start_lr, weight_decay=weight_decay)
    gamma = (end_lr / start_lr) ** (1.0 / max(1, num_iter - 1))
    lrs, losses = [], []
    avg, best = 0.0, math.inf
    it = 0
    bar = tqdm(total=num_iter, desc="lr-find", unit="step", disable=not progress)
    try:
        while it < num_iter:
            for x, y in batches():
                lr = start_lr * gamma**it
                for g in opt.param_groups:
                    g["lr"] = lr
                x, y = x.to(device), y.to(device)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(torch.device(device).type, dtype=autocast_dtype or torch.bfloat16,
                                    enabled=autocast_dtype is not None):
                    logits = model(x)
                loss = loss_fn(logits.float(), y)
                loss.backward()
                opt.step()
                value = float(loss.detach())
                avg = smooth * avg + (1 - smooth) * value
                smoothed = avg / (1 - smooth ** (it + 1))
                lrs.append(lr)
                losses.append(smoothed)
                best = min(best, smoothed)
                it += 1
                bar.update(1)
                if not math.isfinite(smoothed) or (it > 5 and smoothed > diverge * best) or it >= num_iter:
                    it = num_iter  # stop the outer loop too
                    break
    finally:
        bar.close()
        model.load_state_dict(state)
    return LRFinderResult(lrs, losses, *suggest_lr(lrs, losses))


def suggest_lr(lrs: list[float], losses: list[float]) -> tuple[float, float]:
    """(suggested LR, LR at minimum loss) from a smoothed loss curve.

    The suggestion is a tenth of the LR of minimum loss (fastai's ``lr_min / 10``): the steepest-slope
    point is noisier on small batches, and the minimum itself is already at the edge of divergence.
    """
    lr = np.asarray(lrs, dtype=np.float64)
    loss = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(loss)
    lr, loss = lr[finite], loss[finite]
    if lr.size < 3:
        return 1e-3, 1e-3
    min_lr = float(lr[int(np.argmin(loss))])
    return min_lr / 10.0, min_lr


def plot_lr_find(result: LRFinderResult, path: str | os.PathLike) -> None:
    """Save the loss-vs-LR curve with the suggestion marked (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ftuseg.io.atomic import atomic_save

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(result.lrs, result.losses, lw=1.5)
    ax.axvline(result.suggestion, color="tab:red", ls="--", label=f"suggested {result.suggestion:.2e}")
    ax.axvline(result.min_loss_lr, color="tab:gray", ls=":", label=f"min loss {result.min_loss_lr:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed loss")
    ax.set_title("LR range test")
    ax.legend()
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
    plt.close(fig)
