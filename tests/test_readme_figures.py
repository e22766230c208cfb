"""Every figure in the README's Results section comes from a results JSON (benchmarks/results/*.json).

A simple scan: each decimal number quoted there (0.817, 12.3, 1.34) must equal, at the precision it is
quoted, some number in some results JSON, so that README and measurements cannot drift apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# numbers the prose uses that are not measurements: versions, pixel sizes of the data, ratios defined by it
NOT_MEASURED = {"2.14.1", "2.13", "0.29.1", "0.229", "0.7562", "0.4945", "6.263", "0.62005", "2.74",
                # ImageNet top-1 of EfficientNet-Lite2 and Lite0 as their release states them
                "77.6", "75.1"}


def results_section(text: str) -> str:
    start = text.index("\n## Results")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


# per-image scores and per-epoch logs hold thousands of numbers: a summary figure matching one of them
# by chance would pass the scan without being backed, so they are not searched
SKIPPED_KEYS = {"per_image", "baseline_per_image", "history"}


def json_numbers() -> list[float]:
    out: list[float] = []

    def walk(v):
        if isinstance(v, bool):
            return
        if isinstance(v, int | float):
            out.append(float(v))
        elif isinstance(v, dict):
            for k, x in v.items():
                if k not in SKIPPED_KEYS:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for f in sorted(RESULTS.glob("*.json")):
        walk(json.loads(f.read_text()))
    return out


def quoted_figures(section: str) -> list[str]:
    # decimals not part of a version, a path, a date or a word (e.g. "fold0.5" or "v1.2.3")
    found = re.findall(r"(?<![\w.\-/])(\d+\.\d+)(?![\w.]*\d)(?!\.\d)", section)
    return [f for f in found if f not in NOT_MEASURED]


def backed(fig: str, numbers: list[float]) -> bool:
    decimals = len(fig.split(".")[1])
    value = float(fig)
    tol = 0.5 * 10 ** -decimals + 1e-12
    # a figure may be quoted as a fraction (0.817) or a percentage / scaled (81.7%); minutes from seconds
    return any(abs(n - value) <= tol or abs(n * 100 - value) <= tol or abs(n / 60 - value) <= tol
               or abs(n / 1024 - value) <= tol for n in numbers)


def test_every_results_figure_is_in_a_results_json():
    section = results_section((REPO / "README.md").read_text())
    numbers = json_numbers()
    missing = sorted({f for f in quoted_figures(section) if not backed(f, numbers)}, key=float)
    assert not missing, f"README Results figures with no results JSON behind them: {', '.join(missing)}"


def test_the_scan_finds_figures_and_misses_invented_ones():
    """The check above must be able to fail: an invented figure is reported, a JSON figure is not."""
    numbers = [0.81734, 12.31, 1373.0]
    assert backed("0.817", numbers) and backed("12.3", numbers) and backed("1.34", numbers)  # 1373 MiB = 1.34 GiB
    assert not backed("0.818", numbers) and not backed("0.9", numbers)
    assert quoted_figures("mean 0.817 (v1.2.3, fold0.5, 2.14.1)") == ["0.817"]
