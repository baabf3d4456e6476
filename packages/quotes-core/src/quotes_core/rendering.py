"""
The frames of a stream's elements: one quote per frame as the contract sends it, or
JSON arrays (``batch=1``), with or without positions (``seq=1``).

What a :class:`~quotes_core.Subscriber` hands out (:data:`Element`: a control frame,
a quote with its position, or a plain quote's payload) becomes frames by the
client's options (:func:`render`); a :class:`Codec` says how a transport's payloads
read as JSON text and how its frames are built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeAlias, TypeVar

from quotes_core.actions import with_position
from quotes_core.history import StreamItem
from quotes_core.query import StreamOptions

__all__ = ["TEXT_CODEC", "Codec", "Control", "Element", "render"]

P = TypeVar("P", bound=Sized)
"""What a transport carries for one quote (``bytes`` frames, ``str`` JSON text)."""
F = TypeVar("F")
"""A frame as a transport writes it."""


class Control(NamedTuple):
    """A control frame's JSON text (``recovered``, ``subscribed``, ``pong``, ``error``)."""

    text: str


Element: TypeAlias = Control | StreamItem[P] | P
"""What a subscriber hands out: a control frame, a quote with its position (from the
sequenced hub, the snapshot or a replay), or a plain quote's payload."""


@dataclass(frozen=True, slots=True)
class Codec(Generic[P, F]):
    """How a transport's quote payloads read as JSON text and how frames are built."""

    frame: Callable[[str], F]
    """A text frame of this JSON text."""
    text: Callable[[P], str]
    """The JSON text of a quote payload."""
    quote: Callable[[P], F]
    """The frame of a plain quote payload (the contract's frame, often the payload itself)."""


def _same(value: str) -> str:
    return value


TEXT_CODEC: Codec[str, str] = Codec(_same, _same, _same)
"""Payloads and frames that are JSON text (a transport that frames text itself)."""


def render(
    elements: Iterable[Element[P]], options: StreamOptions, codec: Codec[P, F]
) -> tuple[list[F], int]:
    """
    The frames of ``elements`` for a client with ``options``, and how many quotes
    they carry: one quote per frame as the contract sends it (``seq=1`` appends
    ``seq`` and ``epoch``), or with ``batch=1`` the quotes between two control frames
    in one JSON array. A control frame is never inside an array.
    """
    seq = options.seq
    batch = options.batch
    frame = codec.frame
    frames: list[F] = []
    group: list[str] = []
    quotes = 0
    for e in elements:
        if isinstance(e, Control):
            if group:
                frames.append(frame("[" + ",".join(group) + "]"))
                group = []
            frames.append(frame(e.text))
            continue
        quotes += 1
        if isinstance(e, StreamItem):
            if seq:
                text = with_position(codec.text(e.payload), e.seq, e.epoch)
                if batch:
                    group.append(text)
                else:
                    frames.append(frame(text))
            elif batch:
                group.append(codec.text(e.payload))
            else:
                frames.append(codec.quote(e.payload))
        elif batch:
            group.append(codec.text(e))
        else:
            frames.append(codec.quote(e))
    if group:
        frames.append(frame("[" + ",".join(group) + "]"))
    return frames, quotes
