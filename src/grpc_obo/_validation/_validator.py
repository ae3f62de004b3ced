"""`TokenValidator`: the async entry point that turns a bearer token into a verified `Identity`.

Order of work, cheapest and least trusting first: size cap, verified-token cache, strict JWS
parsing, key lookup (may fetch), RS256 verification, Entra claim rules, then the cache. The
validator owns its key source (and so its HTTP session): use it as an async context manager or
call `close()`. Nothing here logs or raises text containing the token.
"""

from __future__ import annotations

import logging
from types import TracebackType

from grpc_obo._errors import ConfigurationError, InvalidSignatureError, MalformedTokenError
from grpc_obo._identity import Identity
from grpc_obo._telemetry import Telemetry, recorder_for
from grpc_obo._validation._cache import VerifiedTokenCache
from grpc_obo._validation._jose import parse_compact, verify_rs256
from grpc_obo._validation._keys import KeySource, RemoteKeySource, StaticKeySource
from grpc_obo._validation._options import ValidatorOptions
from grpc_obo._validation._rules import check_claims

__all__ = ["TokenValidator"]

logger = logging.getLogger("grpc_obo.validation")


class TokenValidator:
    """Validates Entra ID access tokens for one API.

    ```python
    async with TokenValidator(ValidatorOptions(tenant=TENANT, audiences={CLIENT_ID})) as v:
        await v.start()                      # optional: fetch keys now, fail fast
        identity = await v.validate(token)   # -> Identity, or a TokenValidationError
    ```

    One validator per API and event loop: it is not thread-safe, and its HTTP session belongs to
    the loop that first fetched keys. Against the local dev authority, `authority_host=`,
    `v1_issuer_host=` (its v1 issuers live on the same host) and `ssl_context=` are all it takes.
    """

    def __init__(self, options: ValidatorOptions, *, telemetry: Telemetry | None = None) -> None:
        """`telemetry` (a `grpc_obo.Telemetry`) traces discovery and JWKS fetches; none without."""
        if not isinstance(options, ValidatorOptions):
            raise ConfigurationError(
                "options: TokenValidator takes a grpc_obo.ValidatorOptions", setting="options"
            )
        # Checked with or without a key source to observe: a wrong value fails here.
        observer = recorder_for(telemetry) if telemetry is not None else None
        self._options = options
        if options.jwks is not None:
            self._keys: KeySource = StaticKeySource(options.jwks)
        else:
            self._keys = RemoteKeySource(options, observer=observer)
        self._cache = VerifiedTokenCache(
            options.verified_cache_size,
            max_bytes=options.verified_cache_bytes,
            leeway=options.leeway,
            has_key=self._keys.has_key,
        )

    @property
    def options(self) -> ValidatorOptions:
        return self._options

    @property
    def key_source(self) -> KeySource:
        return self._keys

    async def start(self) -> None:
        """Load signing keys now, so a service that cannot get them fails at start-up.

        Raises `KeySourceUnavailableError` when no key set can be fetched.
        """
        await self._keys.start()

    async def validate(self, token: str) -> Identity:
        """The verified identity in `token`, or a `TokenValidationError` / `AccessDeniedError`.

        Raises `KeySourceUnavailableError` when signing keys have never been obtained.
        """
        if not self._fits(token):
            # Before anything else: an oversized input must cost nothing.
            raise MalformedTokenError("token is too large or not a string", reason="too_large")
        cached = self._cached(token)
        if cached is not None:
            return cached
        options = self._options
        parsed = parse_compact(token, max_bytes=options.max_token_bytes)
        key = self._keys.known_key(parsed.kid, parsed.x5t)
        if key is None:
            key = await self._keys.get_key(parsed.kid, parsed.x5t)
        if not verify_rs256(key.public_key, parsed.signing_input, parsed.signature):
            raise InvalidSignatureError("token signature is invalid")
        # The clock is read again: a key fetch may have taken a while.
        identity = check_claims(
            parsed.claims, key=key, options=options, now=options.clock(), token=token
        )
        self._cache.put(token, identity, key_fingerprint=key.fingerprint)
        return identity

    def cached(self, token: str) -> Identity | None:
        """The identity of a token this validator already verified, or None: no I/O, no RSA.

        A hit is a token already in the verified-token cache, still within its `exp`
        (plus leeway) and signed by a key still published. None means "call `validate`", never
        "invalid". The server interceptor tries this first: it spares a coroutine per call.
        Always None in a subclass that overrides `validate`: checks it adds (a revocation
        list, say) must see every call, cached tokens included.
        """
        if self._validate_is_extended or not self._fits(token):
            return None
        return self._cached(token)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._validate_is_extended = cls.validate is not TokenValidator.validate

    _validate_is_extended = False

    def _fits(self, token: str) -> bool:
        """Whether `token` is a str within `max_token_bytes`: worth a lookup or a parse.

        The verified-token cache is keyed by the token itself (see `_cache`), not a digest.
        """
        return type(token) is str and len(token) <= self._options.max_token_bytes

    def _cached(self, token: str) -> Identity | None:
        self._keys.poll()  # on hits too: traffic of cached tokens still notices withdrawn keys
        return self._cache.get(token, self._options.clock())

    async def close(self) -> None:
        """Stop background refreshes and close the HTTP session. Idempotent."""
        self._cache.clear()
        await self._keys.close()

    async def __aenter__(self) -> TokenValidator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
