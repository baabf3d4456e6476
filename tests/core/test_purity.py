"""
quotes-core imports no I/O: the standard library's pure parts and pydantic only.

The one exception is the optional :mod:`quotes_core.testing` (the ``testing`` extra),
which also imports Hypothesis: still no I/O, and never loaded by ``import quotes_core``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import quotes_core

FORBIDDEN = {
    "asyncio", "anyio", "trio", "redis", "fastapi", "starlette", "uvicorn", "websockets",
    "socket", "ssl", "select", "selectors", "threading", "multiprocessing", "subprocess",
    "http", "urllib", "time",
}  # fmt: skip

PACKAGE = Path(quotes_core.__file__).parent
TESTING = PACKAGE / "testing"
ALLOWED = {
    "__future__",
    "collections",
    "dataclasses",
    "datetime",
    "enum",
    "json",
    "math",
    "random",
    "re",
    "secrets",
    "types",
    "typing",
    "pydantic",
    "quotes_core",
    "zlib",
}  # fmt: skip  (zlib: CRC-32 of the shard mapping, pure computation; secrets: epochs)


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_source_imports_no_io_module() -> None:
    """No module of quotes_core names an I/O module in an import statement."""
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 6
    for path in files:
        bad = imported_roots(path) & FORBIDDEN
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_core_imports_only_pure_modules() -> None:
    """Every import in quotes_core is on the allow-list; Hypothesis only under testing/."""
    for path in sorted(PACKAGE.rglob("*.py")):
        allowed = ALLOWED | ({"hypothesis"} if TESTING in path.parents else set())
        extra = imported_roots(path) - allowed
        assert not extra, f"{path.relative_to(PACKAGE)} imports {sorted(extra)}"


def test_importing_core_loads_no_io_module() -> None:
    """
    A fresh interpreter that imports quotes_core has loaded no event loop, network stack
    or Hypothesis (the testing extra is only loaded by ``import quotes_core.testing``).

    (``socket`` itself is left out here: the standard library's ``email.utils``, pulled
    in by pydantic, imports it; the static check above still keeps it out of our code.)
    """
    code = (
        "import sys, quotes_core\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'asyncio','anyio','redis','fastapi','starlette','uvicorn','websockets','httpx',"
        "'hypothesis'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
