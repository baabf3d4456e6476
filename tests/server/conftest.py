"""Server tests share the root conftest's ``start_server`` fixture; re-exported names."""

from tests.helpers.server import CHANNEL, StartServer

__all__ = ["CHANNEL", "StartServer"]
