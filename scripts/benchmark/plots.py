"""
SVG plots of benchmark reports (the JSON that ``ws_latency_benchmark.py --output`` writes).

Each report gives the plot of its kind, every run of every target drawn::

    uv run python scripts/benchmark/plots.py REPORT.json ... --out DIR

==================  ========================================================  ===============
report              plot                                                      file
==================  ========================================================  ===============
broad               p99 against deliveries/s per target, each run's ramp     ``broad.svg``
load (spec ...)     server CPU per delivery per target (µs, each run a dot)  ``<scenario>_cpu.svg``
idle-memory         KiB of server memory per idle connection per target      ``idle_memory.svg``
cluster             best clean ingest rate per set-up (quotes/s)             ``cluster.svg``
soak                the server's RSS and p99 over time (``soak_plot``)        ``soak.svg``
==================  ========================================================  ===============

A plot carries the report's date, commit and machine in its title, and no date or
random ids in its SVG markup: the same report gives the same bytes
(``make bench-plots`` regenerates the docs' plots from ``docs/data/``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib as mpl
import soak_plot
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["main", "plot_report"]

COLORS = {"ours": "tab:blue", "reference": "tab:orange", "ours-sse": "tab:green"}
"""Each target's colour, the same in every plot."""


def _caption(report: dict[str, Any]) -> str:
    m = report["machine"]
    git = m.get("git") or {}
    commit = git.get("commit", "?") + (" + local changes" if git.get("local_changes") else "")
    return (
        f"{report['started_at'][:10]}, commit {commit}, "
        f"{m['cpus']} x {m['cpu_model']}, Python {m['python']}"
    )


def _figure(report: dict[str, Any], title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ax.set_title(f"{title}\n{_caption(report)}", fontsize=10)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="svg", metadata={"Date": None})
    return path


def _color(target: str, i: int) -> str:
    return COLORS.get(target, f"C{i}")


def plot_broad(report: dict[str, Any], out: Path) -> Path:
    """p99 against deliveries/s: each run's ramp, per target, with the p99 limit."""
    fig, ax = _figure(report, "broad: 1,000 clients x all tickers, rising rate")
    limit = None
    for i, (target, result) in enumerate(report["targets"].items()):
        for n, run in enumerate(result["runs"]):
            broad = run["broad"]
            limit = broad["p99_limit_ms"]
            # in rate order (the ramp's last step may narrow the edge between two others)
            curve = sorted(broad["curve"], key=lambda step: step[0])
            points = [(d, p99) for _rate, d, p99, _loss in curve if p99 is not None]
            ax.plot(
                [d / 1000 for d, _ in points],
                [p99 for _, p99 in points],
                marker=".",
                color=_color(target, i),
                alpha=0.9 if n == 0 else 0.5,
                label=target if n == 0 else None,
            )
    if limit is not None:
        ax.axhline(limit, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(
            f"p99 {limit:g} ms",
            (0.01, limit),
            xycoords=("axes fraction", "data"),
            textcoords="offset points",
            xytext=(0, 3),
            fontsize=8,
            color="grey",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("deliveries per second (thousands, log)")
    ax.set_ylabel("p99 latency (ms, log)")
    ax.legend()
    return _save(fig, out / "broad.svg")


def _per_target(
    report: dict[str, Any], value: Any, title: str, ylabel: str, path: Path, log: bool = False
) -> Path:
    """One bar per target at the median of its runs, each run a dot."""
    fig, ax = _figure(report, title)
    names = list(report["targets"])
    for i, target in enumerate(names):
        values = [v for run in report["targets"][target]["runs"] if (v := value(run)) is not None]
        if not values:
            continue
        median = statistics.median(values)
        ax.bar(i, median, color=_color(target, i), alpha=0.6, width=0.6)
        ax.plot([i] * len(values), values, "o", color=_color(target, i), markersize=4)
        ax.annotate(
            f"{median:,.0f}" if median >= 1000 else f"{median:.3g}",
            (i, median),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=9,
        )
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    return _save(fig, path)


def plot_cpu(report: dict[str, Any], out: Path) -> Path:
    """Server CPU per delivery of a load scenario, per target."""

    def cpu(run: dict[str, Any]) -> float | None:
        value: float | None = run["phase"]["server"].get("cpu_us_per_delivery")
        return value

    values = [cpu(r) for t in report["targets"].values() for r in t["runs"]]
    spread = [v for v in values if v]
    log = bool(spread) and max(spread) / min(spread) > 8
    return _per_target(
        report,
        cpu,
        f"{report['scenario']}: {report['description']}",
        "server CPU per delivery (µs" + (", log)" if log else ")"),
        out / f"{report['scenario']}_cpu.svg",
        log=log,
    )


def plot_idle(report: dict[str, Any], out: Path) -> Path:
    """Server memory per idle connection, per target."""
    return _per_target(
        report,
        lambda run: run["idle"]["kib_per_connection"],
        f"idle-memory: {report['settings']['clients']:,} idle connections",
        "server memory per connection (KiB)",
        out / "idle_memory.svg",
    )


def plot_cluster(report: dict[str, Any], out: Path) -> Path:
    """The best clean ingest rate per set-up (every run a dot)."""

    def best(run: dict[str, Any]) -> float | None:
        cluster = run["cluster"]
        if cluster["best_step"] is None:
            return 0.0
        rate: float = cluster["steps"][cluster["best_step"]]["rate"]
        return rate

    return _per_target(
        report,
        best,
        "cluster: ingest to 10 clients x all tickers, p99 <= 50 ms, no loss",
        "best clean ingest (quotes/s)",
        out / "cluster.svg",
    )


def plot_report(report: dict[str, Any], out: Path) -> list[Path]:
    """Write the plot(s) of one report into ``out``; return their paths."""
    mpl.rcParams["svg.hashsalt"] = "quotes"
    out.mkdir(parents=True, exist_ok=True)
    kind = report["kind"]
    if kind == "broad":
        return [plot_broad(report, out)]
    if kind == "load":
        return [plot_cpu(report, out)]
    if kind == "idle":
        return [plot_idle(report, out)]
    if kind == "cluster":
        return [plot_cluster(report, out)]
    if kind == "soak":
        runs = next(iter(report["targets"].values()))["runs"]
        path = out / "soak.svg"
        soak_plot.plot(runs[0]["soak"], path, f"soak: {_caption(report)}")
        return [path]
    return []  # slow: its figures are a table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[1])
    parser.add_argument("reports", nargs="+", type=Path, help="benchmark JSON reports")
    parser.add_argument("--out", type=Path, required=True, help="folder for the SVG files")
    args = parser.parse_args(argv)
    for path in args.reports:
        report = json.loads(path.read_text())
        for svg in plot_report(report, args.out):
            print(f"{path} -> {svg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
