"""
Fixtures of the client tests: an injected backoff sleep and clock.

The real server comes from the root conftest's ``start_server`` and ``redis_server``.
"""

from __future__ import annotations

import pytest

from tests.client.servers import FakeClock, RecordingSleep


@pytest.fixture
def sleep() -> RecordingSleep:
    """A backoff sleep that records delays and returns at once."""
    return RecordingSleep()


@pytest.fixture
def gated_sleep() -> RecordingSleep:
    """A backoff sleep that records delays and waits for the test's ``release()``."""
    return RecordingSleep(gated=True)


@pytest.fixture
def clock() -> FakeClock:
    """A monotonic clock that only the test moves."""
    return FakeClock()
