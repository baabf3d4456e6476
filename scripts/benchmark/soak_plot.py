"""
Plot a soak run's server RSS and p99 over time, and print its figures as Markdown.

From a report the benchmark wrote with ``--scenario soak --output FILE`` (or
``--json > FILE``)::

    uv run python scripts/benchmark/soak_plot.py FILE --svg docs/img/soak.svg

writes the SVG (two panels sharing the time axis: RSS at each period's end, p99 of
each period; a dashed line marks the baseline the end is compared with) and prints
the figures for docs/performance.md. The SVG carries no date or random ids, so the
same report gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure
from soak_report import render_markdown

__all__ = ["main", "plot"]


def _soak_run(report: dict[str, Any]) -> dict[str, Any]:
    if report.get("kind") != "soak":
        raise SystemExit(f"not a soak report (kind {report.get('kind')!r})")
    runs = report["targets"]["ours"]["runs"] if "ours" in report["targets"] else None
    if not runs:
        runs = next(iter(report["targets"].values()))["runs"]
    soak: dict[str, Any] = runs[0]["soak"]
    return soak


def plot(soak: dict[str, Any], out: Path, title: str, fmt: str = "svg") -> None:
    """Write the RSS and p99 panels of one soak run to ``out`` (SVG unless ``fmt``)."""
    mpl.rcParams["svg.hashsalt"] = "soak"
    series = soak["series"]
    minutes = [t / 60 for t in series["t_s"]]
    base_t = minutes[soak["checks"]["stable"]["baseline_after_period"]]
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax_rss, ax_p99 = fig.subplots(2, 1, sharex=True)
    ax_rss.plot(minutes, series["rss_mib"], marker=".", color="tab:blue")
    ax_rss.set_ylabel("server RSS (MiB)")
    rss = [v for v in series["rss_mib"] if v is not None]
    if rss:
        ax_rss.set_ylim(0, max(rss) * 1.15)
    p99 = [(t, v) for t, v in zip(minutes, series["p99_ms"], strict=True) if v is not None]
    ax_p99.plot([t for t, _ in p99], [v for _, v in p99], marker=".", color="tab:red")
    ax_p99.set_ylabel("p99 latency (ms)")
    ax_p99.set_ylim(bottom=0)
    ax_p99.set_xlabel("minutes")
    for ax in (ax_rss, ax_p99):
        ax.axvline(base_t, color="grey", linestyle="--", linewidth=0.8)
        ax.grid(True, alpha=0.3)
    ax_rss.set_title(title, fontsize=10)
    fig.savefig(out, format=fmt, metadata={"Date": None} if fmt == "svg" else None)


def main(argv: list[str] | None = None) -> int:
    """Plot and print; exit status 0."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("report", type=Path, help="JSON report of a soak run")
    p.add_argument("--svg", type=Path, help="write the plot here (e.g. docs/img/soak.svg)")
    args = p.parse_args(argv)
    report = json.loads(args.report.read_text(encoding="utf-8"))
    soak = _soak_run(report)
    settings = report["settings"]
    if args.svg:
        title = (
            f"soak: {settings['clients']:,} clients x {settings['tickers_per_client']} tickers, "
            f"{soak['options']['rate']:g} quotes/s, {soak['options']['churn']:.0%} reconnecting "
            f"and {soak['options']['hostile_per_period']} hostile connections per "
            f"{soak['options']['period_s']:g} s (dashed: baseline)"
        )
        plot(soak, args.svg, title)
        print(f"wrote {args.svg}", file=sys.stderr)
    print(render_markdown(soak, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
