"""
quotes-server: a thin FastAPI + uvicorn WebSocket layer over quotes-core.
"""

from quotes_server._version import __version__

__all__ = ["__version__"]
