"""Where a ``ProjectConfig`` comes from: a datafile polled from the Optimizely CDN.

``PollingConfigSource`` runs in the client's task group (``await tg.start(source.run)``). It reports
``started`` at once, so client startup never waits on the network, then fetches the datafile, sleeps
``update_interval`` and fetches again, until it is cancelled.

Differences from the official ``PollingConfigManager`` worth knowing:

* conditional requests send ``If-None-Match`` (last ``ETag``) as well as ``If-Modified-Since``;
* the validators are stored only after the body parsed, so one bad datafile is not stuck behind 304s;
* failures are retried with exponential backoff and jitter, capped at ``update_interval``;
* redirects are followed by hand (at most ``MAX_REDIRECTS``), and the ``Authorization`` header goes only
  to the origin (scheme, host, port) of the configured URL; a redirect from https to plain http is refused;
* the SDK key is percent-encoded into the URL path (a key like ``../x?y=`` cannot rewrite the URL);
* an SDK key or access token that cannot be sent (whitespace, a control character such as the newline a
  secrets file ends with; for the token, anything but visible ASCII) raises ``ConfigurationError`` at
  construction, without echoing the secret;
* the SDK key and the access token never appear in full in a log line or in ``stats.last_error``: they are
  redacted by value (in every form they can take in a message), not by pattern.
"""

from __future__ import annotations

import inspect
import math
import random
import time
import traceback
import unicodedata
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
from anyio.abc import TaskStatus

from optimizely_async import defaults
from optimizely_async._lazy_http import import_http_stack, made_off_loop
from optimizely_async._logging import protect_secret, release_secrets, scrub, sdk_logger
from optimizely_async._validation import plain
from optimizely_async.errors import ClientStateError, ConfigurationError

if TYPE_CHECKING:
    import httpx

    from optimizely_async.config.project_config import ProjectConfig
else:
    from optimizely_async._lazy_import import LazyModule

    httpx = LazyModule("httpx")  # imported when a source is made (import_http_stack), not with the module

__all__ = ["MAX_REDIRECTS", "FetchResult", "PollingConfigSource", "PollingStats"]

logger = sdk_logger("optimizely_async.config")

#: Redirect hops followed per fetch before the fetch counts as failed.
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

ParseFn = Callable[[bytes], "Awaitable[ProjectConfig]"]
OnConfig = Callable[["ProjectConfig"], "Awaitable[None] | None"]


class FetchResult(str, Enum):
    """What one fetch did."""

    #: A datafile with a new revision was parsed and handed to ``on_config``.
    UPDATED = "updated"
    #: A datafile was downloaded and parsed, but its revision is the one already delivered.
    UNCHANGED = "unchanged"
    #: The server answered 304 Not Modified.
    NOT_MODIFIED = "not_modified"
    #: Network error, timeout, unexpected status or an unusable datafile; the last good config is kept.
    FAILED = "failed"


@dataclass(frozen=True)
class PollingStats:
    """Counters of a ``PollingConfigSource`` (a snapshot; it does not change after it is taken)."""

    fetches: int = 0
    updates: int = 0
    unchanged: int = 0
    not_modified: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    #: Why the last failed fetch failed (secrets redacted); None if no fetch failed yet.
    last_error: str | None = None
    #: The revision last handed to ``on_config`` (or the initial config's).
    revision: str | None = None
    #: When the last fetch answered 200 (with a usable datafile) or 304, as ``time.time()``; None until then.
    last_success: float | None = None


async def _build(body: bytes) -> ProjectConfig:
    """The default parse: ``build_config``, on the event loop in
    steps of about 0.5 ms with a checkpoint between them."""
    from optimizely_async.config.project_config import build_config

    return await build_config(body)


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number of seconds, got {value!r}.")
    if value <= 0:
        raise ConfigurationError(f"{name} must be greater than 0 seconds, got {value!r}.")
    return float(value)


def _check_sendable(name: str, secret: str, *, header: bool) -> None:
    """Raise ConfigurationError, naming the problem but never the secret, when ``secret`` cannot be sent: in a
    URL path (percent-encoded UTF-8) or, with ``header``, in an ``Authorization`` header (visible ASCII)."""
    problem = None
    if secret != secret.strip():
        problem = "starts or ends with whitespace (a newline read from a secrets file?)"
    elif any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") or ch.isspace() for ch in secret):
        problem = "contains whitespace or a control character"
    elif header and not all("!" <= ch <= "~" for ch in secret):
        problem = "contains a character that cannot be sent in an HTTP header (only visible ASCII can)"
    if problem is not None:
        raise ConfigurationError(f"{name} {problem}; check the value you pass (it is not shown here).")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default_port = {"http": 80, "https": 443}.get(url.scheme)
    return (url.scheme, url.host, url.port or default_port)


class PollingConfigSource:
    """Polls the datafile of ``sdk_key`` and hands each new revision to ``on_config``.

    Args:
        sdk_key: the environment's SDK key.
        url_template: a URL with a ``{sdk_key}`` placeholder. Default: the CDN, or the authenticated endpoint
            when ``access_token`` is given.
        access_token: datafile access token, sent as ``Authorization: Bearer <token>`` to the configured
            URL's origin only.
        update_interval: seconds between the end of one fetch and the start of the next.
        request_timeout: seconds one fetch (all redirect hops and the body) may take.
        http_client: an ``httpx.AsyncClient`` to share. It is not closed by this source; without one, the
            source makes its own and closes it when ``run`` returns (or on ``aclose``).
        on_config: called (and awaited if it returns an awaitable) with each config whose revision differs
            from the last one delivered. An exception in it is logged and does not stop polling.
        initial_config: a config the client already uses (e.g. from a static datafile); its revision counts
            as delivered.
        parse: an async function that turns the response body into a ``ProjectConfig``. Default:
            ``optimizely_async.config.project_config.build_config`` (on the loop, in bounded steps).
    """

    def __init__(
        self,
        sdk_key: str,
        *,
        on_config: OnConfig,
        url_template: str | None = None,
        access_token: str | None = None,
        update_interval: float = defaults.UPDATE_INTERVAL,
        request_timeout: float = defaults.DATAFILE_REQUEST_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
        initial_config: ProjectConfig | None = None,
        parse: ParseFn | None = None,
    ) -> None:
        sdk_key, access_token = plain(sdk_key), plain(access_token)
        if not isinstance(sdk_key, str) or not sdk_key.strip():
            raise ConfigurationError("sdk_key must be a non-empty string.")
        if access_token is not None and (not isinstance(access_token, str) or not access_token.strip()):
            raise ConfigurationError("datafile_access_token cannot be empty; pass None to poll the public CDN.")
        _check_sendable("sdk_key", sdk_key, header=False)
        if access_token is not None:
            _check_sendable("datafile_access_token", access_token, header=True)
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise ConfigurationError(f"http_client must be an httpx.AsyncClient, got {type(http_client).__name__}.")
        if not callable(on_config):
            raise ConfigurationError("on_config must be callable.")
        self._update_interval = _check_positive("update_interval", update_interval)
        self._request_timeout = _check_positive("request_timeout", request_timeout)

        if url_template is None:
            url_template = (
                defaults.DATAFILE_URL_TEMPLATE if access_token is None else defaults.AUTHENTICATED_DATAFILE_URL_TEMPLATE
            )
        self._sdk_key = sdk_key
        self._token = access_token
        # httpx logs every request URL at INFO, and the URL holds the SDK key: keep both secrets out of it.
        protect_secret(sdk_key)
        protect_secret(access_token)
        # Forgotten with this source (a process that makes many clients must not scrub ever more strings).
        weakref.finalize(self, release_secrets, sdk_key, access_token)
        if http_client is None:
            import_http_stack()  # here, in the constructing thread (see import_http_stack)
        self._url = self._build_url(url_template, sdk_key)
        self._safe_url = self._scrub(str(self._url))

        if self._update_interval < defaults.MIN_RECOMMENDED_UPDATE_INTERVAL:
            logger.warning(
                "Polling intervals below %s seconds are not recommended (update_interval=%s).",
                int(defaults.MIN_RECOMMENDED_UPDATE_INTERVAL),
                self._update_interval,
            )
        if access_token is not None and self._url.scheme != "https":
            logger.warning("The datafile access token is sent over plain HTTP to %s.", self._safe_url)

        self._on_config = on_config
        if parse is None:
            from optimizely_async.config.loader import prepare

            prepare()  # the datafile models' validators, built here rather than in a step of the first build
        self._parse: ParseFn = parse if parse is not None else _build
        self._user_client = http_client
        self._own_client: httpx.AsyncClient | None = None
        # Made by the first fetch, inside the loop that runs it: a lock made here would belong to whatever
        # async library runs the constructor's thread (a SyncOptimizely built in a trio task polls on asyncio).
        self._lock: anyio.Lock | None = None
        self._running = False
        self._etag: str | None = None
        self._last_modified: str | None = None
        self._config: ProjectConfig | None = initial_config
        self._stats = PollingStats(revision=initial_config.revision if initial_config is not None else None)
        self._random = random.Random()

    # ------------------------------------------------------------------ public surface

    @property
    def url(self) -> str:
        """The datafile URL with the SDK key redacted (safe to log)."""
        return self._safe_url

    @property
    def update_interval(self) -> float:
        return self._update_interval

    @property
    def config(self) -> ProjectConfig | None:
        """The last config delivered (or the initial one); None before the first good datafile."""
        return self._config

    @property
    def stats(self) -> PollingStats:
        return self._stats

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(url={self._safe_url!r}, update_interval={self._update_interval}, "
            f"authenticated={self._token is not None})"
        )

    def adopt(self, config: ProjectConfig) -> None:
        """Record a config the client already uses (e.g. parsed from a static datafile after construction):
        its revision counts as delivered, so fetching the same revision does not call ``on_config``."""
        self._config = config
        self._stats = replace(self._stats, revision=config.revision)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll until cancelled. Meant for ``await task_group.start(source.run)``; never raises otherwise."""
        if self._running:
            raise ClientStateError("This PollingConfigSource is already running.")
        self._running = True
        task_status.started()
        try:
            while True:
                try:
                    await self.fetch_once()
                    delay = self.next_delay()
                except Exception as exc:  # the poller must survive its own bugs
                    self._count_failure(f"unexpected {type(exc).__name__}: {exc}")
                    logger.error("Unexpected error in the datafile poller: %s", self._format_exc(exc))
                    delay = self.next_delay()
                await anyio.sleep(delay)
        finally:
            self._running = False
            await self.aclose()

    async def fetch_once(self) -> FetchResult:
        """Fetch the datafile once and deliver it if its revision is new. Never raises for fetch problems."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            self._stats = replace(self._stats, fetches=self._stats.fetches + 1)
            # The SDK's own HTTP client (its SSL context, made in a worker thread) is not part of the request's time.
            client = await self._client()
            try:
                with anyio.fail_after(self._request_timeout):
                    response = await self._get(client)
            except TimeoutError:
                return self._fail(f"timed out after {self._request_timeout:g} s")
            except httpx.HTTPError as exc:
                return self._fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            except _FetchError as exc:
                return self._fail(str(exc))

            if response.status_code == 304:
                logger.debug("Datafile not modified since the last fetch (revision %s).", self._stats.revision)
                self._stats = replace(
                    self._stats,
                    not_modified=self._stats.not_modified + 1,
                    consecutive_failures=0,
                    last_success=time.time(),
                )
                return FetchResult.NOT_MODIFIED
            if response.status_code != 200:
                hint = " (check the datafile access token)" if response.status_code in (401, 403) else ""
                return self._fail(f"HTTP {response.status_code} {response.reason_phrase}{hint}")

            try:
                config = await self._parse(response.content)
            except Exception as exc:
                return self._fail(f"invalid datafile: {exc}")

            # Validators only now: a bad body must not make the next poll answer 304 forever.
            self._etag = response.headers.get("etag")
            self._last_modified = response.headers.get("last-modified")
            self._stats = replace(self._stats, consecutive_failures=0, last_success=time.time())
            return await self._deliver(config)

    def next_delay(self) -> float:
        """Seconds to sleep before the next fetch: the interval, or the backoff after a failure."""
        failures = self._stats.consecutive_failures
        return self._update_interval if failures == 0 else self._backoff(failures)

    async def aclose(self) -> None:
        """Close the HTTP client this source made (never the user's). Polling can start again later."""
        client, self._own_client = self._own_client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    # ------------------------------------------------------------------ internals

    def _build_url(self, template: str, sdk_key: str) -> httpx.URL:
        if not isinstance(template, str) or "{sdk_key}" not in template:
            raise ConfigurationError(f"url_template must be a string containing '{{sdk_key}}', got {template!r}.")
        try:
            # Percent-encoded: the key is one path segment, whatever it holds ("/", "?", "#", "..").
            url = httpx.URL(template.format(sdk_key=quote(sdk_key, safe="")))
        except (KeyError, IndexError, ValueError, httpx.InvalidURL) as exc:
            reason = scrub(f"{type(exc).__name__}: {exc}", [sdk_key])
            raise ConfigurationError(
                f"Invalid url_template {template!r} ({reason}). Use '{{sdk_key}}' as the only placeholder."
            ) from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(f"url_template must be an http(s) URL with a host, got {template!r}.")
        return url

    async def _client(self) -> httpx.AsyncClient:
        if self._user_client is not None:
            return self._user_client
        if self._own_client is None:
            timeout = self._request_timeout
            made = await made_off_loop(lambda: httpx.AsyncClient(timeout=timeout, follow_redirects=False))
            if self._own_client is None:
                self._own_client = made
        return self._own_client

    async def _get(self, client: httpx.AsyncClient) -> httpx.Response:
        headers: dict[str, str] = {}
        if self._etag:
            headers["If-None-Match"] = self._etag
        if self._last_modified:
            headers["If-Modified-Since"] = self._last_modified
        origin = _origin(self._url)
        url = self._url
        for _ in range(MAX_REDIRECTS + 1):
            hop_headers = dict(headers)
            if self._token is not None and _origin(url) == origin:
                hop_headers["Authorization"] = f"Bearer {self._token}"
            response = await client.get(url, headers=hop_headers, follow_redirects=False, timeout=self._request_timeout)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECT_STATUSES or location is None:
                return response
            try:
                url = url.join(location)
            except httpx.InvalidURL as exc:
                raise _FetchError(f"redirect to an invalid URL: {exc}") from None
            if url.scheme not in ("http", "https"):
                raise _FetchError(f"redirect to a non-HTTP URL ({url.scheme})")
            if self._url.scheme == "https" and url.scheme != "https":
                raise _FetchError("refused a redirect from https to plain http")
            logger.debug("Datafile request redirected (%s) to %s.", response.status_code, self._scrub(str(url)))
        raise _FetchError(f"more than {MAX_REDIRECTS} redirects")

    async def _deliver(self, config: ProjectConfig) -> FetchResult:
        old = self._stats.revision
        new = config.revision
        if new == old:
            logger.debug("Datafile fetched; revision %s is already in use.", new)
            self._stats = replace(self._stats, unchanged=self._stats.unchanged + 1)
            return FetchResult.UNCHANGED
        self._config = config
        self._stats = replace(self._stats, updates=self._stats.updates + 1, revision=new)
        logger.info("Received a new datafile. Old revision number: %s. New revision number: %s.", old, new)
        try:
            result: Any = self._on_config(config)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            logger.error("The config listener failed for revision %s: %s", new, self._format_exc(exc))
        return FetchResult.UPDATED

    def _count_failure(self, reason: str) -> str:
        reason = self._scrub(reason)
        self._stats = replace(
            self._stats,
            failures=self._stats.failures + 1,
            consecutive_failures=self._stats.consecutive_failures + 1,
            last_error=reason,
        )
        return reason

    def _fail(self, reason: str) -> FetchResult:
        reason = self._count_failure(reason)
        logger.error(
            "Fetching datafile from %s failed: %s. Keeping revision %s; retrying in up to %g s.",
            self._safe_url,
            reason,
            self._stats.revision,
            self._backoff_cap(self._stats.consecutive_failures),
        )
        return FetchResult.FAILED

    def _backoff_cap(self, failures: int) -> float:
        return float(min(self._update_interval, defaults.RETRY_BACKOFF_BASE * 2 ** min(failures - 1, 32)))

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: a delay in [cap/2, cap], cap = min(interval, base * 2^(n-1))."""
        cap = self._backoff_cap(failures)
        return self._random.uniform(cap / 2, cap)

    def _scrub(self, text: str) -> str:
        return scrub(text, [self._sdk_key, self._token or ""])

    def _format_exc(self, exc: BaseException) -> str:
        return self._scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())


class _FetchError(Exception):
    """A fetch failed for a reason of our own (bad redirect); the message is logged."""
