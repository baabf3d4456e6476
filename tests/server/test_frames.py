"""Pre-built frames are exactly what a WebSocket parser expects."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from quotes_server.frames import frame_text, text_frame


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
        assert isinstance(frame, Frame)
        return frame
    raise AssertionError("incomplete frame")


@given(st.one_of(st.text(max_size=200), st.text(min_size=120, max_size=70_000)))
def test_text_frame_parses_back(payload: str) -> None:
    """websockets' own parser reads our frame as one final, unmasked text frame."""
    frame = parse(text_frame(payload))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert (frame.rsv1, frame.rsv2, frame.rsv3) == (False, False, False)
    assert frame.data.decode() == payload
    assert frame_text(text_frame(payload)) == payload


def test_length_boundaries() -> None:
    """7-bit, 16-bit and 64-bit length encodings are chosen at the RFC's boundaries."""
    assert len(text_frame("x" * 125)) == 2 + 125
    assert len(text_frame("x" * 126)) == 4 + 126
    assert len(text_frame("x" * 65535)) == 4 + 65535
    assert len(text_frame("x" * 65536)) == 10 + 65536
