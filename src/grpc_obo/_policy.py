"""Per-method authorization policy: who may call which gRPC method. Pure decisions, no grpc.

`MethodPolicy` is one rule (public, or which callers with which scopes/roles); `Policy` maps full
method names (`/pkg.Service/Method`) and service names (`pkg.Service`) to rules and decides for a
verified `Identity`. Everything is checked at construction so a bad policy fails at start-up.
The server interceptor is a thin adapter around `Policy.is_public` and `Policy.decide`.

Resolution for a method, first match wins: the exact method name, then its service name, then the
built-in public methods (the standard health and reflection methods, by exact name), then the
default rule (or a denial when strict). A rule declared on the servicer method itself (`requires`)
names the method too; when the policy also names it, both rules must pass (the stricter wins).

How declared rules are found behind other interceptors' wrappers lives in `_declared`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from grpc_obo._errors import (
    AccessDeniedError,
    AppTokenNotAllowedError,
    AuthContextRequiredError,
    ConfigurationError,
    InsufficientScopeError,
    UserTokenNotAllowedError,
)
from grpc_obo._identity import Identity, IdentityKind

__all__ = [
    "BUILTIN_PUBLIC_METHODS",
    "DECLARED_NAMES",
    "Callers",
    "MethodPolicy",
    "Policy",
    "declared_policy",
    "requires",
]

BUILTIN_PUBLIC_METHODS: tuple[str, ...] = (
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
)
"""Methods that are public unless the policy names them or their service: probes and tooling
carry no token. By exact name: anything else registered under these services (a custom
`SetServingStatus`, say) needs a token like every other method."""

# The attribute `requires` puts on a servicer method; the interceptor reads it from the handler.
_DECLARED_ATTR = "__grpc_obo_method_policy__"

# RFC 6750 scope tokens are %x21 / %x23-5B / %x5D-7E: printable ASCII without space, `"` or `\`.
_AUTH_CONTEXT = re.compile(r"c[1-9][0-9]?")
_SCOPE_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "\\"}


class Callers(str, enum.Enum):
    """Which kind of token may call a method."""

    USERS = "users"
    """Delegated tokens only (the default): an app-only token is refused."""
    USERS_AND_APPS = "users_and_apps"
    """Delegated tokens (held to `scopes`/`user_roles`) and app-only tokens (to `app_roles`)."""
    APPS = "apps"
    """App-only tokens only: a delegated token is refused."""


def _names(value: Collection[str], what: str) -> frozenset[str]:
    # NOTE: a bare string is a Collection[str] too; `scopes="read"` would silently become
    # {"r", "e", "a", "d"}. Refuse it instead of guessing.
    if isinstance(value, str | bytes):
        raise ConfigurationError(
            f"{what} must be a collection of names, not a single string", setting=what
        )
    if not isinstance(value, Iterable):
        raise ConfigurationError(f"{what} must be a collection of names", setting=what)
    names = frozenset(value)
    for name in names:
        if not isinstance(name, str) or not name or not set(name) <= _SCOPE_CHARS:
            raise ConfigurationError(
                f"{what} entries must be non-empty printable ASCII without spaces or quotes",
                setting=what,
            )
    return names


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodPolicy:
    """One rule: who may call a method (or a whole service).

    Delegated (user) tokens must hold `scopes` (the `scp` claim) and `user_roles` (app roles
    assigned to the user); app-only tokens must hold `app_roles` (application permissions).
    `match` says whether one of the names ("any", the default) or all of them ("all") is needed,
    for each of the three sets separately. `public=True` means no token is needed at all.
    `auth_context` (`"c1"`...) requires a Conditional Access authentication context in the
    user's sign-in (`acrs`): without it the call is refused with UNAUTHENTICATED and a claims
    challenge, which the client app answers by signing the user in again (step-up).
    """

    public: bool = False
    callers: Callers = Callers.USERS
    scopes: Collection[str] = frozenset()
    user_roles: Collection[str] = frozenset()
    app_roles: Collection[str] = frozenset()
    match: Literal["any", "all"] = "any"
    auth_context: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.public, bool):
            raise ConfigurationError("public must be a bool", setting="public")
        # Normalise to frozensets so the rule is hashable and immutable whatever was passed in.
        object.__setattr__(self, "scopes", _names(self.scopes, "scopes"))
        object.__setattr__(self, "user_roles", _names(self.user_roles, "user_roles"))
        object.__setattr__(self, "app_roles", _names(self.app_roles, "app_roles"))
        if not isinstance(self.callers, Callers):
            raise ConfigurationError("callers must be a grpc_obo.Callers value", setting="callers")
        if self.match not in ("any", "all"):
            raise ConfigurationError('match must be "any" or "all"', setting="match")
        if self.auth_context is not None and not (
            isinstance(self.auth_context, str) and _AUTH_CONTEXT.fullmatch(self.auth_context)
        ):
            raise ConfigurationError(
                'auth_context is an authentication context id: "c1" to "c99"',
                setting="auth_context",
            )
        if self.auth_context is not None and self.callers is Callers.APPS:
            raise ConfigurationError(
                "auth_context: an authentication context is a user's sign-in, not for apps",
                setting="auth_context",
            )
        if self.public:
            if (
                self.scopes
                or self.user_roles
                or self.app_roles
                or self.auth_context
                or self.callers != Callers.USERS
            ):
                raise ConfigurationError(
                    "a public method cannot also require callers or scopes", setting="public"
                )
            return
        if self.callers is Callers.APPS and (self.scopes or self.user_roles):
            raise ConfigurationError(
                "scopes and user_roles are never checked on an apps-only method (callers)",
                setting="callers",
            )
        if self.callers is Callers.USERS and self.app_roles:
            raise ConfigurationError(
                "app_roles are never checked on a users-only method; allow apps via callers",
                setting="app_roles",
            )
        if self.callers is not Callers.USERS and not self.app_roles:
            # NOTE: without this, any app granted any permission on this API would pass.
            raise ConfigurationError(
                "a method open to app-only tokens must name the app_roles they need",
                setting="app_roles",
            )

    def check(self, identity: Identity) -> None:
        """Raise an `AccessDeniedError` subclass unless `identity` satisfies this rule."""
        # Runs on every call: empty requirements are skipped without a call.
        if self.public:
            return
        if identity.kind is _APP:
            if self.callers is _USERS:
                raise AppTokenNotAllowedError(
                    "this method acts for a user; app-only tokens are not accepted",
                    required_scopes=sorted(self.scopes),
                )
            self._require(identity.roles, self.app_roles, roles=True)
            return
        if self.callers is _APPS:
            raise UserTokenNotAllowedError(
                "this method is reserved for applications; delegated tokens are not accepted",
                required_roles=sorted(self.app_roles),
            )
        if self.scopes:
            self._require(identity.scopes, self.scopes, roles=False)
        if self.user_roles:
            self._require(identity.roles, self.user_roles, roles=True)
        if self.auth_context is not None and self.auth_context not in identity.auth_contexts:
            raise AuthContextRequiredError(
                "this method needs a stronger sign-in: sign in again with the claims in the "
                "challenge",
                auth_context=self.auth_context,
            )

    def _require(self, held: frozenset[str], needed: Collection[str], *, roles: bool) -> None:
        if not needed:
            return
        wanted = frozenset(needed)
        ok = held >= wanted if self.match == "all" else not held.isdisjoint(wanted)
        if ok:
            return
        names = sorted(needed)
        what = "roles" if roles else "scopes"
        message = (
            f"the token lacks the {what} this method requires"
            if self.match == "all"
            else f"the token holds none of the {what} this method accepts"
        )
        if roles:
            raise InsufficientScopeError(message, required_roles=names)
        raise InsufficientScopeError(message, required_scopes=names)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The rules for every method of a server.

    `methods` maps `/pkg.Service/Method` or `pkg.Service` to a `MethodPolicy`. Methods it does
    not name follow `default` (a valid delegated token, no particular scope), or are refused when
    `strict=True`. `public` lists more method or service names that need no token. The standard
    health (`Check`, `Watch`, `List`) and reflection (`ServerReflectionInfo`) methods are public
    unless `builtin_public=False` or the policy names them or their service.
    """

    methods: Mapping[str, MethodPolicy] = field(default_factory=dict)
    public: Collection[str] = ()
    default: MethodPolicy | None = None
    strict: bool = False
    builtin_public: bool = True
    _exact: Mapping[str, MethodPolicy] = field(init=False, repr=False, compare=False)
    _services: Mapping[str, MethodPolicy] = field(init=False, repr=False, compare=False)
    _builtin: Mapping[str, MethodPolicy] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.strict and self.default is not None:
            raise ConfigurationError(
                "strict=True refuses unnamed methods; drop default", setting="default"
            )
        if self.default is not None and not isinstance(self.default, MethodPolicy):
            raise ConfigurationError("default must be a MethodPolicy", setting="default")
        for flag in ("strict", "builtin_public"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigurationError(f"{flag} must be a bool", setting=flag)
        if isinstance(self.public, str | bytes):
            raise ConfigurationError(
                "public must be a collection of names, not a single string", setting="public"
            )
        if not isinstance(self.public, Iterable):
            raise ConfigurationError("public must be a collection of names", setting="public")
        if not isinstance(self.methods, Mapping):
            raise ConfigurationError(
                "methods must be a mapping of names to MethodPolicy", setting="methods"
            )
        exact: dict[str, MethodPolicy] = {}
        services: dict[str, MethodPolicy] = {}
        named = [(name, _PUBLIC) for name in self.public]
        named += list(self.methods.items())
        seen: set[str] = set()
        for name, rule in named:
            setting = "public" if rule is _PUBLIC else "methods"
            if not isinstance(name, str):
                raise ConfigurationError(
                    f"{setting}: method and service names are strings", setting=setting
                )
            if not isinstance(rule, MethodPolicy):
                raise ConfigurationError(
                    f"methods: the rule for {name!r} must be a MethodPolicy", setting="methods"
                )
            if name in seen:
                raise ConfigurationError(
                    f"{name!r} is named twice (in public and methods)", setting="methods"
                )
            seen.add(name)
            if _is_method_name(name):
                exact[name] = rule
            elif _is_service_name(name):
                services[name] = rule
            else:
                raise ConfigurationError(
                    f"{setting}: {name!r} is neither '/pkg.Service/Method' nor 'pkg.Service'",
                    setting=setting,
                )
        object.__setattr__(self, "methods", dict(self.methods))
        object.__setattr__(self, "public", frozenset(self.public))
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_services", services)
        builtin = dict.fromkeys(BUILTIN_PUBLIC_METHODS, _PUBLIC) if self.builtin_public else {}
        object.__setattr__(self, "_builtin", builtin)

    def rule_for(self, method: str) -> MethodPolicy | None:
        """The rule the policy names for `method`, or None when it names none (default/strict)."""
        rule = self._exact.get(method)
        if rule is None:
            rule = self._services.get(_service_of(method))
        if rule is None:
            rule = self._builtin.get(method)
        return rule

    def named(self) -> frozenset[str]:
        """Every method and service name this policy names itself (not the built-in ones)."""
        return frozenset(self._exact) | frozenset(self._services)

    def unserved(self, served: Collection[str]) -> list[str]:
        """The names this policy gives that match none of `served` (full method names)."""
        services = {_service_of(method) for method in served}
        missing = [name for name in self._exact if name not in served]
        missing += [name for name in self._services if name not in services]
        return sorted(missing)

    def check_served(self, served: Iterable[object]) -> None:
        """Raise `ConfigurationError` naming every policy entry that no served method matches.

        `served` holds full method names (`/pkg.Service/Method`) or protobuf service
        descriptors (`echo_pb2.DESCRIPTOR.services_by_name["Echo"]`), the ones the server
        registers. Call it at start-up: a typo in a method name otherwise protects nothing.
        """
        names: set[str] = set()
        for item in served:
            if isinstance(item, str):
                names.add(item)
                continue
            full_name = getattr(item, "full_name", None)
            methods = getattr(item, "methods", None)
            if not isinstance(full_name, str) or methods is None:
                raise ConfigurationError(
                    "served entries must be method names or protobuf service descriptors"
                )
            names.update(f"/{full_name}/{method.name}" for method in methods)
        missing = self.unserved(names)
        if missing:
            raise ConfigurationError(
                "the policy names methods or services the server does not serve: "
                + ", ".join(missing)
            )

    def _rules(self, method: str, declared: MethodPolicy | None) -> tuple[MethodPolicy, ...]:
        named = self.rule_for(method)
        rules = tuple(r for r in (named, declared) if r is not None)
        if rules:
            return rules
        if self.strict:
            return ()
        return (self.default or _USER_DEFAULT,)

    def is_public(self, method: str, declared: MethodPolicy | None = None) -> bool:
        """True when `method` needs no token: every rule that applies to it is public."""
        rules = self._rules(method, declared)
        return bool(rules) and all(rule.public for rule in rules)

    def decide(self, identity: Identity, method: str, declared: MethodPolicy | None = None) -> None:
        """Raise an `AccessDeniedError` subclass unless `identity` may call `method`.

        `declared` is the rule put on the servicer method with `requires`, if any.
        """
        self.checker(method, declared)(identity)

    def checker(
        self, method: str, declared: MethodPolicy | None = None
    ) -> Callable[[Identity], None]:
        """`decide` for one method, with the rules resolved once (the server's per-call step)."""
        rules = self._rules(method, declared)
        if not rules:
            return _deny_everyone
        if len(rules) == 1:
            return rules[0].check

        def check_all(identity: Identity) -> None:
            for rule in rules:
                rule.check(identity)

        return check_all


# NOTE: enum members as module constants: `Enum.MEMBER` goes through the enum's metaclass
# (about 50 ns each), and `check` runs on every call.
_APP = IdentityKind.APP
_USERS = Callers.USERS
_APPS = Callers.APPS


def _deny_everyone(identity: Identity) -> None:
    raise AccessDeniedError("this method is not open to any caller", reason="method_not_allowed")


_PUBLIC = MethodPolicy(public=True)
_USER_DEFAULT = MethodPolicy()


def _is_method_name(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 3 and parts[0] == "" and _is_service_name(parts[1]) and bool(parts[2])


def _is_service_name(name: str) -> bool:
    return bool(name) and "/" not in name and not any(c.isspace() for c in name)


def _service_of(method: str) -> str:
    # "/pkg.Service/Method" -> "pkg.Service"; anything else has no service.
    parts = method.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "" else ""


_F = TypeVar("_F", bound=Callable[..., Any])


def requires(
    *,
    public: bool = False,
    callers: Callers = Callers.USERS,
    scopes: Collection[str] = frozenset(),
    user_roles: Collection[str] = frozenset(),
    app_roles: Collection[str] = frozenset(),
    match: Literal["any", "all"] = "any",
    auth_context: str | None = None,
) -> Callable[[_F], _F]:
    """Declare the rule for one servicer method; the server interceptor enforces it.

    The function is returned unchanged apart from one attribute, so grpc still sees the same
    handler kind (coroutine, async generator, sync). The arguments are those of `MethodPolicy`
    and are checked when the decorator runs, i.e. at import time.
    """
    rule = MethodPolicy(
        public=public,
        callers=callers,
        scopes=scopes,
        user_roles=user_roles,
        app_roles=app_roles,
        match=match,
        auth_context=auth_context,
    )

    def mark(func: _F) -> _F:
        setattr(func, _DECLARED_ATTR, rule)
        DECLARED_NAMES.add(getattr(func, "__name__", ""))
        return func

    return mark


def declared_policy(behavior: object) -> MethodPolicy | None:
    """The rule `requires` put on a handler (a function or bound method), if any."""
    rule = getattr(behavior, _DECLARED_ATTR, None)
    return rule if isinstance(rule, MethodPolicy) else None


# The names of every function `requires` has marked in this process. A wrapper we cannot see
# through hides a declared rule only if some marked function could be behind it.
DECLARED_NAMES: set[str] = set()
