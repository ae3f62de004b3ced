"""What travels back up a chain, for every transport: a downstream is a trust boundary.

A middle tier relays a downstream's refusal to its own caller so the client app can act (sign in
again with a claims challenge, retry later), but a downstream may be compromised, buggy or chatty:
nothing it says reaches the caller verbatim. This package decides, with no grpc import, so the
gRPC server and client interceptors, an HTTP downstream and an ASGI front door share it:

    Code                  canonical status codes (gRPC's numbers, google.rpc.Code), HTTP equivalents
    challenge_values()    the `WWW-Authenticate` values of trailing metadata or HTTP headers
    parse_challenges()    the one `WWW-Authenticate` parser (RFC 7235: several per value allowed)
    choose_challenge()    the one choice of *the* challenge among several, made on both sides
    rebuild_challenge()   what the caller gets: an allow-list, validated, fixed descriptions
    remembered_claims()   the part of a claims challenge that may go to the authority
    ClaimsMemory          claims per user and scope set: bounded, expiring, forgotten once used
    relayed_status()      the complete mapping for an uncaught downstream failure
    Failures, collect()   the failures outbound calls recorded while one incoming call ran
    downstream_in()       the downstream failure (gRPC or HTTP) an uncaught exception is or was
                          raised from
"""

from grpc_obo._relay._challenges import (
    Challenge,
    challenge_values,
    choose_challenge,
    claims_of,
    parse_challenges,
    rebuild_challenge,
)
from grpc_obo._relay._claims import KNOWN_CLAIMS, ClaimsMemory, remembered_claims
from grpc_obo._relay._status import (
    APP_REFUSED,
    RELAY_TABLE,
    UNHANDLED,
    Code,
    Failures,
    Relayed,
    collect,
    downstream_in,
    recording,
    relayed_status,
    uncollect,
)

__all__ = [
    "APP_REFUSED",
    "KNOWN_CLAIMS",
    "RELAY_TABLE",
    "UNHANDLED",
    "Challenge",
    "ClaimsMemory",
    "Code",
    "Failures",
    "Relayed",
    "challenge_values",
    "choose_challenge",
    "claims_of",
    "collect",
    "downstream_in",
    "parse_challenges",
    "rebuild_challenge",
    "recording",
    "relayed_status",
    "remembered_claims",
    "uncollect",
]
