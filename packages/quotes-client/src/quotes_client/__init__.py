"""
quotes-client: a reconnecting Python client for the quote stream.
"""

__version__ = "0.1.0"
