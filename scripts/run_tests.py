"""
The README's test command (``make test``): the suite in parallel, then the load tests alone.

Most tests wait on real processes (redis-server, uvicorn, clients) far more than they
compute, so ``pytest-xdist`` runs them on several workers at once: the suite takes a
third of its serial time. Tests marked ``exclusive`` are load tests (the benchmark's
smoke runs: hundreds of clients, a soak with timeouts cut to seconds) whose CPU use
would starve the tests beside them and be starved by them, so they run afterwards in a
second, serial pytest.

    python scripts/run_tests.py [pytest arguments]

``TEST_WORKERS`` sets the number of workers (default 3; ``0`` runs everything in one
serial pytest). Arguments are passed to both runs; a run that selects no test (exit 5)
is fine as long as the other one ran some. With ``-m`` among the arguments the
selection is yours: one run, on the workers.
"""

from __future__ import annotations

import os
import subprocess
import sys

NO_TESTS = 5
"""pytest's exit code when nothing was collected or selected."""


def main(args: list[str]) -> int:
    workers = os.environ.get("TEST_WORKERS", "3")
    pytest = [sys.executable, "-m", "pytest"]
    if workers == "0":
        return subprocess.call([*pytest, *args])
    if "-m" in args or any(a.startswith("-m=") for a in args):
        return subprocess.call([*pytest, "-n", workers, *args])
    runs = [
        [*pytest, "-n", workers, "-m", "not exclusive", *args],
        [*pytest, "-m", "exclusive", *args],
    ]
    codes = []
    for argv in runs:
        print(f"run_tests: {' '.join(argv[1:])}", flush=True)
        codes.append(subprocess.call(argv))
    failed = [c for c in codes if c not in (0, NO_TESTS)]
    if failed:
        return failed[0]
    return NO_TESTS if all(c == NO_TESTS for c in codes) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
