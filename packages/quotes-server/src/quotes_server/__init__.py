"""
quotes-server: a thin FastAPI + uvicorn WebSocket layer over quotes-core.
"""

__version__ = "0.1.0"
