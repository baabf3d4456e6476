"""
The soak's part of the report: headline figures, the per-period table, the checks.

``report`` calls :func:`headline` for the medians and :func:`render_text` for the
text summary; ``soak_plot`` uses :func:`render_markdown` for the Performance page.
"""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["headline", "render_markdown", "render_text"]


def _p99s(soak: dict[str, Any]) -> list[float]:
    return [p["latency_ms"]["p99"] for p in soak["periods"] if p["latency_ms"]["p99"] is not None]


def headline(soak: dict[str, Any]) -> dict[str, float | None]:
    """Flat figures of one soak run (``passed`` is 1 or 0)."""
    checks = soak["checks"]
    stable = checks["stable"]
    base, end = stable["baseline"], stable["end"]
    start = soak["samples"][0]
    p99 = _p99s(soak)
    lossless, resume = checks["lossless"], checks["resume_exact"]
    return {
        "passed": 1.0 if soak["passed"] else 0.0,
        "periods": len(soak["periods"]),
        "deliveries": soak["deliveries"],
        "delivered_per_s": soak["delivered_per_s"],
        "p99_ms_min": min(p99, default=None),
        "p99_ms_median": statistics.median(p99) if p99 else None,
        "p99_ms_max": max(p99, default=None),
        "rss_start_mib": start["rss_mib"],
        "rss_baseline_mib": base["rss_mib"],
        "rss_end_mib": end["rss_mib"],
        "fds_baseline": base["fds"],
        "fds_end": end["fds"],
        "tasks_baseline": base["tasks"],
        "tasks_end": end["tasks"],
        "subscriptions_baseline": base["subscriptions"],
        "subscriptions_end": end["subscriptions"],
        "lost_or_repeated": lossless["gaps"] + lossless["duplicates"] + lossless["tail_missing"],
        "resumes": resume["resumes"],
        "resumes_recovered": resume["recovered_true"],
        "missing_across_resumes": resume["gaps_across"] + resume["duplicates_across"],
        "recovered_false": resume["recovered_false"],
        "hostile_unanswered": sum(p["hostile_unanswered"] for p in soak["periods"]),
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if v >= 10 else f"{v:.2f}"
    return str(v)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]


def render_text(soak: dict[str, Any]) -> list[str]:
    """The per-period series and the checks, as text lines."""
    rows = [
        [
            "period", "t_min", "deliveries", "p50_ms", "p99_ms", "max_ms", "rss_mib", "fds",
            "tasks", "subs", "conns", "lost", "resumed", "hostile_ok", "orphans",
        ]
    ]  # fmt: skip
    for p in soak["periods"]:
        c, srv, lat = p["checks"], p["server"], p["latency_ms"]
        hostile_total = sum(n for o in p["hostile"].values() for n in o.values())
        rows.append(
            [
                str(p["period"]),
                f"{p['t_s'] / 60:.1f}",
                str(p["deliveries"]),
                _fmt(lat["p50"]),
                _fmt(lat["p99"]),
                _fmt(lat["max"]),
                _fmt(srv["rss_mib"]),
                _fmt(srv["fds"]),
                _fmt(srv["tasks"]),
                _fmt(srv["subscriptions"]),
                _fmt(srv["connections"]),
                str(c["gaps"] + c["duplicates"] + c["resume_gaps"] + c["resume_duplicates"]),
                f"{c['recovered_true']}/{c['resumes_sent']}",
                f"{hostile_total - p['hostile_unanswered']}/{hostile_total}",
                _fmt(srv.get("tcp_orphans")),
            ]
        )
    lines = ["soak periods (resources at each period's end):", *_table(rows)]
    for name, check in soak["checks"].items():
        details = ", ".join(
            f"{k} {v}" for k, v in check.items() if k != "passed" and not isinstance(v, dict)
        )
        lines.append(f"check {name}: {'PASS' if check['passed'] else 'FAIL'} ({details})")
        if name == "stable":
            for key, drift in check["drift_pct"].items():
                lines.append(
                    f"  {key}: {check['baseline'][key]} -> {check['end'][key]} "
                    f"({_fmt(drift)}%, limit +-{check['tolerance_pct']:g}%)"
                )
    lines.append(f"soak: {'PASSED' if soak['passed'] else 'FAILED'}")
    return lines


def render_markdown(soak: dict[str, Any], settings: dict[str, Any]) -> str:
    """The run's figures as Markdown, for the Performance page."""
    h = headline(soak)
    stable = soak["checks"]["stable"]
    minutes = soak["options"]["duration_s"] / 60
    lines = [
        f"{settings['clients']:,} clients x {settings['tickers_per_client']} of "
        f"{settings['ticker_count']} tickers at {soak['options']['rate']:g} quotes/s for "
        f"{round(minutes, 1):g} minutes, {len(soak['periods'])} periods of "
        f"{soak['options']['period_s']:g} s: **{'passed' if soak['passed'] else 'failed'}**.",
        "",
        "| figure | at the start | after period "
        f"{stable['baseline_after_period']} | at the end | drift |",
        "|---|---|---|---|---|",
    ]
    start = soak["samples"][0]
    for key in ("rss_mib", "fds", "tasks", "subscriptions", "connections", "python_blocks"):
        if key not in stable["baseline"]:
            continue  # a report from before the figure was sampled
        drift = stable["drift_pct"].get(key)
        if drift is None and key == "python_blocks":
            base, end = stable["baseline"][key], stable["end"][key]
            drift = (end - base) / base * 100 if base and end is not None else None
        lines.append(
            f"| {key} | {_fmt(start.get(key))} | {_fmt(stable['baseline'][key])} | "
            f"{_fmt(stable['end'][key])} | {'-' if drift is None else f'{drift:+.2f}%'} |"
        )
    lines += [
        "",
        f"- deliveries: {h['deliveries']:,} ({h['delivered_per_s']:,.0f}/s); "
        f"lost, repeated or reordered: {h['lost_or_repeated']}",
        f"- p99 per period: {_fmt(h['p99_ms_min'])} to {_fmt(h['p99_ms_max'])} ms "
        f"(median {_fmt(h['p99_ms_median'])} ms)",
        f"- resumes: {soak['checks']['resume_exact']['recovered_true']} of {h['resumes']} "
        f"recovered, {soak['checks']['resume_exact']['replayed']:,} quotes replayed, "
        f"{soak['checks']['resume_exact']['gaps_across']} missing across a reconnect",
        f"- hostile connections without their documented answer: {h['hostile_unanswered']}",
    ]
    return "\n".join(lines)
