"""The link to Redis for `RedisTokenStore`: clients, Lua scripts, outages, notifications.

- `build_client`: a redis-py asyncio client for one server (a blocking connection pool, TLS
  with exactly the CA given) or for a Redis Cluster.
- The scripts: every step of the cluster-wide single flight is one round trip, atomic on the
  server. A value and its lease share a hash tag, so they live in one Cluster slot.
- `Outage`: whether Redis answers. The first failure logs one WARNING and opens the breaker:
  until a backoff (0.5 s doubling to 30 s) has passed, nothing waits on Redis at all; then a
  single operation probes it. Its success logs one line saying Redis is back.
- `Notifications`: one subscription per store to the namespace's event channel; messages carry
  an event, the publishing store's random id and a cache key (a SHA-256 digest), never a token.
  They evict other replicas' in-process entries and wake the replicas waiting on an exchange.
  Until a subscription is confirmed (at start, or after an interruption: redis-py resubscribes
  on its own, or we reconnect), messages may have been missed, so every in-process entry is
  rechecked against Redis at each confirmation (interruptions are logged at INFO: a Redis
  outage is reported once, by `Outage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from grpc_obo._errors import ConfigurationError

__all__ = [
    "ACQUIRE",
    "DELETE",
    "READ",
    "RELEASE",
    "RENEW",
    "WRITE",
    "Notifications",
    "Outage",
    "RedisUnavailable",
    "build_client",
    "close_client",
]

_log = logging.getLogger("grpc_obo.exchange.cache")

T = TypeVar("T")

# Anyone who can write to Redis can leave a key of another type under one of ours: GET on it
# fails with WRONGTYPE. That is one damaged key, not Redis failing: the scripts read with
# pcall, delete such a value (a miss for that key) and say so; a lease of the wrong type has
# no expiry and is taken over like any lease without one.

# KEYS[1] value. Answers {pttl, sealed value}, {-2} when there is none, {-3} when the key held
# another type (deleted).
READ = """
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' then redis.call('DEL', KEYS[1]) return {-3} end
if not v then return {-2} end
return {redis.call('PTTL', KEYS[1]), v}
"""

# KEYS[1] value, KEYS[2] lease; ARGV owner, lease ms, mode ('get' or 'take').
# Answers {state, value pttl, value or '', lease pttl, damage}: state 0 = a value is there
# ('get' mode), 1 = the lease is ours now, 2 = another replica holds it. In 'take' mode a value
# comes back with states 1 and 2 too: it was not good enough (past refresh_on, or not
# opening), and the caller checks whether another replica has replaced it meanwhile. Every
# lease grpc_obo sets expires (PX, renewed by its holder): one without expiry was pinned by
# someone else and would never end, so it is taken over (state 1, lease pttl -1). damage: 1
# when the value key held another type and was deleted, else 0.
ACQUIRE = """
local damage = 0
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' then redis.call('DEL', KEYS[1]) v = false damage = 1 end
local vttl = -2
if v then vttl = redis.call('PTTL', KEYS[1]) end
if v and ARGV[3] == 'get' then return {0, vttl, v, 0, damage} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, vttl, v or '', 0, damage}
end
local lttl = redis.call('PTTL', KEYS[2])
if lttl == -1 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return {1, vttl, v or '', -1, damage}
end
return {2, vttl, v or '', lttl, damage}
"""

# KEYS[1] value, KEYS[2] lease; ARGV sealed value, ttl ms, owner ('' for none), channel, message.
WRITE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' and redis.pcall('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# Compare-and-delete. KEYS[1] lease; ARGV owner, channel, message.
RELEASE = """
if redis.pcall('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# Compare-and-extend. KEYS[1] lease; ARGV owner, lease ms. Answers 1 if still ours.
RENEW = """
if redis.pcall('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS[1] value; ARGV channel, message.
DELETE = """
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""


class RedisUnavailable(Exception):
    """Redis did not answer (in time, or at all); the caller carries on without it."""


def build_client(
    *,
    host: str,
    port: int,
    db: int,
    username: str | None,
    password: str | None,
    tls: bool,
    ca_file: str | None,
    cluster: bool,
    timeout: float,
    pool_max_size: int,
) -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ConfigurationError(
            "the Redis token store needs redis-py: pip install 'grpc-obo[redis]'"
        ) from exc
    # The settings were checked by the store (`_redis_settings.py`).
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        if not hasattr(RedisCluster, "pubsub"):
            raise ConfigurationError(
                "the Redis token store on Redis Cluster needs redis-py >= 8.0 "
                "(asyncio cluster pub/sub)"
            )
        options: dict[str, Any] = {}
        if tls:
            # NOTE: redis-py's cluster client builds its own TLS context: the CA given is
            # trusted in addition to the system's (see RedisTokenStore's docstring).
            options = {"ssl": True, "ssl_ca_certs": ca_file}
        return RedisCluster(
            host=host,
            port=port,
            username=username,
            password=password,
            socket_connect_timeout=timeout,
            max_connections=pool_max_size,
            **options,
        )
    pool_options: dict[str, Any] = {}
    if tls:
        pool_options["connection_class"] = _tls_connection_class(ca_file)
    # A blocking pool: commands wait (bounded by our own timeouts) for a free connection,
    # where redis-py 8's default pool raises MaxConnectionsError at once in a burst.
    pool = aioredis.BlockingConnectionPool(
        host=host,
        port=port,
        db=db,
        username=username,
        password=password,
        socket_connect_timeout=timeout,
        max_connections=pool_max_size,
        timeout=timeout,
        **pool_options,
    )
    return aioredis.Redis.from_pool(pool)


async def close_client(client: Any) -> None:
    await client.aclose()
    manager = getattr(client, "nodes_manager", None)
    if manager is not None:
        # NOTE: redis-py's RedisCluster.aclose() does nothing once a connection error has
        # flagged the client for re-initialization (redis-py 8.1), leaking every socket.
        for nodes in ("nodes_cache", "startup_nodes"):
            with contextlib.suppress(Exception):
                await manager.aclose(nodes)


def _tls_connection_class(ca_file: str | None) -> type[Any]:
    from redis.asyncio.connection import SSLConnection

    if ca_file is None:
        return SSLConnection  # the system's trust store, host name checked
    # redis-py would add the CA to a default context (system store, SSL_CERT_FILE...): an
    # explicit CA means that CA only, as everywhere else in grpc_obo.
    context = ssl.create_default_context(cafile=ca_file)

    class _PinnedSSLConnection(SSLConnection):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.ssl_context.context = context

    return _PinnedSSLConnection


class Outage:
    """Whether Redis answers; one WARNING when an outage starts, one line when it ends."""

    def __init__(
        self,
        where: str,
        *,
        on_recovery: Callable[[], None],
        on_failure: Callable[[], None] = lambda: None,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._where = where
        self._on_recovery = on_recovery
        self._on_failure = on_failure
        self._initial = initial_backoff
        self._max = max_backoff
        self._clock = clock
        self._since: float | None = None
        self._retry_at = 0.0
        self._delay = initial_backoff
        self._probing = False

    @property
    def down(self) -> bool:
        return self._since is not None

    def probe_due(self) -> bool:
        """Down, no probe running and its backoff over: a probe would be sent now."""
        return self._since is not None and not self._probing and self._clock() >= self._retry_at

    def may_try(self) -> bool:
        """Whether to send a command now: always when up; one probe per backoff when down."""
        if self._since is None:
            return True
        if self._probing or self._clock() < self._retry_at:
            return False
        self._probing = True
        return True

    def failed(self, error: BaseException, *, probe: bool = True) -> None:
        """A command failed; `probe`: it was sent as the probe of an outage already known."""
        if self._since is not None and not probe:
            # NOTE: a command sent before the outage began, failing late (each of them waits
            # its own timeout): the backoff counts probes, so it must not lengthen it (nor
            # end a probe that is still running).
            return
        self._probing = False
        now = self._clock()
        if self._since is None:
            self._since = now
            self._delay = self._initial
            # Only the type: client library messages may echo arguments (keys, values).
            _log.warning(
                "redis token cache %s unavailable (%s): serving tokens cached in this process "
                "and exchanging locally until it answers again",
                self._where,
                type(error).__name__,
            )
        else:
            self._delay = min(self._delay * 2, self._max)
        self._retry_at = now + self._delay
        self._on_failure()

    def abandoned(self) -> None:
        """The command was cancelled by its caller: neither a failure nor a success."""
        self._probing = False

    def succeeded(self) -> None:
        self._probing = False
        if self._since is None:
            return
        _log.warning(
            "redis token cache %s answers again after %.1f s",
            self._where,
            self._clock() - self._since,
        )
        self._since = None
        self._on_recovery()

    async def run(self, timeout: float, command: Callable[[], Awaitable[T]]) -> T:
        """`command()` bounded by `timeout`; RedisUnavailable when down, failing or slow."""
        probe = self.down
        if not self.may_try():
            raise RedisUnavailable
        try:
            async with asyncio.timeout(timeout):
                result = await command()
        except asyncio.CancelledError:
            self.abandoned()
            raise
        except Exception as exc:
            self.failed(exc, probe=probe)
            raise RedisUnavailable from None
        self.succeeded()
        return result


_RECONNECT_MIN = 0.05
_RECONNECT_MAX = 5.0
POLL_LIVE = 0.5
"""A waiter re-checks Redis this often even while notifications flow (a lost message costs
no more than this)."""
POLL_WITHOUT_NOTIFICATIONS = 0.05
POLL_FLOOR = 0.05
"""A waiter never looks at Redis again sooner than this, whatever the lease's remaining time
says (a lease someone keeps setting to a few milliseconds must not become a polling loop)."""


class Notifications:
    """The store's subscription to its event channel, and the waiters it wakes."""

    def __init__(
        self,
        client: Any,
        channel: str,
        origin: str,
        *,
        on_event: Callable[[str, str], None],
        on_gap: Callable[[], None],
    ) -> None:
        self._client = client
        self._channel = channel
        self._origin = origin
        self._on_event = on_event
        self._on_gap = on_gap
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self._closed = False
        self.live = False
        """Whether the subscription is confirmed and connected."""

    def message(self, event: str, key: str) -> str:
        return f"v1|{event}|{self._origin}|{key}"

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def started(self, timeout: float) -> None:
        """Start, and on first use wait (at most `timeout`) until the subscription is confirmed
        or has failed once: entries filled before it could miss messages."""
        self.start()
        if not self._first_attempt.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._first_attempt.wait()

    def poll_interval(self) -> float:
        return POLL_LIVE if self.live else POLL_WITHOUT_NOTIFICATIONS

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[asyncio.Event]:
        """An event set by the next message about `key` (register before looking at Redis)."""
        event = asyncio.Event()
        waiting = self._waiters.setdefault(key, set())
        waiting.add(event)
        try:
            yield event
        finally:
            waiting.discard(event)
            if not waiting and self._waiters.get(key) is waiting:
                del self._waiters[key]

    def dispatch(self, data: bytes | str) -> None:
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else data
            version, event, origin, key = text.split("|", 3)
        except ValueError:
            return
        if version != "v1":
            return
        if origin != self._origin:
            self._on_event(event, key)
        for waiting in self._waiters.get(key, ()):
            waiting.set()

    async def close(self) -> None:
        self._closed = True
        self.live = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        delay = _RECONNECT_MIN
        interrupted = False
        while not self._closed:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    kind = message.get("type")
                    if kind in ("subscribe", b"subscribe"):
                        # Whatever was published before this confirmation (the store's first
                        # entries, or during redis-py's silent reconnection) never came here.
                        self._on_gap()
                        self.live = True
                        self._first_attempt.set()
                        delay = _RECONNECT_MIN
                        if interrupted:
                            _log.info("redis token cache notifications resumed")
                            interrupted = False
                    elif kind in ("message", b"message"):
                        self.dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._first_attempt.set()
                # NOTE: not an outage of the commands (they have their own connections and
                # say so in the one WARNING per outage); entries recheck once resubscribed.
                if not interrupted:
                    _log.info(
                        "redis token cache notifications interrupted (%s); resubscribing",
                        type(exc).__name__,
                    )
                interrupted = True
            finally:
                self.live = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX)
