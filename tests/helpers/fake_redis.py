"""
A Redis master in the test's own process, for in-process tests of the shard link.

It listens on a loopback socket and speaks just enough RESP (parsed by hiredis, the
parser the link itself uses) for the sharded source: ``AUTH``, ``CLIENT`` (``+OK``),
``HELLO 3`` and ``SELECT`` (redis-py's connection handshake), ``PING`` (``+PONG``,
or ``["pong", ""]`` once subscribed, as Redis answers),
``SSUBSCRIBE``, ``SUNSUBSCRIBE``, ``SUBSCRIBE`` (the single-channel source) and
``CLUSTER SLOTS`` (the ``slots`` the test sets, or Redis's error for a server that is
not a cluster). The test drives the rest:
:meth:`FakeShardNode.publish` pushes an ``smessage`` (or a ``message`` to a
connection subscribed with ``SUBSCRIBE``), :meth:`unsubscribe` pushes an ``unsubscribe``,
:meth:`garbage` writes bytes that are not RESP, :meth:`refuse` makes the next
``SSUBSCRIBE`` of a channel an error reply (``MOVED``...), :meth:`migrate` pushes the
``sunsubscribe`` Redis sends when a slot leaves the node, :meth:`mute` stops
answering, :meth:`drop` resets every connection, :meth:`stop` also stops accepting
(a dead node) and :meth:`restart` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import hiredis

NOT_A_CLUSTER = b"ERR This instance has cluster support disabled"


def encode_reply(value: Any) -> bytes:
    """A reply as Redis writes it: bulk strings, integers, arrays, maps (RESP3), null."""
    if isinstance(value, dict):
        items = b"".join(encode_reply(k) + encode_reply(v) for k, v in value.items())
        return b"%%%d\r\n" % len(value) + items
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(encode_reply(v) for v in value)


@dataclass
class _Client:
    writer: asyncio.StreamWriter
    channels: set[str] = field(default_factory=set)
    """Channels subscribed with ``SSUBSCRIBE``."""
    plain: set[str] = field(default_factory=set)
    """Channels subscribed with ``SUBSCRIBE``."""


class FakeShardNode:
    """One fake master; ``commands`` records every command received, in order."""

    def __init__(self) -> None:
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self._clients: list[_Client] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusals: dict[str, tuple[bytes, list[Any] | None]] = {}
        self._muted = False
        self._server: asyncio.Server | None = None
        self.port = 0
        self.slots: list[Any] | None = None
        """The ``CLUSTER SLOTS`` reply; ``None``: not a cluster."""

    async def __aenter__(self) -> FakeShardNode:
        await self.restart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def restart(self) -> None:
        """Listen (again, on the same port once it has one)."""
        self._muted = False
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting and reset every connection (a dead node)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.drop()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if server is not None:
            await server.wait_closed()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def subscribed(self) -> set[str]:
        """The channels some connection is subscribed to now."""
        return {c for client in self._clients for c in client.channels | client.plain}

    def sent(self, name: bytes) -> list[bytes]:
        """The first argument of every ``name`` command received (the channel)."""
        return [cmd[1] for cmd in self.commands if cmd[0].upper() == name and len(cmd) > 1]

    def count(self, name: bytes) -> int:
        """How many ``name`` commands were received."""
        return sum(1 for cmd in self.commands if cmd[0].upper() == name)

    # --- what the test makes the node do ------------------------------------------------------

    def publish(self, channel: str, data: bytes) -> int:
        """
        ``SPUBLISH`` and ``PUBLISH``: an ``smessage`` to every connection subscribed to
        the channel with ``SSUBSCRIBE``, a ``message`` to every one subscribed with
        ``SUBSCRIBE``; how many got it.
        """
        got = 0
        for client in self._clients:
            if channel in client.channels:
                client.writer.write(encode_reply([b"smessage", channel, data]))
                got += 1
            if channel in client.plain:
                client.writer.write(encode_reply([b"message", channel, data]))
                got += 1
        return got

    def unsubscribe(self, channel: str) -> None:
        """Drop every ``SUBSCRIBE`` to the channel, pushing ``unsubscribe`` as Redis does."""
        for client in self._clients:
            if channel in client.plain:
                client.plain.discard(channel)
                client.writer.write(encode_reply([b"unsubscribe", channel, len(client.plain)]))

    def garbage(self, data: bytes) -> None:
        """Write ``data`` as is to every connection (a broken proxy, a wrong port)."""
        for client in self._clients:
            client.writer.write(data)

    def refuse(self, channel: str, error: bytes, slots_after: list[Any] | None = None) -> None:
        """
        Answer the next ``SSUBSCRIBE channel`` with ``-error`` (e.g. ``MOVED 12 h:p``),
        and from then on ``CLUSTER SLOTS`` with ``slots_after`` when given (the new layout).
        """
        self._refusals[channel] = (error, slots_after)

    def migrate(self, channel: str) -> None:
        """The channel's slot left this node: Redis pushes ``sunsubscribe`` to its subscribers."""
        for client in self._clients:
            if channel in client.channels:
                client.channels.discard(channel)
                client.writer.write(encode_reply([b"sunsubscribe", channel, len(client.channels)]))

    def mute(self) -> None:
        """Read everything, answer nothing (a hung node)."""
        self._muted = True

    def drop(self) -> None:
        """Reset every connection (a crashed node)."""
        for client in self._clients:
            client.writer.transport.abort()
        self._clients.clear()

    # --- the connection ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        client = _Client(writer)
        self._clients.append(client)
        self.connections += 1
        parser = hiredis.Reader()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                parser.feed(data)
                while (cmd := parser.gets()) is not False:
                    assert isinstance(cmd, list)
                    self.commands.append(cmd)
                    if not self._muted:
                        writer.write(self._answer(client, cmd))
        if client in self._clients:
            self._clients.remove(client)
        writer.close()

    def _answer(self, client: _Client, cmd: list[bytes]) -> bytes:
        name = cmd[0].upper()
        if name in (b"AUTH", b"CLIENT", b"SELECT"):
            return b"+OK\r\n"
        if name == b"HELLO":  # redis-py's handshake: RESP3, as Redis 7 answers it
            hello = {"server": "redis", "version": "7.0.15", "proto": 3, "id": self.connections}
            return encode_reply({**hello, "mode": "standalone", "role": "master", "modules": []})
        if name == b"PING":
            subscribed = client.channels or client.plain
            return encode_reply([b"pong", b""]) if subscribed else b"+PONG\r\n"
        if name == b"CLUSTER":
            return (
                b"-" + NOT_A_CLUSTER + b"\r\n" if self.slots is None else encode_reply(self.slots)
            )
        channel = cmd[1].decode()
        if name == b"SSUBSCRIBE":
            refusal = self._refusals.pop(channel, None)
            if refusal is not None:
                error, slots_after = refusal
                if slots_after is not None:
                    self.slots = slots_after
                return b"-" + error + b"\r\n"
            client.channels.add(channel)
            return encode_reply([b"ssubscribe", channel, len(client.channels)])
        if name == b"SUBSCRIBE":
            client.plain.add(channel)
            return encode_reply([b"subscribe", channel, len(client.plain)])
        if name == b"SUNSUBSCRIBE":
            client.channels.discard(channel)
            return encode_reply([b"sunsubscribe", channel, len(client.channels)])
        return b"-ERR unknown command\r\n"
