"""
Turning scenario results into headline figures, medians, ratios and text.

Each scenario kind has a few *headline* figures (flat name -> number). With
``--repeat N`` every server runs the scenario N times; the report gives each
headline's median over the runs (the machine is noisy) and, when both servers
ran, the ratio ours / reference of each median.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

import psutil
import soak_report

__all__ = [
    "headline",
    "machine_info",
    "medians",
    "ratios",
    "render_markdown",
    "render_text",
]


def _phase_headline(phase: dict[str, Any], prefix: str = "") -> dict[str, float | None]:
    lat = phase["latency_ms"]
    srv = phase["server"]
    return {
        f"{prefix}delivered_per_s": phase["delivered_per_s"],
        f"{prefix}loss_pct": phase["loss_pct"],
        f"{prefix}p50_ms": lat["p50"],
        f"{prefix}p90_ms": lat["p90"],
        f"{prefix}p99_ms": lat["p99"],
        f"{prefix}p99_9_ms": lat["p99_9"],
        f"{prefix}max_ms": lat["max"],
        f"{prefix}server_cpu_percent": srv["cpu_percent"],
        f"{prefix}server_cpu_us_per_delivery": srv["cpu_us_per_delivery"],
        f"{prefix}server_rss_max_mib": srv.get("rss_max_mib"),
        f"{prefix}rss_per_connection_kib": srv["rss_per_connection_kib"],
        f"{prefix}frames_per_write": srv.get("frames_per_write"),
        f"{prefix}gc_full_collections": srv.get("gc_full_collections"),
        f"{prefix}gc_full_pause_ms": srv.get("gc_full_pause_ms"),
    }


def _resources(phase: dict[str, Any], prefix: str) -> dict[str, float | None]:
    """Who used the CPU in one phase: server, each Redis, publisher, clients, the rest."""
    gen = phase["load_generator"]
    redis = phase.get("redis") or {}
    per_redis = [p["cpu_percent"] for p in redis.get("processes", [])]
    links = gen.get("publisher_links") or []
    return {
        f"{prefix}server_cpu_percent": phase["server"]["cpu_percent"],
        f"{prefix}server_cpu_us_per_delivery": phase["server"]["cpu_us_per_delivery"],
        f"{prefix}redis_cpu_percent": redis.get("cpu_percent"),
        f"{prefix}redis_busiest_cpu_percent": max(per_redis) if per_redis else None,
        f"{prefix}publisher_cpu_percent": gen["publisher_cpu_percent"],
        f"{prefix}publisher_lag_p99_ms": gen["publisher_lag_ms"]["p99"],
        f"{prefix}client_cpu_max_percent": max(gen["client_cpu_percent"], default=None),
        f"{prefix}machine_cpu_percent": gen["machine_cpu_percent"],
        f"{prefix}other_cpu_percent": gen["other_cpu_percent"],
        f"{prefix}masters_publishing": (
            sum(1 for link in links if link["published"] > 0) if links else None
        ),
    }


def _cluster_headline(cluster: dict[str, Any]) -> dict[str, float | None]:
    """The best passing step of the ingest ladder, and what the first failing one used."""
    steps = cluster["steps"]
    out: dict[str, float | None] = {}
    best_i, fail_i = cluster["best_step"], cluster["first_failure_step"]
    if best_i is not None:
        best = steps[best_i]
        lat = best["latency_ms"]
        out |= {
            "best_rate": best["rate"],
            "best_delivered_per_s": best["delivered_per_s"],
            "best_p50_ms": lat["p50"],
            "best_p99_ms": lat["p99"],
            **_resources(best, "best_"),
        }
    else:
        out |= {"best_rate": None, "best_delivered_per_s": 0.0}
    if fail_i is not None:
        fail = steps[fail_i]
        out |= {
            "fail_rate": fail["rate"],
            "fail_delivered_per_s": fail["delivered_per_s"],
            "fail_loss_pct": fail["loss_pct"],
            "fail_p99_ms": fail["latency_ms"]["p99"],
            **_resources(fail, "fail_"),
        }
    return out


def headline(result: dict[str, Any]) -> dict[str, float | None]:
    """The headline figures of one scenario run."""
    kind = result["kind"]
    if kind == "idle":
        idle = result["idle"]
        return {
            "connections": idle["connections"],
            "kib_per_connection": idle["kib_per_connection"],
            "redis_kib_per_connection": idle["redis_kib_per_connection"],
        }
    if kind == "broad":
        broad = result["broad"]
        cap = broad["lossless_capacity"] or {}
        return {
            "best_rate": broad["best_rate"],
            "best_delivered_per_s": broad["best_delivered_per_s"],
            "best_p99_ms": broad["best_p99_ms"],
            "lossless_delivered_per_s": cap.get("delivered_per_s"),
            "lossless_p99_ms": cap.get("p99_ms"),
        }
    if kind == "cluster":
        return _cluster_headline(result["cluster"])
    if kind == "soak":
        return soak_report.headline(result["soak"])
    if kind == "slow":
        slow = result["slow"]
        out = {
            **_phase_headline(slow["baseline"], "baseline_"),
            **_phase_headline(slow["stalled"], "stalled_"),
            "p99_delta_ms": slow["p99_delta_ms"],
            "stalled_rss_growth_mib_per_s": slow["stalled"]["server"].get(
                "rss_growth_second_half_mib_per_s"
            ),
        }
        return {k: v for k, v in out.items() if "rss_per_connection" not in k}
    return _phase_headline(result["phase"])


def medians(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Median of each headline over the runs (ignoring runs where it is missing)."""
    keys: list[str] = []
    for r in runs:
        keys.extend(k for k in r if k not in keys)
    out: dict[str, float | None] = {}
    for k in keys:
        values = [v for r in runs if (v := r.get(k)) is not None]
        out[k] = round(statistics.median(values), 3) if values else None
    return out


def ratios(ours: dict[str, float | None], ref: dict[str, float | None]) -> dict[str, float | None]:
    """ours / reference for every headline both have (``None`` when undefined)."""
    out: dict[str, float | None] = {}
    for k, a in ours.items():
        b = ref.get(k)
        out[k] = None if a is None or b is None or b == 0 else float(f"{a / b:.3g}")
    return out


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_state() -> dict[str, Any] | None:
    """The commit the benchmark ran at, and whether the tree had local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "packages", "scripts"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "local_changes": bool(dirty)}


def machine_info() -> dict[str, Any]:
    """Machine, OS and versions, for the record."""
    cpu_model = platform.processor() or None
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    redis_version = None
    binary = shutil.which("redis-server")
    if binary:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [binary, "--version"], capture_output=True, text=True, timeout=5, check=False
            ).stdout
            redis_version = next(
                (p.split("=", 1)[1] for p in out.split() if p.startswith("v=")), None
            )
    return {
        "git": _git_state(),
        "cpu_model": cpu_model,
        "cpus": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "redis_server": redis_version,
        "packages": {
            d: _version(d)
            for d in (
                "uvicorn",
                "fastapi",
                "starlette",
                "websockets",
                "uvloop",
                "httptools",
                "redis",
                "hiredis",
                "picows",
                "quotes-server",
            )
        },
    }


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if v else "0"


def _ratio_columns(report: dict[str, Any]) -> list[tuple[str, dict[str, float | None]]]:
    """The ratio columns a report has: ours / reference, SSE / WebSocket."""
    columns = []
    if report.get("ratios"):
        columns.append(("ours/ref", report["ratios"]))
    if report.get("sse_ratios"):
        columns.append(("sse/ws", report["sse_ratios"]))
    return columns


def render_text(report: dict[str, Any]) -> str:
    """A human-readable summary: headline medians per server, ratios, warnings."""
    targets: dict[str, Any] = report["targets"]
    names = list(targets)
    m = report["machine"]
    git = m.get("git") or {}
    lines = [
        f"scenario {report['scenario']} ({report['description']}); "
        f"{report['settings']['repeat']} run(s) per server, medians",
        f"machine: {m['cpus']} x {m['cpu_model']}, Python {m['python']}, "
        f"redis-server {m['redis_server']}, commit {git.get('commit', '?')}"
        + (" (with local changes)" if git.get("local_changes") else ""),
    ]
    keys: list[str] = []
    for t in targets.values():
        keys.extend(k for k in t["median"] if k not in keys)
    columns = _ratio_columns(report)
    header = ["", *names, *(label for label, _ in columns)]
    rows = [header]
    for k in keys:
        row = [k, *(_fmt(targets[n]["median"].get(k)) for n in names)]
        row += [_fmt(ratio.get(k)) for _, ratio in columns]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        cells = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        lines.append("  " + "  ".join(cells))
    for n in names:
        for i, run in enumerate(targets[n]["runs"]):
            if "soak" in run:
                lines.append(f"[{n} run {i + 1}]")
                lines.extend(soak_report.render_text(run["soak"]))
            for w in dict.fromkeys(run.get("warnings", [])):
                lines.append(f"  warning [{n} run {i + 1}]: {w}")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    """The headline medians as a Markdown table (for docs/performance.md)."""
    targets: dict[str, Any] = report["targets"]
    names = list(targets)
    columns = _ratio_columns(report)
    keys: list[str] = []
    for t in targets.values():
        keys.extend(k for k in t["median"] if k not in keys)
    header = ["median of " + str(report["settings"]["repeat"]), *names]
    header += [label for label, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k in keys:
        row = [f"`{k}`", *(_fmt(targets[n]["median"].get(k)) for n in names)]
        row += [_fmt(ratio.get(k)) for _, ratio in columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
