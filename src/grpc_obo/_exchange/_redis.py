"""The shared token store: an in-process level (L1) in front of Redis (L2), for several replicas.

    get_nowait(key) ── L1, a dict read (the hot path of every outbound call)
    coordinate(key) ── on an L1 miss, one round trip to Redis that returns the sealed value, or
                       takes the key's lease (this replica exchanges), or names the replica
                       that holds it (wait for its notification, then read the value)

Redis holds nothing usable without the sealing key: keys are SHA-256 digests and values are
AES-256-GCM ciphertexts bound to the full Redis key (`TokenSealer`). Keys, per cache key `k`
(`grpc_obo:obo:v1:<sha256>` as built by `obo_cache_key`):

    <namespace>:{k}            the sealed token, PX = expires_on - now - margin
    <namespace>:{k}:lease      the exchange lease: a random owner id, PX = lease_ttl
    <namespace>:grpc_obo:events:v1   pub/sub channel: "v1|set|<store id>|k", "del", "rel"

`{k}` is a Cluster hash tag: a value and its lease share a slot, so each step is one script.

Across replicas:

- **Single flight** (`LeaseFlight`, `_redis_flight.py`): a miss takes the key's lease and
  exchanges, or waits for the replica holding it (at most the callers' patience and
  2 x `lease_ttl`), then exchanges here; a holder that dies stops renewing and is taken over
  within `lease_ttl`.
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
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from grpc_obo._exchange._crypto import TokenSealer
from grpc_obo._exchange._keys import log_ref
from grpc_obo._exchange._local import LocalTier
from grpc_obo._exchange._observe import StoreObserver, quiet_store
from grpc_obo._exchange._redis_flight import VALUE, FlightValues, LeaseFlight, report_damage
from grpc_obo._exchange._redis_link import (
    DELETE,
    READ,
    WRITE,
    Notifications,
    Outage,
    RedisUnavailable,
    build_client,
    close_client,
)
from grpc_obo._exchange._redis_settings import check_settings, parse_url
from grpc_obo._exchange._singleflight import Patience, SingleFlight
from grpc_obo._exchange._store import Produce
from grpc_obo._exchange._token import CachedToken

__all__ = ["RedisTokenStore"]

_log = logging.getLogger("grpc_obo.exchange.cache")

_MAX_PENDING_DELETES = 10_000


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
    down; tests pass one they advance. `observer` is told what each miss came to (a fixed
    word, see `STORE_OUTCOMES`). See the module docstring
    for the key layout and the rules.
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
        observer: StoreObserver = quiet_store,
    ) -> None:
        check_settings(locals())  # every setting above, by name, before any is used
        self._sealer = sealer
        self._timeout = float(timeout)
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
        self._pending_deletes: OrderedDict[str, None] = OrderedDict()
        self._replaying: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._observer = observer
        self._flight = LeaseFlight(
            client=self._client,
            run=self._command,
            events=self._events,
            l1=self._l1,
            values=FlightValues(
                keys=self.redis_keys,
                open=self._open,
                write=self._write,
                spawn=self._spawn,
                down=lambda: self._outage.down,
            ),
            origin=self._origin,
            channel=self._channel,
            timeout=self._timeout,
            lease_ttl=float(lease_ttl),
            observer=observer,
        )

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
        observer: StoreObserver = quiet_store,
    ) -> RedisTokenStore:
        """From `redis://[user:password@]host[:port][/db]` (or `rediss://` for TLS).

        With `cluster=True`, the URL names any node of a Redis Cluster (the rest is discovered).
        """
        return cls(
            **parse_url(url),  # its errors name `url`, never quote it (it may hold a password)
            sealer=sealer,
            ssl_ca_file=ssl_ca_file,
            cluster=cluster,
            namespace=namespace,
            timeout=timeout,
            pool_max_size=pool_max_size,
            l1_max_entries=l1_max_entries,
            l1_ttl=l1_ttl,
            lease_ttl=lease_ttl,
            clock=clock,
            observer=observer,
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
            self._observer.store_outcome("stale")
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
        seen = self._l1.evictions
        value_key, _ = self.redis_keys(key)
        try:
            read = await self._reads.do(key, lambda: self._read(key, value_key))
        except RedisUnavailable:
            return self._l1.get_local(key, stale_ok=True)
        if read is None:
            return None
        token = self._open(key, value_key, read.blob)
        if token is not None and self._l1.fill(key, token, read.ttl, seen):
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
        self._l1.evict(key)
        self._pending_deletes[key] = None
        self._pending_deletes.move_to_end(key)
        while len(self._pending_deletes) > _MAX_PENDING_DELETES:
            self._pending_deletes.popitem(last=False)
        if not self._closed:
            self._events.start()
            self._replay_deletes_soon()

    async def __aenter__(self) -> RedisTokenStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

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

    # -- the cluster-wide single flight (`LeaseFlight`) ---------------------------------

    async def coordinate(
        self,
        key: str,
        produce: Produce,
        *,
        accept: Callable[[CachedToken], bool],
        patience: Patience,
    ) -> CachedToken:
        return await self._flight.coordinate(key, produce, accept=accept, patience=patience)

    # -- Redis commands -------------------------------------------------------------------

    async def _command(self, command: Callable[[], Awaitable[Any]]) -> Any:
        return await self._outage.run(self._timeout, command)

    async def _read(self, key: str, value_key: str) -> _Read | None:
        reply = await self._command(lambda: self._client.eval(READ, 1, value_key))
        if len(reply) < 2:
            if int(reply[0]) == -3:
                report_damage(key, VALUE, 0, damaged=True)
            return None
        return _Read(blob=bytes(reply[1]), ttl=int(reply[0]) / 1000)

    async def _write(self, key: str, token: CachedToken, ttl: float, *, owner: str) -> bool:
        value_key, lease_key = self.redis_keys(key)
        blob = self._sealer.seal(value_key, token.encode())
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
            self._l1.evict(key)
        elif event == "set":
            self._l1.discard(key)

    def _open(self, key: str, value_key: str, blob: bytes) -> CachedToken | None:
        if key in self._pending_deletes:
            return None  # evicted here; Redis has not taken the deletion yet
        plaintext = self._sealer.open(value_key, bytes(blob))
        token = CachedToken.decode(plaintext) if plaintext is not None else None
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
