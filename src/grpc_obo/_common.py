"""Small stdlib-only forms that several rooms share, so each has one home: the GUID form, the
authority-host rule, what counts as loopback, and a bounded LRU mapping.

This module imports nothing of grpc_obo and no third-party package: every room may use it.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["LRU", "is_guid", "is_loopback", "with_scheme"]

_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

K = TypeVar("K")
V = TypeVar("V")


def is_guid(value: object, *, lowercase: bool = False) -> bool:
    """True for a GUID string; with `lowercase`, only the form Entra puts in `tid` and `oid`."""
    if not isinstance(value, str) or _GUID.fullmatch(value) is None:
        return False
    return not lowercase or value == value.lower()


def with_scheme(value: str) -> str:
    """azure-identity's rule for AZURE_AUTHORITY_HOST: a bare host means https."""
    value = value.strip().rstrip("/")
    return value if "://" in value else f"https://{value}"


def is_loopback(host: str | None, *, by_name: bool = False) -> bool:
    """True for a loopback IP literal (an IPv4-mapped one too); `localhost` counts only `by_name`.

    NOTE: a URL that is fetched for keys takes IP literals only: a name is resolved by whatever
    the host's resolver says, which is not a promise that the bytes stay on this machine. A
    channel's target may name `localhost` (grpc resolves it to loopback itself).
    """
    if not host:
        return False
    name = host.lower().rstrip(".")
    if by_name and name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


class LRU(Generic[K, V]):
    """A mapping bounded to `maxsize` entries that forgets the least recently used first.

    Not thread-safe (callers hold the event loop, or their own lock); `get` and `put` count as
    a use, `peek` and `in` do not.
    """

    __slots__ = ("_entries", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None or key in self._entries:
            self._entries.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        """Store `value`, evicting the least recently used entries beyond `maxsize`."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)
