"""One httpx client, made on first use: the application's shared one, or the SDK's own (closed with it).

The CMAB and ODP requests use it, so a client that never predicts or talks to ODP opens no connection pool.
"""

from __future__ import annotations

import httpx

from . import defaults
from ._version import __version__

__all__ = ["LazyHttpClient"]


class LazyHttpClient:
    """``get()`` gives the shared client when one was given, else creates (once) and returns the SDK's own."""

    __slots__ = ("_own", "_shared")

    def __init__(self, shared: httpx.AsyncClient | None = None) -> None:
        self._shared = shared
        self._own: httpx.AsyncClient | None = None

    def get(self) -> httpx.AsyncClient:
        if self._shared is not None:
            return self._shared
        if self._own is None:
            self._own = httpx.AsyncClient(
                headers={"User-Agent": f"{defaults.CLIENT_NAME}/{__version__}"}, follow_redirects=False
            )
        return self._own

    async def aclose(self) -> None:
        """Close the SDK's own client, if it made one (a shared client is the application's to close)."""
        own, self._own = self._own, None
        if own is not None:
            await own.aclose()
