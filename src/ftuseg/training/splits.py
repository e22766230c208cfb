"""Grouped splits: images of one patient / slide block never straddle train and validation."""

from __future__ import annotations

import numpy as np
import pandas as pd


def group_labels(df: pd.DataFrame) -> pd.Series:
    """The ``group`` column where present and non-empty, otherwise the image id."""
    if "group" in df.columns:
        g = df["group"].astype("string")
        return g.where(g.notna() & (g.str.len() > 0), "id:" + df["id"].astype(str)).astype(str)
    return "id:" + df["id"].astype(str)


def grouped_folds(df: pd.DataFrame, n_folds: int, seed: int = 0, stratify: str | None = "organ") -> np.ndarray:
    """Assign each row a fold in ``[0, n_folds)`` so that every group lies in exactly one fold.

    Groups are dealt largest first to the fold with the fewest images of the same stratum (organ),
    ties broken at random, so each fold gets a share of every organ with at least ``n_folds`` groups.
    """
    if n_folds < 2:
        raise ValueError("n_folds must be >= 2")
    groups = group_labels(df)
    strata = df[stratify].astype(str) if stratify and stratify in df.columns else pd.Series("all", index=df.index)
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"group": groups, "stratum": strata})
    sizes = table.groupby("group").agg(n=("stratum", "size"), stratum=("stratum", "first"))
    order = rng.permutation(len(sizes))
    sizes = sizes.iloc[order].sort_values("n", ascending=False, kind="stable")
    load: dict[tuple[str, int], int] = {}
    total = np.zeros(n_folds, dtype=np.int64)
    assignment: dict[str, int] = {}
    for group, row in sizes.iterrows():
        per = np.array([load.get((row["stratum"], k), 0) for k in range(n_folds)])
        # fewest of this organ first, then fewest overall, then random
        keys = np.lexsort((rng.random(n_folds), total, per))
        k = int(keys[0])
        assignment[group] = k
        load[(row["stratum"], k)] = load.get((row["stratum"], k), 0) + int(row["n"])
        total[k] += int(row["n"])
    return groups.map(assignment).to_numpy(dtype=np.int64)


def train_val_split(
    df: pd.DataFrame, val_fraction: float = 0.2, fold: int | None = None, n_folds: int = 5, seed: int = 0,
    stratify: str = "organ",
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, val).

    ``fold`` selects fold k of ``n_folds`` grouped folds. Otherwise a single grouped split: of
    ``round(1 / val_fraction)`` grouped folds (fewer when there are fewer groups), the non-empty one whose
    size is closest to ``val_fraction``, its groups dealt by ``stratify`` (see :func:`grouped_folds`; the
    k-fold split is always by organ). ``val_fraction=0`` (or a single group) trains on everything.
    """
    n = len(df)
    n_groups = group_labels(df).nunique()
    if fold is None and (val_fraction <= 0 or n_groups < 2):
        return np.arange(n), np.arange(0)
    if fold is not None:
        folds = grouped_folds(df, n_folds, seed=seed)
        return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    k = max(2, min(int(round(1.0 / val_fraction)), n_groups))
    folds = grouped_folds(df, k, seed=seed, stratify=stratify)
    counts = np.bincount(folds, minlength=k)
    gap = np.where(counts > 0, np.abs(counts - val_fraction * n), np.inf)
    f = int(np.argmin(gap))
    return np.flatnonzero(folds != f), np.flatnonzero(folds == f)
