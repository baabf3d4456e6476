"""
The README's commands are real: each ``make`` line names a target that runs what the
README says, and each command it hands to a program is one that program accepts.

``tests/e2e/test_readme_quickstart.py`` runs the quick start itself.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from quotes_server.dashboard import DASHBOARD_PATHS
from quotes_server.settings import Settings
from tests.helpers.processes import ROOT
from tests.helpers.readme import README, Command, block_commands, inline_commands

BIN = Path(sys.executable).parent
UV_RUN = re.compile(r"\buv run --locked --all-packages --all-groups (.*)$")
DASHBOARD_URL = re.compile(r"<(http://127\.0\.0\.1:(\d+)(/[^>]*))>")


def make_env(extra: dict[str, str]) -> dict[str, str]:
    """
    This environment as a newcomer's shell has it: no outer make's state (a dry run must
    not inherit -k or -j) and no QUOTES_* settings (QUOTES_REDIS_URL would drop --demo).
    """
    outer = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    env = {
        k: v
        for k, v in os.environ.items()
        # nor this suite's pytest-xdist worker (a pytest started under it thinks it is one)
        if k not in outer and not k.startswith(("QUOTES_", "PYTEST_XDIST_"))
    }
    return {**env, **extra}


def dry_run(command: Command) -> list[str]:
    """What ``make`` would run for ``command``: its recipe lines (``make -n``)."""
    out = subprocess.run(
        ["make", "-n", *command.argv[1:]],
        cwd=ROOT,
        env=make_env(command.env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"`{command.text}` is not a make target:\n{out.stderr}"
    # a .PHONY name without a rule is "nothing to be done", not a target
    assert out.stdout.strip(), f"`{command.text}` runs nothing"
    assert "Nothing to be done" not in out.stdout, f"`{command.text}` runs nothing"
    return out.stdout.splitlines()


def program_of(command: Command) -> list[str]:
    """The program ``make`` would start for ``command`` (its last recipe line, after uv run)."""
    match = UV_RUN.search(dry_run(command)[-1])
    assert match, f"`{command.text}` runs no program through uv run: {dry_run(command)}"
    return shlex.split(match[1])


def assert_accepted(argv: list[str]) -> None:
    """``argv[0]`` is installed, its ``--help`` works and lists every option ``argv`` uses."""
    exe = BIN / argv[0]
    assert exe.exists(), f"no such command: {argv[0]}"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for option in (a.split("=")[0] for a in argv[1:] if a.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(option)}\b", out.stdout), (
            f"`{shlex.join(argv)}`: {argv[0]} has no {option}"
        )


COMMANDS = block_commands()
INLINE = inline_commands()


def test_quick_start_order() -> None:
    """The README gives `make run`, then the dashboard's URL, then `make watch`, `make test`."""
    text = README.read_text()
    firsts = [c.text for c in COMMANDS if c.argv[:1] == ("make",)]
    assert firsts[:3] == ["make run", "make watch", "make watch TICKERS=NVDA,TSLA"]
    assert "make test" in firsts
    url = DASHBOARD_URL.search(text)
    assert url, "the README gives no dashboard URL"
    assert text.index("make run") < url.start() < text.index("make watch")
    assert int(url[2]) == Settings.model_fields["port"].default
    assert url[3] in DASHBOARD_PATHS


def test_no_bare_uv() -> None:
    """No command assumes `uv` on PATH: make bootstraps it into .tools/ when it is missing."""
    for command in [*COMMANDS, *INLINE]:
        assert command.argv[0] != "uv", f"`{command.text}` needs uv on PATH"
    assert "uv run" not in README.read_text()


@pytest.mark.parametrize("command", [*COMMANDS, *INLINE], ids=lambda c: c.text)
def test_make_targets_exist(command: Command) -> None:
    """Every `make ...` the README shows names a target (a dry run succeeds)."""
    if command.argv[0] == "make":
        dry_run(command)
    else:
        assert command.argv[0].startswith(".venv/bin/"), command.text
        assert_accepted([command.argv[0].removeprefix(".venv/bin/"), *command.argv[1:]])


def test_run_serves_the_demo_feed_unless_given_redis() -> None:
    """`make run` starts quotes-server with --demo; with a Redis URL in ARGS, without it."""
    (run,) = [c for c in COMMANDS if c.text == "make run"]
    assert program_of(run) == ["quotes-server", "--demo"]
    (with_redis,) = [c for c in INLINE if c.argv[:2] == ("make", "run") and len(c.argv) > 2]
    program = program_of(with_redis)
    assert program[0] == "quotes-server"
    assert "--demo" not in program
    assert "--redis-url" in program
    assert_accepted(program)


def test_watch_runs_quotes_client_against_make_run() -> None:
    """`make watch` runs quotes-client on the port `make run` serves, for the README's tickers."""
    (watch, other) = [c for c in COMMANDS if c.argv[:2] == ("make", "watch")]
    assert program_of(watch) == [
        "quotes-client",
        "ws://127.0.0.1:8000/ws/quotes",
        "--tickers",
        "AAPL,MSFT",
    ]
    assert program_of(other)[-2:] == ["--tickers", "NVDA,TSLA"]
    assert_accepted(program_of(watch))
    # the README's "another port": run and watch agree on it
    run_on, watch_on = (c for c in INLINE if c.env.get("QUOTES_PORT"))
    assert run_on.env == watch_on.env == {"QUOTES_PORT": "9000"}
    assert "ws://127.0.0.1:9000/ws/quotes" in program_of(watch_on)


def test_test_command_runs_pytest() -> None:
    """`make test` runs pytest over the suite, through scripts/run_tests.py."""
    (test,) = [c for c in COMMANDS if c.text == "make test"]
    assert program_of(test) == ["python", "scripts/run_tests.py"]


def _run_tests(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_tests.py"), "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        env={**make_env({}), "TEST_WORKERS": "2"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_runner_runs_the_suite_on_workers_then_the_exclusive_tests_alone(
    tmp_path: Path,
) -> None:
    """
    scripts/run_tests.py: the unmarked tests on xdist workers, then the ``exclusive`` ones in
    a serial pytest; a failure in either fails the run; selecting nothing at all is exit 5.
    """
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    exclusive: runs alone\naddopts = -v\n"
    )
    (tmp_path / "test_some.py").write_text(
        "import os, pytest\n"
        "def test_parallel():\n"
        "    assert os.environ.get('PYTEST_XDIST_WORKER', '').startswith('gw')\n"
        "@pytest.mark.exclusive\n"
        "def test_alone():\n"
        "    assert 'PYTEST_XDIST_WORKER' not in os.environ\n"
    )
    ok = _run_tests(tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    first, second = ok.stdout.split("run_tests: ")[1:]
    assert "-n 2 -m not exclusive" in first
    assert "2 workers" in first
    assert "PASSED test_some.py::test_parallel" in first
    assert "test_alone" not in first
    assert "test_some.py::test_alone PASSED" in second
    assert "test_parallel" not in second
    # only one run has tests: fine; neither: pytest's "no tests" code
    assert _run_tests(tmp_path, "-k", "alone").returncode == 0
    assert _run_tests(tmp_path, "-k", "nothing_is_called_this").returncode == 5
    (tmp_path / "test_some.py").write_text(
        "import pytest\n@pytest.mark.exclusive\ndef test_alone():\n    assert False\n"
    )
    assert _run_tests(tmp_path).returncode == 1
