"""Every Python example in the docs runs, as written (against a real server when it names one)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from quotes_core import parse_quote
from tests.helpers.processes import ROOT
from tests.helpers.server import StartServer

DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)
ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8000")
TEST_FUNCTION = re.compile(r"^(?:async )?def (test_\w+)\(", re.MULTILINE)


def blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for i, match in enumerate(m for m in FENCE.finditer(page.read_text()) if m[1] == language):
            found.append((f"{page.relative_to(DOCS)}#{i + 1}", match[2]))
    return found


PYTHON = blocks("python")


def test_docs_have_python_examples() -> None:
    """The collection below is not silently empty."""
    assert len(PYTHON) >= 7


@pytest.mark.parametrize(("where", "code"), PYTHON, ids=[w for w, _ in PYTHON])
def test_python_example_runs(
    where: str, code: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """
    The example runs to completion: a script exits 0 and prints something (against
    the demo feed when it names the server's address); a block that defines
    ``test_`` functions is a test module, run by pytest, and every test passes.
    """
    if ADDRESS.search(code):
        start_server: StartServer = request.getfixturevalue("start_server")
        server = start_server(None, demo_rate=500)
        code = ADDRESS.sub(f"127.0.0.1:{server.port}", code)
    tests = TEST_FUNCTION.findall(code)
    script = tmp_path / ("test_example.py" if tests else "example.py")
    script.write_text(code)
    if tests:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += ["-W", "error", str(script)]
        # pytest-asyncio (a dev dependency) warns at start-up unless this is set
        command += ["-o", "asyncio_default_fixture_loop_scope=function"]
    else:
        command = [sys.executable, str(script)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, f"{where} failed:\n{out.stdout}\n{out.stderr}"
    if tests:
        assert f"{len(tests)} passed" in out.stdout, f"{where}: not every test ran:\n{out.stdout}"
    else:
        assert out.stdout.strip(), f"{where} printed nothing"


def test_json_quote_examples_are_canonical() -> None:
    """Quote examples shown as JSON are exactly what the server sends."""
    quotes = [
        (where, code.strip())
        for where, code in blocks("json")
        # a JSON Schema (the AsyncAPI page) describes quotes; it is not one
        if not code.startswith("--8<--") and '"ticker"' in code and '"properties"' not in code
    ]
    assert quotes
    for where, text in quotes:
        assert parse_quote(text).payload == text, where


def test_commands_in_docs_exist() -> None:
    """Every `uv run NAME` in a shell example names a command the workspace installs."""
    names = set()
    for _where, code in blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True) if line.strip() else []
            if words[:2] == ["uv", "run"] and len(words) > 2:
                names.add(words[2])
    assert {"quotes-server", "quotes-client", "quotes-publish"} <= names
    for name in names - {"python", "mkdocs"}:
        exe = Path(sys.executable).parent / name
        assert exe.exists(), f"`uv run {name}` in the docs, but no such command"
        out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"`{name} --help` failed: {out.stderr}"


def test_health_body_in_docs_matches_server() -> None:
    """The /health body quoted in the docs is the one the server returns."""
    from quotes_server.app import HEALTH

    text = (DOCS / "contract.md").read_text()
    assert json.dumps(HEALTH, separators=(",", ":")) in text
