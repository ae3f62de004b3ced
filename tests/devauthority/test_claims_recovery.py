"""Claims-challenge recovery with unmodified MSAL, end to end: a challenge scoped to a downstream
resource is answered by signing in to the first API again, interactively (the device code page,
with its MFA step), with the challenge's claims; the new token shows MFA (`amr` has `mfa`) and
keeps showing it through every On-Behalf-Of hop, so the challenged hop succeeds. A password is
not a second factor: the password grant with those claims is refused (AADSTS50076) as Entra
refuses it, and so is a refresh whose sign-in showed no MFA. An On-Behalf-Of request that itself
carries the claims asks for a token meeting them: refused again unless the assertion shows MFA."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest

from grpc_obo.devauthority import DevAuthority
from tests.devauthority.conftest import Http, Msal, assert_entra_error, obo_form, scope


def _obo(msal_apps: Msal, middle: str, assertion: str, api: str, **kwargs: Any) -> dict[str, Any]:
    """`middle` exchanges `assertion` for `api` through a fresh MSAL app (no throttling state)."""
    result: dict[str, Any] = msal_apps.confidential(middle).acquire_token_on_behalf_of(
        assertion, [scope(msal_apps.authority, api)], **kwargs
    )
    return result


def _amr(token: str) -> list[str]:
    amr: list[str] = jwt.decode(token, options={"verify_signature": False})["amr"]
    return amr


def _assert_challenged(result: dict[str, Any], claims: str) -> None:
    assert result.get("error") == "interaction_required", result
    assert result["error_codes"] == [50076]
    assert result["suberror"] == "basic_action"
    assert result["claims"] == claims


class TestChallengeOnTheDownstreamResource:
    def test_signing_in_again_with_the_claims_satisfies_it(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        original, downstream = authority.world.app("original"), authority.world.app("downstream")
        challenge = authority.faults.require_claims(
            "alice", resource_client_id=downstream.client_id
        )
        first = msal_apps.sign_in("alice")["access_token"]
        refused = _obo(msal_apps, "original", first, "downstream")
        _assert_challenged(refused, challenge.claims)

        alice = authority.world.user("alice")
        by_password = msal_apps.public().acquire_token_by_username_password(
            alice.username,
            alice.password,
            [scope(authority, "original")],
            claims_challenge=refused["claims"],
        )
        assert by_password.get("error") == "invalid_grant", by_password
        assert by_password["error_codes"] == [50076]
        assert by_password["claims"] == challenge.claims

        again = msal_apps.sign_in_interactively("alice", claims_challenge=refused["claims"])

        claims = http.verify(again["access_token"], audience=original.client_id)
        assert claims["amr"] == ["pwd", "mfa"]
        exchanged = _obo(msal_apps, "original", again["access_token"], "downstream")
        assert "access_token" in exchanged, exchanged
        through = http.verify(exchanged["access_token"], audience=downstream.client_id)
        assert through["amr"] == ["pwd", "mfa"]
        assert through["oid"] == authority.world.user("alice").oid

    def test_refresh_with_the_claims_needs_an_interactive_sign_in(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        """MSAL's `acquire_token_silent(..., claims_challenge=)` skips its access-token cache
        and redeems the refresh token with the claims: a password sign-in's refresh token cannot
        add MFA (interaction_required); after the interactive sign-in, refreshes keep MFA."""
        downstream = authority.world.app("downstream")
        challenge = authority.faults.require_claims(
            "alice", resource_client_id=downstream.client_id
        )
        app = msal_apps.public()
        alice = authority.world.user("alice")
        original_scopes = [scope(authority, "original")]
        first = app.acquire_token_by_username_password(
            alice.username, alice.password, original_scopes
        )
        refused = _obo(msal_apps, "original", first["access_token"], "downstream")
        _assert_challenged(refused, challenge.claims)

        silent = app.acquire_token_silent_with_error(
            original_scopes, account=app.get_accounts()[0], claims_challenge=refused["claims"]
        )
        assert silent is not None and silent.get("error") == "interaction_required", silent
        assert silent["error_codes"] == [50076]
        assert authority.requests.count(grant="refresh_token", user="alice", ok=False) == 1

        again = msal_apps.sign_in_interactively(
            "alice", claims_challenge=refused["claims"], app=app
        )
        assert again["access_token"] != first["access_token"]
        assert _amr(again["access_token"]) == ["pwd", "mfa"]
        exchanged = _obo(msal_apps, "original", again["access_token"], "downstream")
        assert "access_token" in exchanged, exchanged
        assert "mfa" in _amr(exchanged["access_token"])

        # The refresh token issued with MFA keeps it: a later plain refresh still shows it.
        later = app.acquire_token_silent(
            original_scopes, account=app.get_accounts()[0], force_refresh=True
        )
        assert later is not None and _amr(later["access_token"]) == ["pwd", "mfa"]

    def test_refresh_without_the_claims_does_not_count(
        self, authority: DevAuthority, msal_apps: Msal
    ) -> None:
        authority.faults.require_claims(
            "alice", resource_client_id=authority.world.app("downstream").client_id
        )
        app = msal_apps.public()
        alice = authority.world.user("alice")
        original_scopes = [scope(authority, "original")]
        app.acquire_token_by_username_password(alice.username, alice.password, original_scopes)
        again = app.acquire_token_silent(
            original_scopes, account=app.get_accounts()[0], force_refresh=True
        )
        assert again is not None and _amr(again["access_token"]) == ["pwd"]

    def test_three_hops_with_the_challenge_on_the_third_api(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        """client -> original -> downstream -> pricing, MFA demanded by pricing only."""
        pricing = authority.world.app("pricing")
        challenge = authority.faults.require_claims("alice", resource_client_id=pricing.client_id)
        first = msal_apps.sign_in("alice")["access_token"]
        hop1 = _obo(msal_apps, "original", first, "downstream")
        assert "access_token" in hop1, hop1  # downstream itself demands nothing
        assert _amr(hop1["access_token"]) == ["pwd"]
        refused = _obo(msal_apps, "downstream", hop1["access_token"], "pricing")
        _assert_challenged(refused, challenge.claims)

        # The challenge travels back to the client, which signs in to the first API again.
        again = msal_apps.sign_in_interactively("alice", claims_challenge=refused["claims"])
        hop1 = _obo(msal_apps, "original", again["access_token"], "downstream")
        assert _amr(hop1["access_token"]) == ["pwd", "mfa"]
        hop2 = _obo(msal_apps, "downstream", hop1["access_token"], "pricing")

        assert "access_token" in hop2, hop2
        claims = http.verify(hop2["access_token"], audience=pricing.client_id)
        assert claims["amr"] == ["pwd", "mfa"]
        assert claims["azp"] == authority.world.app("downstream").client_id
        assert claims["scp"] == "Prices.Read"
        assert claims["oid"] == authority.world.user("alice").oid

    @pytest.mark.parametrize("scoped", [True, False], ids=["scoped", "any-resource"])
    def test_another_policy_or_another_users_claims_do_not_count(
        self, authority: DevAuthority, msal_apps: Msal, scoped: bool
    ) -> None:
        downstream = authority.world.app("downstream").client_id if scoped else None
        mine = authority.faults.require_claims("alice", resource_client_id=downstream)
        bobs = authority.faults.require_claims(
            "bob",
            resource_client_id=downstream,
            claims='{"access_token":{"acrs":{"essential":true,"value":"c7"}}}',
        )
        # Same claim name, another policy id: not what alice was asked for.
        other_policy = json.loads(mine.claims)
        other_policy["access_token"]["capolids"]["values"] = [
            "c0ffee00-0000-4000-8000-0000000bad00"
        ]
        for claims in (json.dumps(other_policy), bobs.claims):
            if scoped:
                token = msal_apps.sign_in("alice", claims_challenge=claims)["access_token"]
            else:  # a policy on every resource: a password sign-in is refused outright
                token = authority.mint_user_token("alice")
                alice = authority.world.user("alice")
                refused = msal_apps.public().acquire_token_by_username_password(
                    alice.username, alice.password, [scope(authority, "original")]
                )
                assert refused["error_codes"] == [50076] and refused["claims"] == mine.claims
            assert _amr(token) == ["pwd"], claims
            refused = _obo(msal_apps, "original", token, "downstream")
            _assert_challenged(refused, mine.claims)

    def test_claims_next_to_client_capabilities_still_count(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        """MSAL merges `xms_cc` into the claims of a client with capabilities (`cp1`)."""
        downstream = authority.world.app("downstream").client_id
        challenge = authority.faults.require_claims("alice", resource_client_id=downstream)
        result = msal_apps.sign_in_interactively(
            "alice",
            claims_challenge=challenge.claims,
            app=msal_apps.public(client_capabilities=["cp1"]),
        )
        claims = http.verify(
            result["access_token"], audience=authority.world.app("original").client_id
        )
        assert claims["amr"] == ["pwd", "mfa"]
        assert claims["xms_cc"] == ["cp1"]


class TestClaimsInTheOnBehalfOfRequest:
    def test_without_mfa_in_the_assertion_the_user_is_challenged_again(
        self, authority: DevAuthority, msal_apps: Msal
    ) -> None:
        """The middle tier asks for a token meeting a challenge (here one for the third API,
        relayed by it); the assertion shows no MFA, so Entra wants the user back."""
        pricing = authority.world.app("pricing").client_id
        challenge = authority.faults.require_claims("alice", resource_client_id=pricing)
        token = msal_apps.sign_in("alice")["access_token"]

        asked = _obo(msal_apps, "original", token, "downstream", claims_challenge=challenge.claims)

        _assert_challenged(asked, challenge.claims)
        # Without the claims the same exchange is not challenged (downstream demands nothing).
        assert "access_token" in _obo(msal_apps, "original", token, "downstream")

    def test_with_mfa_in_the_assertion_the_token_is_issued(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        downstream = authority.world.app("downstream")
        challenge = authority.faults.require_claims(
            "alice", resource_client_id=downstream.client_id
        )
        token = msal_apps.sign_in_interactively("alice", claims_challenge=challenge.claims)[
            "access_token"
        ]

        asked = msal_apps.confidential(
            "original", client_capabilities=["cp1"]
        ).acquire_token_on_behalf_of(
            token, [scope(authority, "downstream")], claims_challenge=challenge.claims
        )

        assert "access_token" in asked, asked
        claims = http.verify(asked["access_token"], audience=downstream.client_id)
        assert claims["amr"] == ["pwd", "mfa"]
        assert claims["xms_cc"] == ["cp1"]

    def test_claims_no_policy_asked_for_change_nothing(
        self, authority: DevAuthority, msal_apps: Msal
    ) -> None:
        token = msal_apps.sign_in("alice")["access_token"]
        asked = _obo(
            msal_apps,
            "original",
            token,
            "downstream",
            # (Not `acrs`: an authentication context is a sign-in's, which On-Behalf-Of cannot
            # add; tests/http/test_step_up.py.)
            claims_challenge='{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}',
        )
        assert "access_token" in asked, asked
        assert _amr(asked["access_token"]) == ["pwd"]

    def test_malformed_claims_are_a_bad_request(self, authority: DevAuthority, http: Http) -> None:
        authority.faults.require_claims("alice")
        form = obo_form(authority, authority.mint_user_token("alice"), claims="{not json")
        assert_entra_error(http.token(form), status=400, error="invalid_request", code=90014)
