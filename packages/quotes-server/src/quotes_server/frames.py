"""
Pre-built WebSocket frames: encode a quote's frame once, write it to every client.

Server-to-client frames are never masked (RFC 6455, section 5.1), so the bytes of a
text frame depend only on its payload: the server builds the frame once per quote
and every subscribed connection writes the very same bytes. Connections write them
through the ``quotes.frames`` ASGI extension of
:class:`~quotes_server.protocol.QuotesWebSocketProtocol` (:class:`FramesExtension`),
a batch of frames per write; where the extension is not offered (another ASGI
server, or a connection that negotiated per-message-deflate) they fall back to
ordinary ``websocket.send`` messages with :func:`frame_text`.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import TypedDict

__all__ = ["FRAMES_EXTENSION", "FramesExtension", "frame_text", "text_frame"]

FRAMES_EXTENSION = "quotes.frames"
"""Key of the extension in ``scope["extensions"]``."""


class FramesExtension(TypedDict):
    """What the ``quotes.frames`` scope extension offers an accepted WebSocket."""

    write: Callable[[bytes], bool]
    """Write complete pre-built frames now (never blocks); False once the socket is closing."""
    writable: asyncio.Event
    """Set while the socket's write buffer is below its high-water mark."""


_FIN_TEXT = 0x81


def text_frame(payload: str) -> bytes:
    """One unmasked, unfragmented text frame carrying ``payload``."""
    data = payload.encode()
    n = len(data)
    if n < 126:
        head = bytes((_FIN_TEXT, n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", _FIN_TEXT, 126, n)
    else:
        head = struct.pack("!BBQ", _FIN_TEXT, 127, n)
    return head + data


def frame_text(frame: bytes) -> str:
    """The text payload of a frame made by :func:`text_frame`."""
    n = frame[1] & 0x7F
    offset = 2 if n < 126 else 4 if n == 126 else 10
    return frame[offset:].decode()
