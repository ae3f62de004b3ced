"""The HTTP client MSAL uses for us, and two MSAL defaults we turn off on purpose.

- `AuthorityHttpClient` is a `requests.Session` with a timeout on every request that remembers,
  per thread, the status and `Retry-After` of the last token response: MSAL's result dict carries
  neither, and the retry decision needs both. It also keeps the `error` and `error_codes` of a
  refused request's JSON body: when MSAL turns a refused discovery into a bare ValueError (an
  unknown tenant, AADSTS90002), they still say what went wrong.
- `NoHttpCache`: MSAL throttles by keys that, for On-Behalf-Of, leave out the user's assertion,
  so after one user's 429/5xx MSAL fails *every* user's exchange for seconds without a request,
  and it replays an identical HTTP 400 from memory for 60 s. We retry per user ourselves, so
  MSAL's `http_cache` gets a mapping that never stores anything.
- `DiscardingTokenCache`: MSAL never reads its cache for On-Behalf-Of but still writes each
  result (with the refresh token) into it, which would grow without bound, one entry per user.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

import msal
import requests

from grpc_obo._errors import ConfigurationError

__all__ = ["AuthorityHttpClient", "DiscardingTokenCache", "NoHttpCache", "ResponseFacts"]


class ResponseFacts(threading.local):
    """Status and Retry-After of the last response seen by this thread."""

    status: int | None = None
    retry_after: float | None = None
    error_body: dict[str, Any] | None = None
    """`error` and `error_codes` of a 4xx/5xx JSON body (no description: it may echo input)."""

    def clear(self) -> None:
        self.status = None
        self.retry_after = None
        self.error_body = None


class AuthorityHttpClient(requests.Session):
    def __init__(self, *, ca_file: str | None, timeout: float, pool_size: int = 10) -> None:
        super().__init__()
        self._timeout = timeout
        self.facts = ResponseFacts()
        # NOTE: one connection per worker thread: with requests' default pool of 10, a burst
        # on more workers than that discards connections ("Connection pool is full") and pays
        # a new TLS handshake for each.
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=pool_size)
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        if ca_file is not None:
            # NOTE: requests reads `verify=""` as "do not verify", and a missing path fails
            # only on the first exchange: refuse both now (an unset variable read into ca_file).
            ca_file = os.fspath(ca_file)  # a Path works too; requests wants text
            if not ca_file.strip() or not os.path.exists(ca_file):
                raise ConfigurationError(
                    f"ca_file {ca_file!r} is not an existing file or directory"
                )
            # NOTE: with trust_env on, REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE would override
            # `verify` for every request MSAL makes, silently ignoring the configured CA. It also
            # turns off HTTPS_PROXY/ALL_PROXY and ~/.netrc: with an explicit CA, nothing about
            # these connections comes from the environment.
            self.trust_env = False
            self.verify = ca_file

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self._timeout)
        self.facts.clear()
        response = super().request(method, url, *args, **kwargs)
        self.facts.status = response.status_code
        self.facts.retry_after = _retry_after(response.headers.get("Retry-After"))
        if response.status_code >= 400:
            self.facts.error_body = _error_fields(response)
        return response


def _error_fields(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    return {name: body[name] for name in ("error", "error_codes") if name in body}


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: Entra sends seconds; treat anything else as absent
    return seconds if 0 <= seconds <= 3600 else None


class NoHttpCache(MutableMapping[str, Any]):
    """A mapping that forgets everything it is given (see the module docstring)."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        return None

    def __delitem__(self, key: str) -> None:
        return None

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class DiscardingTokenCache(msal.TokenCache):  # type: ignore[misc]  # msal ships no type hints
    """An MSAL token cache that stores nothing (see the module docstring)."""

    def add(self, event: Any, now: Any = None) -> None:
        return None
