"""The relay's decisions without a network (grpc_obo._relay): the one challenge parser, the one
choice among several challenges, the allow-list a relayed challenge is rebuilt from, the claims
that may reach the authority and how long they are remembered, the status codes."""

from __future__ import annotations

import base64
import json

import pytest

from grpc_obo import Identity, IdentityKind, SecretToken
from grpc_obo._relay import (
    APP_REFUSED,
    UNHANDLED,
    ClaimsMemory,
    Code,
    Failures,
    challenge_values,
    choose_challenge,
    parse_challenges,
    rebuild_challenge,
    relayed_status,
    remembered_claims,
)

CLAIMS = '{"access_token":{"nbf":{"essential":true,"value":"1604106651"}}}'
B64 = base64.b64encode(CLAIMS.encode()).decode()
ENTRA_CAE = (
    'Bearer realm="", '
    'authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
    'client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", '
    f'claims="{B64}"'
)


def _user(oid: str = "a11ce000-0000-4000-8000-00000000a11c") -> Identity:
    return Identity(
        tid="72f988bf-86f1-41af-91ab-2d7cd011db47",
        oid=oid,
        sub="s",
        kind=IdentityKind.USER,
        token=SecretToken("t"),
    )


class TestParser:
    def test_several_challenges_in_one_value_and_across_values(self) -> None:
        found = parse_challenges(
            ['Basic realm="a, b", Bearer error="invalid_token"', "Negotiate", ENTRA_CAE]
        )
        assert [c.scheme for c in found] == ["Basic", "Bearer", "Negotiate", "Bearer"]
        assert found[0].get("realm") == "a, b"
        assert found[3].get("client_id") == "00000003-0000-0000-c000-000000000000"

    def test_quoted_pairs_and_tokens(self) -> None:
        (only,) = parse_challenges(['Bearer realm="a\\"b", error=invalid_token'])
        assert only.params == (("realm", 'a"b'), ("error", "invalid_token"))

    @pytest.mark.parametrize(
        "value",
        [
            'Bearer error="a", error="b"',  # a parameter twice: which one is meant?
            'Bearer error="unterminated',
            'Bearer error="\x1b]0;owned\x07"',
            'Bearer error="é"',
            b'Bearer error="\xff"',
        ],
    )
    def test_malformed_challenges_are_dropped(self, value: str | bytes) -> None:
        assert [c for c in parse_challenges([value]) if c.params] == []


class TestWhereChallengesAreRead:
    def test_from_trailing_metadata_in_any_container(self) -> None:
        import grpc.aio  # the relay itself never imports grpc: only its containers are used

        pairs = (("x-other", "a"), ("WWW-Authenticate", "Bearer"), ("www-authenticate", b"B"))
        for trailing in (pairs, list(pairs), grpc.aio.Metadata(*pairs)):
            assert challenge_values(trailing) == ["Bearer", b"B"]
        assert challenge_values(None) == []

    def test_from_http_headers(self) -> None:
        import httpx

        headers = httpx.Headers([("WWW-Authenticate", "Bearer"), ("www-authenticate", "Basic")])
        assert challenge_values(headers) == ["Bearer", "Basic"]

    def test_anything_else_is_nothing_a_downstream_said(self) -> None:
        odd: list[object] = ["ab", ("www-authenticate",), ("www-authenticate", 7), 3, (b"k", "v")]
        assert challenge_values(odd) == []
        assert challenge_values("www-authenticate") == []


class TestChoice:
    @pytest.mark.parametrize("first_plain", [True, False])
    def test_the_claims_challenge_wins_in_any_order(self, first_plain: bool) -> None:
        values = ['Bearer error="invalid_token"', ENTRA_CAE]
        chosen = choose_challenge(values if first_plain else values[::-1])
        assert chosen is not None and chosen.get("error") == "insufficient_claims"

    def test_only_bearer_challenges_are_ours(self) -> None:
        assert choose_challenge(['Basic realm="x"']) is None
        chosen = choose_challenge(['Basic realm="x"', "Bearer"])
        assert chosen is not None and chosen.scheme == "Bearer"

    def test_a_claims_challenge_without_usable_claims_is_not_preferred(self) -> None:
        junk = base64.b64encode(b'{"id_token":{"x":{}}}').decode()
        chosen = choose_challenge(
            [f'Bearer error="insufficient_claims", claims="{junk}"', ENTRA_CAE]
        )
        assert chosen is not None and chosen.get("claims") == B64


class TestRebuild:
    def test_entras_cae_challenge_keeps_what_a_client_app_needs(self) -> None:
        rebuilt = rebuild_challenge(choose_challenge([ENTRA_CAE]))
        assert rebuilt == (
            'Bearer realm="", error="insufficient_claims", error_description="a downstream API '
            'needs more claims: sign in again with the claims in this challenge", '
            f'client_id="00000003-0000-0000-c000-000000000000", claims="{B64}"'
        )

    def test_never_the_downstreams_uri_description_or_unknown_parameters(self) -> None:
        rebuilt = rebuild_challenge(
            choose_challenge(
                [
                    'Bearer authorization_uri="https://evil.example/login", error="invalid_token", '
                    'error_description="db1.corp eyJhbGciOi.e30.x", '
                    'resource="https://evil.example", '
                    'realm="<script>", client_id="not-a-guid", scope="a\\"b c"'
                ]
            )
        )
        assert rebuilt == (
            'Bearer error="invalid_token", '
            'error_description="a downstream API refused the user\'s token"'
        )

    def test_unknown_error_codes_are_dropped(self) -> None:
        assert rebuild_challenge(choose_challenge(['Bearer error="pwned"'])) == "Bearer"

    def test_scopes_are_kept_when_valid(self) -> None:
        rebuilt = rebuild_challenge(
            choose_challenge(['Bearer error="insufficient_scope", scope="api://x/Read User.Read"'])
        )
        assert rebuilt is not None and 'scope="api://x/Read User.Read"' in rebuilt

    def test_the_rebuilt_value_is_always_sendable(self) -> None:
        for value in (ENTRA_CAE, 'Bearer realm="x y", error=invalid_request', "Bearer"):
            rebuilt = rebuild_challenge(choose_challenge([value])) or ""
            assert rebuilt.isascii() and rebuilt.isprintable()


class TestClaims:
    def test_only_the_access_token_member_and_known_claims(self) -> None:
        asked = {
            "access_token": {
                "acrs": {"essential": True, "value": "c1"},
                "capolids": {"essential": True, "values": ["a", "b"]},
                "evil": {"essential": True, "value": "x" * 3000},
            },
            "id_token": {"email": None},
        }
        kept = remembered_claims(json.dumps(asked))
        assert kept is not None
        assert json.loads(kept) == {
            "access_token": {
                "acrs": {"essential": True, "value": "c1"},
                "capolids": {"essential": True, "values": ["a", "b"]},
            }
        }

    @pytest.mark.parametrize(
        "claims",
        [
            "not json",
            "[]",
            '{"id_token":{"acrs":{"value":"c1"}}}',
            '{"access_token":{"nbf":{"value":"' + "9" * 3000 + '"}}}',
            '{"access_token":{"nbf":{"essential":"yes"}}}',
            '{"access_token":{"nbf":{"value":"1","extra":{"deep":[1,2,3]}}}}',
        ],
    )
    def test_anything_else_is_not_remembered(self, claims: str) -> None:
        assert remembered_claims(claims) is None


class TestClaimsMemory:
    def test_forgotten_after_the_ttl_on_the_given_clock(self) -> None:
        now = [1000.0]
        memory = ClaimsMemory(ttl=60, clock=lambda: now[0])
        memory.put(_user(), ("s",), CLAIMS)
        assert memory.get(_user(), ("s",)) == CLAIMS
        now[0] += 60
        assert memory.get(_user(), ("s",)) is None
        assert len(memory) == 0

    def test_forgotten_once_an_exchange_carried_them(self) -> None:
        memory = ClaimsMemory()
        memory.put(_user(), ("s",), CLAIMS)
        memory.forget(_user(), ("s",), "other claims")  # a newer challenge stays
        assert memory.get(_user(), ("s",)) == CLAIMS
        memory.forget(_user(), ("s",), CLAIMS)
        assert memory.get(_user(), ("s",)) is None

    def test_bounded_oldest_first(self) -> None:
        memory = ClaimsMemory(max_entries=3)
        for n in range(5):
            memory.put(_user(f"{n}"), ("s",), CLAIMS)
        assert len(memory) == 3
        assert memory.get(_user("0"), ("s",)) is None
        assert memory.get(_user("4"), ("s",)) == CLAIMS

    def test_the_default_bounds_are_small(self) -> None:
        memory = ClaimsMemory()
        for n in range(5000):
            memory.put(_user(f"{n}"), ("s",), CLAIMS)
        assert len(memory) <= 1000  # x at most 1 KB of claims each


class TestStatus:
    def test_matched_on_what_the_relay_says_not_the_raw_pair(self) -> None:
        failures = Failures()
        failures.record(Code.UNAUTHENTICATED, choose_challenge(['Bearer error="x"', ENTRA_CAE]))
        # The server side sees the same trailers in another order, another spelling.
        again = [ENTRA_CAE.replace("Bearer ", "bearer  "), 'Bearer error="x"']
        relayed = failures.relayed(Code.UNAUTHENTICATED, again)
        assert relayed is not None and relayed.code is Code.UNAUTHENTICATED
        assert relayed.challenge == rebuild_challenge(choose_challenge([ENTRA_CAE]))
        assert failures.relayed(Code.PERMISSION_DENIED, again) is None

    def test_an_uncaught_exception_is_settled_only_after_an_on_behalf_of_failure(self) -> None:
        failures = Failures()
        assert failures.settle(None) is None  # nothing failed: the handler's own business
        failures.record(Code.NOT_FOUND, None)
        settled = failures.settle((Code.NOT_FOUND, []))
        assert settled is not None and settled.code is Code.NOT_FOUND
        assert failures.settle(None) is UNHANDLED  # raised otherwise, after the failure
        assert failures.settle((Code.DATA_LOSS, [])) is UNHANDLED  # not one it recorded

    def test_challenges_only_with_authentication_codes(self) -> None:
        assert relayed_status(Code.NOT_FOUND, choose_challenge([ENTRA_CAE])).challenge is None

    @pytest.mark.parametrize("code", [Code.UNAUTHENTICATED, Code.PERMISSION_DENIED])
    def test_a_refusal_of_the_services_own_token_is_internal_without_a_challenge(
        self, code: Code
    ) -> None:
        relayed = relayed_status(code, choose_challenge([ENTRA_CAE]), as_user=False)
        assert (relayed.code, relayed.challenge, relayed.operator) == (Code.INTERNAL, None, True)
        assert relayed.details == APP_REFUSED and relayed.downstream is code

    def test_other_codes_of_app_only_calls_follow_the_table(self) -> None:
        assert relayed_status(Code.NOT_FOUND, as_user=False) == relayed_status(Code.NOT_FOUND)

    def test_a_failure_seen_on_both_kinds_of_call_is_relayed_as_the_app_only_one(self) -> None:
        failures = Failures()
        failures.record(Code.UNAUTHENTICATED, choose_challenge([ENTRA_CAE]))
        failures.record(Code.UNAUTHENTICATED, choose_challenge([ENTRA_CAE]), as_user=False)
        relayed = failures.relayed(Code.UNAUTHENTICATED, [ENTRA_CAE])
        assert relayed is not None and (relayed.code, relayed.challenge) == (Code.INTERNAL, None)

    def test_http_equivalents(self) -> None:
        assert Code.from_http(404) is Code.NOT_FOUND and Code.NOT_FOUND.http_status == 404
        assert Code.from_http(401) is Code.UNAUTHENTICATED
        assert Code.from_http(503) is Code.UNAVAILABLE and Code.from_http(500) is Code.INTERNAL
        assert Code.from_http(204) is Code.OK and Code.from_http(418) is Code.FAILED_PRECONDITION
