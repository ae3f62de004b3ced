"""The shared token store: aiocache's `RedisCache`, values sealed with `TokenSealer`.

Replicas of a middle-tier service share exchanged tokens through Redis. What Redis holds is
useless without the sealing key: keys are SHA-256 hashes and values are AES-256-GCM ciphertexts
bound to their key. Anything that does not open (tampered, moved, foreign key, old format) or a
Redis that does not answer is a cache miss, logged without key material or token.

aiocache 0.12.3 vs redis-py 8 (checked against the installed versions): aiocache's `RedisCache`
still calls two redis-py methods that now emit `DeprecationWarning`, which `-W error` (our test
setting, and many users') turns into failures:

- `_set` with an integer TTL calls `Redis.setex` (deprecated in redis-py 8.0, "use set");
- `_close` calls `Redis.close` (deprecated since 5.0.1, "use aclose"); when that raises, the
  connection pool is never closed and the sockets leak as `ResourceWarning`s.

`_compat_redis_cache()` subclasses `RedisCache` and overrides just those two methods with
`SET ... PX/EX` and `aclose()` (which also closes the pool, as aiocache sets
`auto_close_connection_pool`). Everything else in `RedisCache` works unchanged with redis-py 8.

A third difference is behavioural: redis-py 8's asyncio `ConnectionPool` defaults to 100
connections and raises `MaxConnectionsError` at once when they are all busy (older versions were
effectively unbounded), so a burst of more than 100 concurrent commands fails. We pass
`BlockingConnectionPool` through aiocache's `connection_pool_class`, so commands wait (up to
`timeout`) for a connection, and we coalesce concurrent reads of one key into one `GET`.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any
from urllib.parse import unquote, urlsplit

from grpc_obo._errors import ConfigurationError
from grpc_obo._exchange._crypto import TokenSealer
from grpc_obo._exchange._keys import log_ref
from grpc_obo._exchange._singleflight import SingleFlight
from grpc_obo._exchange._token import CachedToken
from grpc_obo._identity import SecretToken

__all__ = ["RedisTokenStore"]

_log = logging.getLogger("grpc_obo.exchange.cache")

_VALUE_VERSION = 1


@functools.cache
def _compat_redis_cache() -> type[Any]:
    # Imported lazily: redis is an optional dependency (`grpc-obo[redis]`).
    try:
        from aiocache.backends.redis import RedisCache
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ConfigurationError(
            "the Redis token store needs redis-py: pip install 'grpc-obo[redis]'"
        ) from exc

    class _RedisCache(RedisCache):  # type: ignore[misc]  # aiocache ships no type hints
        async def _set(
            self,
            key: str,
            value: Any,
            ttl: Any = None,
            _cas_token: Any = None,
            _conn: Any = None,
        ) -> Any:
            if _cas_token is not None:
                return await self._cas(key, value, _cas_token, ttl=ttl, _conn=_conn)
            if ttl is None:
                return await self.client.set(key, value)
            if isinstance(ttl, float):
                return await self.client.set(key, value, px=int(ttl * 1000))
            return await self.client.set(key, value, ex=ttl)

        async def _close(self, *args: Any, _conn: Any = None, **kwargs: Any) -> None:
            await self.client.aclose()

    return _RedisCache


class RedisTokenStore:
    """Tokens in Redis, encrypted and authenticated; shared by every replica with the same key.

    `namespace` prefixes every Redis key (`namespace:grpc_obo:obo:v1:<sha256>`); use it to keep
    deployments or tests apart on one Redis. `timeout` bounds each Redis command (seconds).
    """

    def __init__(
        self,
        *,
        sealer: TokenSealer,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        namespace: str | None = None,
        timeout: float = 1.0,
        pool_max_size: int = 50,
    ) -> None:
        if not isinstance(sealer, TokenSealer):
            raise ConfigurationError("RedisTokenStore needs a TokenSealer (values are encrypted)")
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive")
        if pool_max_size < 1:
            raise ConfigurationError("pool_max_size must be at least 1")
        self._sealer = sealer
        cache_class = _compat_redis_cache()
        from redis.asyncio import BlockingConnectionPool

        pool_kwargs: dict[str, Any] = {"timeout": timeout}
        if username:
            pool_kwargs["username"] = username
        self._cache = cache_class(
            # NOTE: NullSerializer(encoding=None) hands our sealed bytes to Redis untouched.
            serializer=_null_bytes_serializer(),
            endpoint=host,
            port=port,
            db=db,
            password=password,
            ssl=ssl,
            namespace=namespace,
            timeout=timeout,
            pool_max_size=pool_max_size,
            create_connection_timeout=timeout,
            connection_pool_class=BlockingConnectionPool,
            connection_pool_kwargs=pool_kwargs,
        )
        self._reads: SingleFlight[bytes | None] = SingleFlight()
        self._where = f"{host}:{port}/{db}"

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        sealer: TokenSealer,
        namespace: str | None = None,
        timeout: float = 1.0,
        pool_max_size: int = 50,
    ) -> RedisTokenStore:
        """From `redis://[user:password@]host[:port][/db]` (or `rediss://` for TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ConfigurationError("expected a redis:// or rediss:// URL with a host")
        path = parts.path.strip("/")
        try:
            db = int(path) if path else 0
            port = parts.port or 6379
        except ValueError as exc:
            raise ConfigurationError("the Redis URL has an invalid port or database") from exc
        return cls(
            sealer=sealer,
            host=parts.hostname,
            port=port,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ssl=parts.scheme == "rediss",
            namespace=namespace,
            timeout=timeout,
            pool_max_size=pool_max_size,
        )

    def __repr__(self) -> str:
        return f"RedisTokenStore({self._where}, namespace={self._cache.namespace!r})"

    def _redis_key(self, key: str) -> str:
        # The sealed value is bound to the full Redis key, namespace included.
        return str(self._cache.build_key(key))

    async def get(self, key: str) -> CachedToken | None:
        # A burst for one user (the stampede case) makes one GET, not one per caller.
        blob = await self._reads.do(key, lambda: self._read(key))
        if blob is None:
            return None
        plaintext = self._sealer.open(self._redis_key(key), blob)
        token = _decode(plaintext) if plaintext is not None else None
        if token is None:
            _log.warning(
                "redis token cache value %s… did not open (tampered, moved or wrong key); "
                "treating as a miss",
                log_ref(key),
            )
        return token

    async def _read(self, key: str) -> bytes | None:
        try:
            blob = await self._cache.get(key)
        except Exception as exc:
            # A cache outage must not fail requests: fall through to a fresh exchange.
            _log.warning("redis token cache read failed (%s); treating as a miss", _kind(exc))
            return None
        return None if blob is None else bytes(blob)

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        if ttl <= 0:
            return
        blob = self._sealer.seal(self._redis_key(key), _encode(token))
        try:
            # A float TTL becomes SET ... PX (milliseconds) in the adapter.
            await self._cache.set(key, blob, ttl=float(ttl))
        except Exception as exc:
            _log.warning("redis token cache write failed (%s)", _kind(exc))

    async def delete(self, key: str) -> None:
        try:
            await self._cache.delete(key)
        except Exception as exc:
            _log.warning("redis token cache delete failed (%s)", _kind(exc))

    async def close(self) -> None:
        await self._reads.cancel_all()
        await self._cache.close()


def _null_bytes_serializer() -> Any:
    from aiocache.serializers import NullSerializer

    return NullSerializer(encoding=None)


def _kind(exc: BaseException) -> str:
    # Only the type: messages from client libraries may echo arguments (keys, values).
    return type(exc).__name__


def _encode(token: CachedToken) -> bytes:
    return json.dumps(
        {
            "v": _VALUE_VERSION,
            "at": token.access_token.reveal(),
            "exp": token.expires_on,
            "ref": token.refresh_on,
            "typ": token.token_type,
        },
        separators=(",", ":"),
    ).encode("utf-8")


def _decode(plaintext: bytes) -> CachedToken | None:
    try:
        data = json.loads(plaintext)
        if data.get("v") != _VALUE_VERSION:
            return None
        return CachedToken(
            access_token=SecretToken(data["at"]),
            expires_on=float(data["exp"]),
            refresh_on=float(data["ref"]),
            token_type=str(data["typ"]),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
