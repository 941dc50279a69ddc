"""Secrets (issue 10, item 11): an SDK key or access token that cannot be sent is refused at construction without
being echoed; the SDK key is percent-encoded into the URL; secrets are redacted by value in every log record and
in the stored polling error; a datafile redirect from https to http is refused. Against real servers on
127.0.0.1 (plain HTTP, and HTTPS with a throw-away self-signed certificate), on asyncio and trio.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from _datafile_server import DatafileServer, Redirect
from _support.datafiles import empty_datafile as datafile
from optimizely_async import AsyncOptimizely
from optimizely_async.config.sources import FetchResult, PollingConfigSource
from optimizely_async.errors import ConfigurationError

SDK_KEY = "SdkKeyVerySecret123456"
TOKEN = "TokenSuperSecretABCDEF987"


@pytest.fixture
def server() -> Iterator[DatafileServer]:
    with DatafileServer() as srv:
        srv.set_datafile(datafile())
        yield srv


def every_form(secret: str) -> list[str]:
    """The forms a secret can take in a message: as is, percent-encoded, escaped inside a repr, as bytes."""
    forms = {secret, quote(secret, safe=""), repr(secret)[1:-1], repr(secret.encode())[2:-1]}
    return [f for f in forms if len(f) > 4]


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Everything a handler would write, exception texts included."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    return "\n".join(handler.format(record) for record in caplog.records)


# ------------------------------------------------------------------ refused at construction, never echoed

BAD_TOKENS = [
    TOKEN + "\n",  # read from a secrets file with its newline
    TOKEN + "\r\n",
    " " + TOKEN,
    TOKEN[:10] + " " + TOKEN[10:],
    TOKEN[:10] + "\x00" + TOKEN[10:],
    TOKEN[:10] + "\r\nX-Evil: 1" + TOKEN[10:],
    TOKEN + "é",  # not ASCII: httpx cannot put it in a header
    TOKEN + "\ud800",
]


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_an_access_token_that_cannot_be_sent_is_refused_without_being_echoed(
    token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigurationError) as caught:
        AsyncOptimizely(sdk_key=SDK_KEY, datafile_access_token=token)
    message = str(caught.value)
    assert "datafile_access_token" in message
    assert TOKEN[:8] not in message and SDK_KEY[:8] not in message
    assert TOKEN[:8] not in log_text(caplog)


BAD_KEYS = [SDK_KEY + "\n", " " + SDK_KEY, SDK_KEY[:6] + " " + SDK_KEY[6:], SDK_KEY + "\x7f", SDK_KEY + "\ud800"]


@pytest.mark.parametrize("sdk_key", BAD_KEYS)
def test_an_sdk_key_that_cannot_be_sent_is_refused_without_being_echoed(sdk_key: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        AsyncOptimizely(sdk_key=sdk_key)
    assert "sdk_key" in str(caught.value) and SDK_KEY[:8] not in str(caught.value)


def test_a_str_subclass_key_and_token_are_read_as_plain_strings() -> None:
    class Lying(str):
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("__eq__")

        __hash__ = str.__hash__

    source = PollingConfigSource(Lying(SDK_KEY), on_config=lambda c: None, access_token=Lying(TOKEN))
    assert type(source._sdk_key) is str and type(source._token) is str


# ------------------------------------------------------------------ the SDK key is one path segment


@pytest.mark.anyio
@pytest.mark.parametrize("sdk_key", ["/../x?y=", "a/b#c", "k%2Fy", "ключ"])
async def test_the_sdk_key_is_percent_encoded_into_the_url_path(server: DatafileServer, sdk_key: str) -> None:
    """``/../x?y=`` used to rewrite the path and add a query."""
    client = AsyncOptimizely(sdk_key=sdk_key, datafile_url_template=server.url + "/datafiles/{sdk_key}.json")
    async with client:
        assert await client.wait_until_ready(timeout=10)
    paths = [r.path for r in server.requests]
    assert paths and set(paths) == {"/datafiles/" + quote(sdk_key, safe="") + ".json"}, paths


# ------------------------------------------------------------------ redacted by value


@pytest.mark.anyio
async def test_secrets_in_http_exception_texts_are_redacted_in_logs_and_stats(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An httpx exception's text may quote the URL (the percent-encoded key) or a header (the token, escaped)."""
    caplog.set_level(logging.DEBUG)
    key = "key/with?odd=chars\\and'quotes"
    token = "TokenSecretXYZ0123456789"

    def fail(request: httpx.Request) -> httpx.Response:
        headers = repr(dict(request.headers)).replace(token, token.replace("Secret", "\\x53ecret"))
        raise httpx.ConnectError(f"cannot reach {request.url} with {headers} ({key!r}, {key.encode()!r})")

    async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as http:
        source = PollingConfigSource(
            key,
            on_config=lambda c: None,
            access_token=token,
            url_template="https://127.0.0.1/{sdk_key}.json",
            http_client=http,
        )
        assert await source.fetch_once() is FetchResult.FAILED
        try:
            raise httpx.ConnectError(f"boom {key} {token} {quote(key, safe='')}")
        except httpx.ConnectError:
            logging.getLogger("optimizely_async").exception("An error while fetching")
    text = log_text(caplog) + "\n" + (source.stats.last_error or "")
    assert "cannot reach" in text and "boom" in text  # the messages themselves are kept
    for form in every_form(key) + every_form(token):
        assert form not in text, form


# ------------------------------------------------------------------ https to http


def self_signed(directory: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a throw-away certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[DatafileServer, ssl.SSLContext]]:
    cert, key = self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    srv = DatafileServer()
    srv._httpd.socket = server_context.wrap_socket(srv._httpd.socket, server_side=True)
    with srv:
        srv.set_datafile(datafile("tls"))
        yield srv, ssl.create_default_context(cafile=str(cert))


@pytest.mark.anyio
async def test_a_datafile_redirect_from_https_to_http_is_refused(
    tls_server: tuple[DatafileServer, ssl.SSLContext], server: DatafileServer
) -> None:
    secure, context = tls_server
    https_url = f"https://127.0.0.1:{secure.port}/datafiles/{{sdk_key}}.json"
    async with httpx.AsyncClient(verify=context) as http:
        configs: list[Any] = []
        source = PollingConfigSource(
            SDK_KEY, on_config=configs.append, access_token=TOKEN, url_template=https_url, http_client=http
        )
        assert await source.fetch_once() is FetchResult.UPDATED  # the TLS server itself is fine
        secure.enqueue(Redirect(f"{server.url}/datafiles/{SDK_KEY}.json"))
        assert await source.fetch_once() is FetchResult.FAILED
    assert "https to plain http" in (source.stats.last_error or "")
    assert server.requests == []  # nothing was sent over plain http
    assert [c.revision for c in configs] == ["tls"]


@pytest.mark.anyio
async def test_an_https_to_https_redirect_is_still_followed(tls_server: tuple[DatafileServer, ssl.SSLContext]) -> None:
    secure, context = tls_server
    base = f"https://127.0.0.1:{secure.port}"
    secure.enqueue(Redirect(f"{base}/elsewhere/{SDK_KEY}.json"))
    async with httpx.AsyncClient(verify=context) as http:
        source = PollingConfigSource(
            SDK_KEY, on_config=lambda c: None, url_template=base + "/datafiles/{sdk_key}.json", http_client=http
        )
        assert await source.fetch_once() is FetchResult.UPDATED
    assert [r.path for r in secure.requests] == [f"/datafiles/{SDK_KEY}.json", f"/elsewhere/{SDK_KEY}.json"]
