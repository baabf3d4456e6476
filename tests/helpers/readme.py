"""
The README's commands, as a newcomer would type them.

Command lines come from its ``bash`` blocks (comments dropped, continuations joined)
and from inline code that starts with ``make`` or ``.venv/bin/`` (optionally after
``NAME=value`` environment assignments).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from tests.helpers.processes import ROOT

README = ROOT / "README.md"
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"`((?:[A-Z_]+=\S+ )*(?:make |\.venv/bin/)[^`]+)`")
ASSIGNMENT = re.compile(r"^[A-Z_]+=")


@dataclass(frozen=True)
class Command:
    """One command line: its environment assignments and its words."""

    text: str
    env: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()


def parse(text: str) -> Command:
    words = shlex.split(text, comments=True)
    env = {}
    while words and ASSIGNMENT.match(words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return Command(text=text.split("#")[0].strip(), env=env, argv=tuple(words))


def block_commands(text: str | None = None) -> list[Command]:
    """Every command line of the README's ``bash`` blocks, in order."""
    text = README.read_text() if text is None else text
    found = []
    for block in BASH_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            command = parse(line)
            if command.argv:
                found.append(command)
    return found


def inline_commands(text: str | None = None) -> list[Command]:
    """Every inline-code command (``make ...``, ``.venv/bin/...``), in order."""
    text = README.read_text() if text is None else text
    return [parse(match) for match in INLINE.findall(text)]
