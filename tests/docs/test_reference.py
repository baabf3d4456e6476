"""The reference pages document every public module of the three packages."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def public_modules() -> set[str]:
    found = set()
    for path in ROOT.glob("packages/*/src/**/*.py"):
        parts = path.parts
        src = len(parts) - 1 - parts[::-1].index("src")
        names = list(parts[src + 1 :])
        names[-1] = names[-1].removesuffix(".py")
        if names[-1] == "__init__":
            names.pop()
        if any(n.startswith("_") for n in names):
            continue  # private modules and __main__
        found.add(".".join(names))
    return found


def documented() -> set[str]:
    text = "\n".join(p.read_text() for p in (ROOT / "docs" / "reference").glob("*.md"))
    return set(re.findall(r"^::: ([\w.]+)$", text, re.MULTILINE))


def test_every_public_module_has_a_reference_entry() -> None:
    modules = public_modules()
    assert {"quotes_core.engine", "quotes_server.runtime", "quotes_client.client"} <= modules
    missing = sorted(modules - documented())
    assert not missing, f"add them to docs/reference/*.md: {missing}"
    extra = sorted(documented() - modules)
    assert not extra, f"documented modules that do not exist: {extra}"
