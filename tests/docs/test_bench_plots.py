"""
The performance page's plots are generated, not drawn: each SVG in ``docs/img/bench/``
is what ``scripts/benchmark/plots.py`` makes of a report kept in ``docs/data/``
(``make bench-plots``), and the page shows every one of them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers.processes import ROOT

DATA = ROOT / "docs" / "data"
PLOTS = ROOT / "docs" / "img" / "bench"
PAGE = ROOT / "docs" / "performance.md"
REPORTS = sorted(DATA.glob("*.json"))

sys.path.insert(0, str(ROOT / "scripts" / "benchmark"))
from plots import plot_report  # noqa: E402


def test_there_are_reports_and_plots() -> None:
    assert len(REPORTS) >= 3
    assert len(list(PLOTS.glob("*.svg"))) >= 3


@pytest.mark.parametrize("report", REPORTS, ids=[r.name for r in REPORTS])
def test_each_plot_is_its_report_regenerated(report: Path, tmp_path: Path) -> None:
    """Byte for byte: the committed SVG is the plot of the committed report."""
    made = plot_report(json.loads(report.read_text()), tmp_path)
    assert made, f"{report.name} gives no plot"
    for svg in made:
        committed = PLOTS / svg.name
        assert committed.exists(), f"{svg.name} missing: run make bench-plots"
        assert committed.read_bytes() == svg.read_bytes(), f"{svg.name} stale: make bench-plots"


def test_the_page_shows_every_plot() -> None:
    text = PAGE.read_text()
    for svg in PLOTS.glob("*.svg"):
        assert f"img/bench/{svg.name}" in text, svg.name
