"""The checks constructors run on their settings, each failing as a `ConfigurationError` that
names the setting: a value of the wrong type is a configuration error like any other, never a
`TypeError` from deep inside a constructor nor a value that passes and fails on the first call.

Messages name the setting and what it takes, never the value given: a value in the wrong
place may be a secret in the wrong place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from grpc_obo._errors._tree import ConfigurationError

__all__ = ["a_bool", "a_callable", "a_number", "a_path", "a_string", "a_whole_number", "strings"]


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


def a_whole_number(
    setting: str, value: object, *, minimum: int = 1, maximum: int | None = None
) -> int:
    """`value`: an int (never a bool) >= `minimum` (and <= `maximum`, if given)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        most = "" if maximum is None else f" and at most {maximum}"
        raise ConfigurationError(
            f"{setting} must be a whole number, at least {minimum}{most}", setting=setting
        )
    return value


def a_bool(setting: str, value: object) -> bool:
    """`value`, which must be True or False (a non-empty string such as 'no' is not)."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{setting} must be True or False", setting=setting)
    return value


def a_string(setting: str, value: object, what: str = "a non-empty string") -> str:
    """`value`: a non-empty string (`what` says what kind, for the message)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{setting} must be {what}", setting=setting)
    return value


def a_path(setting: str, value: object) -> str:
    """`value` as a str: a non-empty path, given as a str or an `os.PathLike` (a `Path`)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{setting} must be a file path", setting=setting)
    return value


def strings(setting: str, value: object, what: str) -> tuple[str, ...]:
    """`value` as a tuple of strings: a list or tuple of them, never one string (whose
    characters would each pass for an item). `what` says what the items are, for the message."""
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, Sequence)
        or not all(isinstance(item, str) for item in value)
    ):
        raise ConfigurationError(f"{setting} must be a list of {what}", setting=setting)
    return tuple(value)


def a_callable(setting: str, value: object, what: str = "a callable") -> Callable[..., Any]:
    """`value`, which must be callable (`what` says what kind, for the message)."""
    if not callable(value):
        raise ConfigurationError(f"{setting} must be {what}", setting=setting)
    return value
