"""Server tests share the root conftest's ``start_server`` fixture; re-exported names."""

from tests.helpers.server import CHANNEL, StartServer, quote_bytes

__all__ = ["CHANNEL", "StartServer", "quote_bytes"]
