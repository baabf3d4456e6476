"""
The rule that keeps the stream one thing: its rules live in quotes-core's engine.

A transport (quotes-server, the testing kit's scripted server) moves bytes and time:
it builds no history, snapshot, hub or throttle, calls none of the engine's inner
decisions, branches on no stream option, and defines no wire constant. The client
is the same around its own sans-I/O engine (``quotes_client.engine``). Modules stay
small and sibling modules import each other without ``TYPE_CHECKING`` cycles.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import quotes_client
import quotes_core
import quotes_server
from quotes_core import (
    INBOUND_RATE_REASON,
    INTERNAL_ERROR_REASON,
    QUEUE_FULL_REASON,
    SHUTDOWN_REASON,
    SLOW_CONSUMER_REASON,
    TOKEN_EXPIRED_REASON,
    WS_PATHS,
)

CORE = Path(quotes_core.__file__).parent
SERVER = Path(quotes_server.__file__).parent
CLIENT = Path(quotes_client.__file__).parent
TESTING_KIT = CLIENT / "testing"

ENGINE_PARTS = {"History", "Snapshot", "Hub", "Throttle", "Subscriber"}
"""Built only by the engine (``Stream``)."""
ENGINE_DECISIONS = {"opening", "answer", "apply_action", "parse_action", "with_position"}
"""Called only inside the core: a transport asks the engine instead."""
STREAM_OPTIONS = {"since", "snapshot", "batch", "max_hz", "seq", "sequenced"}
"""Options a transport never branches on (``plain`` picks its fast path: allowed)."""
WIRE_VALUES = {
    *WS_PATHS,
    SHUTDOWN_REASON,
    INTERNAL_ERROR_REASON,
    INBOUND_RATE_REASON,
    SLOW_CONSUMER_REASON,
    QUEUE_FULL_REASON,
    TOKEN_EXPIRED_REASON,
}

CLIENT_IO = [CLIENT / "client.py", CLIENT / "sync.py", CLIENT / "__main__.py"]
"""The client's I/O around :mod:`quotes_client.engine`."""
CLIENT_ENGINE_PARTS = {
    "ClientEngine",  # built once, by QuotesClient
    "ResumeTracker",
    "decode_frame",
    "change_filter",
    "encode_action",
    "parse_tickers_param",
    "with_params",
}
"""Used only by the client engine."""

MAX_LINES = 500
OVERSIZED: dict[Path, str] = {}
"""Modules still over :data:`MAX_LINES`, each with what will shrink it."""


def modules(*roots: Path) -> Iterator[tuple[Path, ast.Module]]:
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def called_name(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _options(node: ast.Attribute) -> bool:
    """True for ``options.x``, ``self.options.x``, ``conn.subscriber.options.x``..."""
    value = node.value
    if isinstance(value, ast.Name):
        return value.id in ("options", "opts")
    return isinstance(value, ast.Attribute) and value.attr in ("options", "_options")


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(path.parents[2])}:{getattr(node, 'lineno', '?')}"


def engine_work(
    files: Iterable[tuple[Path, ast.Module]], calls: set[str], allowed: Iterable[str] = ()
) -> list[str]:
    """The calls of ``calls`` (but ``allowed`` ``file:call`` pairs) and stream options read."""
    found = []
    for path, tree in files:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = called_name(node)
                if name in calls and f"{path.name}:{name}" not in allowed:
                    found.append(f"{where(path, node)} calls {name}")
            elif isinstance(node, ast.Attribute) and node.attr in STREAM_OPTIONS and _options(node):
                found.append(f"{where(path, node)} reads options.{node.attr}")
    return found


def test_transports_build_no_part_of_the_engine_and_decide_nothing() -> None:
    found = engine_work(modules(SERVER, TESTING_KIT), ENGINE_PARTS | ENGINE_DECISIONS)
    assert not found, "the engine is missing a function:\n" + "\n".join(found)


def test_the_client_io_keeps_no_protocol_state() -> None:
    files = ((p, ast.parse(p.read_text())) for p in CLIENT_IO)
    found = engine_work(files, CLIENT_ENGINE_PARTS, allowed={"client.py:ClientEngine"})
    assert not found, "the client engine is missing a function:\n" + "\n".join(found)


def test_wire_constants_are_defined_once_in_the_core() -> None:
    found = []
    for path, tree in modules(SERVER, CLIENT):
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in WIRE_VALUES:
                found.append(f"{where(path, node)} spells {node.value!r}")
    assert not found, "import it from quotes_core.wire:\n" + "\n".join(found)


def test_the_rule_sees_what_it_forbids() -> None:
    """The checks above would catch a violation: the core itself has each one."""
    core = dict(modules(CORE))
    calls = {called_name(n) for t in core.values() for n in ast.walk(t) if isinstance(n, ast.Call)}
    assert calls >= ENGINE_PARTS
    assert {"opening", "answer", "with_position"} <= calls
    read = {
        n.attr
        for t in core.values()
        for n in ast.walk(t)
        if isinstance(n, ast.Attribute) and _options(n)
    }
    assert {"since", "snapshot", "batch", "seq", "max_hz", "sequenced"} <= read
    constants = {n.value for t in core.values() for n in ast.walk(t) if isinstance(n, ast.Constant)}
    assert constants >= WIRE_VALUES


def test_modules_stay_small() -> None:
    sizes = {path: len(path.read_text().splitlines()) for path, _ in modules(CORE, SERVER, CLIENT)}
    over = {p: n for p, n in sizes.items() if n > MAX_LINES and p not in OVERSIZED}
    assert not over, f"over {MAX_LINES} lines: {over}"
    done = [p for p in OVERSIZED if sizes[p] <= MAX_LINES]
    assert not done, f"back under {MAX_LINES} lines, take them off OVERSIZED: {done}"


def test_no_type_checking_import_between_sibling_modules() -> None:
    """An import hidden under ``if TYPE_CHECKING`` is a cycle waiting to happen."""
    found = []
    for path, tree in modules(CORE, SERVER, CLIENT):
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.If)
                and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"
            ):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith(
                    ("quotes_core", "quotes_server", "quotes_client")
                ):
                    found.append(f"{where(path, inner)} imports {inner.module}")
    assert not found, "\n".join(found)
