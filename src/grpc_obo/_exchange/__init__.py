"""Exchange: On-Behalf-Of token caching, with no grpc import.

Owns the cache key derivation (`obo_cache_key`), the cached value (`CachedToken`), the stores
(bounded in-process `MemoryTokenStore`; `RedisTokenStore` for several replicas: an in-process
level in front of Redis, values sealed with `TokenSealer`, single flight across replicas through
a lease in Redis), single flight, and `TokenCache`, which ties them together for the exchanger.
"""

from grpc_obo._exchange._cache import TokenCache
from grpc_obo._exchange._credentials import ClientCredential, ConfidentialClient
from grpc_obo._exchange._crypto import TokenSealer
from grpc_obo._exchange._keys import OBO_KEY_PREFIX, log_ref, obo_cache_key
from grpc_obo._exchange._memory import MemoryTokenStore
from grpc_obo._exchange._redis import RedisTokenStore
from grpc_obo._exchange._singleflight import SingleFlight
from grpc_obo._exchange._store import TokenStore
from grpc_obo._exchange._token import CachedToken

__all__ = [
    "OBO_KEY_PREFIX",
    "CachedToken",
    "ClientCredential",
    "ConfidentialClient",
    "MemoryTokenStore",
    "RedisTokenStore",
    "SingleFlight",
    "TokenCache",
    "TokenSealer",
    "TokenStore",
    "log_ref",
    "obo_cache_key",
]
