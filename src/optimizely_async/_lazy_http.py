"""One httpx client, made on first use: the application's shared one, or the SDK's own (closed with it).

The CMAB and ODP requests use it, so a client that never predicts or talks to ODP opens no connection pool and
does not even import httpx. The SDK's own client is made by :func:`new_client`, in a worker thread: the first
one imports httpx (about 40 ms) and every one builds an SSL context (about 20 ms), which would otherwise hold
the event loop that many milliseconds at the first request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio.to_thread

from . import defaults
from ._version import __version__

if TYPE_CHECKING:
    import httpx
else:
    from ._lazy_import import LazyModule

    httpx = LazyModule("httpx")  # imported by the first new_client(), off the event loop

__all__ = ["LazyHttpClient", "new_client"]


async def new_client(**options: Any) -> httpx.AsyncClient:
    """A new ``httpx.AsyncClient`` with the SDK's User-Agent and no redirects, built in a worker thread (the
    import and the SSL context are blocking work that no bounded step on the loop can split)."""

    def build() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            headers={"User-Agent": f"{defaults.CLIENT_NAME}/{__version__}"}, follow_redirects=False, **options
        )

    return await anyio.to_thread.run_sync(build)


class LazyHttpClient:
    """``get()`` gives the shared client when one was given, else creates (once) and returns the SDK's own."""

    __slots__ = ("_own", "_shared")

    def __init__(self, shared: httpx.AsyncClient | None = None) -> None:
        self._shared = shared
        self._own: httpx.AsyncClient | None = None

    async def get(self) -> httpx.AsyncClient:
        if self._shared is not None:
            return self._shared
        if self._own is None:
            made = await new_client()
            if self._own is None:  # else another request made one meanwhile; this one never opened a connection
                self._own = made
        return self._own

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """``(await get()).post(url, **kwargs)``."""
        client = await self.get()
        return await client.post(url, **kwargs)

    async def aclose(self) -> None:
        """Close the SDK's own client, if it made one (a shared client is the application's to close)."""
        own, self._own = self._own, None
        if own is not None:
            await own.aclose()
