"""The checks constructors run on their settings, each failing as a `ConfigurationError` that
names the setting: a value of the wrong type is a configuration error like any other, never a
`TypeError` from deep inside a constructor nor a value that passes and fails on the first call.

Messages name the setting and what it takes, never the value given: a value in the wrong
place may be a secret in the wrong place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from grpc_obo._errors._tree import ConfigurationError

__all__ = ["a_callable", "a_number", "a_whole_number"]


def a_number(setting: str, value: object, *, minimum: float = 0.0, above: bool = False) -> float:
    """`value` as a float: a finite real number (never a bool) >= `minimum` (> with `above`)."""
    low = f"above {minimum:g}" if above else f"at least {minimum:g}"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
        or (above and value == minimum)
    ):
        raise ConfigurationError(f"{setting} must be a finite number {low}", setting=setting)
    return float(value)


def a_whole_number(setting: str, value: object, *, minimum: int = 1) -> int:
    """`value`: an int (never a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"{setting} must be a whole number, at least {minimum}", setting=setting
        )
    return value


def a_callable(setting: str, value: object, what: str = "a callable") -> Callable[..., Any]:
    """`value`, which must be callable (`what` says what kind, for the message)."""
    if not callable(value):
        raise ConfigurationError(f"{setting} must be {what}", setting=setting)
    return value
