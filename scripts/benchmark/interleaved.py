"""
Before/after runs of the benchmark, interleaved, each on a quiet machine.

Runs ``ws_latency_benchmark.py --spawn ours`` for every variant in turn (a checkout
and its environment), until each has ``--runs`` results; before each run it waits
until the machine has been at most ``--max-busy`` busy for 4 s (other work on a
2-core machine moves p99 by 2x), and prints the medians::

    .venv/bin/python scripts/benchmark/interleaved.py --runs 3 --scenario spec \\
        --variant before=/tmp/before-worktree --variant after=. \\
        --variant redis=.:QUOTES_HISTORY=redis --out /tmp/ab

``--bench-args`` adds arguments to every run (``'--transport sse'``: the clients read
Server-Sent Events).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

FIELDS = ("server_cpu_us_per_delivery", "p50_ms", "p99_ms", "loss_pct", "delivered_per_s")


def busy(seconds: float = 4.0) -> float:
    """The machine's busy fraction over ``seconds`` (all cores, from /proc/stat)."""

    def times() -> tuple[int, int]:
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
        return parts[3] + parts[4], sum(parts)

    i0, t0 = times()
    time.sleep(seconds)
    i1, t1 = times()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def variant(spec: str) -> tuple[str, Path, dict[str, str]]:
    """``name=dir[:VAR=value,...]``."""
    name, _, rest = spec.partition("=")
    folder, _, env = rest.partition(":")
    extra = dict(pair.split("=", 1) for pair in env.split(",") if pair)
    return name, Path(folder).resolve(), extra


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--variant", action="append", required=True, type=variant)
    parser.add_argument("--runs", type=int, default=3, help="results per variant (default 3)")
    parser.add_argument("--scenario", default="spec", help="benchmark scenario (default spec)")
    parser.add_argument("--max-busy", type=float, default=0.10, help="(default 0.10)")
    parser.add_argument(
        "--bench-args",
        default="",
        help="more arguments for every run, e.g. '--transport sse' (default: none)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder of the JSON reports")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    kept: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in args.variant}
    attempt = 0
    while any(len(rows) < args.runs for rows in kept.values()):
        for name, folder, env in args.variant:
            if len(kept[name]) >= args.runs:
                continue
            while (b := busy()) > args.max_busy:
                print(f"{time.strftime('%T')} machine {b:.0%} busy: waiting", file=sys.stderr)
            attempt += 1
            out = args.out / f"{name}_{attempt}.json"
            argv = [str(folder / ".venv/bin/python"), "scripts/benchmark/ws_latency_benchmark.py"]
            argv += ["--spawn", "ours", "--scenario", args.scenario, "--json", "--output"]
            argv += [str(out), "--quiet", *shlex.split(args.bench_args)]
            subprocess.run(argv, cwd=folder, env={**os.environ, **env}, check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
            targets = json.loads(out.read_text())["targets"]
            if len(targets) != 1:
                raise SystemExit(f"one target per run, not {sorted(targets)}: one --transport")
            median = next(iter(targets.values()))["median"]
            row = {k: median[k] for k in FIELDS}
            kept[name].append(row)
            print(f"{time.strftime('%T')} {name}: {row}", file=sys.stderr)
    for name, rows in kept.items():
        summary = {k: statistics.median(r[k] for r in rows) for k in FIELDS}
        print(json.dumps({"variant": name, "runs": len(rows), "median": summary}))


if __name__ == "__main__":
    main()
