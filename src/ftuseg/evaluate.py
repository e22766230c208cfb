"""Score a submission against the truth with the competition metric (mean per-image Dice)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from ftuseg.errors import FtusegError
from ftuseg.io.dataset import expected_shape, read_csv_checked
from ftuseg.metrics import dice_breakdown, dice_score, object_errors
from ftuseg.rle import decode_rle


def resolve_truth_csv(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FtusegError(f"{path}: truth file or folder not found")
    if path.is_dir():
        for name in ("test_solution.csv", "train.csv"):
            if (path / name).exists():
                return path / name
        raise FtusegError(f"{path}: no train.csv or test_solution.csv with ground truth")
    return path


OBJECT_COUNTS = ("truth_objects", "pred_objects", "matched", "missed", "spurious")


def object_summary(per_image: pd.DataFrame) -> dict:
    """Object counts summed over images, overall and by organ and data source, with recall (true objects
    matched) and precision (predicted objects matched)."""
    def sums(df: pd.DataFrame) -> dict:
        out = {k: int(df[k].sum()) for k in OBJECT_COUNTS}
        out["recall"] = out["matched"] / out["truth_objects"] if out["truth_objects"] else float("nan")
        out["precision"] = out["matched"] / out["pred_objects"] if out["pred_objects"] else float("nan")
        return out

    summary = sums(per_image)
    for col in ("organ", "data_source"):
        groups = per_image.groupby(per_image[col].fillna("unknown").astype(str))
        summary[f"by_{col}"] = {str(k): sums(g) for k, g in groups}
    return summary


def score_submission(submission: pd.DataFrame, truth: pd.DataFrame, truth_name: str = "truth",
                     submission_name: str = "submission") -> pd.DataFrame:
    """Per-image Dice for every truth row, with its FTUs found, missed and spurious (``object_errors``: objects
    matched at IoU > 0.5); an image missing from the submission counts as empty.

    Errors name the file, the CSV row (header = row 1) and the id, so a hand-edited CSV is easy to fix.
    """
    sub = submission.copy()
    sub["id"] = sub["id"].astype(str)
    dup = sub["id"][sub["id"].duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        rows = [int(r) + 2 for r in range(len(sub)) if sub["id"].iat[r] == first]
        raise FtusegError(f"{submission_name}: duplicate id {first!r} on rows {rows}")
    extra = set(sub["id"]) - set(truth["id"].astype(str))
    if extra:
        warnings.warn(f"submission has {len(extra)} id(s) not in {truth_name}, ignored (e.g. {sorted(extra)[0]})",
                      stacklevel=2)
    pred_rle = dict(zip(sub["id"], sub["rle"], strict=True))
    sub_row = {i: r + 2 for r, i in enumerate(sub["id"])}
    rows = []
    for pos, (_, row) in enumerate(truth.iterrows()):
        image_id = str(row["id"])
        where = f"{truth_name}: row {pos + 2} (id {image_id})"
        try:
            shape = expected_shape(row)
        except (FtusegError, ValueError, TypeError):
            raise FtusegError(f"{where}: img_height/img_width {row.get('img_height')!r}/{row.get('img_width')!r} "
                              "must be positive integers") from None
        try:
            t = decode_rle(row["rle"], shape)
        except FtusegError as exc:
            raise FtusegError(f"{where}: column rle: {exc}") from None
        try:
            p = decode_rle(pred_rle.get(image_id), shape)
        except FtusegError as exc:
            raise FtusegError(
                f"{submission_name}: row {sub_row[image_id]} (id {image_id}): column rle: {exc} "
                f"(image is {shape[0]}x{shape[1]})"
            ) from None
        objects = object_errors(p, t)
        rows.append({"id": image_id, "organ": row.get("organ", "unknown"),
                     "data_source": row.get("data_source", "unknown"), "dice": dice_score(p, t),
                     "pred_pixels": int(p.sum()), "true_pixels": int(t.sum()), "missing": image_id not in pred_rle,
                     **{k: objects[k] for k in OBJECT_COUNTS}})
    return pd.DataFrame(rows)


def evaluate_files(submission_csv: str | os.PathLike, truth: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Read a submission CSV and a truth CSV (or a data folder) and return (per-image table, summary)."""
    truth_csv = resolve_truth_csv(truth)
    sub = read_csv_checked(Path(submission_csv), required=("id", "rle"))
    tdf = read_csv_checked(truth_csv, required=("id", "rle", "img_height", "img_width"))
    per_image = score_submission(sub, tdf, truth_name=str(truth_csv), submission_name=str(submission_csv))
    summary = dice_breakdown(per_image)
    summary["missing_predictions"] = int(per_image["missing"].sum())
    summary["objects"] = object_summary(per_image)
    summary["submission"] = str(submission_csv)
    summary["truth"] = str(truth_csv)
    return per_image, summary


def format_summary(summary: dict) -> str:
    """A plain-text table of mean Dice overall, by organ and by data source, with the FTUs found (matched at
    IoU > 0.5), missed and spurious when the summary has object counts."""
    objects = summary.get("objects")

    def counts(o: dict | None) -> str:
        return "" if o is None else f"{o['truth_objects']:>8}{o['matched']:>8}{o['missed']:>8}{o['spurious']:>10}"

    head = f"{'group':<28}{'images':>8}{'dice':>10}" + ("" if objects is None else
                                                     f"{'FTUs':>8}{'found':>8}{'missed':>8}{'spurious':>10}")
    lines = [head, "-" * len(head),
             f"{'all':<28}{summary['n_images']:>8}{summary['mean_dice']:>10.4f}" + counts(objects)]
    for key, title in (("by_organ", "organ"), ("by_data_source", "data_source")):
        for name, v in sorted(summary.get(key, {}).items()):
            o = None if objects is None else objects[key].get(name)
            lines.append(f"{title + '=' + name:<28}{v['n_images']:>8}{v['mean_dice']:>10.4f}" + counts(o))
    return "\n".join(lines)
