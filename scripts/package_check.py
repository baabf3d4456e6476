"""
Check the three packages as an index would serve them (``make package-check``, run by CI).

Builds the wheels and sdists of quotes-core, quotes-server and quotes-client with
``uv build`` (each wheel from its sdist) into a temporary directory outside the
workspace, then, in a clean virtual environment made there with ``python3 -m venv``
and filled with pip (dependencies from PyPI):

- the artifacts: six of them, at the version in ``VERSION``, each carrying its
  license, README and version file, the server and client requiring
  ``quotes-core==VERSION``;
- ``quotes-core`` installed alone first: it imports, and pulls no server or client
  dependency;
- then with the server and client wheels added: every package imports from the
  virtual environment (not the workspace), ``quotes-server --help``,
  ``quotes-publish --help`` and ``quotes-client --help`` exit 0,
  ``quotes-server --version`` says the version, and a test using the testing kit's
  pytest plugin (its ``scripted_server`` fixture and the client) passes.

Standard library only, so it runs under any Python 3.11+. Usage::

    python3 scripts/package_check.py [--uv PATH] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "quotes-core": "quotes_core",
    "quotes-server": "quotes_server",
    "quotes-client": "quotes_client",
}
SERVER_ONLY = {"fastapi", "starlette", "uvicorn", "redis", "hiredis", "prometheus-client", "pyjwt"}
"""The server's dependencies: quotes-core must not pull them."""
CLIENT_ONLY = {"websockets"}
"""The client's: quotes-core must not pull it either."""
TEST_TOOLS = ["pytest>=9.0", "anyio>=4.10"]

PLUGIN_TEST = '''
"""The testing kit's pytest plugin, as a user's test suite would use it."""

import pytest

from quotes_client import QuotesClient
from quotes_core.testing import make_quote

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_scripted_server_fixture(scripted_server):
    async with QuotesClient(scripted_server.url, tickers=["AAPL"]) as client:
        await scripted_server.wait_connections(1)
        scripted_server.publish(make_quote("MSFT", 1), make_quote("AAPL", 2, close=151.5))
        async for quote in client:
            assert (quote.ticker, quote.close) == ("AAPL", 151.5)
            break
'''


class CheckFailed(Exception):
    """A check did not hold; the message says which and what was seen."""


class Log:
    """Readable progress lines, each with the seconds since the start."""

    def __init__(self, tmp: Path) -> None:
        self.start = time.monotonic()
        self.tmp = str(tmp)

    def __call__(self, message: str) -> None:
        message = message.replace(self.tmp, "$TMP")
        print(f"[{time.monotonic() - self.start:6.1f}s] {message}", flush=True)


def clean_env() -> dict[str, str]:
    """The environment without anything that would point Python at the workspace."""
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT"):
        env.pop(name, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run(log: Log, command: Sequence[str | Path], *, cwd: Path, show: bool = False) -> str:
    """Run ``command``; return its output, or raise with it when it exits non-zero."""
    args = [str(a) for a in command]
    log("$ " + shlex.join(args))
    out = subprocess.run(
        args, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=300, check=False
    )
    if out.returncode != 0:
        raise CheckFailed(
            f"exit {out.returncode}: {' '.join(args)}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
        )
    if show:
        for line in out.stdout.strip().splitlines():
            log(f"  | {line}")
    return out.stdout


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def check_artifacts(log: Log, dist: Path, version: str) -> dict[str, Path]:
    """Six artifacts at ``version``, each with its license, README and version file."""
    wheels: dict[str, Path] = {}
    for name, module in PACKAGES.items():
        stem = f"{module}-{version}"
        wheel, sdist = dist / f"{stem}-py3-none-any.whl", dist / f"{stem}.tar.gz"
        check(wheel.is_file() and sdist.is_file(), f"missing {wheel.name} or {sdist.name}")
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            metadata = zf.read(f"{stem}.dist-info/METADATA").decode()
            version_file = zf.read(f"{module}/_version.py").decode()
        check(f"{stem}.dist-info/licenses/LICENSE" in names, f"{wheel.name}: no LICENSE")
        check("License-Expression: MIT" in metadata, f"{wheel.name}: no license expression")
        check(f"# {name}\n" in metadata, f"{wheel.name}: README not the long description")
        check(f'__version__ = "{version}"' in version_file, f"{wheel.name}: _version.py")
        if name != "quotes-core":
            pin = f"Requires-Dist: quotes-core=={version}"
            check(pin in metadata, f"{wheel.name}: quotes-core not pinned to {version}")
        with tarfile.open(sdist) as tf:
            members = set(tf.getnames())
        for path in ("LICENSE", "README.md", "PKG-INFO", f"src/{module}/_version.py"):
            check(f"{stem}/{path}" in members, f"{sdist.name}: no {path}")
        wheels[name] = wheel
        log(f"ok: {wheel.name} and {sdist.name}: license, README, version {version}")
    return wheels


def installed(log: Log, bin_dir: Path, cwd: Path) -> set[str]:
    """The normalised names of the distributions installed in the environment."""
    code = 'import importlib.metadata as m; print(*(d.metadata["Name"] for d in m.distributions()))'
    return {
        re.sub(r"[-_.]+", "-", n).lower()
        for n in run(log, [bin_dir / "python", "-c", code], cwd=cwd).split()
    }


def check_core_alone(log: Log, tmp: Path, bin_dir: Path, wheels: dict[str, Path]) -> None:
    """quotes-core installs and imports with no server or client dependency."""
    run(log, [bin_dir / "python", "-m", "pip", "install", "-q", wheels["quotes-core"]], cwd=tmp)
    run(log, [bin_dir / "python", "-c", "import quotes_core"], cwd=tmp)
    dists = installed(log, bin_dir, tmp)
    log(f"  | installed: {', '.join(sorted(dists - {'pip'}))}")
    pulled = dists & (SERVER_ONLY | CLIENT_ONLY | {"quotes-server", "quotes-client"})
    check(not pulled, f"quotes-core pulled {sorted(pulled)}")
    check("pydantic" in dists, "quotes-core did not pull pydantic")
    log("ok: quotes-core alone pulls no fastapi, starlette, uvicorn, redis or websockets")


def check_all(log: Log, tmp: Path, venv: Path, wheels: dict[str, Path], version: str) -> None:
    """The three wheels together: imports, commands, the pytest plugin."""
    bin_dir = venv / "bin"
    core = f"{wheels['quotes-core']}[testing]"
    command = [bin_dir / "python", "-m", "pip", "install", "-q", core]
    command += [wheels["quotes-server"], wheels["quotes-client"], *TEST_TOOLS]
    run(log, command, cwd=tmp)
    modules = [*PACKAGES.values(), "quotes_core.testing", "quotes_client.testing"]
    code = (
        "import importlib as i, sys; [print(m, i.import_module(m).__file__) for m in sys.argv[1:]]"
    )
    for line in run(log, [bin_dir / "python", "-c", code, *modules], cwd=tmp).split("\n"):
        if line:
            check(line.split(" ", 1)[1].startswith(str(venv)), f"imported outside the venv: {line}")
    log(f"ok: {', '.join(modules)} import from {venv.name}")
    for cli in ("quotes-server", "quotes-publish", "quotes-client"):
        out = run(log, [bin_dir / cli, "--help"], cwd=tmp)
        check(out.startswith(f"usage: {cli}"), f"{cli} --help printed no usage")
    out = run(log, [bin_dir / "quotes-server", "--version"], cwd=tmp)
    check(out.strip() == f"quotes-server {version}", f"quotes-server --version said {out!r}")
    log(f"ok: --help of quotes-server, quotes-publish, quotes-client; version {version}")
    suite = tmp / "user-tests"
    suite.mkdir()
    (suite / "test_plugin.py").write_text(PLUGIN_TEST)
    code = 'import importlib.metadata as m; print(*m.entry_points(group="pytest11"))'
    plugin = ["-p", "quotes_client.testing.pytest_plugin"]
    if "quotes_client" in run(log, [bin_dir / "python", "-c", code], cwd=suite):
        plugin = []  # registered by an entry point: listing it again would be an error
    pytest = [bin_dir / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin]
    out = run(log, [*pytest, "-W", "error", "test_plugin.py"], cwd=suite, show=True)
    check("1 passed" in out, "the plugin's test did not pass")
    log("ok: the pytest plugin loads; its scripted_server fixture serves a QuotesClient")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--uv", default=shutil.which("uv") or str(ROOT / ".tools/bin/uv"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    version = (ROOT / "VERSION").read_text().strip()
    tmp = Path(tempfile.mkdtemp(prefix="quotes-package-check-"))
    log = Log(tmp)
    check(not tmp.resolve().is_relative_to(ROOT), f"{tmp} is inside the workspace")
    log(f"package check of version {version} in {tmp}")
    try:
        dist = tmp / "dist"
        run(log, [args.uv, "build", "--all-packages", "--quiet", "--out-dir", dist], cwd=ROOT)
        wheels = check_artifacts(log, dist, version)
        # one environment: quotes-core alone first, then the server and client join it
        venv = tmp / "venv"
        run(log, [sys.executable, "-m", "venv", venv], cwd=tmp)
        check_core_alone(log, tmp, venv / "bin", wheels)
        check_all(log, tmp, venv, wheels, version)
    except CheckFailed as failure:
        log(f"FAILED: {failure}")
        log(f"kept {tmp}")
        return 1
    if args.keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp)
    log("package check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
