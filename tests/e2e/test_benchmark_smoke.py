"""
Smoke run of the benchmark: a few seconds of tiny load, and a complete report.

The benchmark starts its own private ``redis-server`` and the server under test
(``--spawn``), so nothing here touches a shared Redis. Only the report's shape
and ``received > 0`` are checked: timings are never asserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from numbers import Real
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.processes import REDIS_INSTALL_HINT

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = ROOT / "scripts" / "benchmark" / "ws_latency_benchmark.py"
LATENCY_KEYS = ("p50", "p90", "p99", "p99_9", "max")

# Load tests: each would starve the tests running beside it on other workers (and the
# soak's seconds-long server timeouts would be starved by them), so they run alone.
pytestmark = pytest.mark.exclusive


def _run_benchmark(
    *args: str, timeout: float = 240, env: dict[str, str] | None = None
) -> dict[str, Any]:
    if shutil.which("redis-server") is None:
        pytest.fail(REDIS_INSTALL_HINT, pytrace=False)
    proc = subprocess.run(
        [sys.executable, str(BENCHMARK), *args, "--json", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, f"benchmark failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_phase(phase: dict[str, Any]) -> None:
    for key in ("published", "expected", "received", "lost"):
        assert isinstance(phase[key], int), key
    assert phase["published"] > 0
    assert phase["expected"] > 0
    assert phase["received"] > 0
    for key in ("loss_pct", "delivered_per_s", "publish_rate"):
        assert _is_number(phase[key]), key
    assert set(phase["latency_ms"]) == set(LATENCY_KEYS)
    assert all(_is_number(phase["latency_ms"][k]) for k in LATENCY_KEYS)
    server = phase["server"]
    assert server["pids"]
    for key in ("cpu_percent", "rss_start_mib", "rss_end_mib", "rss_max_mib"):
        assert _is_number(server[key]), key
    assert _is_number(server["rss_per_connection_kib"])
    gen = phase["load_generator"]
    assert len(gen["client_cpu_percent"]) == gen["client_processes"] >= 1
    for key in ("publisher_cpu_percent", "machine_cpu_percent"):
        assert _is_number(gen[key]), key
    assert set(gen["publisher_lag_ms"]) == {"p50", "p99", "max"}
    assert isinstance(gen["saturated"], bool)
    assert isinstance(phase["warnings"], list)


def _targets() -> list[Any]:
    ours_missing = importlib.util.find_spec("quotes_server.app") is None
    return [
        "reference",
        pytest.param(
            "ours",
            marks=pytest.mark.skipif(ours_missing, reason="the product server is not there yet"),
        ),
    ]


@pytest.mark.parametrize("target", _targets())
def test_benchmark_produces_a_complete_report(target: str) -> None:
    """A 3-second run at 20 quotes/s to 5 clients yields every field of the report."""
    report = _run_benchmark(
        "--spawn", target,
        "--clients", "5",
        "--rate", "20",
        "--duration", "3",
        "--client-processes", "2",
        "--drain-timeout", "10",
    )  # fmt: skip
    assert report["scenario"] == "custom"
    assert report["machine"]["cpus"] >= 1
    assert report["settings"]["clients"] == 5
    result = report["targets"][target]
    assert len(result["runs"]) == 1
    run = result["runs"][0]
    assert run["connect"]["opened"] == 5
    assert run["warmup"]["warm"] == 5
    _check_phase(run["phase"])
    assert set(result["median"]) >= {"delivered_per_s", "loss_pct", "p99_ms", "server_cpu_percent"}
    assert result["median"]["delivered_per_s"] > 0
    server = run["phase"]["server"]
    if target == "ours":  # our server's garbage collections over the phase, from /metrics
        assert server["gc_full_collections"] >= 0
        assert server["gc_full_pause_ms"] >= 0
        assert server["gc_young_pause_ms"] >= 0
    else:
        assert "gc_full_collections" not in server


def test_the_sse_transport_runs_beside_the_websocket_with_its_ratios(tmp_path: Path) -> None:
    """
    --transport both: the same load read over WebSockets, then over SSE; sse/ws ratios;
    --results keeps the report and draws its plot.
    """
    report = _run_benchmark(
        "--spawn", "ours",
        "--transport", "both",
        "--results", str(tmp_path),
        "--clients", "5",
        "--rate", "20",
        "--duration", "3",
        "--drain-timeout", "10",
    )  # fmt: skip
    assert list(report["targets"]) == ["ours", "ours-sse"]
    for target in ("ours", "ours-sse"):
        run = report["targets"][target]["runs"][0]
        assert run["connect"]["opened"] == 5, target
        assert run["warmup"]["warm"] == 5, target
        _check_phase(run["phase"])
        assert run["phase"]["loss_pct"] == 0, target
    assert report["ratios"] is None  # no reference server in this run
    assert _is_number(report["sse_ratios"]["server_cpu_us_per_delivery"])
    assert json.loads((tmp_path / "custom.json").read_text()) == report
    assert (tmp_path / "custom_cpu.svg").read_text().lstrip().startswith("<?xml")


def test_idle_memory_scenario_reports_kib_per_connection() -> None:
    """The idle-memory preset, shrunk to 20 connections, reports KiB per connection."""
    report = _run_benchmark("--spawn", "reference", "--scenario", "idle-memory", "--clients", "20")
    run = report["targets"]["reference"]["runs"][0]
    assert run["connect"]["opened"] == 20
    assert _is_number(run["idle"]["kib_per_connection"])
    assert _is_number(report["targets"]["reference"]["median"]["kib_per_connection"])


@pytest.mark.slow
def test_cluster_scenario_publishes_through_one_and_three_shard_masters() -> None:
    """
    The cluster scenario, shrunk to one 2-second step at 200 quotes/s, runs both
    sharded set-ups: nothing is lost, and on the 3-master cluster every master took
    its share of the SPUBLISHes, each reaching the server's one subscription.
    """
    report = _run_benchmark(
        "--spawn", "ours",
        "--scenario", "cluster",
        "--setups", "1-master,3-masters",
        "--rate", "200",
        "--max-rate", "200",
        "--duration", "2",
        "--drain-timeout", "10",
        # a step passes on loss alone here: no timing is asserted
        "--p99-limit-ms", "600000",
    )  # fmt: skip
    assert report["scenario"] == "cluster"
    assert list(report["targets"]) == ["1-master", "3-masters"]
    for setup, masters in (("1-master", 1), ("3-masters", 3)):
        result = report["targets"][setup]
        run = result["runs"][0]
        assert run["connect"]["opened"] == 10
        assert run["warmup"]["warm"] == 10
        (phase,) = run["cluster"]["steps"]
        _check_phase(phase)
        assert phase["lost"] == 0, setup
        assert len(phase["redis"]["processes"]) == masters
        links = phase["load_generator"]["publisher_links"]
        assert len(links) == masters, links
        assert sorted(s for link in links for s in link["shards"]) == list(range(16))
        assert sum(link["published"] for link in links) == phase["published"]
        for link in links:
            assert link["published"] > 0, link
            assert link["errors"] == 0, link
            assert link["receivers"] == [1, 1], link  # the server's one link per master
        assert result["median"]["best_rate"] == 200
        assert result["median"]["best_masters_publishing"] == masters


def test_soak_scenario_reports_its_checks_and_series() -> None:
    """
    The soak, shrunk to a minute: 100 clients and six 10-second periods (server timeouts cut
    to fit), passes its checks: nothing lost while connected, every resume exact,
    resources stable; and it reports every period's resources, p99 and hostile answers.
    """
    report = _run_benchmark(
        "--spawn", "ours",
        "--scenario", "soak",
        "--clients", "100",
        "--duration", "60",
        "--period", "10",
        "--drain-timeout", "10",
        # the hostile connections' answers within a 10 s period: 408 after 2 s, the
        # stalled readers' keepalive 1011 after 4 s; a resume window that fills before
        # the baseline (after period 1), so RSS is compared at the same window size
        "--server-args", "--handshake-timeout 2 --slow-client-timeout 2 --history-age 5",
        timeout=240,
        env={"QUOTES_WS_PING_INTERVAL": "2", "QUOTES_WS_PING_TIMEOUT": "2"},
    )  # fmt: skip
    assert report["scenario"] == "soak"
    run = report["targets"]["ours"]["runs"][0]
    assert run["connect"]["opened"] == 100
    soak = run["soak"]
    checks = soak["checks"]
    assert checks["lossless"]["passed"], checks["lossless"]
    assert checks["resume_exact"]["passed"], checks["resume_exact"]
    assert checks["stable"]["passed"], checks["stable"]
    assert soak["passed"]
    assert checks["resume_exact"]["resumes"] == 6 * 5
    assert checks["resume_exact"]["replayed"] > 0  # the resumes had quotes to replay
    assert soak["final"]["open"] == 100
    periods = soak["periods"]
    assert [p["period"] for p in periods] == [1, 2, 3, 4, 5, 6]
    for period in periods:
        assert period["deliveries"] > 0
        assert _is_number(period["latency_ms"]["p99"])
        for key in ("rss_mib", "fds", "tasks", "subscriptions", "connections", "python_blocks"):
            assert _is_number(period["server"][key]), key
        assert period["churn"] == {"plain": 5, "resume": 5}
        # each kind got its documented answer: 1008, 408, 1009, and 1011 (keepalive) or
        # 1013 (slow consumer) for the stalled readers
        hostile = period["hostile"]
        assert sorted(hostile) == ["flood", "half_handshake", "oversize", "stalled"]
        assert sum(n for outcomes in hostile.values() for n in outcomes.values()) == 20
        assert period["hostile_unanswered"] == 0, hostile
    series = soak["series"]
    for key in ("t_s", "rss_mib", "fds", "tasks", "subscriptions", "connections", "p99_ms"):
        assert len(series[key]) == len(periods) + 1, key
    assert report["targets"]["ours"]["median"]["passed"] == 1
