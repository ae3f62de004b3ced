"""How the server interceptor finds a rule declared with `requires` behind other wrappers.

grpc hands the server interceptor the servicer method, or another interceptor's wrapper around
it: `resolve_declared` looks through wrappers (`__wrapped__`, bound methods, partials, closures)
and says when it cannot be sure; `explain_uncertain` says why, with the fix that fits. Pure.
"""

from __future__ import annotations

import functools
import inspect

from grpc_obo._policy import DECLARED_NAMES, MethodPolicy, declared_policy

__all__ = ["explain_uncertain", "resolve_declared"]

_MAX_WALK = 64  # callables visited per handler: wrappers nest a few deep, never dozens


def resolve_declared(behavior: object, method: str) -> tuple[MethodPolicy | None, bool]:
    """(the rule declared for `method`'s handler, whether that answer is certain).

    `behavior` is what grpc hands the server interceptor: the servicer method, or another
    interceptor's wrapper around it. Wrappers are looked through by `__wrapped__`
    (functools.wraps), bound methods, `functools.partial` and callables held in closures.
    "No rule" is certain only when the walk reached the servicer method itself, i.e. a function
    named like the gRPC method (what generated `add_*Servicer_to_server` code registers), or
    when nothing in this process was ever marked with `requires`. Anything else (a wrapper that
    keeps the handler out of sight, a hand-written handler named otherwise) is uncertain, and
    the caller must fail closed: a hidden rule may be stricter than any the policy gives.
    """
    found, reached_servicer = _walk(behavior, method)
    if len(found) == 1:
        return found[0], True
    if found:  # two different declared rules behind one handler: which one is meant?
        return None, False
    return None, reached_servicer or not DECLARED_NAMES


def explain_uncertain(behavior: object, method: str) -> str:
    """Why `resolve_declared` is uncertain about `method`, and the fix that applies (a log line)."""
    found, _ = _walk(behavior, method)
    if len(found) > 1:
        return (
            "its handler carries several different grpc_obo.requires rules (the servicer "
            "method's and a wrapper's, say); declare the rule once, on the servicer method"
        )
    short_name = method.rsplit("/", 1)[-1]
    if short_name in DECLARED_NAMES:
        # NOTE: a function of that name is marked: the handler most likely has its rule
        # already, hidden behind the wrapper. Adding `requires` again would not help.
        return (
            "its handler is wrapped by another interceptor in a way grpc_obo cannot see "
            f"through, hiding the rule a function named {short_name!r} declares with "
            "grpc_obo.requires. Put grpc_obo's interceptor last in the server's interceptor "
            "list, or have the wrapping interceptor use functools.wraps"
        )
    return (
        "its handler is wrapped by another interceptor in a way grpc_obo cannot see through "
        "(or is a hand-written handler not named like the method), so a rule declared with "
        "grpc_obo.requires cannot be established. Put grpc_obo's interceptor last in the "
        "server's interceptor list, have the wrapping interceptor use functools.wraps, or mark "
        "the handler itself with grpc_obo.requires(...)"
    )


def _walk(behavior: object, method: str) -> tuple[list[MethodPolicy], bool]:
    """(the different rules declared behind `behavior`, whether the servicer method was reached)."""
    seen: set[int] = set()
    found: list[MethodPolicy] = []
    reached_servicer = False
    short_name = method.rsplit("/", 1)[-1]
    queue: list[object] = [behavior]
    while queue and len(seen) < _MAX_WALK:
        item = queue.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        rule = declared_policy(item)
        if rule is not None and rule not in found:
            found.append(rule)
        if getattr(item, "__name__", None) == short_name:
            reached_servicer = True
        queue.extend(_wrapped_by(item))
    return found, reached_servicer


def _wrapped_by(item: object) -> list[object]:
    """The callables `item` delegates to, as far as Python shows them."""
    inner: list[object] = []
    wrapped = getattr(item, "__wrapped__", None)
    if wrapped is not None:
        inner.append(wrapped)
    if inspect.ismethod(item):
        inner.append(item.__func__)
    if isinstance(item, functools.partial):
        inner.append(item.func)
    for cell in getattr(item, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(content) and not isinstance(content, type):
            inner.append(content)
    return inner
