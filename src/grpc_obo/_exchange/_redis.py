"""The shared token store: an in-process level (L1) in front of Redis (L2), for several replicas.

    get_nowait(key) ── L1, a dict read (the hot path of every outbound call)
    coordinate(key) ── on an L1 miss, one round trip to Redis that returns the sealed value, or
                       takes the key's lease (this replica exchanges), or names the replica
                       that holds it (wait for its notification, then read the value)

Redis holds nothing usable without the sealing key: keys are SHA-256 digests and values are
AES-256-GCM ciphertexts bound to the full Redis key (`TokenSealer`). Keys, per cache key `k`
(`grpc_obo:obo:v1:<sha256>` as built by `obo_cache_key`):

    <namespace>:{k}            the sealed token, PX = expires_on - now - margin
    <namespace>:{k}:lease      the exchange lease: a random owner id, PX = lease_ttl, renewed by
                               its holder every lease_ttl / 3 while the exchange runs, released
                               by compare-and-delete
    <namespace>:grpc_obo:events:v1   pub/sub channel: "v1|set|<store id>|k", "del", "rel"

`{k}` is a Cluster hash tag: a value and its lease share a slot, so each step is one script.

Across replicas:

- **Single flight.** A miss runs one script: a value that fits is returned; otherwise the lease
  is taken with SET NX PX and this replica exchanges, then writes the value, deletes its lease
  and publishes "set" in one script; otherwise it waits for a message about the key (or polls,
  at most every 0.5 s) for no longer than the lease's remaining time, and looks again (never
  sooner than 50 ms after the last look). A holder that dies stops renewing: its lease ends
  within `lease_ttl` and a waiter takes over. A holder whose exchange fails releases its lease
  ("rel") and its callers get the error; a waiter then tries itself. Waiting ends at the
  production's patience (half the shortest deadline of the callers waiting on it, see
  `TokenCache`) and after 2 x `lease_ttl` in any case, after which this replica exchanges
  without the lease: a caller's deadline is never spent entirely on another replica, and a
  caller without one never waits on a lease for ever.
- **What others write.** Anyone who can write to Redis can pin a lease (no expiry: taken over,
  as no grpc_obo lease lacks one; a long expiry: waited on for 2 x `lease_ttl` at most) or
  leave a key of another type (WRONGTYPE): that key is deleted and is a miss, logged as a
  WARNING, and the store stays up for everyone else.
- **L1.** An entry lives at most until the L2 TTL (the token's expiry minus the margin) and is
  rechecked against Redis after `l1_ttl` (10 s) at most. "set" and "del" messages from other
  replicas evict it at once; a subscription that was interrupted makes every entry recheck.
  So an eviction (a downstream's claims challenge) reaches every replica within a message's
  delay, and within `l1_ttl` even if the message is lost.
- **Redis faults.** Every command is bounded by `timeout` and by the caller's patience. The
  first failure logs one WARNING and, until Redis answers again (one probe per backoff, 0.5 s
  doubling to 30 s; one more line then), no call waits on Redis: L1 entries are served until
  their L2 TTL would have ended (no replica can change L2 meanwhile; also when the patience
  ran out before Redis said anything), misses exchange here (single-flighted in this
  process). An eviction never waits on Redis: L1 forgets at once, the value Redis still
  holds is ignored here, and the deletion is sent in the background, replayed after an
  outage. Nothing fails open: a value that does not open is a miss; a store never serves a
  token under any key but its own, nor an L1 entry past the token's expiry minus the margin.

TLS (`rediss://`): with `ssl_ca_file`, exactly that CA is trusted, and the host name is checked.
Redis Cluster (`cluster=True`): redis-py's cluster client; its TLS trusts `ssl_ca_file` in
addition to the system's trust store (it builds its own TLS context).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from grpc_obo._errors import ConfigurationError
from grpc_obo._exchange._crypto import TokenSealer
from grpc_obo._exchange._keys import log_ref
from grpc_obo._exchange._local import LocalTier
from grpc_obo._exchange._redis_link import (
    ACQUIRE,
    DELETE,
    POLL_FLOOR,
    READ,
    RELEASE,
    RENEW,
    WRITE,
    Notifications,
    Outage,
    RedisUnavailable,
    build_client,
    close_client,
)
from grpc_obo._exchange._singleflight import Patience, SingleFlight
from grpc_obo._exchange._store import Produce
from grpc_obo._exchange._token import CachedToken
from grpc_obo._identity import SecretToken

__all__ = ["RedisStoreStats", "RedisTokenStore"]

_log = logging.getLogger("grpc_obo.exchange.cache")

_VALUE_VERSION = 1
_MAX_PENDING_DELETES = 10_000
_MAX_RECENT_DELETES = 4_096
# ACQUIRE's answers.
_VALUE, _ACQUIRED, _HELD = 0, 1, 2


@dataclass
class RedisStoreStats:
    """What one store did on misses (for tests and metrics; counts only, no keys)."""

    from_redis: int = 0
    """Tokens found in Redis (stored by any replica)."""
    leased: int = 0
    """Exchanges run here under the key's lease."""
    waited: int = 0
    """Waits for another replica's exchange."""
    impatient: int = 0
    """Exchanges here, without the lease, because the callers' patience (or 2 x lease_ttl)
    ran out."""
    unavailable: int = 0
    """Misses handled without Redis because it did not answer."""
    stale: int = 0
    """In-process entries served past their recheck time because Redis did not answer."""


@dataclass(frozen=True)
class _Read:
    blob: bytes
    ttl: float


class RedisTokenStore:
    """Tokens in this process and in Redis, encrypted; replicas share them and their exchanges.

    `namespace` prefixes every Redis key and the event channel; use it to keep deployments or
    tests apart on one Redis. `timeout` bounds each Redis command (seconds). `l1_max_entries`
    and `l1_ttl` bound the in-process level; `lease_ttl` is how soon a dead replica's lease
    ends, and twice it the longest a caller waits on another replica's exchange. `clock`
    (seconds) times the in-process level and the backoff between probes of a Redis that is
    down; tests pass one they advance. See the module docstring for the key layout and the rules.
    """

    get_nowait: Callable[[str], CachedToken | None]
    """The in-process entry if it needs no check with Redis (a dict read, no coroutine)."""

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
        ssl_ca_file: str | None = None,
        cluster: bool = False,
        namespace: str | None = None,
        timeout: float = 1.0,
        pool_max_size: int = 50,
        l1_max_entries: int = 100_000,
        l1_ttl: float = 10.0,
        lease_ttl: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(sealer, TokenSealer):
            raise ConfigurationError("RedisTokenStore needs a TokenSealer (values are encrypted)")
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive")
        if pool_max_size < 1:
            raise ConfigurationError("pool_max_size must be at least 1")
        if not 0.05 <= lease_ttl <= 300:
            raise ConfigurationError("lease_ttl must be between 0.05 and 300 seconds")
        if namespace is not None and any(c in namespace for c in "{}|"):
            raise ConfigurationError("namespace must not contain '{', '}' or '|'")
        self._sealer = sealer
        self._timeout = float(timeout)
        self._lease_ms = max(1, int(lease_ttl * 1000))
        self._lease_ttl = float(lease_ttl)
        self._max_wait = 2 * self._lease_ttl
        self._client = build_client(
            host=host,
            port=port,
            db=db,
            username=username,
            password=password,
            tls=ssl,
            ca_file=ssl_ca_file,
            cluster=cluster,
            timeout=timeout,
            pool_max_size=pool_max_size,
        )
        self._namespace = namespace
        self._prefix = f"{namespace}:" if namespace else ""
        self._where = f"{host}:{port}" + ("" if cluster else f"/{db}")
        self._origin = secrets.token_hex(8)
        self._l1 = LocalTier(max_entries=l1_max_entries, ttl=l1_ttl, clock=clock)
        # The hot path is the L1's own bound method: no extra call in between.
        self.get_nowait = self._l1.get_nowait
        # One clock for the whole store (L1 recheck times and the outage backoff), so a test
        # that advances it sees both move together.
        self._outage = Outage(
            self._where,
            on_recovery=self._recovered,
            on_failure=self._drop_idle_connections,
            clock=clock,
        )
        self._channel = f"{self._prefix}grpc_obo:events:v1"
        self._events = Notifications(
            self._client,
            self._channel,
            self._origin,
            on_event=self._on_event,
            on_gap=self._l1.recheck_all,
        )
        # A burst of reads of one key (TokenCache.get) makes one round trip.
        self._reads: SingleFlight[_Read | None] = SingleFlight()
        # Evictions seen (ours and other replicas'), numbered: a read that started before
        # one must not put the evicted value back into L1.
        self._evictions = 0
        self._evicted: OrderedDict[str, int] = OrderedDict()
        self._pending_deletes: OrderedDict[str, None] = OrderedDict()
        self._replaying: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.stats = RedisStoreStats()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        sealer: TokenSealer,
        namespace: str | None = None,
        timeout: float = 1.0,
        pool_max_size: int = 50,
        cluster: bool = False,
        ssl_ca_file: str | None = None,
        l1_max_entries: int = 100_000,
        l1_ttl: float = 10.0,
        lease_ttl: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> RedisTokenStore:
        """From `redis://[user:password@]host[:port][/db]` (or `rediss://` for TLS).

        With `cluster=True`, the URL names any node of a Redis Cluster (the rest is discovered).
        """
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
            ssl_ca_file=ssl_ca_file,
            cluster=cluster,
            namespace=namespace,
            timeout=timeout,
            pool_max_size=pool_max_size,
            l1_max_entries=l1_max_entries,
            l1_ttl=l1_ttl,
            lease_ttl=lease_ttl,
            clock=clock,
        )

    def __repr__(self) -> str:
        return (
            f"RedisTokenStore({self._where}, namespace={self._namespace!r}, "
            f"l1={len(self._l1)}/{self._l1.max_entries})"
        )

    @property
    def max_entries(self) -> int:
        """How many tokens this replica keeps in memory at most (`l1_max_entries`)."""
        return self._l1.max_entries

    @property
    def available(self) -> bool:
        """False from a failed command until Redis answers again."""
        return not self._outage.down

    @property
    def notifications_live(self) -> bool:
        return self._events.live

    def redis_keys(self, key: str) -> tuple[str, str]:
        """The Redis keys of a cache key's value and lease (one hash tag: one Cluster slot)."""
        value = f"{self._prefix}{{{key}}}"
        return value, value + ":lease"

    # -- the TokenStore interface -------------------------------------------------------

    def get_local(self, key: str) -> CachedToken | None:
        """The L1 entry; past its recheck time too while Redis does not answer."""
        stale_ok = self._outage.down
        token = self._l1.get_local(key, stale_ok=stale_ok)
        if stale_ok and token is not None:
            self.stats.stale += 1
            # NOTE: calls served from memory send Redis nothing; without this probe a replica
            # whose traffic is all hits would never notice Redis is back (no recheck, no
            # replayed deletes). One probe per backoff, in the background, never awaited.
            if self._outage.probe_due() and not self._closed:
                self._spawn(self._probe())
        return token

    async def _probe(self) -> None:
        with contextlib.suppress(RedisUnavailable):
            await self._command(self._client.ping)

    async def get(self, key: str) -> CachedToken | None:
        token = self._l1.get_nowait(key)
        if token is not None:
            return token
        await self._events.started(self._timeout)
        seen = self._evictions
        value_key, _ = self.redis_keys(key)
        try:
            read = await self._reads.do(key, lambda: self._read(key, value_key))
        except RedisUnavailable:
            return self._l1.get_local(key, stale_ok=True)
        if read is None:
            return None
        token = self._open(key, value_key, read.blob)
        if token is not None and self._keep(key, token, read.ttl, seen):
            return token
        return None

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        if ttl <= 0:
            return
        await self._events.started(self._timeout)
        self._l1.put(key, token, ttl)
        await self._write(key, token, ttl, owner="")

    async def delete(self, key: str) -> None:
        """Forget `key` here at once, then in Redis and every replica's L1 (in the background,
        replayed after an outage: an eviction never waits on Redis). Until Redis has taken
        it, this store ignores the value Redis still holds for `key`."""
        self._l1.discard(key)
        self._evicted_now(key)
        self._pending_deletes[key] = None
        self._pending_deletes.move_to_end(key)
        while len(self._pending_deletes) > _MAX_PENDING_DELETES:
            self._pending_deletes.popitem(last=False)
        if not self._closed:
            self._events.start()
            self._replay_deletes_soon()

    async def close(self) -> None:
        self._closed = True
        await self._events.close()
        await self._reads.cancel_all()
        # Lease releases and writes are each bounded by `timeout`: let them land, so other
        # replicas need not wait for a lease of ours to expire.
        if self._background:
            await asyncio.wait(set(self._background), timeout=self._timeout)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await close_client(self._client)

    # -- the cluster-wide single flight -------------------------------------------------

    async def coordinate(
        self,
        key: str,
        produce: Produce,
        *,
        accept: Callable[[CachedToken], bool],
        patience: Patience,
    ) -> CachedToken:
        value_key, lease_key = self.redis_keys(key)
        owner = f"{self._origin}:{secrets.token_hex(8)}"
        mode = "get"
        answered = False  # whether Redis said anything about the key

        def acquire() -> Awaitable[Any]:
            return self._client.eval(  # type: ignore[no-any-return]
                ACQUIRE, 2, value_key, lease_key, owner, self._lease_ms, mode
            )

        try:
            # NOTE: whatever the callers' deadlines, waiting on another replica ends after
            # 2 x lease_ttl: a lease that someone keeps alive (or pinned with a long expiry)
            # costs a duplicate exchange, never a caller hung on it.
            async with patience.scope(), asyncio.timeout(self._max_wait):
                await self._events.started(self._timeout)
                while True:
                    with self._events.watch(key) as woken:
                        seen = self._evictions
                        reply = await self._command(acquire)
                        answered = True
                        state, value_ms, blob, lease_ms = (
                            int(reply[0]),
                            int(reply[1]),
                            reply[2],
                            int(reply[3]),
                        )
                        self._report_damage(key, state, lease_ms, damaged=int(reply[4]) == 1)
                        token = self._open(key, value_key, blob) if blob else None
                        if token is not None and accept(token):
                            if state == _ACQUIRED:  # taken needlessly: let it go at once
                                self._spawn(self._release(key, owner))
                            if self._keep(key, token, value_ms / 1000, seen):
                                self.stats.from_redis += 1
                                return token
                            mode = "get"  # evicted while we read: look again
                            continue
                        if state == _ACQUIRED:
                            break
                        if state == _VALUE:
                            mode = "take"  # there, but not good enough: replace it
                            continue
                        self.stats.waited += 1
                        # Until the lease ends, or the next poll, but never sooner than the
                        # floor: each look is a round trip to the Redis that every replica uses.
                        wait = max(POLL_FLOOR, min(lease_ms / 1000, self._events.poll_interval()))
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(wait):
                                await woken.wait()
                        mode = "get"
        except TimeoutError:
            self.stats.impatient += 1
            # A slow Redis that never answered is as good as a down one for our own entry;
            # once Redis said the value is gone (evicted), the entry is not served again.
            if not answered and (stale := self._stale(key, accept)) is not None:
                return stale
            _log.debug("gave up waiting for another replica's exchange of %s", log_ref(key))
            return await self._produce_here(key, produce, owner)
        except RedisUnavailable:
            self.stats.unavailable += 1
            if (stale := self._stale(key, accept)) is not None:
                return stale
            return await self._produce_here(key, produce, owner)
        return await self._produce_leased(key, produce, owner, patience)

    def _report_damage(self, key: str, state: int, lease_ms: int, *, damaged: bool) -> None:
        """Say what ACQUIRE found that grpc_obo never writes (someone else wrote to Redis)."""
        if damaged:
            _log.warning(
                "redis token cache key %s… held a value of the wrong type (not written by "
                "grpc_obo); deleted it, treating it as a miss",
                log_ref(key),
            )
        if state == _ACQUIRED and lease_ms == -1:
            _log.warning(
                "redis token cache lease of %s… was set without expiry (not by grpc_obo, "
                "whose leases always expire); taken over",
                log_ref(key),
            )

    def _stale(self, key: str, accept: Callable[[CachedToken], bool]) -> CachedToken | None:
        """Our L1 entry past its recheck time, while Redis cannot confirm it (still usable)."""
        token = self._l1.get_local(key, stale_ok=True)
        if token is None or not accept(token):
            return None
        self.stats.stale += 1
        return token

    async def _produce_leased(
        self, key: str, produce: Produce, owner: str, patience: Patience
    ) -> CachedToken:
        _, lease_key = self.redis_keys(key)
        self.stats.leased += 1
        renewal = self._spawn(self._renew(lease_key, owner))
        try:
            token, ttl = await produce()
        except BaseException:
            renewal.cancel()
            # The waiters try at once instead of waiting for the lease to end.
            self._spawn(self._release(key, owner))
            raise
        renewal.cancel()
        self._l1.put(key, token, ttl)
        if ttl > 0:
            stored = self._spawn(self._write(key, token, ttl, owner=owner))
        else:
            stored = self._spawn(self._release(key, owner))
        # Wait for the write while the callers can afford it (never fail for it): a caller
        # that invalidates right after must not race our own write.
        remaining = patience.remaining()
        if remaining is None or remaining > 0:
            await asyncio.wait({stored}, timeout=remaining)
        return token

    async def _produce_here(self, key: str, produce: Produce, owner: str) -> CachedToken:
        """Exchange without the lease (Redis down, or patience spent): share it if possible."""
        token, ttl = await produce()
        self._l1.put(key, token, ttl)
        if ttl > 0 and not self._outage.down:
            # Also releases a lease of ours whose answer we did not wait for.
            self._spawn(self._write(key, token, ttl, owner=owner))
        return token

    async def _renew(self, lease_key: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            try:
                still_ours = await self._command(
                    lambda: self._client.eval(RENEW, 1, lease_key, owner, self._lease_ms)
                )
            except RedisUnavailable:
                continue
            if not still_ours:
                return  # it ended while Redis was away; another replica may hold it now

    async def _release(self, key: str, owner: str) -> None:
        _, lease_key = self.redis_keys(key)
        message = self._events.message("rel", key)
        with contextlib.suppress(RedisUnavailable):
            await self._command(
                lambda: self._client.eval(RELEASE, 1, lease_key, owner, self._channel, message)
            )

    # -- Redis commands -------------------------------------------------------------------

    async def _command(self, command: Callable[[], Awaitable[Any]]) -> Any:
        return await self._outage.run(self._timeout, command)

    async def _read(self, key: str, value_key: str) -> _Read | None:
        reply = await self._command(lambda: self._client.eval(READ, 1, value_key))
        if len(reply) < 2:
            if int(reply[0]) == -3:
                self._report_damage(key, _VALUE, 0, damaged=True)
            return None
        return _Read(blob=bytes(reply[1]), ttl=int(reply[0]) / 1000)

    async def _write(self, key: str, token: CachedToken, ttl: float, *, owner: str) -> bool:
        value_key, lease_key = self.redis_keys(key)
        blob = self._sealer.seal(value_key, _encode(token))
        message = self._events.message("set", key)
        try:
            await self._command(
                lambda: self._client.eval(
                    WRITE,
                    2,
                    value_key,
                    lease_key,
                    blob,
                    max(1, int(ttl * 1000)),
                    owner,
                    self._channel,
                    message,
                )
            )
        except RedisUnavailable:
            return False
        self._pending_deletes.pop(key, None)  # a newer value supersedes the deletion
        return True

    async def _delete_in_redis(self, key: str) -> bool:
        value_key, _ = self.redis_keys(key)
        message = self._events.message("del", key)
        try:
            await self._command(
                lambda: self._client.eval(DELETE, 1, value_key, self._channel, message)
            )
        except RedisUnavailable:
            return False
        return True

    def _drop_idle_connections(self) -> None:
        # NOTE: after a restart or failover, idle pooled sockets are dead, and redis-py may
        # hand one out unchecked: the probe that should find Redis back would fail on it.
        pool = getattr(self._client, "connection_pool", None)  # the Cluster client has none
        if pool is not None and not self._closed:
            self._spawn(pool.disconnect(inuse_connections=False))

    def _recovered(self) -> None:
        if self._pending_deletes and not self._closed:
            self._replay_deletes_soon()

    def _replay_deletes_soon(self) -> None:
        if self._replaying is None or self._replaying.done():
            self._replaying = self._spawn(self._replay_deletes())

    async def _replay_deletes(self) -> None:
        while self._pending_deletes:
            key = next(iter(self._pending_deletes))
            if not await self._delete_in_redis(key):
                return  # down: the next recovery replays the rest
            self._pending_deletes.pop(key, None)

    # -- L1 and notifications ------------------------------------------------------------

    def _on_event(self, event: str, key: str) -> None:
        """A message from another replica: its value for `key` changed or went away."""
        if event == "del":
            self._evicted_now(key)
            self._l1.discard(key)
        elif event == "set":
            self._l1.discard(key)

    def _evicted_now(self, key: str) -> None:
        self._evictions += 1
        self._evicted[key] = self._evictions
        self._evicted.move_to_end(key)
        while len(self._evicted) > _MAX_RECENT_DELETES:
            self._evicted.popitem(last=False)

    def _keep(self, key: str, token: CachedToken, ttl: float, seen: int) -> bool:
        """Put a value read from Redis into L1, unless `key` was evicted since the read began."""
        if self._evicted.get(key, 0) > seen:
            return False
        self._l1.put(key, token, ttl)
        return True

    def _open(self, key: str, value_key: str, blob: bytes) -> CachedToken | None:
        if key in self._pending_deletes:
            return None  # evicted here; Redis has not taken the deletion yet
        plaintext = self._sealer.open(value_key, bytes(blob))
        token = _decode(plaintext) if plaintext is not None else None
        if token is None:
            _log.warning(
                "redis token cache value %s… did not open (tampered, moved or wrong key); "
                "treating as a miss",
                log_ref(key),
            )
        return token

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


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
