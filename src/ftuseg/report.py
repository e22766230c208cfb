"""One self-contained HTML page about a prediction folder or a training run.

Everything (thumbnails, plots) is embedded as data URIs so the page can be mailed or archived as one
file. A prediction folder (``ftuseg predict --out-dir``) gives per-image overlay thumbnails, object
counts and areas, and - when the inputs had ground truth - Dice per image and per organ, worst first.
A run folder gives its training curve and out-of-fold Dice table.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from ftuseg.errors import FtusegError
from ftuseg.io.atomic import atomic_write

THUMB_SIZE = 360

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.grid{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;width:THUMBpx}figure img{width:100%;border:1px solid #ccc}figcaption{font-size:12px;color:#444}
.bad{background:#fde2e2}.muted{color:#777}
""".replace("THUMB", str(THUMB_SIZE))

# Marks the page once every image has decoded, so a headless browser can check the rendering.
_SCRIPT = """
window.addEventListener('load',function(){var im=document.images,ok=0;for(var i=0;i<im.length;i++)
{if(im[i].complete&&im[i].naturalWidth>0)ok++;}document.body.setAttribute('data-images-total',im.length);
document.body.setAttribute('data-images-loaded',ok);});
"""


def _data_uri(rgb: np.ndarray, fmt: str = ".jpg") -> str:
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if fmt == ".jpg" else []
    ok, buf = cv2.imencode(fmt, img, params)
    if not ok:
        raise FtusegError("could not encode a report image")
    mime = "image/jpeg" if fmt == ".jpg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.tobytes()).decode('ascii')}"


def _thumb(path: Path, size: int = THUMB_SIZE) -> str | None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return None
    h, w = img.shape[:2]
    k = size / max(h, w)
    if k < 1:
        img = cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    return _data_uri(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return "–"
        return f"{v:,.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"
    return _esc(v)


def _table(df: pd.DataFrame, left: tuple[str, ...] = (), bad: str | None = None, bad_below: float = 0.5) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{_esc(c)}</th>' for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cls = ' class="bad"' if bad and bad in df.columns and pd.notna(r[bad]) and r[bad] < bad_below else ""
        cells = "".join(f'<td class="{"l" if c in left else ""}">{_fmt(r[c])}</td>' for c in df.columns)
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _page(title: str, body: list[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body><h1>{_esc(title)}</h1>"
            + "\n".join(body) + "</body></html>\n")


def _dice_sections(per_image: pd.DataFrame, id_col: str = "id") -> list[str]:
    d = per_image[per_image["dice"].notna()]
    if d.empty:
        return []
    out = [f"<h2>Dice (mean {d['dice'].mean():.4f} over {len(d)} images)</h2>"]
    if "organ" in d.columns:
        by = (d.assign(organ=d["organ"].fillna("unknown")).groupby("organ")["dice"]
              .agg(images="size", mean_dice="mean", min_dice="min").reset_index().sort_values("mean_dice"))
        out += ["<h3>Per organ (worst first)</h3>", _table(by, left=("organ",), bad="mean_dice")]
    cols = [c for c in (id_col, "organ", "data_source", "dice", "n_objects", "pred_pixels", "true_pixels")
            if c in d.columns]
    out += ["<h3>Per image (worst first)</h3>",
            _table(d.sort_values("dice")[cols], left=(id_col, "organ", "data_source"), bad="dice")]
    return out


# ------------------------------------------------------------------------------------------------
def _prediction_report(folder: Path) -> str:
    results = []
    for rj in sorted(folder.glob("*/result.json")):
        try:
            results.append((rj.parent, json.loads(rj.read_text())))
        except ValueError:
            continue
    table = None
    if (folder / "predictions.csv").exists():
        table = pd.read_csv(folder / "predictions.csv", dtype={"id": str})
    if not results and table is None:
        raise FtusegError(f"{folder}: no predictions (no */result.json or predictions.csv) and not a run folder")
    by_dir = {}
    if table is not None and "slide_dir" in table.columns:
        by_dir = {str(r["slide_dir"]): r for _, r in table.iterrows()}
    rows, figures = [], []
    for sd, res in results:
        extra = by_dir.get(sd.name)
        areas = res.get("areas", {})
        total, skipped = res.get("tiles_total", 0), res.get("tiles_skipped", 0)
        row = {
            "image": sd.name, "organ": res.get("organ") or "–", "size (px)": f"{res['width']}x{res['height']}",
            "µm/px": res.get("pixel_size"), "objects": res.get("n_objects", 0),
            "area µm²": areas.get("total_um2", 0.0), "mean object µm²": areas.get("mean_um2", float("nan")),
            "tiles skipped": f"{(skipped / total if total else 0):.1%}",
        }
        if extra is not None and "dice" in extra and pd.notna(extra["dice"]):
            row["dice"] = float(extra["dice"])
        rows.append(row)
        overlay = res.get("outputs", {}).get("overlay")
        src = _thumb(Path(overlay)) if overlay and Path(overlay).exists() else None
        if src is None and (sd / "overlay.png").exists():
            src = _thumb(sd / "overlay.png")
        if src:
            cap = f"{_esc(sd.name)} — {row['objects']} objects, {_fmt(row['area µm²'], 0)} µm²"
            if "dice" in row:
                cap += f", Dice {row['dice']:.3f}"
            figures.append(f'<figure><img alt="{_esc(sd.name)} overlay" src="{src}"><figcaption>{cap}'
                           "</figcaption></figure>")
    body = [f'<p class="muted">{_esc(folder.resolve())}: {len(rows)} images, '
            f"{sum(r['objects'] for r in rows)} objects.</p>"]
    if rows:
        df = pd.DataFrame(rows)
        bad = "dice" if "dice" in df.columns else None
        body += ["<h2>Images</h2>", _table(df, left=("image", "organ", "size (px)"), bad=bad)]
    if table is not None and "dice" in table.columns:
        body += _dice_sections(table)
    if figures:
        body += ["<h2>Overlays</h2>", f'<div class="grid">{"".join(figures)}</div>']
    return _page(f"ftuseg predictions — {folder.name}", body)


def _run_report(run: Path) -> str:
    body = [f'<p class="muted">{_esc(run.resolve())}</p>']
    cfg_path = run / "config.yaml"
    if cfg_path.exists():
        import yaml

        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        keys = ("preset", "arch", "encoder", "mode", "image_size", "tile_size", "target_mpp", "epochs", "lr",
                "augment", "threshold")
        body += ["<h2>Configuration</h2>",
                 _table(pd.DataFrame([{k: cfg.get(k) for k in keys if k in cfg}]))]
    if (run / "metrics.csv").exists():
        m = pd.read_csv(run / "metrics.csv")
        if len(m):
            body.append("<h2>Training</h2>")
            plot = _metrics_plot(m)
            if plot:
                body.append(f'<img alt="training curves" src="{plot}" style="max-width:720px">')
            body.append(_table(m.tail(10).round(5)))
    if (run / "oof_dice.csv").exists():
        oof = pd.read_csv(run / "oof_dice.csv", dtype={"id": str})
        body += _dice_sections(oof)
        figs = []
        for _, r in oof.sort_values("dice").head(12).iterrows():
            npz = run / "oof" / f"{r['id']}.npz"
            if npz.exists():
                prob = np.load(npz)["prob"]
                heat = cv2.applyColorMap(prob, cv2.COLORMAP_VIRIDIS)
                k = THUMB_SIZE / max(heat.shape[:2])
                if k < 1:
                    heat = cv2.resize(heat, (max(1, round(heat.shape[1] * k)), max(1, round(heat.shape[0] * k))),
                                      interpolation=cv2.INTER_AREA)
                src = _data_uri(cv2.cvtColor(heat, cv2.COLOR_BGR2RGB))
                figs.append(f'<figure><img alt="{_esc(r["id"])} probability" src="{src}"><figcaption>'
                            f'{_esc(r["id"])} ({_esc(r.get("organ", ""))}) Dice {r["dice"]:.3f}</figcaption></figure>')
        if figs:
            body += ["<h2>Out-of-fold probabilities (worst first)</h2>", f'<div class="grid">{"".join(figs)}</div>']
    for sub in sorted(p for p in run.iterdir() if p.is_dir() and (p / "predictions.csv").exists()):
        body.append(f'<p>Predictions in <code>{_esc(sub.name)}</code>: run <code>ftuseg report {_esc(sub)}</code>.</p>')
    return _page(f"ftuseg run — {run.name}", body)


def _metrics_plot(m: pd.DataFrame) -> str | None:
    x = m["epoch"] if "epoch" in m.columns else pd.Series(range(len(m)))
    cols = [c for c in ("train_loss", "val_loss", "val_dice") if c in m.columns]
    if not cols:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    for c in cols:
        ax.plot(x, m[c], marker="o", ms=3, label=c)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def build_report(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``report.html`` for a prediction folder or a run folder; returns its path."""
    path = Path(path)
    if not path.is_dir():
        raise FtusegError(f"{path}: not a folder (expected a run folder or a prediction --out-dir)")
    is_run = (path / "config.yaml").exists() and ((path / "best.pt").exists() or (path / "last.pt").exists())
    page = _run_report(path) if is_run else _prediction_report(path)
    out = Path(out) if out else path / "report.html"
    with atomic_write(out) as fh:
        fh.write(page)
    return out
