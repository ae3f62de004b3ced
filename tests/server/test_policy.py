"""Per-method policy decisions: pure functions of an Identity and a method name, no grpc."""

from __future__ import annotations

import pytest

from grpc_obo import (
    AccessDeniedError,
    AppTokenNotAllowedError,
    Callers,
    ConfigurationError,
    Identity,
    IdentityKind,
    InsufficientScopeError,
    MethodPolicy,
    Policy,
    SecretToken,
    UserTokenNotAllowedError,
    requires,
    www_authenticate_for,
)
from grpc_obo._policy import declared_policy

ECHO = "/grpc_obo.testing.v1.Echo/UnaryUnary"
OTHER = "/grpc_obo.testing.v1.Echo/StreamStream"


def user(*scopes: str, roles: tuple[str, ...] = ()) -> Identity:
    return Identity(
        tid="t",
        oid="o",
        sub="s",
        kind=IdentityKind.USER,
        scopes=frozenset(scopes),
        roles=frozenset(roles),
        token=SecretToken("x"),
    )


def app(*roles: str) -> Identity:
    return Identity(
        tid="t",
        oid="a",
        sub="a",
        kind=IdentityKind.APP,
        roles=frozenset(roles),
        token=SecretToken("x"),
    )


class TestDefaults:
    def test_any_valid_user_token_passes_an_unnamed_method(self) -> None:
        Policy().decide(user("whatever"), ECHO)

    def test_app_tokens_are_refused_by_default(self) -> None:
        with pytest.raises(AppTokenNotAllowedError) as caught:
            Policy().decide(app("Echo.All"), ECHO)
        assert caught.value.reason == "app_token_not_allowed"

    @pytest.mark.parametrize(
        "method",
        [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ],
    )
    def test_health_and_reflection_are_public(self, method: str) -> None:
        assert Policy().is_public(method)
        assert not Policy(builtin_public=False).is_public(method)

    def test_the_policy_can_take_health_back(self) -> None:
        policy = Policy(methods={"grpc.health.v1.Health": MethodPolicy()})
        assert not policy.is_public("/grpc.health.v1.Health/Check")

    def test_a_look_alike_service_is_not_public(self) -> None:
        assert not Policy().is_public("/grpc.health.v1.HealthX/Check")
        assert not Policy().is_public("/evil/grpc.health.v1.Health/Check")


class TestResolution:
    def test_method_entry_beats_service_entry(self) -> None:
        policy = Policy(
            methods={
                "grpc_obo.testing.v1.Echo": MethodPolicy(scopes=["Echo.Read"]),
                ECHO: MethodPolicy(scopes=["Echo.Write"]),
            }
        )
        policy.decide(user("Echo.Write"), ECHO)
        with pytest.raises(InsufficientScopeError):
            policy.decide(user("Echo.Read"), ECHO)
        policy.decide(user("Echo.Read"), OTHER)

    def test_public_list(self) -> None:
        policy = Policy(public=[ECHO])
        assert policy.is_public(ECHO)
        assert not policy.is_public(OTHER)

    def test_strict_refuses_unnamed_methods(self) -> None:
        policy = Policy(strict=True, methods={ECHO: MethodPolicy()})
        policy.decide(user(), ECHO)
        with pytest.raises(AccessDeniedError) as caught:
            policy.decide(user("Echo.Read"), OTHER)
        assert caught.value.reason == "method_not_allowed"
        assert not policy.is_public(OTHER)
        assert policy.is_public("/grpc.health.v1.Health/Check")

    def test_default_rule_applies_to_unnamed_methods(self) -> None:
        policy = Policy(default=MethodPolicy(scopes=["Echo.Read"]))
        with pytest.raises(InsufficientScopeError):
            policy.decide(user("Other"), OTHER)


class TestScopesAndRoles:
    def test_any_of_scopes(self) -> None:
        rule = MethodPolicy(scopes=["A", "B"])
        rule.check(user("B"))
        with pytest.raises(InsufficientScopeError) as caught:
            rule.check(user("C"))
        assert caught.value.required_scopes == ("A", "B")
        assert 'scope="A B"' in (www_authenticate_for(caught.value) or "")

    def test_all_of_scopes(self) -> None:
        rule = MethodPolicy(scopes=["A", "B"], match="all")
        rule.check(user("A", "B", "C"))
        with pytest.raises(InsufficientScopeError):
            rule.check(user("A"))

    def test_user_roles(self) -> None:
        rule = MethodPolicy(user_roles=["Admin"])
        rule.check(user(roles=("Admin",)))
        with pytest.raises(InsufficientScopeError) as caught:
            rule.check(user("A"))
        assert caught.value.required_roles == ("Admin",)
        assert caught.value.reason == "insufficient_role"
        assert "Admin" not in (www_authenticate_for(caught.value) or "")

    def test_users_and_apps(self) -> None:
        rule = MethodPolicy(callers=Callers.USERS_AND_APPS, scopes=["A"], app_roles=["Echo.All"])
        rule.check(user("A"))
        rule.check(app("Echo.All"))
        with pytest.raises(InsufficientScopeError) as caught:
            rule.check(app("Other"))
        assert caught.value.required_roles == ("Echo.All",)

    def test_apps_only_refuses_users(self) -> None:
        rule = MethodPolicy(callers=Callers.APPS, app_roles=["Echo.All"])
        rule.check(app("Echo.All"))
        with pytest.raises(UserTokenNotAllowedError):
            rule.check(user("A", roles=("Echo.All",)))

    def test_app_token_on_user_method_names_the_scopes(self) -> None:
        with pytest.raises(AppTokenNotAllowedError) as caught:
            MethodPolicy(scopes=["Echo.Read"]).check(app("Echo.All"))
        challenge = www_authenticate_for(caught.value) or ""
        assert 'error="insufficient_scope"' in challenge
        assert 'scope="Echo.Read"' in challenge

    def test_public_rule_accepts_anyone(self) -> None:
        MethodPolicy(public=True).check(app())


class TestConfigurationIsCheckedAtConstruction:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"scopes": "Echo.Read"},  # a bare string, not a list
            {"scopes": ["has space"]},
            {"scopes": [""]},
            {"scopes": ['quo"te']},
            {"match": "some"},
            {"public": True, "scopes": ["A"]},
            {"public": True, "callers": Callers.APPS},
            {"callers": Callers.APPS, "app_roles": ["R"], "scopes": ["A"]},
            {"callers": Callers.USERS, "app_roles": ["R"]},
            {"callers": Callers.USERS_AND_APPS},  # apps need named roles
            {"callers": "users"},
        ],
    )
    def test_bad_method_policies(self, kwargs: dict[str, object]) -> None:
        with pytest.raises(ConfigurationError):
            MethodPolicy(**kwargs)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"methods": {"Echo/UnaryUnary": MethodPolicy()}},
            {"methods": {"/pkg.Svc/": MethodPolicy()}},
            {"methods": {"/pkg.Svc/M/extra": MethodPolicy()}},
            {"methods": {"": MethodPolicy()}},
            {"methods": {ECHO: "public"}},
            {"public": ECHO},
            {"public": [ECHO], "methods": {ECHO: MethodPolicy()}},
            {"strict": True, "default": MethodPolicy()},
        ],
    )
    def test_bad_policies(self, kwargs: dict[str, object]) -> None:
        with pytest.raises(ConfigurationError):
            Policy(**kwargs)  # type: ignore[arg-type]

    def test_policies_are_frozen_and_normalised(self) -> None:
        rule = MethodPolicy(scopes=["A", "A", "B"])
        assert rule.scopes == frozenset({"A", "B"})
        with pytest.raises(AttributeError):
            rule.public = True  # type: ignore[misc]
        assert hash(rule) == hash(MethodPolicy(scopes=("B", "A")))


class TestDecoratorDeclaration:
    def test_requires_marks_the_function_and_keeps_it(self) -> None:
        async def handler(request: object, context: object) -> None:
            return None

        marked = requires(scopes=["Echo.Write"])(handler)
        assert marked is handler
        assert declared_policy(marked) == MethodPolicy(scopes=["Echo.Write"])

    def test_requires_checks_its_arguments_at_decoration(self) -> None:
        with pytest.raises(ConfigurationError):
            requires(scopes="Echo.Write")

    def test_declared_rule_names_the_method_in_strict_mode(self) -> None:
        policy = Policy(strict=True)
        policy.decide(user("W"), ECHO, MethodPolicy(scopes=["W"]))
        assert policy.is_public(ECHO, MethodPolicy(public=True))

    def test_declared_and_policy_rules_both_apply(self) -> None:
        policy = Policy(methods={ECHO: MethodPolicy(scopes=["R"])})
        declared = MethodPolicy(scopes=["W"])
        policy.decide(user("R", "W"), ECHO, declared)
        with pytest.raises(InsufficientScopeError):
            policy.decide(user("W"), ECHO, declared)
        with pytest.raises(InsufficientScopeError):
            policy.decide(user("R"), ECHO, declared)

    def test_a_public_declaration_does_not_open_a_method_the_policy_protects(self) -> None:
        policy = Policy(methods={ECHO: MethodPolicy(scopes=["R"])})
        assert not policy.is_public(ECHO, MethodPolicy(public=True))


class TestPublicByExactName:
    @pytest.mark.parametrize(
        "method",
        [
            "/grpc.health.v1.Health/SetServingStatus",
            "/grpc.health.v1.Health/Enter",
            "/grpc.reflection.v1.ServerReflection/Other",
            "/grpc.reflection.v1alpha.ServerReflection/Other",
        ],
    )
    def test_other_methods_of_the_public_services_are_protected(self, method: str) -> None:
        assert not Policy().is_public(method)

    def test_the_standard_health_methods_are_public(self) -> None:
        for name in ("Check", "Watch", "List"):
            assert Policy().is_public(f"/grpc.health.v1.Health/{name}")

    def test_a_named_service_still_overrides_a_builtin_method(self) -> None:
        policy = Policy(methods={"grpc.health.v1.Health": MethodPolicy()})
        assert not policy.is_public("/grpc.health.v1.Health/Check")


class TestCheckAgainstServedMethods:
    SERVED = (
        "/grpc_obo.testing.v1.Echo/UnaryUnary",
        "/grpc_obo.testing.v1.Echo/UnaryStream",
    )

    def test_names_that_match_pass(self) -> None:
        policy = Policy(
            methods={
                "/grpc_obo.testing.v1.Echo/UnaryUnary": MethodPolicy(),
                "grpc_obo.testing.v1.Echo": MethodPolicy(),
            }
        )
        policy.check_served(self.SERVED)

    def test_a_typo_is_a_configuration_error_naming_it(self) -> None:
        policy = Policy(
            methods={"/grpc_obo.testing.v1.Echo/UnaryUnry": MethodPolicy()},
            public=["grpc_obo.testing.v1.Ehco"],
        )
        with pytest.raises(ConfigurationError) as caught:
            policy.check_served(self.SERVED)
        assert "/grpc_obo.testing.v1.Echo/UnaryUnry" in str(caught.value)
        assert "grpc_obo.testing.v1.Ehco" in str(caught.value)

    def test_service_descriptors_are_accepted(self) -> None:
        from tests.gen.grpc_obo.testing.v1 import echo_pb2

        service = echo_pb2.DESCRIPTOR.services_by_name["Echo"]
        Policy(methods={"/grpc_obo.testing.v1.Echo/StreamStream": MethodPolicy()}).check_served(
            [service]
        )
        with pytest.raises(ConfigurationError):
            Policy(methods={"/grpc_obo.testing.v1.Echo/Nope": MethodPolicy()}).check_served(
                [service]
            )
