"""MSAL behind the exchanger: its apps, the worker threads it runs in, and its retries.

    acquire(tenant, call)
      └── application(tenant): the credential chain resolves the credential (in a worker
          thread); the MSAL app for (tenant, credential version) is built once, off the loop
          └── call(app) in a worker thread, retried with backoff + jitter on 429/5xx/network
              within a time budget, errors classified (`_retry.py`); a refused credential
              source (invalid_client) gives way to the next one, once per source

MSAL is synchronous: it runs in a bounded thread pool owned by the runner, so a slow authority
ties up those threads, never the event loop. A refusal of this client's own configuration names
the setting to fix (`explain_refusal`). No grpc import here.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msal

from grpc_obo._common import LRU
from grpc_obo._errors import TokenExchangeError
from grpc_obo._exchange._confidential import ConfidentialClient
from grpc_obo._exchange._http import AuthorityHttpClient, DiscardingTokenCache, NoHttpCache
from grpc_obo._exchange._observe import Observer
from grpc_obo._exchange._refusal import explain_refusal
from grpc_obo._exchange._retry import Outcome, RetryPolicy, classify, unavailable
from grpc_obo._exchange._sources import CredentialChain, Resolved
from grpc_obo._exchange._token import CachedToken

__all__ = ["MAX_APPS", "MsalRunner"]

_log = logging.getLogger("grpc_obo.exchange")

MAX_APPS = 4096
"""MSAL apps kept at most (one per tenant and credential source); the least recently used is
built again when needed (one discovery round trip)."""


class MsalRunner:
    """MSAL ConfidentialClientApplications (one per tenant and credential), built lazily off the
    loop, the worker threads they run in, and the retries around every authority round trip."""

    def __init__(
        self,
        client: ConfidentialClient,
        *,
        retry: RetryPolicy,
        max_workers: int,
        observer: Observer,
    ) -> None:
        self.client = client
        self.retry = retry
        self.observer = observer
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="grpc-obo-msal")
        self._http = AuthorityHttpClient(
            ca_file=client.ca_file, timeout=client.http_timeout, pool_size=max_workers
        )
        # Our cache (single flight, proactive refresh) fronts MSAL's, which would only
        # duplicate it (and, for On-Behalf-Of, is never read: DESIGN.md).
        self._token_cache = DiscardingTokenCache()
        self._credentials = CredentialChain(
            [
                c.source(ca_file=client.ca_file, timeout=client.http_timeout, clock=time.time)
                for c in client.credentials
            ]
        )
        # One MSAL app per (tenant, credential version): On-Behalf-Of must go to the tenant that
        # issued the user's token (a multi-tenant middle tier serves users of several tenants),
        # and an app holds the credential it was built with. Keyed by both, a source that flaps
        # (a fallback, then the first source again) finds its app still there; a source whose
        # credential changed (a rotated certificate) drops the apps of its old one (`_retire`).
        self._apps: LRU[tuple[str, Hashable], Any] = LRU(MAX_APPS)
        self._versions: dict[int, Hashable] = {}
        """Source index -> the credential version its apps were last built with."""
        self._app_lock = asyncio.Lock()

    async def _run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        # NOTE: run_in_executor does not carry contextvars into the thread (asyncio.to_thread
        # does): copy them, so the current span parents whatever MSAL's HTTP client traces.
        context = contextvars.copy_context()
        return await loop.run_in_executor(
            self._executor, lambda: context.run(func, *args, **kwargs)
        )

    def _build(self, tenant: str, credential: Resolved) -> Any:
        # Constructing the app fetches the authority's discovery document (network I/O).
        return msal.ConfidentialClientApplication(
            self.client.client_id,
            client_credential=credential.credential,
            authority=self.client.authority_for(tenant),
            # Anything but Microsoft's own hosts would otherwise be checked against
            # login.microsoftonline.com's instance discovery.
            instance_discovery=False,
            http_client=self._http,
            http_cache=NoHttpCache(),
            token_cache=self._token_cache,
            client_capabilities=list(self.client.client_capabilities) or None,
        )

    async def application(self, tenant: str) -> tuple[Resolved, Any]:
        """The credential for the next token request and the MSAL app built with it."""
        # The credential is resolved for every token request (a file read, a cached assertion;
        # the managed identity's endpoint when its assertion is due), off the loop.
        credential = self._credentials.static or await self._run(self._credentials.resolve)
        key = (tenant, credential.version)
        app = self._apps.get(key)
        if app is None:
            async with self._app_lock:
                app = self._apps.get(key)
                if app is None:
                    source = self._credentials.index_of(credential.version)
                    self._retire(source, credential.version)
                    built = await self._with_retries(
                        lambda: self._build_attempt(tenant, credential), "set-up", tenant, source
                    )
                    app = built["app"]
                    self._apps.put(key, app)
        return credential, app

    def _retire(self, source: int, version: Hashable) -> None:
        """Forget the apps built with `source`'s previous credential when it has a new one: an
        old certificate's key is not kept in memory for a version that cannot come back."""
        previous = self._versions.get(source)
        self._versions[source] = version
        if previous is None or previous == version:
            return
        for key in [key for key in self._apps if key[1] == previous]:
            self._apps.pop(key)

    def _build_attempt(self, tenant: str, credential: Resolved) -> Outcome:
        # NOTE: facts are per worker thread and outlive a request: a status left from another
        # user's earlier request on this thread must not decide this attempt's outcome.
        self._http.facts.clear()
        try:
            app = self._build(tenant, credential)
        except Exception as exc:  # classified below; MSAL raises plain exceptions
            facts = self._http.facts
            return classify(
                None,
                raised=exc,
                status=facts.status,
                error_body=facts.error_body,
                ca_file=self.client.ca_file,
            )
        return Outcome(result={"app": app})

    def _token_attempt(self, call: Callable[[], Any]) -> Outcome:
        facts = self._http.facts
        facts.clear()  # see _build_attempt
        try:
            result = call()
        except Exception as exc:
            return classify(
                None,
                raised=exc,
                status=facts.status,
                retry_after=facts.retry_after,
                error_body=facts.error_body,
                ca_file=self.client.ca_file,
            )
        return classify(result, status=facts.status, retry_after=facts.retry_after)

    async def _with_retries(
        self, attempt: Callable[[], Outcome], what: str, tenant: str, source: int = 0
    ) -> Mapping[str, Any]:
        started = time.monotonic()
        last: Outcome | None = None
        for number in range(self.retry.max_attempts):
            with self.observer.authority_request(number + 1, what) as note:
                outcome: Outcome = await self._run(attempt)
                if outcome.error is not None:
                    note.fail(outcome.error)
                    raise explain_refusal(self.client, outcome.error, tenant, source)
                if not outcome.retry and outcome.result is not None:
                    return outcome.result
                note.fail(unavailable("transient failure", outcome), retry=True)
            last = outcome
            delay = self.retry.delay(number, outcome.retry_after)
            if number + 1 >= self.retry.max_attempts:
                break
            if time.monotonic() - started + delay > self.retry.budget:
                raise unavailable("retry budget exhausted", last)
            _log.info("authority %s attempt %d failed transiently; retrying", what, number + 1)
            await asyncio.sleep(delay)
        raise unavailable(f"{self.retry.max_attempts} attempts failed", last)

    async def acquire(self, tenant: str, call: Callable[[Any], Any]) -> CachedToken:
        while True:  # at most once per credential source: each refusal skips one
            credential, app = await self.application(tenant)
            attempt = functools.partial(self._token_attempt, functools.partial(call, app))
            try:
                source = self._credentials.index_of(credential.version)
                result = await self._with_retries(attempt, "token", tenant, source)
            except TokenExchangeError as exc:
                if exc.error == "invalid_client" and self._credentials.refused(
                    credential.version, exc.error_codes
                ):
                    continue
                raise
            return CachedToken.from_msal(result)

    async def close(self) -> None:
        # Wait for the requests already running in the worker threads (each bounded by
        # http_timeout): once close() returns, this client sends nothing more.
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._http.close()
        self._credentials.close()
