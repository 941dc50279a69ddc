"""One httpx client, made on first use: the application's shared one, or the SDK's own (closed with it).

The CMAB and ODP requests use it, so a client that never predicts or talks to ODP opens no connection pool. The
SDK's own clients (this one, the event dispatcher's, the datafile poller's) are made in a worker thread by
:func:`made_off_loop`, which builds the client and its SSL context (about 20 ms). The HTTP stack itself is
imported when the event dispatcher or the poller is made (:func:`import_http_stack`); a client with its own event
dispatcher and a static datafile never imports it.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread

from . import defaults
from ._version import __version__

if TYPE_CHECKING:
    import httpx
else:
    from ._lazy_import import LazyModule

    httpx = LazyModule("httpx")  # see import_http_stack()

__all__ = ["LazyHttpClient", "import_http_stack", "made_off_loop", "new_client"]

T = TypeVar("T")


#: What the first HTTP client needs imported: httpx, the two modules it imports only when it makes a client, and
#: the IDNA codec, which trio's name resolution imports at the first connection (on the loop otherwise).
_HTTP_STACK = ("httpx", "httpcore", "certifi", "encodings.idna")


def import_http_stack() -> None:
    """Import the HTTP stack now (a no-op once imported): httpx, httpcore (with trio, when it is installed:
    httpcore imports it unconditionally, and offers no way not to), certifi and the IDNA codec.

    The event dispatcher and the datafile poller call it at construction, so the import (about 40-100 ms) is
    paid in the constructing thread, with the datafile's parse, not while the app serves: imported in the worker
    thread at the first event, it kept the loop from running for about 20 ms (the worker holds the interpreter
    lock for most of an import). :func:`made_off_loop` still calls it, under the lock a ``fork()`` waits for,
    for a client whose first HTTP client is another one (CMAB or ODP with a custom event dispatcher).
    """
    for name in _HTTP_STACK:
        importlib.import_module(name)


#: Held while a worker thread imports the HTTP stack and makes an HTTP client, and by a fork() for its duration
#: (see :func:`made_off_loop`).
_making = threading.Lock()


def _made(make: Callable[[], T]) -> T:
    with _making:
        import_http_stack()
        return make()


async def made_off_loop(make: Callable[[], T]) -> T:
    """``make()`` (an HTTP client) run in a worker thread, after the HTTP stack is imported there if it was not:
    the import (about 100 ms the first time) and each client's SSL context (about 20 ms on a quiet machine) are
    blocking work that no bounded step on the loop can split.

    A ``fork()`` waits until no such import or build is under way: a child forked while another thread was
    halfway through an import inherits that module's import lock held, and one forked while it was inside
    OpenSSL making a context inherits OpenSSL's locks held; either child would hang for good at its own first
    import or SSL context (seen with a ``SyncOptimizely`` forked right after construction). The wait is at most
    one import and one build.
    """
    return await anyio.to_thread.run_sync(_made, make)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_making.acquire, after_in_parent=_making.release, after_in_child=_making.release)


async def new_client(**options: Any) -> httpx.AsyncClient:
    """A new ``httpx.AsyncClient`` with the SDK's User-Agent and no redirects, made off the loop."""
    return await made_off_loop(
        lambda: httpx.AsyncClient(
            headers={"User-Agent": f"{defaults.CLIENT_NAME}/{__version__}"}, follow_redirects=False, **options
        )
    )


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
