"""Exchange: tokens for downstream APIs, exchanged and cached, with no grpc import.

Owns the exchanger core (`Exchanger`) and its grants (On-Behalf-Of, client credentials), MSAL
behind it (`MsalRunner`: apps per tenant and credential, worker threads, retries), the client
credentials (`ConfidentialClient`, its `ClientCredential`s and the sources they resolve to
for each token request), the cache key derivation (`obo_cache_key`), the cached value
(`CachedToken`), the stores (bounded in-process `MemoryTokenStore`; `RedisTokenStore` for
several replicas: an in-process level in front of Redis, values sealed with `TokenSealer`, single
flight across replicas through a lease in Redis), single flight, and `TokenCache`, which ties
them together.
"""

from grpc_obo._exchange._cache import TokenCache
from grpc_obo._exchange._confidential import ConfidentialClient
from grpc_obo._exchange._credentials import ClientCredential
from grpc_obo._exchange._crypto import TokenSealer
from grpc_obo._exchange._memory import MemoryTokenStore
from grpc_obo._exchange._redis import RedisTokenStore
from grpc_obo._exchange._retry import RetryPolicy
from grpc_obo._exchange._store import TokenStore
from grpc_obo._exchange._token import CachedToken

# The names grpc_obo exports; the rest (cache keys, single flight) stay in their modules.
__all__ = [
    "CachedToken",
    "ClientCredential",
    "ConfidentialClient",
    "MemoryTokenStore",
    "RedisTokenStore",
    "RetryPolicy",
    "TokenCache",
    "TokenSealer",
    "TokenStore",
]
