"""Chains of three hops: the demo world's `pricing` API (fixed id, consented to `downstream`),
and APIs registered at run time with `World.add_app`, exchanged hop by hop with unmodified MSAL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from grpc_obo.devauthority import DevAuthority, default_world
from tests.devauthority.conftest import Http, Msal, scope


def _obo(msal_apps: Msal, middle: str, assertion: str, scopes: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = msal_apps.confidential(middle).acquire_token_on_behalf_of(
        assertion, scopes
    )
    assert "access_token" in result, result
    return result


class TestDemoWorld:
    def test_ids_are_stable_and_pricing_is_the_third_api(self) -> None:
        world = default_world(with_certificates=False)
        ids = {app.name: app.client_id for app in world.apps}
        assert ids == {
            "client": "b1e0f1c8-2a3d-4e5f-9a8b-0c0ffee0c1c1",
            "original": "3c9a4e21-7d0b-4f5e-a1c2-0c0ffee0a1a1",
            "downstream": "5d0e9c57-4c1f-4a36-8f6e-0c0ffee0d0d0",
            "daemon": "e4a7b2d9-6c5f-4d3e-8b1a-0c0ffee0dae0",
            "pricing": "c4f7e2a9-0b3d-4e6f-8a21-0c0ffee0fee5",
        }
        pricing = world.app("pricing")
        assert pricing.scopes == {"Prices.Read"}
        assert pricing.app_id_uri == f"api://{pricing.client_id}"
        assert pricing.secrets and not pricing.public_client
        assert world.app("downstream").api_permissions == {pricing.client_id: {"Prices.Read"}}
        assert world.summary(include_secrets=False)["apps"]["pricing"]["scopes"] == ["Prices.Read"]

    def test_alice_through_three_hops(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        world = authority.world
        alice = world.user("alice")
        signed_in = msal_apps.sign_in("alice")["access_token"]
        b = _obo(msal_apps, "original", signed_in, [scope(authority, "downstream")])
        c = _obo(msal_apps, "downstream", b["access_token"], [scope(authority, "pricing")])

        first = http.verify(signed_in, audience=world.app("original").client_id)
        second = http.verify(b["access_token"], audience=world.app("downstream").client_id)
        third = http.verify(c["access_token"], audience=world.app("pricing").client_id)
        assert {t["oid"] for t in (first, second, third)} == {alice.oid}
        assert [t["azp"] for t in (first, second, third)] == [
            world.app(name).client_id for name in ("client", "original", "downstream")
        ]
        assert third["scp"] == "Prices.Read"
        assert len({t["sub"] for t in (first, second, third)}) == 3  # pairwise per API
        assert scope(authority, "pricing") in c["scope"].split()
        assert authority.requests.count(grant="obo", ok=True) == 2

    def test_original_cannot_skip_a_hop(self, authority: DevAuthority, msal_apps: Msal) -> None:
        """Original holds no permission on pricing: only downstream may call it as the user."""
        result = msal_apps.confidential("original").acquire_token_on_behalf_of(
            authority.mint_user_token("alice"), [scope(authority, "pricing")]
        )
        assert result["error"] == "invalid_grant"
        assert result["error_codes"] == [65001]

    def test_a_token_for_downstream_is_no_assertion_for_original(
        self, authority: DevAuthority, msal_apps: Msal
    ) -> None:
        """Each hop exchanges only tokens addressed to itself (AADSTS50013)."""
        for_downstream = authority.mint_user_token("alice", audience="downstream")
        result = msal_apps.confidential("original").acquire_token_on_behalf_of(
            for_downstream, [scope(authority, "downstream")]
        )
        assert result["error"] == "invalid_grant"
        assert result["error_codes"] == [50013]


@pytest.fixture
def ledger(authority: DevAuthority) -> Iterator[str]:
    """A fourth API registered while the authority runs, removed afterwards."""
    authority.world.add_app(
        "ledger",
        scopes=["Ledger.Read", "Ledger.Write"],
        access_token_version=1,
        pre_authorized={"pricing": ["Ledger.Read"]},
    )
    try:
        yield "ledger"
    finally:
        authority.world.remove_app("ledger")


class TestAddApp:
    def test_an_api_added_at_run_time_extends_the_chain(
        self, authority: DevAuthority, http: Http, msal_apps: Msal, ledger: str
    ) -> None:
        """pricing is pre-authorized on ledger: a fourth hop, no consent needed; v1 tokens."""
        world = authority.world
        ledger_app = world.app(ledger)
        assertion = authority.mint_user_token("alice", audience="pricing", client="downstream")
        result = _obo(msal_apps, "pricing", assertion, [f"{ledger_app.app_id_uri}/Ledger.Read"])

        claims = http.verify(
            result["access_token"], audience=ledger_app.client_id, issuer=authority.issuer(1)
        )
        assert claims["ver"] == "1.0"
        assert claims["appid"] == world.app("pricing").client_id
        assert claims["scp"] == "Ledger.Read"
        assert claims["oid"] == world.user("alice").oid

    def test_a_middle_tier_added_at_run_time(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        """A new confidential API holding a consented permission on pricing, called by client."""
        world = authority.world
        gateway = world.add_app(
            "gateway",
            scopes=["access_as_user"],
            api_permissions={"pricing": ["Prices.Read"]},
            pre_authorized={"client": ["access_as_user"]},
            certificate=True,
        )
        try:
            assert gateway.secrets and gateway.certificates[0].private_key_pem
            found = world.user("bob")
            signed_in = msal_apps.public().acquire_token_by_username_password(
                found.username, found.password, [f"{gateway.app_id_uri}/access_as_user"]
            )
            assert "access_token" in signed_in, signed_in
            result = _obo(
                msal_apps, "gateway", signed_in["access_token"], [scope(authority, "pricing")]
            )
            claims = http.verify(result["access_token"], audience=world.app("pricing").client_id)
            assert claims["azp"] == gateway.client_id
            assert claims["oid"] == found.oid

            # Consent for the new API is managed like any other.
            with world.without_consent("gateway", "pricing"):
                refused = msal_apps.confidential("gateway").acquire_token_on_behalf_of(
                    signed_in["access_token"], [scope(authority, "pricing")]
                )
                assert refused["error_codes"] == [65001]
        finally:
            world.remove_app("gateway")
        assert world.find_app("gateway") is None

    def test_grant_consent_lets_an_existing_app_call_a_new_api(
        self, authority: DevAuthority, http: Http, msal_apps: Msal, ledger: str
    ) -> None:
        world = authority.world
        ledger_app = world.app(ledger)
        wanted = [f"{ledger_app.app_id_uri}/Ledger.Write"]
        before = msal_apps.confidential("downstream").acquire_token_on_behalf_of(
            authority.mint_user_token("alice", audience="downstream", client="original"), wanted
        )
        assert before["error_codes"] == [65001]

        world.grant_consent("downstream", ledger, ["Ledger.Write"])
        after = _obo(
            msal_apps,
            "downstream",
            authority.mint_user_token("alice", audience="downstream", client="original"),
            wanted,
        )
        claims = http.verify(
            after["access_token"], audience=ledger_app.client_id, issuer=authority.issuer(1)
        )
        assert claims["scp"] == "Ledger.Write"

    def test_remove_app_drops_every_grant_naming_it(
        self, authority: DevAuthority, ledger: str
    ) -> None:
        world = authority.world
        ledger_id = world.app(ledger).client_id
        world.grant_consent("downstream", ledger, ["Ledger.Read"])
        world.remove_app(ledger)
        assert ledger_id not in world.app("downstream").api_permissions
        world.add_app(ledger, scopes=["Ledger.Read"])  # the fixture's clean-up removes it

    def test_client_ids_given_or_generated(self) -> None:
        world = default_world(with_certificates=False)
        fixed = world.add_app("fixed", client_id="0A1B2C3D-0000-4000-8000-0C0FFEE00001")
        generated = world.add_app("generated", scopes=["x"])
        assert fixed.client_id == "0a1b2c3d-0000-4000-8000-0c0ffee00001"
        assert world.app("0a1b2c3d-0000-4000-8000-0c0ffee00001") is fixed
        assert world.resource_app(f"api://{generated.client_id}") is generated
        assert fixed.app_id_uri is None  # exposes nothing: not an API
        assert fixed.tenant_id == world.home_tenant.id

    def test_secrets(self) -> None:
        world = default_world(with_certificates=False)
        assert len(world.add_app("a").secrets) == 1
        assert world.add_app("b", secret="dev-given").secrets == ["dev-given"]
        assert world.add_app("c", secret=False).secrets == []
        public = world.add_app("d", public_client=True)
        assert public.secrets == [] and public.public_client

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"name": "original"}, ValueError),
            ({"name": "ORIGINAL"}, ValueError),
            ({"name": "x", "client_id": "3c9a4e21-7d0b-4f5e-a1c2-0c0ffee0a1a1"}, ValueError),
            ({"name": "x", "client_id": "not-a-guid"}, ValueError),
            ({"name": "5d0e9c57-4c1f-4a36-8f6e-0c0ffee0d0d0"}, ValueError),
            ({"name": "x", "api_permissions": {"downstream": ["Data.Delete"]}}, ValueError),
            ({"name": "x", "api_permissions": {"nowhere": ["Data.Read"]}}, KeyError),
            ({"name": "x", "pre_authorized": {"client": ["not_exposed"]}}, ValueError),
            ({"name": "x", "app_role_assignments": {"downstream": ["Nope"]}}, ValueError),
            ({"name": "x", "public_client": True, "secret": "s"}, ValueError),
            ({"name": "x", "public_client": True, "certificate": True}, ValueError),
            ({"name": "x", "access_token_version": 3}, ValueError),
        ],
    )
    def test_misconfiguration_is_refused_and_nothing_is_added(
        self, kwargs: dict[str, Any], error: type[Exception]
    ) -> None:
        world = default_world(with_certificates=False)
        names = [a.name for a in world.apps]
        name = kwargs.pop("name")
        with pytest.raises(error):
            world.add_app(name, **kwargs)
        assert [a.name for a in world.apps] == names
